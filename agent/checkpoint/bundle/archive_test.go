package bundle

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestExportImportRoundTrip(t *testing.T) {
	dir, want := writeCheckpoint(t)
	key := newKey(t)
	tests := []struct {
		name string
		opts ExportOptions
	}{
		{"zstd by default", ExportOptions{}},
		{"uncompressed", ExportOptions{Compression: NoCompression}},
		{"zstd encrypted", ExportOptions{Compression: Zstd, EncryptKeyFile: key}},
		{"uncompressed encrypted", ExportOptions{Compression: NoCompression, EncryptKeyFile: key}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			archive := export(t, dir, tt.opts)
			dest := filepath.Join(t.TempDir(), "imported")
			got, err := Import(context.Background(), bytes.NewReader(archive), dest, ImportOptions{DecryptKeyFile: tt.opts.EncryptKeyFile})
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Import returned manifest\n%+v\nwant\n%+v", got, want)
			}
			if src, dst := readTree(t, dir), readTree(t, dest); !reflect.DeepEqual(src, dst) {
				t.Errorf("imported tree differs from the exported one: %d files, want %d", len(dst), len(src))
			}
			if _, err := Verify(dest); err != nil {
				t.Errorf("Verify of the imported checkpoint: %v", err)
			}
			info, err := os.Stat(filepath.Join(dest, "criu", "pages-1.img"))
			if err != nil || info.Mode().Perm() != fileMode {
				t.Errorf("imported image mode %v (%v), want %v", info.Mode().Perm(), err, os.FileMode(fileMode))
			}
		})
	}
}

func TestExportLayout(t *testing.T) {
	dir, m := writeCheckpoint(t)
	ms := members(t, export(t, dir, ExportOptions{Compression: NoCompression}))
	var names []string
	for _, mb := range ms {
		names = append(names, mb.hdr.Name)
		if mb.hdr.Typeflag != tar.TypeReg {
			t.Errorf("member %s has type %q, want a regular file", mb.hdr.Name, mb.hdr.Typeflag)
		}
	}
	want := []string{ManifestName}
	for _, f := range m.Files {
		want = append(want, f.Path)
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("archive members %v, want the manifest first and then %v", names, want[1:])
	}
	if again := export(t, dir, ExportOptions{Compression: NoCompression}); !bytes.Equal(again, pack(t, ms)) {
		t.Errorf("exporting the same checkpoint twice gave different archives")
	}
}

func TestExportRefusesDamagedCheckpoint(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   error
		frags  []string
	}{
		// A byte flipped after sealing is not caught here but by Import
		// (see the tamper tests), which every archive goes through.
		{"file truncated after sealing", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "criu", "pages-1.img"), 10); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, []string{"criu/pages-1.img", "size mismatch"}},
		{"file added after sealing", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string][]byte{"criu/late.img": []byte("x")})
		}, ErrCorrupt, []string{"criu/late.img", "not listed"}},
		{"unknown compression", func(*testing.T, string) {}, nil, []string{"unknown compression"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, _ := writeCheckpoint(t)
			tt.damage(t, dir)
			opts := ExportOptions{}
			if tt.want == nil {
				opts.Compression = "lz4"
			}
			err := Export(context.Background(), dir, &bytes.Buffer{}, opts)
			if err == nil {
				t.Fatal("Export accepted a damaged checkpoint")
			}
			if tt.want != nil {
				wantRefused(t, err, tt.want, tt.frags...)
			} else if !strings.Contains(err.Error(), tt.frags[0]) {
				t.Errorf("error %q does not mention %q", err, tt.frags[0])
			}
		})
	}
}

