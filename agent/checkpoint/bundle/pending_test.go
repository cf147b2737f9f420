package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestPendingManifestListsSizesOnly(t *testing.T) {
	dir := writePendingCheckpoint(t, sampleFiles())
	m, err := ReadManifest(dir)
	if err != nil {
		t.Fatalf("ReadManifest of a pending checkpoint: %v", err)
	}
	if !m.DigestsPending {
		t.Error("manifest is not marked digests_pending")
	}
	files := sampleFiles()
	if len(m.Files) != len(files) {
		t.Fatalf("manifest lists %d files, want %d", len(m.Files), len(files))
	}
	for _, f := range m.Files {
		if f.Digest != "" || f.Size != int64(len(files[f.Path])) {
			t.Errorf("file %s listed with size %d and digest %q, want size %d and no digest", f.Path, f.Size, f.Digest, len(files[f.Path]))
		}
	}
	raw, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(raw), `"digests_pending": true`) || strings.Contains(string(raw), `"digest"`) {
		t.Errorf("pending manifest on disk:\n%s\nwant digests_pending and no digest", raw)
	}
}

func TestPendingCheckpointIsRefusedWhereDigestsAreNeeded(t *testing.T) {
	dir := writePendingCheckpoint(t, sampleFiles())
	_, err := Verify(dir)
	wantRefused(t, err, ErrUnsealed, ManifestName, "lists no digests", "verified")
	err = Export(context.Background(), dir, &bytes.Buffer{}, ExportOptions{})
	wantRefused(t, err, ErrUnsealed, ManifestName, "exported")

	// An archive whose manifest lists no digests, as a careless tool
	// could make one.
	manifest, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := writeCheckpoint(t)
	ms := withManifest(t, members(t, export(t, sealed, ExportOptions{Compression: NoCompression})), func(string) string { return string(manifest) })
	_, err = Import(context.Background(), bytes.NewReader(pack(t, ms)), filepath.Join(t.TempDir(), "imported"), ImportOptions{})
	wantRefused(t, err, ErrInvalidManifest, ManifestName, "lists no digests")
}

func TestValidateDigestsPending(t *testing.T) {
	dir := writePendingCheckpoint(t, sampleFiles())
	m, err := ReadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	m.Files[0].Digest = layerBase
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "digests are pending") {
		t.Errorf("Validate of a pending manifest with a digest: %v", err)
	}
	m.Files[0].Digest, m.DigestsPending = "", false
	if err := m.Validate(); err == nil || !strings.Contains(err.Error(), "digest") {
		t.Errorf("Validate of a sealed manifest without a digest: %v", err)
	}
}

func TestSeal(t *testing.T) {
	dir := writePendingCheckpoint(t, sampleFiles())
	m, err := Seal(dir)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	// The same files sealed at once.
	want := filepath.Join(t.TempDir(), "sealed")
	writeFiles(t, want, sampleFiles())
	wm := sampleManifest()
	if err := WriteManifest(want, wm); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, wm) {
		t.Errorf("Seal returned\n%+v\nwant\n%+v", m, wm)
	}
	if _, err := Verify(dir); err != nil {
		t.Errorf("Verify after Seal: %v", err)
	}

	// Sealed already: nothing is digested again.
	digested := digestedFiles(t)
	before, _ := os.ReadFile(filepath.Join(dir, ManifestName))
	if _, err := Seal(dir); err != nil {
		t.Fatalf("Seal of a sealed checkpoint: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(dir, ManifestName))
	if !bytes.Equal(before, after) || len(digested()) != 0 {
		t.Errorf("Seal of a sealed checkpoint rewrote its manifest or digested files again")
	}
}

func TestSealRefusesDamagedCheckpoint(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   error
		frags  []string
	}{
		{"file truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, "criu", "pages-1.img"), 10); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, []string{"criu/pages-1.img", "size mismatch"}},
		{"file added", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string][]byte{"criu/late.img": []byte("x")})
		}, ErrCorrupt, []string{"criu/late.img", "not listed"}},
		{"file removed", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "criu", "core-1.img"))
		}, ErrCorrupt, []string{"criu/core-1.img", "missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writePendingCheckpoint(t, sampleFiles())
			tt.damage(t, dir)
			_, err := Seal(dir)
			wantRefused(t, err, tt.want, tt.frags...)
			if m, err := ReadManifest(dir); err != nil || !m.DigestsPending {
				t.Errorf("a refused Seal changed the manifest (%v)", err)
			}
		})
	}
}
