package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/archive"
)

func openStore(t *testing.T) (*Store, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "images")
	s, err := Open(root, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s, root
}

func mustImport(t *testing.T, s *Store, b []byte, name string) *Image {
	t.Helper()
	img, err := s.Import(context.Background(), bytes.NewReader(b), name)
	if err != nil {
		t.Fatalf("Import %q: %v", name, err)
	}
	return img
}

// listing records every path under the store root with a hash of each
// file's bytes: an import that failed must leave it identical.
func listing(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			out[rel] = "dir"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		out[rel] = hex.EncodeToString(sum[:])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// unpack applies the image's layers, read back from the store, into a new
// directory, and returns what a user would see there.
func unpack(t *testing.T, s *Store, img *Image) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	for _, l := range img.Layers {
		rc, err := s.OpenLayer(l.Digest)
		if err != nil {
			t.Fatalf("OpenLayer %s: %v", l.Digest, err)
		}
		err = archive.Apply(context.Background(), dir, rc, archive.WhiteoutDelete)
		rc.Close()
		if err != nil {
			t.Fatalf("Apply %s: %v", l.Digest, err)
		}
	}
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.IsDir():
			got[rel] = "/"
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			got[rel] = "->" + target
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			got[rel] = string(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir, got
}

var compressions = []archive.Compression{archive.None, archive.Gzip, archive.Zstd}

func TestImportRoundTrip(t *testing.T) {
	formats := []struct {
		format   Format
		build    func(*testing.T, imageSpec) []byte
		name     string // given to Import
		wantName string
	}{
		{FormatOCI, buildOCI, "", "example.com/app:1"},
		{FormatDocker, buildDocker, "", "example.com/app:1"},
		{FormatRootfs, buildRootfs, "rootfs-app", "rootfs-app"},
	}
	for _, f := range formats {
		for _, c := range compressions {
			t.Run(fmt.Sprintf("%s/%s", f.format, c), func(t *testing.T) {
				s, _ := openStore(t)
				spec := imageSpec{layers: [][]byte{baseLayer(t), topLayer(t)}, compression: c, refName: "example.com/app:1"}
				img := mustImport(t, s, f.build(t, spec), f.name)

				if img.Name != f.wantName || img.Format != f.format {
					t.Errorf("imported %q as %s, want %q as %s", img.Name, img.Format, f.wantName, f.format)
				}
				wantLayers := spec.layers
				if f.format == FormatRootfs {
					wantLayers = [][]byte{rootfsTar(t)}
				}
				var wantSize int64
				for i, l := range wantLayers {
					wantSize += int64(len(l))
					if i >= len(img.Layers) {
						t.Fatalf("image has %d layers, want %d", len(img.Layers), len(wantLayers))
					}
					if got, want := img.Layers[i], (Layer{Digest: digest.FromBytes(l), Size: int64(len(l))}); got != want {
						t.Errorf("layer %d = %+v, want %+v (the uncompressed tar's digest)", i, got, want)
					}
				}
				if img.Size != wantSize {
					t.Errorf("size %d, want %d", img.Size, wantSize)
				}
				switch f.format {
				case FormatRootfs:
					if img.ID != img.Layers[0].Digest {
						t.Errorf("rootfs ID %s, want its layer digest %s", img.ID, img.Layers[0].Digest)
					}
				default:
					if want := digest.FromBytes(configJSON(t, spec)); img.ID != want {
						t.Errorf("ID %s, want the config digest %s", img.ID, want)
					}
					want := Config{Entrypoint: testConfig.Entrypoint, Cmd: testConfig.Cmd, Env: testConfig.Env, WorkingDir: testConfig.WorkingDir, User: testConfig.User}
					if !reflect.DeepEqual(img.Config, want) {
						t.Errorf("config %+v, want %+v", img.Config, want)
					}
					if !img.Created.Equal(buildTime) {
						t.Errorf("created %v, want %v", img.Created, buildTime)
					}
				}

				dir, got := unpack(t, s, img)
				if !maps.Equal(got, layeredFiles) {
					t.Errorf("unpacked tree:\n got %q\nwant %q", got, layeredFiles)
				}
				var a, b unix.Stat_t
				if err := unix.Lstat(filepath.Join(dir, "srv/data"), &a); err != nil {
					t.Fatal(err)
				}
				if err := unix.Lstat(filepath.Join(dir, "srv/data-link"), &b); err != nil {
					t.Fatal(err)
				}
				if a.Ino != b.Ino {
					t.Errorf("srv/data-link is not a hard link of srv/data")
				}

				for _, ref := range []string{img.Name, img.ID.String(), img.ID.Encoded()[:12], "sha256:" + img.ID.Encoded()[:8]} {
					g, err := s.Get(ref)
					if err != nil || g.Name != img.Name {
						t.Errorf("Get(%q) = %v, %v; want %s", ref, g, err, img.Name)
					}
				}
				list, err := s.List()
				if err != nil || len(list) != 1 || list[0].Name != img.Name {
					t.Errorf("List() = %v, %v", list, err)
				}
			})
		}
	}
}

func TestImportRefusesBrokenInput(t *testing.T) {
	base, top := baseLayer(t), topLayer(t)
	other := tarOf(t, file{name: "other", body: "not the layer the manifest names"})
	baseD := digest.FromBytes(base)
	two := func(c archive.Compression) imageSpec {
		return imageSpec{layers: [][]byte{base, top}, compression: c, refName: "broken:1"}
	}
	ociCfg := configJSON(t, two(archive.None))
	dockerFull := buildDocker(t, two(archive.None))
	ociGzip := buildOCI(t, two(archive.Gzip))

	cases := []struct {
		name      string
		input     []byte
		importAs  string
		wantErrs  []error
		wantTexts []string
	}{
		{
			name: "OCI layer digest mismatch",
			input: buildOCI(t, imageSpec{layers: [][]byte{base, top}, refName: "x",
				blobOverride: map[digest.Digest][]byte{baseD: other}}),
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"layer " + baseD.String(), "digest mismatch", "manifest says " + baseD.String(), "content is " + digest.FromBytes(other).String()},
		},
		{
			name: "OCI config diff_id mismatch",
			input: buildOCI(t, imageSpec{layers: [][]byte{base, top}, compression: archive.Gzip,
				diffIDs: []digest.Digest{digest.FromBytes(other), digest.FromBytes(top)}}),
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"uncompressed digest mismatch", "config diff_ids[0] says " + digest.FromBytes(other).String(), "content is " + baseD.String()},
		},
		{
			name: "docker config diff_id mismatch",
			input: buildDocker(t, imageSpec{layers: [][]byte{base, top},
				diffIDs: []digest.Digest{baseD, digest.FromBytes(other)}}),
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"layer 2 (", "/layer.tar)", "config diff_ids[1] says " + digest.FromBytes(other).String()},
		},
		{
			name:      "OCI layer blob missing",
			input:     buildOCI(t, imageSpec{layers: [][]byte{base, top}, omit: []string{"blobs/sha256/" + digest.FromBytes(top).Encoded()}}),
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"layer " + digest.FromBytes(top).String(), "missing"},
		},
		{
			name: "OCI config digest mismatch",
			input: buildOCI(t, imageSpec{layers: [][]byte{base, top},
				blobOverride: map[digest.Digest][]byte{digest.FromBytes(ociCfg): bytes.Replace(ociCfg, []byte("GREETING=hi"), []byte("GREETING=yo"), 1)}}),
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"config blob " + digest.FromBytes(ociCfg).String(), "digest mismatch"},
		},
		{
			name:      "docker config missing",
			input:     buildDocker(t, imageSpec{layers: [][]byte{base}, omit: []string{digest.FromBytes(configJSON(t, imageSpec{layers: [][]byte{base}})).Encoded() + ".json"}}),
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"config", "missing"},
		},
		{
			name:      "truncated docker tarball",
			input:     dockerFull[:len(dockerFull)/2],
			wantErrs:  []error{ErrInvalid, archive.ErrTruncated},
			wantTexts: []string{`tar member "`, "cut short"},
		},
		{
			name:      "truncated gzip tarball",
			input:     ociGzip[:len(ociGzip)/2],
			wantErrs:  []error{ErrInvalid, archive.ErrTruncated},
			wantTexts: []string{"gzip"},
		},
		{
			name:      "hostile rootfs member",
			input:     tarOf(t, file{name: "./", typ: tar.TypeDir}, file{name: "../evil", body: "x"}),
			wantErrs:  []error{ErrInvalid, archive.ErrUnsafe},
			wantTexts: []string{"rootfs tarball", `tar member "../evil"`},
		},
		{
			name: "hostile OCI layer: member through a symlink",
			input: buildOCI(t, imageSpec{layers: [][]byte{tarOf(t,
				file{name: "l", typ: tar.TypeSymlink, link: "/"},
				file{name: "l/etc/passwd", body: "root::0:0::/:/bin/sh\n"})}, compression: archive.Zstd}),
			wantErrs:  []error{ErrInvalid, archive.ErrUnsafe},
			wantTexts: []string{`tar member "l/etc/passwd"`, "symlink"},
		},
		{
			name: "device node in a docker layer",
			input: buildDocker(t, imageSpec{layers: [][]byte{tarOf(t,
				file{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660})}}),
			wantErrs:  []error{ErrInvalid, archive.ErrUnsafe},
			wantTexts: []string{"layer 1 (", `tar member "dev/sda"`, "device"},
		},
		{
			name:      "not a tar at all",
			input:     []byte("hello, this is not an image"),
			wantErrs:  []error{ErrInvalid, archive.ErrTruncated},
			wantTexts: []string{"is this a tar archive"},
		},
		{
			name:      "empty input",
			input:     nil,
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"empty"},
		},
		{
			name:      "rootfs without a name",
			input:     rootfsTar(t),
			importAs:  "-",
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"--name"},
		},
		{
			name: "unsupported OCI layout version",
			input: tarOf(t, file{name: "oci-layout", body: `{"imageLayoutVersion":"9.9.9"}`},
				file{name: "index.json", body: `{"schemaVersion":2,"manifests":[]}`}),
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"9.9.9"},
		},
		{
			name:      "bad name",
			input:     rootfsTar(t),
			importAs:  "no spaces please",
			wantErrs:  []error{ErrInvalid},
			wantTexts: []string{"not valid"},
		},
	}

	s, root := openStore(t)
	// An image already there must survive every failed import untouched.
	mustImport(t, s, buildOCI(t, imageSpec{layers: [][]byte{base, top}, compression: archive.Gzip}), "good")
	before := listing(t, root)
	listBefore, err := s.List()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := "broken"
			switch tc.importAs {
			case "-":
				name = ""
			case "":
			default:
				name = tc.importAs
			}
			_, err := s.Import(context.Background(), bytes.NewReader(tc.input), name)
			if err == nil {
				t.Fatal("Import succeeded; want it refused")
			}
			t.Log(err)
			for _, want := range tc.wantErrs {
				if !errors.Is(err, want) {
					t.Errorf("error %q is not %v", err, want)
				}
			}
			for _, want := range tc.wantTexts {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
			if after := listing(t, root); !maps.Equal(after, before) {
				t.Errorf("store changed on disk:\nbefore %v\n after %v", before, after)
			}
			if listAfter, err := s.List(); err != nil || !reflect.DeepEqual(listAfter, listBefore) {
				t.Errorf("List() changed: %v, %v", listAfter, err)
			}
		})
	}
}