func flipFile(t *testing.T, p string, at int) {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, flip(data, at), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestImportRefuses(t *testing.T) {
	dir, _ := writeCheckpoint(t)
	key, otherKey := newKey(t), newKey(t)
	plain := export(t, dir, ExportOptions{Compression: NoCompression})
	zstdArchive := export(t, dir, ExportOptions{})
	encrypted := export(t, dir, ExportOptions{EncryptKeyFile: key})
	ms := members(t, plain)
	index := func(name string) int {
		for i, mb := range ms {
			if mb.hdr.Name == name {
				return i
			}
		}
		t.Fatalf("no member %s", name)
		return -1
	}
	pages := index("criu/pages-1.img")
	// pagesAt is where the pages image's data starts in the plain archive.
	pagesAt := bytes.Index(plain, ms[pages].data[:64])

	replaced := func(i int, mb member) []member {
		out := append([]member(nil), ms...)
		out[i] = mb
		return out
	}
	inserted := func(mb member) []member {
		return append(append([]member(nil), ms...), mb)
	}
	flippedPages := replaced(pages, member{hdr: ms[pages].hdr, data: flip(ms[pages].data, 1000)})
	reg := func(name string, data []byte) member {
		return member{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o600}, data: data}
	}

	tests := []struct {
		name    string
		archive func(t *testing.T) []byte
		keyFile string
		want    error
		frags   []string
	}{
		{"flipped image byte, repacked", func(t *testing.T) []byte { return pack(t, flippedPages) },
			"", ErrCorrupt, []string{"checkpoint archive member criu/pages-1.img: sha256 mismatch: manifest says", "export it again"}},
		{"flipped image byte, repacked and recompressed", func(t *testing.T) []byte { return compress(t, pack(t, flippedPages)) },
			"", ErrCorrupt, []string{"criu/pages-1.img", "sha256 mismatch"}},
		{"flipped image byte in place", func(*testing.T) []byte { return flip(plain, pagesAt+5000) },
			"", ErrCorrupt, []string{"criu/pages-1.img", "sha256 mismatch"}},
		{"flipped byte in the compressed stream", func(*testing.T) []byte { return flip(zstdArchive, len(zstdArchive)/2) },
			"", ErrCorrupt, nil},
		{"truncated uncompressed", func(*testing.T) []byte { return plain[:pagesAt+1000] },
			"", ErrCorrupt, []string{"criu/pages-1.img", "truncated"}},
		{"truncated compressed", func(*testing.T) []byte { return zstdArchive[:len(zstdArchive)*2/3] },
			"", ErrCorrupt, []string{"truncated"}},
		{"truncated between members", func(t *testing.T) []byte { return pack(t, ms[:len(ms)-1]) },
			"", ErrCorrupt, []string{ms[len(ms)-1].hdr.Name, "missing from the archive"}},
		{"empty stream", func(*testing.T) []byte { return nil },
			"", ErrCorrupt, []string{"checkpoint archive: ", "first member"}},
		{"not an archive", func(*testing.T) []byte { return bytes.Repeat([]byte("garbage!"), 200) },
			"", ErrCorrupt, []string{"first member"}},
		{"extra unlisted member", func(t *testing.T) []byte { return pack(t, inserted(reg("criu/extra.img", []byte("x")))) },
			"", ErrCorrupt, []string{"criu/extra.img", "not listed in the manifest"}},
		{"duplicate member", func(t *testing.T) []byte { return pack(t, inserted(ms[pages])) },
			"", ErrCorrupt, []string{"criu/pages-1.img", "appears twice"}},
		{"second manifest", func(t *testing.T) []byte { return pack(t, inserted(ms[0])) },
			"", ErrCorrupt, []string{ManifestName, "appears twice"}},
		{"member escaping with ..", func(t *testing.T) []byte { return pack(t, inserted(reg("../x", []byte("x")))) },
			"", ErrUnsafe, []string{"../x", "escapes"}},
		{"absolute member", func(t *testing.T) []byte { return pack(t, inserted(reg("/etc/x", []byte("x")))) },
			"", ErrUnsafe, []string{"/etc/x", "escapes"}},
		{"nested member", func(t *testing.T) []byte { return pack(t, inserted(reg("criu/sub/x", []byte("x")))) },
			"", ErrUnsafe, []string{"criu/sub/x", "directly in criu/"}},
		{"symlink member", func(t *testing.T) []byte {
			return pack(t, inserted(member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "criu/link", Linkname: "/etc/shadow"}}))
		}, "", ErrUnsafe, []string{"criu/link", "symlink"}},
		{"symlink replacing a listed file", func(t *testing.T) []byte {
			return pack(t, replaced(pages, member{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "criu/pages-1.img", Linkname: "/dev/zero"}}))
		}, "", ErrUnsafe, []string{"criu/pages-1.img", "symlink"}},
		{"hard link member", func(t *testing.T) []byte {
			return pack(t, inserted(member{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "criu/hl", Linkname: SpecName}}))
		}, "", ErrUnsafe, []string{"criu/hl", "hard link"}},
		{"device member", func(t *testing.T) []byte {
			return pack(t, inserted(member{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "criu/null", Devmajor: 1, Devminor: 3}}))
		}, "", ErrUnsafe, []string{"criu/null", "device"}},
		{"other directory member", func(t *testing.T) []byte {
			return pack(t, inserted(member{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755}}))
		}, "", ErrUnsafe, []string{"etc/", "directory"}},
		{"manifest not first", func(t *testing.T) []byte { return pack(t, append(append([]member(nil), ms[1:]...), ms[0])) },
			"", ErrCorrupt, []string{ms[1].hdr.Name, "is the first member"}},
		{"manifest with unknown version", func(t *testing.T) []byte {
			return pack(t, withManifest(t, ms, func(s string) string {
				return strings.Replace(s, `"format_version": 1`, `"format_version": 2`, 1)
			}))
		}, "", ErrUnsupportedVersion, []string{ManifestName, "format_version 2", "upgrade godwit"}},
		{"manifest missing a file", func(t *testing.T) []byte {
			var m Manifest
			return pack(t, withManifest(t, ms, func(s string) string {
				return dropFile(t, s, &m, "criu/core-1.img")
			}))
		}, "", ErrCorrupt, []string{"criu/core-1.img", "not listed in the manifest"}},
		{"member missing", func(t *testing.T) []byte {
			return pack(t, append(append([]member(nil), ms[:pages]...), ms[pages+1:]...))
		}, "", ErrCorrupt, []string{"criu/pages-1.img", "missing from the archive"}},
		{"member longer than listed", func(t *testing.T) []byte {
			return pack(t, replaced(pages, member{hdr: ms[pages].hdr, data: append(ms[pages].data, 0)}))
		}, "", ErrCorrupt, []string{"criu/pages-1.img", "size mismatch"}},
		{"data after the end", func(t *testing.T) []byte { return append(append([]byte(nil), plain...), "trailing"...) },
			"", ErrCorrupt, []string{"after the end of the archive"}},
		{"megabytes of zeroes after the end", func(t *testing.T) []byte {
			return compress(t, append(append([]byte(nil), plain...), make([]byte, 2*maxPadding)...))
		}, "", ErrCorrupt, []string{"after the end of the archive"}},
		{"encrypted without a key", func(*testing.T) []byte { return encrypted },
			"", ErrEncrypted, []string{"this archive is encrypted: pass --decrypt-key FILE"}},
		{"wrong key", func(*testing.T) []byte { return encrypted },
			otherKey, ErrDecrypt, []string{otherKey, "does not open this archive"}},
		{"tampered ciphertext", func(*testing.T) []byte { return flip(encrypted, len(encrypted)/2) },
			key, ErrDecrypt, []string{"decryption failed", "tampered"}},
		{"truncated ciphertext", func(*testing.T) []byte { return encrypted[:len(encrypted)-100] },
			key, ErrDecrypt, []string{"decryption failed"}},
		{"tampered encryption header", func(*testing.T) []byte {
			return flip(encrypted, bytes.Index(encrypted, []byte("\n---"))+10)
		}, key, ErrDecrypt, []string{"header"}},
		{"plaintext when a key is given", func(*testing.T) []byte { return zstdArchive },
			key, ErrDecrypt, []string{"not encrypted"}},
		{"flipped image, re-encrypted with the right key but old manifest", func(t *testing.T) []byte {
			return encryptTo(t, key, compress(t, pack(t, flippedPages)))
		}, key, ErrCorrupt, []string{"criu/pages-1.img", "sha256 mismatch"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dest := filepath.Join(parent, "imported")
			m, err := Import(context.Background(), bytes.NewReader(tt.archive(t)), dest, ImportOptions{DecryptKeyFile: tt.keyFile})
			wantRefused(t, err, tt.want, tt.frags...)
			if m != nil {
				t.Errorf("refused import returned a manifest")
			}
			if left, _ := os.ReadDir(parent); len(left) != 0 {
				t.Errorf("refused import left %v behind in the destination's parent", left)
			}
		})
	}
}

