package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hostileHostPath is where an absolute member would land if extraction
// went wrong; the test checks the host does not get it.
const hostileHostPath = "/etc/godwit-archive-hostile-test"

func hostileCases(t *testing.T) []struct {
	name     string
	archive  []byte
	wantErr  error
	wantName string
} {
	big := strings.Repeat("x", 4096)
	full := buildTar(t, reg("big", big))
	// Header, then 1000 of the 4096 data bytes.
	cut := full[:blockSize*2+1000]
	rng := rand.New(rand.NewPCG(1, 2))
	garbage := make([]byte, 4096)
	for i := range garbage {
		garbage[i] = byte(rng.UintN(256))
	}
	return []struct {
		name     string
		archive  []byte
		wantErr  error
		wantName string
	}{
		{"dotdot", buildTar(t, reg("../x", "evil")), ErrUnsafe, "../x"},
		{"absolute path", buildTar(t, reg(hostileHostPath, "evil")), ErrUnsafe, hostileHostPath},
		{"dotdot through a directory", buildTar(t, dir("a/"), reg("a/../../x", "evil")), ErrUnsafe, "a/../../x"},
		{"relative symlink climbing out, then a member through it",
			buildTar(t, symlink("l", "../../etc"), reg("l/passwd", "evil")), ErrUnsafe, "l"},
		{"nested relative symlink climbing out",
			buildTar(t, dir("a/"), symlink("a/l", "../../x")), ErrUnsafe, "a/l"},
		{"absolute symlink, then a member through it",
			buildTar(t, symlink("l", "/"), reg("l/etc/x", "evil")), ErrUnsafe, "l/etc/x"},
		{"hard link to an absolute path", buildTar(t, hardlink("h", "/etc/passwd")), ErrUnsafe, "h"},
		{"hard link climbing out", buildTar(t, hardlink("h", "../x")), ErrUnsafe, "h"},
		{"hard link to no earlier member",
			buildTar(t, hardlink("h", "later"), reg("later", "x")), ErrUnsafe, "h"},
		{"hard link through an archive symlink",
			buildTar(t, symlink("l", "/etc"), hardlink("h", "l/passwd")), ErrUnsafe, "h"},
		{"hard link to a directory", buildTar(t, dir("d/"), hardlink("h", "d/")), ErrUnsafe, "h"},
		{"character device",
			buildTar(t, tEntry{name: "dev/null", typ: tar.TypeChar, major: 1, minor: 3, mode: 0o666}), ErrUnsafe, "dev/null"},
		{"block device",
			buildTar(t, tEntry{name: "sda", typ: tar.TypeBlock, major: 8, minor: 0, mode: 0o660}), ErrUnsafe, "sda"},
		{"overlay xattr",
			buildTar(t, tEntry{name: "d/", typ: tar.TypeDir, mode: 0o755,
				xattrs: map[string]string{"trusted.overlay.redirect": "/etc"}}), ErrUnsafe, "d/"},
		{"whiteout naming the parent", buildTar(t, reg("a/.wh..", "")), ErrUnsafe, "a/.wh.."},
		{"whiteout that is a symlink", buildTar(t, symlink(".wh.x", "y")), ErrUnsafe, ".wh.x"},
		{"root that is a file", buildTar(t, reg(".", "")), ErrUnsafe, "."},
		{"file under a file", buildTar(t, reg("f", "x"), reg("f/x", "y")), ErrUnsupported, "f/x"},
		{"truncated member", cut, ErrTruncated, "big"},
		{"cut between members",
			buildTarEnd(t, false, reg("first", "1"), reg("last", "2")), ErrTruncated, "last"},
		{"garbage", garbage, ErrTruncated, ""},
		{"short garbage", []byte("this is not a tar archive"), ErrTruncated, ""},
		{"empty stream", nil, ErrTruncated, ""},
	}
}

func assertMemberError(t *testing.T, err, wantErr error, wantName string) {
	t.Helper()
	if !errors.Is(err, wantErr) {
		t.Fatalf("error = %v, want %v", err, wantErr)
	}
	var me *MemberError
	if !errors.As(err, &me) {
		t.Fatalf("error %v is not a *MemberError", err)
	}
	if me.Name != wantName {
		t.Errorf("error names member %q, want %q (%v)", me.Name, wantName, err)
	}
	if wantName != "" && !strings.Contains(err.Error(), `"`+wantName+`"`) {
		t.Errorf("message %q does not name %q", err, wantName)
	}
}

func TestCheckRefusesHostileArchives(t *testing.T) {
	for _, tc := range hostileCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(context.Background(), bytes.NewReader(tc.archive))
			assertMemberError(t, err, tc.wantErr, tc.wantName)
		})
	}
}

