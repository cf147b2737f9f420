package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestWriteManifestListsEveryFile(t *testing.T) {
	dir, m := writeCheckpoint(t)
	files := sampleFiles()
	if len(m.Files) != len(files) {
		t.Fatalf("manifest lists %d files, want %d", len(m.Files), len(files))
	}
	for i, f := range m.Files {
		data, ok := files[f.Path]
		if !ok {
			t.Errorf("manifest lists %s, which was not written", f.Path)
			continue
		}
		sum := sha256.Sum256(data)
		if f.Size != int64(len(data)) || f.Digest.Encoded() != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: listed as %d bytes %s, want %d bytes sha256:%x", f.Path, f.Size, f.Digest, len(data), sum)
		}
		if i > 0 && m.Files[i-1].Path >= f.Path {
			t.Errorf("files not sorted: %s before %s", m.Files[i-1].Path, f.Path)
		}
	}
	if m.FormatVersion != FormatVersion {
		t.Errorf("format_version %d, want %d", m.FormatVersion, FormatVersion)
	}
	got, err := ReadManifest(dir)
	if err != nil {
		t.Fatalf("ReadManifest: %v", err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("manifest read back differs:\n%+v\nwant\n%+v", got, m)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Errorf("WriteManifest left temporary files: %v", left)
	}
}

func TestWriteManifestRefuses(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		edit  func(m *Manifest)
		want  error
		frags []string
	}{
		{"symlink", func(t *testing.T, dir string) {
			symlink(t, "/etc/passwd", filepath.Join(dir, "criu", "link.img"))
		}, nil, ErrUnsafe, []string{"criu/link.img", "symlink"}},
		{"nested directory", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string][]byte{"criu/sub/x.img": nil})
		}, nil, ErrUnsafe, []string{"criu/sub", "directory"}},
		{"spec missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, SpecName))
		}, nil, ErrInvalidManifest, []string{"spec", "not among the listed files"}},
		{"invalid id", nil, func(m *Manifest) { m.ID = "../etc" }, ErrInvalidManifest, []string{"id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ckpt")
			writeFiles(t, dir, sampleFiles())
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			m := sampleManifest()
			if tt.edit != nil {
				tt.edit(m)
			}
			wantRefused(t, WriteManifest(dir, m), tt.want, tt.frags...)
			if _, err := os.Stat(filepath.Join(dir, ManifestName)); !os.IsNotExist(err) {
				t.Errorf("a refused WriteManifest wrote %s", ManifestName)
			}
		})
	}
}

func symlink(t *testing.T, target, p string) {
	t.Helper()
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

func TestVerify(t *testing.T) {
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		want   error
		frags  []string
	}{
		{"intact", func(*testing.T, string) {}, nil, nil},
		{"byte flipped", func(t *testing.T, dir string) {
			flipFile(t, filepath.Join(dir, "criu", "pages-1.img"), 4096)
		}, ErrCorrupt, []string{"checkpoint file criu/pages-1.img: sha256 mismatch: manifest says", "take a new checkpoint"}},
		{"spec edited", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string][]byte{SpecName: []byte("{}}")})
		}, ErrCorrupt, []string{SpecName, "sha256 mismatch"}},
		{"file truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(filepath.Join(dir, RootfsDiffName), 10); err != nil {
				t.Fatal(err)
			}
		}, ErrCorrupt, []string{RootfsDiffName, "size mismatch"}},
		{"file removed", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "criu", "core-1.img"))
		}, ErrCorrupt, []string{"criu/core-1.img", "missing"}},
		{"file added", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string][]byte{"criu/extra.img": []byte("x")})
		}, ErrCorrupt, []string{"criu/extra.img", "not listed"}},
		{"listed file replaced by a symlink", func(t *testing.T, dir string) {
			p := filepath.Join(dir, "criu", "core-1.img")
			os.Remove(p)
			symlink(t, "/etc/passwd", p)
		}, ErrUnsafe, []string{"criu/core-1.img", "symlink"}},
		{"named pipe", func(t *testing.T, dir string) {
			if err := syscall.Mkfifo(filepath.Join(dir, "criu", "fifo"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, ErrUnsafe, []string{"criu/fifo", "named pipe"}},
		{"criu is a symlink", func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, CRIUDir), filepath.Join(dir, "..", "elsewhere")); err != nil {
				t.Fatal(err)
			}
			symlink(t, "../elsewhere", filepath.Join(dir, CRIUDir))
		}, ErrUnsafe, []string{CRIUDir, "symlink"}},
		{"manifest is a symlink", func(t *testing.T, dir string) {
			p := filepath.Join(dir, ManifestName)
			if err := os.Rename(p, filepath.Join(dir, "..", "m.json")); err != nil {
				t.Fatal(err)
			}
			symlink(t, "../m.json", p)
		}, ErrUnsafe, []string{ManifestName, "symlink"}},
		{"manifest with unknown version", func(t *testing.T, dir string) {
			editManifest(t, dir, func(s string) string {
				return strings.Replace(s, `"format_version": 1`, `"format_version": 7`, 1)
			})
		}, ErrUnsupportedVersion, []string{"format_version 7", "upgrade godwit"}},
		{"manifest without a version", func(t *testing.T, dir string) {
			editManifest(t, dir, func(s string) string {
				return strings.Replace(s, `"format_version": 1,`, ``, 1)
			})
		}, ErrUnsupportedVersion, []string{"format_version 0", "not a godwit checkpoint manifest"}},
		{"manifest not JSON", func(t *testing.T, dir string) {
			editManifest(t, dir, func(string) string { return "{" })
		}, ErrInvalidManifest, []string{ManifestName, "JSON"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, want := writeCheckpoint(t)
			tt.damage(t, dir)
			m, err := Verify(dir)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !reflect.DeepEqual(m, want) {
					t.Errorf("Verify returned a different manifest")
				}
				return
			}
			wantRefused(t, err, tt.want, tt.frags...)
		})
	}
}