// dropFile removes one entry from a manifest's file list.
func dropFile(t *testing.T, manifest string, m *Manifest, path string) string {
	t.Helper()
	parsed, err := parseManifest([]byte(manifest))
	if err != nil {
		t.Fatal(err)
	}
	*m = *parsed
	for i, f := range m.Files {
		if f.Path == path {
			m.Files = append(m.Files[:i], m.Files[i+1:]...)
			break
		}
	}
	return string(marshal(t, m))
}

func TestImportToleratesCRIUDirectoryMember(t *testing.T) {
	dir, _ := writeCheckpoint(t)
	ms := members(t, export(t, dir, ExportOptions{Compression: NoCompression}))
	withDir := append([]member{ms[0], {hdr: tar.Header{Typeflag: tar.TypeDir, Name: CRIUDir + "/", Mode: 0o755}}}, ms[1:]...)
	dest := filepath.Join(t.TempDir(), "imported")
	if _, err := Import(context.Background(), bytes.NewReader(pack(t, withDir)), dest, ImportOptions{}); err != nil {
		t.Fatalf("Import with a criu/ directory member: %v", err)
	}
	if _, err := Verify(dest); err != nil {
		t.Errorf("Verify: %v", err)
	}
	info, err := os.Stat(filepath.Join(dest, CRIUDir))
	if err != nil || info.Mode().Perm() != dirMode {
		t.Errorf("criu/ mode %v (%v), want %v whatever the archive says", info.Mode().Perm(), err, os.FileMode(dirMode))
	}
}

