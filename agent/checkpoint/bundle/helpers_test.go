package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// Layer digests the sample checkpoint's image is made of.
var (
	layerBase = digest.FromString("base layer")
	layerApp  = digest.FromString("app layer")
)

// sampleHost is the host the sample checkpoint was dumped on.
func sampleHost() HostInfo {
	return HostInfo{
		Node:        "node-a",
		CRIUVersion: "4.2.1",
		RuncVersion: "1.3.6",
		Kernel:      "6.18.44",
		CPU:         CPU{Vendor: "GenuineIntel", Model: "Xeon", Flags: []string{"avx", "avx2", "fpu", "sse4_2"}},
	}
}

// sampleManifest is a complete manifest except for Files, which
// WriteManifest fills.
func sampleManifest() *Manifest {
	return &Manifest{
		ID:         "c1-ckpt-1",
		Created:    time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Container:  Container{Name: "c1", ID: "c1", Labels: map[string]string{"app": "counter"}},
		Image:      Image{Name: "counter:latest", Layers: []digest.Digest{layerBase, layerApp}},
		Host:       sampleHost(),
		Spec:       SpecName,
		RootfsDiff: RootfsDiffName,
		Options:    Options{TCPEstablished: true, External: []string{"net[4026532]:extRootNetNS"}},
		Stats:      Stats{FreezingTimeUs: 1200, FrozenTimeUs: 95000, MemdumpTimeUs: 40000, PagesScanned: 16384, PagesWritten: 16000},
	}
}

// sampleFiles are the sample checkpoint's files: the images hold random
// bytes, so compression cannot hide a flipped byte, and a zero run, so it
// has something to do.
func sampleFiles() map[string][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	pages := append(random(300<<10), make([]byte, 100<<10)...)
	return map[string][]byte{
		SpecName:                {0x7b, 0x7d, '\n'}, // "{}\n"
		RootfsDiffName:          random(10 << 10),
		"criu/inventory.img":    random(64),
		"criu/core-1.img":       random(2 << 10),
		"criu/pages-1.img":      pages,
		"criu/pagemap-1.img":    random(128),
		"criu/empty-marker.img": nil,
	}
}

// writeCheckpoint creates a sealed sample checkpoint directory.
func writeCheckpoint(t *testing.T) (string, *Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "ckpt")
	writeFiles(t, dir, sampleFiles())
	m := sampleManifest()
	if err := WriteManifest(dir, m); err != nil {
		t.Fatalf("WriteManifest: %v", err)
	}
	return dir, m
}

func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// readTree returns every regular file under dir by relative path.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	tree := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		tree[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func export(t *testing.T, dir string, opts ExportOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := Export(context.Background(), dir, &buf, opts); err != nil {
		t.Fatalf("Export: %v", err)
	}
	return buf.Bytes()
}

func newKey(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key")
	if err := GenerateKey(p); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	return p
}

// member is one tar entry, as tests read and rebuild archives.
type member struct {
	hdr  tar.Header
	data []byte
}

// members reads an uncompressed, unencrypted archive.
func members(t *testing.T, archive []byte) []member {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(archive))
	var ms []member
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return ms
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, member{hdr: *hdr, data: data})
	}
}

// pack writes members as a tar; a member's header size follows its data.
func pack(t *testing.T, ms []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range ms {
		hdr := m.hdr
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(m.data))
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compress(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func encryptTo(t *testing.T, keyFile string, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := encrypt(&buf, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// withManifest returns ms with the manifest replaced by edit's result.
func withManifest(t *testing.T, ms []member, edit func(string) string) []member {
	t.Helper()
	out := append([]member(nil), ms...)
	if out[0].hdr.Name != ManifestName {
		t.Fatalf("first member is %q", out[0].hdr.Name)
	}
	out[0].data = []byte(edit(string(out[0].data)))
	return out
}

// flip returns a copy of b with one byte inverted at offset i.
func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0xff
	return c
}

// wantRefused checks a refusal: err matches want and mentions every
// fragment (the member and the reason).
func wantRefused(t *testing.T, err error, want error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("accepted; want an error matching %v", want)
	}
	if !errors.Is(err, want) {
		t.Errorf("error %q does not match %v", err, want)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not mention %q", err, f)
		}
	}
}

func marshal(t *testing.T, m *Manifest) []byte {
	t.Helper()
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return data
}