func TestImportRefusesDuplicateName(t *testing.T) {
	s, root := openStore(t)
	spec := imageSpec{layers: [][]byte{baseLayer(t)}, refName: "app:1"}
	mustImport(t, s, buildOCI(t, spec), "")
	before := listing(t, root)

	for _, tc := range []struct{ name, importAs string }{
		{"the same name given again", "app:1"},
		{"the same name derived from the tarball", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Import(context.Background(), bytes.NewReader(buildDocker(t, spec)), tc.importAs)
			if !errors.Is(err, ErrExists) {
				t.Fatalf("Import = %v, want ErrExists", err)
			}
			if !strings.Contains(err.Error(), `godwit image rm app:1`) || !strings.Contains(err.Error(), "--name") {
				t.Errorf("error %q does not tell the user to rm the image or pick --name", err)
			}
			if after := listing(t, root); !maps.Equal(after, before) {
				t.Errorf("store changed on disk")
			}
		})
	}
}

func TestImportDerivesNames(t *testing.T) {
	base := baseLayer(t)
	cases := []struct {
		name  string
		input func(t *testing.T) []byte
		want  string
	}{
		{"docker RepoTags on Docker Hub", func(t *testing.T) []byte {
			return buildDocker(t, imageSpec{layers: [][]byte{base}, refName: "docker.io/library/busybox:latest"})
		}, "busybox:latest"},
		{"OCI ref.name annotation", func(t *testing.T) []byte {
			return buildOCI(t, imageSpec{layers: [][]byte{base}, compression: archive.Zstd, refName: "registry.example:5000/team/app:2"})
		}, "registry.example:5000/team/app:2"},
		{"OCI layout written by Docker 25+", func(t *testing.T) []byte {
			return buildOCI(t, imageSpec{layers: [][]byte{base}, annotations: map[string]string{
				"io.containerd.image.name": "docker.io/library/busybox:1.36", ocispecRefName: "1.36"}})
		}, "busybox:1.36"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, _ := openStore(t)
			img := mustImport(t, s, tc.input(t), "")
			if img.Name != tc.want {
				t.Errorf("name %q, want %q", img.Name, tc.want)
			}
		})
	}
	t.Run("a name without a tag finds :latest", func(t *testing.T) {
		s, _ := openStore(t)
		mustImport(t, s, buildDocker(t, imageSpec{layers: [][]byte{base}, refName: "busybox:latest"}), "")
		if img, err := s.Get("busybox"); err != nil || img.Name != "busybox:latest" {
			t.Errorf("Get(busybox) = %v, %v", img, err)
		}
	})
}

