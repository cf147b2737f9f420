package bundle

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// digestedFiles records the files checkFile digests while the test runs.
func digestedFiles(t *testing.T) func() []string {
	var mu sync.Mutex
	var paths []string
	testHookCheckFile = func(p string) {
		mu.Lock()
		defer mu.Unlock()
		paths = append(paths, p)
	}
	t.Cleanup(func() { testHookCheckFile = nil })
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(paths)
	}
}

// received is a checkpoint that arrived by Receive or ImportWithReceipt,
// with its receipt.
func received(t *testing.T, how string) (string, *Receipt) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "received")
	var receipt *Receipt
	var err error
	switch how {
	case "Receive":
		_, receipt, err = Receive(context.Background(), bytes.NewReader(send(t, writePendingCheckpoint(t, sampleFiles()))), dest)
	case "ImportWithReceipt":
		dir, _ := writeCheckpoint(t)
		_, receipt, err = ImportWithReceipt(context.Background(), bytes.NewReader(export(t, dir, ExportOptions{})), dest, ImportOptions{})
	default:
		t.Fatalf("no way %q", how)
	}
	if err != nil {
		t.Fatalf("%s: %v", how, err)
	}
	return dest, receipt
}

func TestReceiptVerify(t *testing.T) {
	pages := func(dir string) string { return filepath.Join(dir, "criu", "pages-1.img") }
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string)
		// digested are the files Verify must read again: those whose
		// stamp changed.
		digested []string
		want     error
		frags    []string
	}{
		{"intact: nothing is digested again", func(*testing.T, string) {}, nil, nil, nil},
		{"byte flipped in place", func(t *testing.T, dir string) {
			// Past the filesystem's clock tick, for kernels without
			// fine-grained timestamps (see fileStamp).
			time.Sleep(20 * time.Millisecond)
			f, err := os.OpenFile(pages(dir), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{0x5a}, 4096); err != nil {
				t.Fatal(err)
			}
		}, []string{"criu/pages-1.img"}, ErrCorrupt, []string{"criu/pages-1.img", "sha256 mismatch"}},
		{"file replaced by a copy with a flipped byte", func(t *testing.T, dir string) {
			data, err := os.ReadFile(pages(dir))
			if err != nil {
				t.Fatal(err)
			}
			tmp := pages(dir) + ".new"
			if err := os.WriteFile(tmp, flip(data, 100), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, pages(dir)); err != nil {
				t.Fatal(err)
			}
		}, []string{"criu/pages-1.img"}, ErrCorrupt, []string{"criu/pages-1.img", "sha256 mismatch"}},
		{"file touched, content unchanged", func(t *testing.T, dir string) {
			if err := os.Chtimes(pages(dir), time.Now(), time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
		}, []string{"criu/pages-1.img"}, nil, nil},
		{"file truncated", func(t *testing.T, dir string) {
			if err := os.Truncate(pages(dir), 10); err != nil {
				t.Fatal(err)
			}
		}, nil, ErrCorrupt, []string{"criu/pages-1.img", "size mismatch"}},
		{"file removed", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "criu", "core-1.img"))
		}, nil, ErrCorrupt, []string{"criu/core-1.img", "missing"}},
		{"file added", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string][]byte{"criu/extra.img": []byte("x")})
		}, nil, ErrCorrupt, []string{"criu/extra.img", "not listed"}},
		{"listed file replaced by a symlink", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "criu", "core-1.img"))
			symlink(t, "/etc/passwd", filepath.Join(dir, "criu", "core-1.img"))
		}, nil, ErrUnsafe, []string{"criu/core-1.img", "symlink"}},
		{"manifest edited", func(t *testing.T, dir string) {
			editManifest(t, dir, func(s string) string { return strings.Replace(s, `"counter"`, `"other"`, 1) })
		}, nil, ErrCorrupt, []string{ManifestName, "changed since the checkpoint was imported"}},
	}
	for _, how := range []string{"Receive", "ImportWithReceipt"} {
		for _, tt := range tests {
			t.Run(how+"/"+tt.name, func(t *testing.T) {
				dir, receipt := received(t, how)
				want, err := ReadManifest(dir)
				if err != nil {
					t.Fatal(err)
				}
				tt.damage(t, dir)
				digested := digestedFiles(t)
				m, err := receipt.Verify(dir)
				if tt.want != nil {
					wantRefused(t, err, tt.want, tt.frags...)
				} else if err != nil {
					t.Fatalf("Verify: %v", err)
				} else if !reflect.DeepEqual(m, want) {
					t.Errorf("Verify returned\n%+v\nwant\n%+v", m, want)
				}
				if got := digested(); !reflect.DeepEqual(got, tt.digested) {
					t.Errorf("Verify digested %v, want %v", got, tt.digested)
				}
			})
		}
	}
}

