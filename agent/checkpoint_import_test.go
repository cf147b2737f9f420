package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/internal/testutil"
)

// importTestHost is the host of every agent of these tests: the one that
// dumped and the one that imports, so that the checkpoints are
// compatible.
var importTestHost = bundle.HostInfo{
	Node: "node-a", CRIUVersion: "4.2.1", RuncVersion: "1.3.6", Kernel: "6.18.0",
	CPU: bundle.CPU{Vendor: "GenuineIntel", Model: "test", Flags: []string{"sse2", "avx2"}},
}

// importTimeout bounds each import of these tests: one that hangs fails.
// earlyAnswer bounds an import answered on the manifest, whose archive
// then stalls (stalledReader): one that waited for the rest would end
// only at importTimeout.
const (
	importTimeout = 20 * time.Second
	earlyAnswer   = 5 * time.Second
)

// importTestAgent is an agent with what an import needs: a checkpoints
// dir (under dataDir, or a dir of its own when dataDir is ""), an image
// store and a host.
func importTestAgent(t *testing.T, name, dataDir string) *Agent {
	t.Helper()
	root := t.TempDir()
	if dataDir == "" {
		dataDir = filepath.Join(root, "data")
	}
	a := &Agent{
		cfg: Config{Name: name, DataDir: dataDir, RunDir: filepath.Join(root, "run")},
		log: slog.New(slog.DiscardHandler),
	}
	if err := os.MkdirAll(a.cfg.checkpointsDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	var err error
	if a.images, err = image.Open(filepath.Join(root, "images"), a.log); err != nil {
		t.Fatal(err)
	}
	a.host = func() bundle.HostInfo { return importTestHost }
	return a
}

// rootfsTar is a one-file root filesystem tarball, the same bytes every
// time: the same image, with the same layer, on every agent.
func rootfsTar(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := []byte("hello\n")
	hdr := &tar.Header{Name: "hello", Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// giveImage imports the test image "img" into a.
func giveImage(t *testing.T, a *Agent) *image.Image {
	t.Helper()
	img, err := a.images.Import(context.Background(), bytes.NewReader(rootfsTar(t)), "img")
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// ckptSpec describes a test checkpoint.
type ckptSpec struct {
	id    string
	img   *image.Image
	pages []byte
	// small, when set, adds that many one-byte CRIU images (each takes a
	// page of a tmpfs).
	small int
	// edit, when set, changes the manifest before it is written.
	edit func(*bundle.Manifest)
}

// writeCheckpoint writes a sealed checkpoint as spec says into a new
// directory and returns it with its manifest, as read back.
func writeCheckpoint(t *testing.T, spec ckptSpec) (string, *bundle.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), spec.id)
	files := map[string][]byte{
		bundle.SpecName:       []byte("{}\n"),
		bundle.RootfsDiffName: []byte("diff"),
		"criu/inventory.img":  []byte("inventory"),
		"criu/pages-1.img":    spec.pages,
	}
	for i := range spec.small {
		files[fmt.Sprintf("criu/small-%d.img", i)] = []byte{byte(i)}
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	m := &bundle.Manifest{
		ID:         spec.id,
		Container:  bundle.Container{Name: "w", ID: "0123456789abcdef", IP: "10.78.70.5"},
		Image:      bundle.Image{Name: spec.img.Name},
		Host:       importTestHost,
		Spec:       bundle.SpecName,
		RootfsDiff: bundle.RootfsDiffName,
		// Restored once on the dumping node: that is its business.
		Stats: bundle.Stats{FrozenTimeUs: 1200, PagesWritten: 3, RestoreTimeUs: 900, PagesRestored: 3},
	}
	for _, l := range spec.img.Layers {
		m.Image.Layers = append(m.Image.Layers, l.Digest)
	}
	if spec.edit != nil {
		spec.edit(m)
	}
	if err := bundle.WriteManifest(dir, m); err != nil {
		t.Fatal(err)
	}
	m, err := bundle.ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, m
}

func exportArchive(t *testing.T, dir string, c bundle.Compression) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := bundle.Export(context.Background(), dir, &buf, bundle.ExportOptions{Compression: c}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// pagesOf is n bytes of memory pages that do not compress to nothing.
func pagesOf(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}

// stalledReader returns data, then blocks until the test ends, as a
// client that stopped sending: what is answered without the rest of the
// archive must not wait for it.
func stalledReader(t *testing.T, data []byte) io.Reader {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	return io.MultiReader(bytes.NewReader(data), readerFunc(func([]byte) (int, error) {
		<-release
		return 0, io.ErrUnexpectedEOF
	}))
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// storedEntries lists the checkpoints dir: the kept checkpoints and
// anything an import left.
func storedEntries(t *testing.T, a *Agent) []string {
	t.Helper()
	entries, err := os.ReadDir(a.cfg.checkpointsDir())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func assertStored(t *testing.T, a *Agent, want ...string) {
	t.Helper()
	got := storedEntries(t, a)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the checkpoints dir holds %q, want exactly %q (an import left something behind, or kept nothing)", got, want)
	}
}

// importEarly imports r, whose archive stalls after its first part, and
// fails t unless the import answered without the rest.
func importEarly(t *testing.T, a *Agent, r io.Reader) (*ImportResult, error) {
	t.Helper()
	start := time.Now()
	res, err := a.ImportCheckpoint(importCtx(t), r)
	if took := time.Since(start); took > earlyAnswer {
		t.Errorf("the import answered after %s: it waited for the rest of the archive instead of answering on the manifest", took)
	}
	return res, err
}

func importCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), importTimeout)
	t.Cleanup(cancel)
	return ctx
}

// TestImportCheckpointKeepsIt: an exported archive, compressed or not,
// becomes one of the node's checkpoints under its ID: listed, intact,
// with the same manifest digest as where it came from, without the other
// node's restore statistics, and nothing else left in the checkpoints
// dir.
func TestImportCheckpointKeepsIt(t *testing.T) {
	for _, c := range []bundle.Compression{bundle.NoCompression, bundle.Zstd} {
		t.Run(string(c), func(t *testing.T) {
			a := importTestAgent(t, "node-b", "")
			img := giveImage(t, a)
			dir, src := writeCheckpoint(t, ckptSpec{id: "cafe00000001", img: img, pages: pagesOf(3 << 20)})
			archive := exportArchive(t, dir, c)

			res, err := a.ImportCheckpoint(importCtx(t), bytes.NewReader(archive))
			if err != nil {
				t.Fatal(err)
			}
			want, err := ManifestDigest(src)
			if err != nil {
				t.Fatal(err)
			}
			if res.AlreadyPresent || res.ManifestDigest != want || res.Bytes != int64(len(archive)) || res.Checkpoint.ID != src.ID {
				t.Fatalf("import = %+v; want a new checkpoint %s, digest %s, %d archive bytes", res, src.ID, want, len(archive))
			}
			listed, err := a.ListCheckpoints(context.Background(), "")
			if err != nil {
				t.Fatal(err)
			}
			if len(listed) != 1 || listed[0].ID != src.ID || listed[0].Host.Node != "node-a" {
				t.Fatalf("checkpoint ls after the import = %v, want the one checkpoint %s dumped on node-a", listed, src.ID)
			}
			kept, err := bundle.Verify(a.checkpointDir(src.ID))
			if err != nil {
				t.Fatalf("the kept checkpoint does not verify: %v", err)
			}
			if kept.Stats.RestoreTimeUs != 0 || kept.Stats.PagesRestored != 0 || kept.Stats.FrozenTimeUs != 1200 {
				t.Errorf("kept statistics %+v: want the dump's, and no restore on this node yet", kept.Stats)
			}
			if d, _ := ManifestDigest(kept); d != want {
				t.Errorf("the kept checkpoint's digest is %s, the source's %s", d, want)
			}
			assertStored(t, a, src.ID)
		})
	}
}

// TestImportCheckpointAgain: the same checkpoint imported again is
// answered from its manifest alone, without the rest of the archive
// (which here never comes), and changes nothing; one that was restored
// on its way (other restore statistics) is still the same checkpoint.
func TestImportCheckpointAgain(t *testing.T) {
	a := importTestAgent(t, "node-b", "")
	img := giveImage(t, a)
	dir, src := writeCheckpoint(t, ckptSpec{id: "cafe00000002", img: img, pages: pagesOf(4 << 20)})
	archive := exportArchive(t, dir, bundle.NoCompression)
	first, err := a.ImportCheckpoint(importCtx(t), bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(a.checkpointDir(src.ID), bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	// The source restored it meanwhile, which rewrote its manifest.
	if _, err := bundle.RecordRestore(dir, 5555, 4); err != nil {
		t.Fatal(err)
	}
	again := exportArchive(t, dir, bundle.NoCompression)

	res, err := importEarly(t, a, stalledReader(t, again[:256<<10]))
	if err != nil {
		t.Fatalf("import again: %v", err)
	}
	if !res.AlreadyPresent || res.ManifestDigest != first.ManifestDigest || res.Checkpoint.ID != src.ID {
		t.Fatalf("import again = %+v, want already present with digest %s", res, first.ManifestDigest)
	}
	after, err := os.ReadFile(filepath.Join(a.checkpointDir(src.ID), bundle.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("importing the same checkpoint again changed the kept one")
	}
	assertStored(t, a, src.ID)
}

// TestImportCheckpointRefusals: whatever is refused, and however, leaves
// nothing behind (only the checkpoint that was there before), and says
// why; what the node cannot take is refused on the manifest, before the
// rest of the archive arrives.
func TestImportCheckpointRefusals(t *testing.T) {
	const (
		id    = "cafe00000003"
		other = "beef00000003"
	)
	tests := []struct {
		name string
		// archive makes what is imported into agent a, which has the
		// image, and holds the checkpoint other.
		archive func(t *testing.T, a *Agent, img *image.Image) io.Reader
		// early: refused on the manifest; the archive stalls after it.
		early  bool
		wantIs []error
		// wantIn is part of the message.
		wantIn string
	}{
		{
			name: "a tampered member",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				pages := pagesOf(1 << 20)
				dir, _ := writeCheckpoint(t, ckptSpec{id: id, img: img, pages: pages})
				archive := exportArchive(t, dir, bundle.NoCompression)
				i := bytes.Index(archive, pages[4096:4096+64])
				archive[i+10] ^= 0x01
				return bytes.NewReader(archive)
			},
			wantIs: []error{ErrInvalid, bundle.ErrCorrupt}, wantIn: "sha256 mismatch",
		},
		{
			name: "a truncated archive",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				dir, _ := writeCheckpoint(t, ckptSpec{id: id, img: img, pages: pagesOf(1 << 20)})
				archive := exportArchive(t, dir, bundle.Zstd)
				return bytes.NewReader(archive[:len(archive)/2])
			},
			wantIs: []error{ErrInvalid, bundle.ErrCorrupt}, wantIn: "truncated",
		},
		{
			name: "not an archive",
			archive: func(*testing.T, *Agent, *image.Image) io.Reader {
				return strings.NewReader("this is not a checkpoint archive at all")
			},
			wantIs: []error{ErrInvalid}, wantIn: "not a godwit checkpoint archive",
		},
		{
			name: "another checkpoint under an ID in use",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				dir, _ := writeCheckpoint(t, ckptSpec{id: other, img: img, pages: pagesOf(1 << 20)})
				return stalledReader(t, exportArchive(t, dir, bundle.NoCompression)[:256<<10])
			},
			early: true, wantIs: []error{ErrExists}, wantIn: "godwit checkpoint rm " + other,
		},
		{
			name: "an image the node does not have",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				missing := *img
				missing.Name = "other-img"
				dir, _ := writeCheckpoint(t, ckptSpec{id: id, img: &missing, pages: pagesOf(1 << 20)})
				return stalledReader(t, exportArchive(t, dir, bundle.NoCompression)[:256<<10])
			},
			early: true, wantIs: []error{ErrInvalidState}, wantIn: "needs image other-img, which node node-b does not have: import it with `godwit image import`",
		},
		{
			name: "image layers the node does not have",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				dir, _ := writeCheckpoint(t, ckptSpec{id: id, img: img, pages: pagesOf(1 << 20), edit: func(m *bundle.Manifest) {
					m.Image.Layers = []digest.Digest{digest.FromString("a layer nobody has")}
				}})
				return stalledReader(t, exportArchive(t, dir, bundle.NoCompression)[:256<<10])
			},
			early: true, wantIs: []error{ErrInvalidState}, wantIn: "has other layers than the one checkpoint",
		},
		{
			name: "a host that cannot restore it",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				dir, _ := writeCheckpoint(t, ckptSpec{id: id, img: img, pages: pagesOf(1 << 20), edit: func(m *bundle.Manifest) {
					m.Host.CPU.Flags = append(m.Host.CPU.Flags, "avx512f")
				}})
				return stalledReader(t, exportArchive(t, dir, bundle.NoCompression)[:256<<10])
			},
			early: true, wantIs: []error{bundle.ErrIncompatible}, wantIn: "avx512f",
		},
		{
			name: "a live migration's partial checkpoint",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				dir, _ := writeCheckpoint(t, ckptSpec{id: id, img: img, pages: pagesOf(1 << 20), edit: func(m *bundle.Manifest) {
					m.RootfsDiff, m.RootfsChanges = "", bundle.RootfsDiffName
				}})
				return bytes.NewReader(exportArchive(t, dir, bundle.NoCompression))
			},
			wantIs: []error{ErrInvalid}, wantIn: "only that migration's destination can restore it",
		},
		{
			name: "an ID that names failed checkpoints",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				dir, _ := writeCheckpoint(t, ckptSpec{id: "failed-cafe", img: img, pages: pagesOf(1 << 20)})
				return bytes.NewReader(exportArchive(t, dir, bundle.NoCompression))
			},
			wantIs: []error{ErrInvalid}, wantIn: `IDs starting with "failed-"`,
		},
		{
			name: "an encrypted archive",
			archive: func(t *testing.T, a *Agent, img *image.Image) io.Reader {
				dir, _ := writeCheckpoint(t, ckptSpec{id: id, img: img, pages: pagesOf(1 << 20)})
				key := filepath.Join(t.TempDir(), "key")
				if err := bundle.GenerateKey(key); err != nil {
					t.Fatal(err)
				}
				var buf bytes.Buffer
				w, err := bundle.Encrypt(&buf, key)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := w.Write(exportArchive(t, dir, bundle.Zstd)); err != nil {
					t.Fatal(err)
				}
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
				return &buf
			},
			wantIs: []error{ErrInvalid, bundle.ErrEncrypted},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := importTestAgent(t, "node-b", "")
			img := giveImage(t, a)
			// The node holds a checkpoint "other" already, with other
			// content than the archives under that ID.
			held, _ := writeCheckpoint(t, ckptSpec{id: other, img: img, pages: pagesOf(64 << 10)})
			if _, err := a.ImportCheckpoint(importCtx(t), bytes.NewReader(exportArchive(t, held, bundle.NoCompression))); err != nil {
				t.Fatal(err)
			}

			var res *ImportResult
			var err error
			if tt.early {
				res, err = importEarly(t, a, tt.archive(t, a, img))
			} else {
				res, err = a.ImportCheckpoint(importCtx(t), tt.archive(t, a, img))
			}
			if err == nil {
				t.Fatalf("import = %+v, want a refusal", res)
			}
			for _, want := range tt.wantIs {
				if !errors.Is(err, want) {
					t.Errorf("error %q is not %v", err, want)
				}
			}
			if !strings.Contains(err.Error(), tt.wantIn) || !strings.Contains(err.Error(), "nothing was kept") {
				t.Errorf("error %q does not say %q and that nothing was kept", err, tt.wantIn)
			}
			assertStored(t, a, other)
			if _, err := bundle.Verify(a.checkpointDir(other)); err != nil {
				t.Errorf("the checkpoint held before: %v", err)
			}
		})
	}
}