func TestRemoveKeepsSharedLayers(t *testing.T) {
	s, root := openStore(t)
	base, top := baseLayer(t), topLayer(t)
	other := tarOf(t, file{name: "other", body: "other"})
	a := mustImport(t, s, buildOCI(t, imageSpec{layers: [][]byte{base, top}, compression: archive.Gzip}), "a")
	b := mustImport(t, s, buildDocker(t, imageSpec{layers: [][]byte{base, other}}), "b")
	baseD, topD, otherD := digest.FromBytes(base), digest.FromBytes(top), digest.FromBytes(other)
	if a.Layers[0].Digest != baseD || b.Layers[0].Digest != baseD {
		t.Fatalf("images do not share the base layer: %v %v", a.Layers, b.Layers)
	}

	if err := s.Remove("a"); err != nil {
		t.Fatalf("Remove(a): %v", err)
	}
	if _, err := s.Get("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(a) after Remove = %v, want ErrNotFound", err)
	}
	for d, want := range map[digest.Digest]bool{baseD: true, topD: false, otherD: true} {
		if got := s.HasLayer(d); got != want {
			t.Errorf("HasLayer(%s) = %v, want %v", d, got, want)
		}
	}
	rc, err := s.OpenLayer(baseD)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, base) {
		t.Errorf("shared layer after Remove: %d bytes, %v; want the base layer", len(got), err)
	}
	if _, err := s.OpenLayer(topD); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenLayer(removed) = %v, want ErrNotFound", err)
	}

	if err := s.Remove(b.ID.Encoded()[:10]); err != nil {
		t.Fatalf("Remove(b by ID prefix): %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "layers", "sha256")); len(entries) != 0 {
		t.Errorf("layers left after removing every image: %v", entries)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("List() = %v after removing every image", list)
	}
	if err := s.Remove("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove(nope) = %v, want ErrNotFound", err)
	}
}

