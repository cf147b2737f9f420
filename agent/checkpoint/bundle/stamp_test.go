package bundle

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestWriteManifestWithReceipt(t *testing.T) {
	tests := []struct {
		name string
		// damage runs between WriteManifestWithReceipt and Verify.
		damage   func(t *testing.T, dir string)
		digested []string
		want     error
	}{
		{"untouched: Verify digests nothing", func(*testing.T, string) {}, nil, nil},
		{"a byte flipped in place after the manifest", func(t *testing.T, dir string) {
			time.Sleep(20 * time.Millisecond) // past a coarse clock's tick (see fileStamp)
			f, err := os.OpenFile(filepath.Join(dir, "criu", "pages-1.img"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt([]byte{0x5a}, 10); err != nil {
				t.Fatal(err)
			}
		}, []string{"criu/pages-1.img"}, ErrCorrupt},
		{"a file added after the manifest", func(t *testing.T, dir string) {
			writeFiles(t, dir, map[string][]byte{"criu/pages-2.img": []byte("x")})
		}, nil, ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ckpt")
			writeFiles(t, dir, sampleFiles())
			receipt, err := WriteManifestWithReceipt(dir, sampleManifest())
			if err != nil {
				t.Fatalf("WriteManifestWithReceipt: %v", err)
			}
			// The manifest is WriteManifest's, digests and all.
			plain := filepath.Join(t.TempDir(), "plain")
			writeFiles(t, plain, sampleFiles())
			want := sampleManifest()
			if err := WriteManifest(plain, want); err != nil {
				t.Fatal(err)
			}
			got, err := Verify(dir)
			if err != nil {
				t.Fatalf("Verify of the manifest written with a receipt: %v", err)
			}
			if !reflect.DeepEqual(got.Files, want.Files) {
				t.Errorf("files listed\n%+v\nwant WriteManifest's\n%+v", got.Files, want.Files)
			}
			tt.damage(t, dir)
			digested := digestedFiles(t)
			_, err = receipt.Verify(dir)
			if tt.want != nil {
				wantRefused(t, err, tt.want)
			} else if err != nil {
				t.Fatalf("receipt.Verify: %v", err)
			}
			if got := digested(); !reflect.DeepEqual(got, tt.digested) {
				t.Errorf("receipt.Verify digested %v, want %v", got, tt.digested)
			}
		})
	}
}

func TestReceiptLink(t *testing.T) {
	criuFiles := func(m *Manifest) []string {
		var out []string
		for _, f := range m.Files {
			if strings.HasPrefix(f.Path, CRIUDir+"/") {
				out = append(out, f.Path)
			}
		}
		return out
	}
	tests := []struct {
		name string
		// link links dir's CRIU images into dst.
		link func(t *testing.T, r *Receipt, dir, dst string)
		// digested: nil for none, "criu" for every CRIU image, else the
		// one file.
		digested string
		want     error
	}{
		{"Link keeps the receipt good", func(t *testing.T, r *Receipt, dir, dst string) {
			if err := r.Link(dir, CRIUDir, dst); err != nil {
				t.Fatal(err)
			}
		}, "", nil},
		{"plain links make Verify digest every image (the pass Link spares)", func(t *testing.T, r *Receipt, dir, dst string) {
			if err := os.MkdirAll(dst, 0o700); err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(filepath.Join(dir, CRIUDir))
			for _, e := range entries {
				if err := os.Link(filepath.Join(dir, CRIUDir, e.Name()), filepath.Join(dst, e.Name())); err != nil {
					t.Fatal(err)
				}
			}
		}, "criu", nil},
		{"a file changed before the link is still digested", func(t *testing.T, r *Receipt, dir, dst string) {
			time.Sleep(20 * time.Millisecond)
			f, err := os.OpenFile(filepath.Join(dir, CRIUDir, "pages-1.img"), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte{0x5a}, 10); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := r.Link(dir, CRIUDir, dst); err != nil {
				t.Fatal(err)
			}
		}, "criu/pages-1.img", ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, receipt := received(t, "Receive")
			m, err := ReadManifest(dir)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(t.TempDir(), "images")
			tt.link(t, receipt, dir, dst)
			digested := digestedFiles(t)
			_, err = receipt.Verify(dir)
			if tt.want != nil {
				wantRefused(t, err, tt.want, "criu/pages-1.img")
			} else if err != nil {
				t.Fatalf("Verify after linking: %v", err)
			}
			var want []string
			switch tt.digested {
			case "":
			case "criu":
				want = criuFiles(m)
			default:
				want = []string{tt.digested}
			}
			got := digested()
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("Verify digested %v, want %v", got, want)
			}
			// The links outlive the checkpoint, as the lazy-pages daemon needs.
			orig := readTree(t, filepath.Join(dir, CRIUDir))
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if got := readTree(t, dst); !reflect.DeepEqual(got, orig) {
				t.Errorf("linked images differ from the checkpoint's")
			}
		})
	}
}

func TestNilReceiptLinks(t *testing.T) {
	dir, _ := writeCheckpoint(t)
	dst := filepath.Join(t.TempDir(), "images")
	var r *Receipt
	if err := r.Link(dir, CRIUDir, dst); err != nil {
		t.Fatal(err)
	}
	if got, want := readTree(t, dst), readTree(t, filepath.Join(dir, CRIUDir)); !reflect.DeepEqual(got, want) {
		t.Errorf("linked %d files, want the %d CRIU images", len(got), len(want))
	}
}