func TestNilReceiptVerifiesEveryFile(t *testing.T) {
	dir, m := writeCheckpoint(t)
	digested := digestedFiles(t)
	var receipt *Receipt
	if _, err := receipt.Verify(dir); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := digested(); len(got) != len(m.Files) {
		t.Errorf("a nil receipt digested %v, want every one of the %d files", got, len(m.Files))
	}
	flipFile(t, filepath.Join(dir, "criu", "pages-1.img"), 10)
	_, err := receipt.Verify(dir)
	wantRefused(t, err, ErrCorrupt, "criu/pages-1.img", "sha256 mismatch")
}

// TestReceiptIsForItsOwnImport: a receipt does not vouch for another
// checkpoint, even one with the same files.
func TestReceiptIsForItsOwnImport(t *testing.T) {
	_, receipt := received(t, "Receive")
	other, _ := received(t, "Receive")
	digested := digestedFiles(t)
	if _, err := receipt.Verify(other); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if got := digested(); len(got) == 0 {
		t.Errorf("another import's receipt spared digesting its files")
	}
}

// TestReceiptAdmit: files a receipt admitted (a stream migration's
// pages) pass its Verify unlisted and undigested while they stay as they
// were, and nothing else lets them pass.
func TestReceiptAdmit(t *testing.T) {
	admitted := map[string][]byte{
		"criu/pagemap-9.img": []byte("pagemap"),
		"criu/pages-9.img":   bytes.Repeat([]byte{7}, 8192),
	}
	admit := func(t *testing.T) (string, *Receipt) {
		t.Helper()
		dir, receipt := received(t, "Receive")
		writeFiles(t, dir, admitted)
		if err := receipt.Admit(dir, "criu/pagemap-9.img", "criu/pages-9.img"); err != nil {
			t.Fatalf("Admit: %v", err)
		}
		return dir, receipt
	}

	t.Run("intact: accepted, nothing digested", func(t *testing.T) {
		dir, receipt := admit(t)
		want, err := ReadManifest(dir)
		if err != nil {
			t.Fatal(err)
		}
		verifiesUndigested(t, receipt, dir, want)
	})
	t.Run("changed after it was admitted", func(t *testing.T) {
		dir, receipt := admit(t)
		time.Sleep(20 * time.Millisecond) // past a coarse clock tick (fileStamp)
		flipFile(t, filepath.Join(dir, "criu", "pages-9.img"), 100)
		_, err := receipt.Verify(dir)
		wantRefused(t, err, ErrCorrupt, "criu/pages-9.img", "changed since it was admitted")
	})
	t.Run("gone", func(t *testing.T) {
		dir, receipt := admit(t)
		os.Remove(filepath.Join(dir, "criu", "pagemap-9.img"))
		_, err := receipt.Verify(dir)
		wantRefused(t, err, ErrCorrupt, "criu/pagemap-9.img", "gone")
	})
	t.Run("without the receipt", func(t *testing.T) {
		dir, _ := admit(t)
		var none *Receipt
		_, err := none.Verify(dir)
		wantRefused(t, err, ErrCorrupt, "not listed")
	})
	t.Run("another import's receipt", func(t *testing.T) {
		dir, _ := admit(t)
		_, other := received(t, "Receive")
		_, err := other.Verify(dir)
		wantRefused(t, err, ErrCorrupt, "not listed")
	})
	t.Run("a listed file is not admitted", func(t *testing.T) {
		dir, receipt := received(t, "Receive")
		err := receipt.Admit(dir, "criu/pages-1.img")
		wantRefused(t, err, ErrInvalidManifest, "criu/pages-1.img", "listed")
	})
	t.Run("no receipt admits nothing", func(t *testing.T) {
		dir, _ := received(t, "Receive")
		writeFiles(t, dir, admitted)
		var none *Receipt
		if err := none.Admit(dir, "criu/pages-9.img"); err == nil {
			t.Error("a nil receipt admitted a file")
		}
	})
}

// verifiesUndigested checks that receipt verifies dir, returning want,
// without digesting any file again.
func verifiesUndigested(t *testing.T, receipt *Receipt, dir string, want *Manifest) {
	t.Helper()
	digested := digestedFiles(t)
	m, err := receipt.Verify(dir)
	if err != nil {
		t.Fatalf("Receipt.Verify: %v", err)
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("Receipt.Verify returned\n%+v\nwant\n%+v", m, want)
	}
	if got := digested(); len(got) != 0 {
		t.Errorf("Receipt.Verify digested %v, want nothing", got)
	}
}