func TestGetAndRemoveByID(t *testing.T) {
	s, _ := openStore(t)
	tarball := buildOCI(t, imageSpec{layers: [][]byte{baseLayer(t)}})
	one := mustImport(t, s, tarball, "one")
	mustImport(t, s, tarball, "two") // same ID, second name

	cases := []struct {
		ref     string
		wantErr error
	}{
		{one.ID.String(), nil},
		{one.ID.Encoded(), nil},
		{one.ID.Encoded()[:6], nil},
		{one.ID.Encoded()[:5], ErrNotFound}, // too short to be an ID prefix
		{"ffffffffffff", ErrNotFound},
		{"", ErrNotFound},
	}
	for _, tc := range cases {
		img, err := s.Get(tc.ref)
		if !errors.Is(err, tc.wantErr) || (err == nil && img.ID != one.ID) {
			t.Errorf("Get(%q) = %v, %v; want error %v", tc.ref, img, err, tc.wantErr)
		}
	}
	if err := s.Remove(one.ID.Encoded()[:12]); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "one, two") {
		t.Errorf("Remove(shared ID) = %v, want a refusal naming both names", err)
	}
	if err := s.Remove("one"); err != nil {
		t.Fatal(err)
	}
	if !s.HasLayer(one.Layers[0].Digest) {
		t.Error("layer removed while image two still uses it")
	}
}