func TestImportAcceptsRecordPadding(t *testing.T) {
	dir, _ := writeCheckpoint(t)
	// GNU tar pads an archive to a 10 KiB record.
	const gnuRecord = 10 << 10
	archive := export(t, dir, ExportOptions{Compression: NoCompression})
	padded := append(archive, make([]byte, gnuRecord-len(archive)%gnuRecord)...)
	dest := filepath.Join(t.TempDir(), "imported")
	if _, err := Import(context.Background(), bytes.NewReader(padded), dest, ImportOptions{}); err != nil {
		t.Fatalf("Import of a padded archive: %v", err)
	}
}

func TestImportRefusesExistingDest(t *testing.T) {
	dir, _ := writeCheckpoint(t)
	dest := t.TempDir()
	marker := filepath.Join(dest, "keep")
	writeFiles(t, dest, map[string][]byte{"keep": []byte("x")})
	_, err := Import(context.Background(), bytes.NewReader(export(t, dir, ExportOptions{})), dest, ImportOptions{})
	wantRefused(t, err, ErrExists, dest)
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("existing destination was touched: %v", err)
	}
}

func TestImportHonoursContext(t *testing.T) {
	dir, _ := writeCheckpoint(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	parent := t.TempDir()
	_, err := Import(ctx, bytes.NewReader(export(t, dir, ExportOptions{})), filepath.Join(parent, "x"), ImportOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Import with a cancelled context: %v, want context.Canceled", err)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Errorf("cancelled import left %v behind", left)
	}
}

func TestInspect(t *testing.T) {
	dir, want := writeCheckpoint(t)
	key := newKey(t)
	tests := []struct {
		name    string
		opts    ExportOptions
		keyFile string
		wantErr error
	}{
		{"zstd", ExportOptions{}, "", nil},
		{"uncompressed", ExportOptions{Compression: NoCompression}, "", nil},
		{"encrypted", ExportOptions{EncryptKeyFile: key}, key, nil},
		{"encrypted without a key", ExportOptions{EncryptKeyFile: key}, "", ErrEncrypted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			archive := export(t, dir, tt.opts)
			// Only the beginning is needed: Inspect must not read the images.
			head := archive[:len(archive)/2]
			got, err := Inspect(context.Background(), bytes.NewReader(head), ImportOptions{DecryptKeyFile: tt.keyFile})
			if tt.wantErr != nil {
				wantRefused(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Inspect returned\n%+v\nwant\n%+v", got, want)
			}
		})
	}
}

func TestGenerateKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	if err := GenerateKey(p); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	info, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	data, _ := os.ReadFile(p)
	if !strings.Contains(string(data), "\nAGE-SECRET-KEY-1") || !strings.Contains(string(data), "# public key: age1") {
		t.Errorf("key file is not in age-keygen's format:\n%s", data)
	}
	if _, err := recipients(p); err != nil {
		t.Errorf("generated key does not parse: %v", err)
	}
	err = GenerateKey(p)
	wantRefused(t, err, ErrExists, p)
	if again, _ := os.ReadFile(p); !bytes.Equal(again, data) {
		t.Errorf("GenerateKey overwrote an existing key")
	}
}

func TestBadKeyFile(t *testing.T) {
	dir, _ := writeCheckpoint(t)
	bad := filepath.Join(t.TempDir(), "bad")
	writeFiles(t, filepath.Dir(bad), map[string][]byte{"bad": []byte("not a key\n")})
	err := Export(context.Background(), dir, &bytes.Buffer{}, ExportOptions{EncryptKeyFile: bad})
	wantRefused(t, err, ErrKey, bad, "AGE-SECRET-KEY-1")
	if strings.Contains(err.Error(), "not a key") {
		t.Errorf("error %q quotes the key file's content", err)
	}
}