// TestImportCheckpointCancelled: a call cancelled while the archive is
// on its way (a client that stopped sending, here) returns at once and
// leaves nothing.
func TestImportCheckpointCancelled(t *testing.T) {
	a := importTestAgent(t, "node-b", "")
	img := giveImage(t, a)
	dir, _ := writeCheckpoint(t, ckptSpec{id: "cafe00000004", img: img, pages: pagesOf(4 << 20)})
	archive := exportArchive(t, dir, bundle.NoCompression)
	ctx, cancel := context.WithCancel(importCtx(t))
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := a.ImportCheckpoint(ctx, stalledReader(t, archive[:1<<20]))
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "nothing was kept") {
		t.Fatalf("cancelled import = %v, want context.Canceled and that nothing was kept", err)
	}
	assertStored(t, a)
}

// TestImportCheckpointDiskFull: with too little space for the
// checkpoint, the import is refused on the manifest; with enough for its
// bytes but not for its files (a tmpfs gives each file whole pages), it
// fails part-way; both say so, as ErrNoSpace, and leave nothing.
func TestImportCheckpointDiskFull(t *testing.T) {
	testutil.RequireRoot(t) // mounts a tmpfs
	tests := []struct {
		name string
		spec func(img *image.Image) ckptSpec
		// early: refused on the manifest, so the rest of the archive
		// never comes here.
		early  bool
		wantIn string
	}{
		{"more bytes than the free space", func(img *image.Image) ckptSpec {
			return ckptSpec{id: "cafe00000005", img: img, pages: pagesOf(2 << 20)}
		}, true, "it needs 2097168 bytes and"},
		{"more files than the free space", func(img *image.Image) ckptSpec {
			return ckptSpec{id: "cafe00000006", img: img, pages: pagesOf(64 << 10), small: 400}
		}, false, "ran out of disk space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			if err := unix.Mount("tmpfs", data, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=0700"); err != nil {
				t.Fatalf("mount a tmpfs: %v", err)
			}
			t.Cleanup(func() {
				if err := unix.Unmount(data, unix.MNT_DETACH); err != nil {
					t.Errorf("unmount the test's tmpfs: %v", err)
				}
			})
			a := importTestAgent(t, "node-b", data)
			img := giveImage(t, a)
			dir, m := writeCheckpoint(t, tt.spec(img))
			var st unix.Statfs_t
			if err := unix.Statfs(data, &st); err != nil {
				t.Fatal(err)
			}
			t.Logf("checkpoint of %d bytes, %d files; %d bytes free", m.Size(), len(m.Files), int64(st.Bavail)*st.Bsize)

			var err error
			if tt.early {
				_, err = importEarly(t, a, stalledReader(t, exportArchive(t, dir, bundle.NoCompression)[:256<<10]))
			} else {
				_, err = a.ImportCheckpoint(importCtx(t), bytes.NewReader(exportArchive(t, dir, bundle.NoCompression)))
			}
			if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), tt.wantIn) || !strings.Contains(err.Error(), "nothing was kept") {
				t.Fatalf("import = %v, want ErrNoSpace saying %q and that nothing was kept", err, tt.wantIn)
			}
			if st := importStatus(err); !strings.Contains(st.Error(), "ResourceExhausted") {
				t.Errorf("over gRPC: %v, want RESOURCE_EXHAUSTED", st)
			}
			assertStored(t, a)
		})
	}
}