func TestConcurrentImportsOfOneLayer(t *testing.T) {
	s, _ := openStore(t)
	base := baseLayer(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := compressions[i%len(compressions)]
			tarball := buildDocker(t, imageSpec{layers: [][]byte{base, tarOf(t, file{name: fmt.Sprintf("f%d", i)})}, compression: c})
			_, errs[i] = s.Import(context.Background(), bytes.NewReader(tarball), fmt.Sprintf("img-%d", i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("import %d: %v", i, err)
		}
	}
	rc, err := s.OpenLayer(digest.FromBytes(base))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, base) {
		t.Errorf("shared layer reads back %d bytes, %v", len(got), err)
	}
	if list, _ := s.List(); len(list) != n {
		t.Errorf("List() has %d images, want %d", len(list), n)
	}
}

func TestOpenRecoversFromInterruptedWork(t *testing.T) {
	s, root := openStore(t)
	img := mustImport(t, s, buildOCI(t, imageSpec{layers: [][]byte{baseLayer(t)}}), "kept")
	// What a crash mid-import or mid-remove leaves: staging files, and a
	// layer no image references.
	must(t, os.MkdirAll(filepath.Join(root, "tmp", "import-123", "x"), 0o700))
	orphan := filepath.Join(root, "layers", "sha256", digest.FromString("orphan").Encoded()+".tar.zst")
	must(t, os.WriteFile(orphan, []byte("junk"), 0o600))

	s2, err := Open(root, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Get("kept"); err != nil || got.ID != img.ID {
		t.Errorf("reopened store: Get(kept) = %v, %v", got, err)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "tmp")); len(entries) != 0 {
		t.Errorf("tmp not emptied: %v", entries)
	}
	if _, err := os.Stat(orphan); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("orphan layer not collected: %v", err)
	}
	if !s2.HasLayer(img.Layers[0].Digest) {
		t.Error("referenced layer collected")
	}
}

func TestOpenLayerDetectsCorruption(t *testing.T) {
	s, root := openStore(t)
	img := mustImport(t, s, buildOCI(t, imageSpec{layers: [][]byte{baseLayer(t)}}), "victim")
	d := img.Layers[0].Digest
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	must(t, err)
	_, err = zw.Write(topLayer(t))
	must(t, err)
	must(t, zw.Close())
	must(t, os.WriteFile(filepath.Join(root, "layers", "sha256", d.Encoded()+".tar.zst"), buf.Bytes(), 0o600))

	rc, err := s.OpenLayer(d)
	must(t, err)
	defer rc.Close()
	_, err = io.ReadAll(rc)
	if err == nil || !strings.Contains(err.Error(), "does not match its digest") || !strings.Contains(err.Error(), d.String()) {
		t.Errorf("reading a corrupt layer = %v, want a digest error naming %s", err, d)
	}
	if _, err := s.OpenLayer("sha256:nothex"); !errors.Is(err, ErrInvalid) {
		t.Errorf("OpenLayer(bad digest) = %v, want ErrInvalid", err)
	}
}

const ocispecRefName = "org.opencontainers.image.ref.name"

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// docker save writes a layer that repeats an earlier one as a symlink to
// it; the image keeps both positions and the store one copy.
func TestImportDockerRepeatedLayer(t *testing.T) {
	s, root := openStore(t)
	base, top := baseLayer(t), topLayer(t)
	img := mustImport(t, s, buildDocker(t, imageSpec{layers: [][]byte{base, top, base}, compression: archive.Gzip}), "repeat")
	want := []digest.Digest{digest.FromBytes(base), digest.FromBytes(top), digest.FromBytes(base)}
	var got []digest.Digest
	for _, l := range img.Layers {
		got = append(got, l.Digest)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("layers %v, want %v", got, want)
	}
	if entries, _ := os.ReadDir(filepath.Join(root, "layers", "sha256")); len(entries) != 2 {
		t.Errorf("store holds %d layer files, want 2", len(entries))
	}
}