func editManifest(t *testing.T, dir string, edit func(string) string) {
	t.Helper()
	p := filepath.Join(dir, ManifestName)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(edit(string(data))), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestValidate(t *testing.T) {
	valid := func() *Manifest {
		m := sampleManifest()
		m.FormatVersion = FormatVersion
		m.Files = []File{
			{Path: SpecName, Size: 3, Digest: layerBase},
			{Path: "criu/pages-1.img", Size: 4096, Digest: layerApp},
			{Path: RootfsDiffName, Size: 10, Digest: layerBase},
		}
		return m
	}
	tests := []struct {
		name string
		edit func(m *Manifest)
		want error
		frag string
	}{
		{"valid", func(*Manifest) {}, nil, ""},
		{"newer version", func(m *Manifest) { m.FormatVersion = 2 }, ErrUnsupportedVersion, "upgrade godwit"},
		{"no id", func(m *Manifest) { m.ID = "" }, ErrInvalidManifest, "id"},
		{"id with a slash", func(m *Manifest) { m.ID = "a/b" }, ErrInvalidManifest, "id"},
		{"no created time", func(m *Manifest) { m.Created = time.Time{} }, ErrInvalidManifest, "created"},
		{"bad container name", func(m *Manifest) { m.Container.Name = "-x" }, ErrInvalidManifest, "container name"},
		{"no image", func(m *Manifest) { m.Image.Name = "" }, ErrInvalidManifest, "image name"},
		{"bad layer digest", func(m *Manifest) { m.Image.Layers[0] = "sha256:abc" }, ErrInvalidManifest, "image layer"},
		{"unreadable CRIU version", func(m *Manifest) { m.Host.CRIUVersion = "new" }, ErrInvalidManifest, "CRIU version"},
		{"no kernel", func(m *Manifest) { m.Host.Kernel = "" }, ErrInvalidManifest, "kernel"},
		{"file escapes", func(m *Manifest) { m.Files[1].Path = "criu/../../x" }, ErrInvalidManifest, "escapes"},
		{"nested file", func(m *Manifest) { m.Files[1].Path = "criu/a/b" }, ErrInvalidManifest, "directly in criu/"},
		{"manifest listed", func(m *Manifest) { m.Files[1].Path = ManifestName }, ErrInvalidManifest, "itself"},
		{"duplicate file", func(m *Manifest) { m.Files[2] = m.Files[1] }, ErrInvalidManifest, "twice"},
		{"unsorted files", func(m *Manifest) { m.Files[0], m.Files[2] = m.Files[2], m.Files[0] }, ErrInvalidManifest, "sorted"},
		{"negative size", func(m *Manifest) { m.Files[1].Size = -1 }, ErrInvalidManifest, "negative size"},
		{"md5 digest", func(m *Manifest) { m.Files[1].Digest = "md5:d41d8cd98f00b204e9800998ecf8427e" }, ErrInvalidManifest, "digest"},
		{"spec not listed", func(m *Manifest) { m.Spec = "other.json" }, ErrInvalidManifest, "spec"},
		{"rootfs diff not listed", func(m *Manifest) { m.Files = m.Files[:2] }, ErrInvalidManifest, "rootfs diff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := valid()
			tt.edit(m)
			err := m.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			wantRefused(t, err, tt.want, tt.frag)
		})
	}
}

func TestRecordRestoreKeepsTheCheckpointValid(t *testing.T) {
	dir, m := writeCheckpoint(t)
	got, err := RecordRestore(dir, 1234, 56)
	if err != nil {
		t.Fatal(err)
	}
	if got.Stats.RestoreTimeUs != 1234 || got.Stats.PagesRestored != 56 {
		t.Errorf("stats = %+v, want the restore's", got.Stats)
	}
	verified, err := Verify(dir)
	if err != nil {
		t.Fatalf("Verify after RecordRestore: %v", err)
	}
	if verified.Stats.RestoreTimeUs != 1234 || len(verified.Files) != len(m.Files) || verified.Stats.FrozenTimeUs != m.Stats.FrozenTimeUs {
		t.Errorf("manifest after RecordRestore = %+v, want the same checkpoint with restore stats", verified)
	}
}