// applyRoot makes an extraction root two levels below a temp dir, so that
// an escape would land in the temp dir where the test can see it.
func applyRoot(t *testing.T) (tmp, root string) {
	tmp = t.TempDir()
	root = filepath.Join(tmp, "a", "b", "root")
	must(t, os.MkdirAll(root, 0o755))
	must(t, os.Mkdir(filepath.Join(tmp, "outside"), 0o755))
	return tmp, root
}

// assertNothingOutside fails if anything exists under tmp other than the
// root, its parents, and what the test put in "outside".
func assertNothingOutside(t *testing.T, tmp, root string, outside ...string) {
	t.Helper()
	allowed := map[string]bool{"a": true, "a/b": true, "outside": true}
	for _, o := range outside {
		allowed[filepath.Join("outside", o)] = true
	}
	err := filepath.WalkDir(tmp, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == tmp || p == root || strings.HasPrefix(p, root+"/") {
			return nil
		}
		rel, _ := filepath.Rel(tmp, p)
		if !allowed[rel] {
			t.Errorf("extraction wrote %s outside its root", p)
		}
		return nil
	})
	must(t, err)
	if _, err := os.Lstat(hostileHostPath); err == nil {
		t.Errorf("extraction wrote %s on the host", hostileHostPath)
	}
}

func TestApplyRefusesHostileArchives(t *testing.T) {
	for _, tc := range hostileCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			tmp, root := applyRoot(t)
			err := Apply(context.Background(), root, bytes.NewReader(tc.archive), WhiteoutDelete)
			assertMemberError(t, err, tc.wantErr, tc.wantName)
			assertNothingOutside(t, tmp, root)
			if rel, why := cleanName(tc.wantName); why == "" && rel != "" {
				if _, err := os.Lstat(filepath.Join(root, rel)); err == nil && tc.wantErr == ErrUnsafe {
					t.Errorf("refused member %q exists in the root", tc.wantName)
				}
			}
		})
	}
}

// TestApplyDoesNotFollowSymlinksOnDisk covers what Check cannot see: a
// symlink already in the target (from a parent layer).
func TestApplyDoesNotFollowSymlinksOnDisk(t *testing.T) {
	cases := []struct {
		name     string
		archive  func(t *testing.T) []byte
		wantErr  error
		wantName string
	}{
		{"member through an existing symlink", func(t *testing.T) []byte { return buildTar(t, reg("l/x", "evil")) }, ErrUnsafe, "l/x"},
		{"directory through an existing symlink", func(t *testing.T) []byte { return buildTar(t, dir("l/sub/")) }, ErrUnsafe, "l/sub/"},
		{"whiteout through an existing symlink", func(t *testing.T) []byte { return buildTar(t, reg("l/.wh.keep", "")) }, ErrUnsafe, "l/.wh.keep"},
		{"opaque whiteout through an existing symlink", func(t *testing.T) []byte { return buildTar(t, reg("l/.wh..wh..opq", "")) }, ErrUnsafe, "l/.wh..wh..opq"},
		{"existing symlink is replaced, not followed", func(t *testing.T) []byte { return buildTar(t, reg("f", "new")) }, nil, ""},
		{"existing symlink replaced by a directory", func(t *testing.T) []byte { return buildTar(t, dir("l/"), reg("l/x", "new")) }, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tmp, root := applyRoot(t)
			outside := filepath.Join(tmp, "outside")
			writeFile(t, filepath.Join(outside, "keep"), "keep", 0o644)
			must(t, os.Symlink(outside, filepath.Join(root, "l")))
			must(t, os.Symlink(filepath.Join(outside, "f"), filepath.Join(root, "f")))
			archive := tc.archive(t)

			if _, err := Check(context.Background(), bytes.NewReader(archive)); err != nil {
				t.Fatalf("Check: %v (the archive alone is harmless)", err)
			}
			err := Apply(context.Background(), root, bytes.NewReader(archive), WhiteoutDelete)
			if tc.wantErr == nil {
				must(t, err)
			} else {
				assertMemberError(t, err, tc.wantErr, tc.wantName)
			}
			assertNothingOutside(t, tmp, root, "keep")
			if b, err := os.ReadFile(filepath.Join(outside, "keep")); err != nil || string(b) != "keep" {
				t.Errorf("file outside the root changed: %q, %v", b, err)
			}
		})
	}
}

func TestCheckCountsWholeStream(t *testing.T) {
	archive := buildTar(t, dir("./"), reg("./a", "hello"))
	// tar writers pad to a record; the padding must be read too, so that a
	// caller hashing the stream hashes all of it.
	padded := append(append([]byte{}, archive...), make([]byte, 10240-len(archive)%10240)...)
	n, err := Check(context.Background(), bytes.NewReader(padded))
	must(t, err)
	if n != int64(len(padded)) {
		t.Errorf("Check read %d bytes, want %d", n, len(padded))
	}
}