// TestCancelableReader: what it reads is r's bytes, in order, with r's
// end; and a Read blocked on r returns once ctx ends, with ctx's cause.
func TestCancelableReader(t *testing.T) {
	data := pagesOf(3<<20 + 17)
	got, err := io.ReadAll(newCancelableReader(context.Background(), iotestHalfReader{bytes.NewReader(data)}))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes (%v), want the %d written", len(got), err, len(data))
	}

	ctx, cancel := context.WithCancelCause(context.Background())
	r := newCancelableReader(ctx, stalledReader(t, []byte("abc")))
	buf := make([]byte, 8)
	if n, err := io.ReadAtLeast(r, buf, 3); n != 3 || err != nil {
		t.Fatalf("first read = %d, %v", n, err)
	}
	why := errors.New("refused")
	time.AfterFunc(50*time.Millisecond, func() { cancel(why) })
	if _, err := r.Read(buf); !errors.Is(err, why) {
		t.Fatalf("read after cancel = %v, want the cause", err)
	}
}

// iotestHalfReader returns at most half of what is asked, and at least a
// byte: reads of every size.
type iotestHalfReader struct{ r io.Reader }

func (h iotestHalfReader) Read(p []byte) (int, error) {
	return h.r.Read(p[:max(1, len(p)/2)])
}

// TestManifestDigest: the digest is the content's, not the node's
// restore statistics, and any other change to the manifest changes it.
func TestManifestDigest(t *testing.T) {
	m := &bundle.Manifest{ID: "x", Container: bundle.Container{Name: "w"}, Files: []bundle.File{{Path: "a", Size: 1, Digest: digest.FromString("a")}}}
	base, err := ManifestDigest(m)
	if err != nil {
		t.Fatal(err)
	}
	restored := *m
	restored.Stats.RestoreTimeUs, restored.Stats.PagesRestored = 10, 2
	if d, _ := ManifestDigest(&restored); d != base {
		t.Error("restore statistics change the digest")
	}
	changed := *m
	changed.Files = []bundle.File{{Path: "a", Size: 1, Digest: digest.FromString("b")}}
	if d, _ := ManifestDigest(&changed); d == base {
		t.Error("another file digest gives the same manifest digest")
	}
}
