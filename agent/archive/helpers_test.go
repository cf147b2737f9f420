package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/testutil"
)

// requireOverlay needs root and overlayfs in the kernel.
func requireOverlay(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil || !bytes.Contains(b, []byte("\toverlay\n")) {
		testutil.Missing(t, "needs overlayfs in the kernel (/proc/filesystems)")
	}
}

// testMtime is a fixed time with nanoseconds, to show they survive.
var testMtime = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

// tEntry is one member of an archive built by a test.
type tEntry struct {
	name     string
	typ      byte
	body     string
	link     string
	mode     int64
	uid, gid int
	major    int64
	minor    int64
	xattrs   map[string]string
}

func reg(name, body string) tEntry {
	return tEntry{name: name, typ: tar.TypeReg, body: body, mode: 0o644}
}
func dir(name string) tEntry { return tEntry{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) tEntry {
	return tEntry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) tEntry {
	return tEntry{name: name, typ: tar.TypeLink, link: target, mode: 0o644}
}

// buildTar writes entries as a PAX tar; end false leaves out the
// end-of-archive marker.
func buildTarEnd(t *testing.T, end bool, entries ...tEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, ModTime: testMtime, Format: tar.FormatPAX,
			Devmajor: e.major, Devminor: e.minor,
		}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords[paxXattrPrefix+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("write header %s: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatalf("write body %s: %v", e.name, err)
		}
	}
	if end {
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
	} else if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func buildTar(t *testing.T, entries ...tEntry) []byte {
	t.Helper()
	return buildTarEnd(t, true, entries...)
}

// memberNames lists the member names of a tar.
func memberNames(t *testing.T, b []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("read diff tar: %v", err)
		}
		names = append(names, hdr.Name)
	}
}

// assertDiffMembers checks that a diff carries every name in want and none
// in unchanged, and that Check accepts it.
func assertDiffMembers(t *testing.T, diff []byte, want, unchanged []string) {
	t.Helper()
	names := memberNames(t, diff)
	for _, n := range want {
		if !slices.Contains(names, n) {
			t.Errorf("diff lacks %q; has %q", n, names)
		}
	}
	for _, n := range unchanged {
		if slices.Contains(names, n) {
			t.Errorf("diff carries unchanged %q", n)
		}
	}
	if _, err := Check(t.Context(), bytes.NewReader(diff)); err != nil {
		t.Fatalf("Check refuses the diff: %v", err)
	}
}

// node is what a user could observe of one path in a tree.
type node struct {
	typ      uint32
	mode     uint32
	uid, gid uint32
	size     int64
	sum      string // sha256 of a regular file's bytes
	link     string
	xattrs   string
	mtime    unix.Timespec
	rdev     uint64
}

func (n node) String() string {
	return fmt.Sprintf("type=%o mode=%o owner=%d:%d size=%d sum=%.12s link=%q xattrs=%q mtime=%d.%09d rdev=%d",
		n.typ, n.mode, n.uid, n.gid, n.size, n.sum, n.link, n.xattrs, n.mtime.Sec, n.mtime.Nsec, n.rdev)
}

// snapshotTree records every path under root (the root's own times and
// mode excluded: no diff carries them), without following symlinks.
func snapshotTree(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		n := node{typ: st.Mode & unix.S_IFMT, mode: st.Mode & permMask, uid: st.Uid, gid: st.Gid, mtime: st.Mtim, rdev: st.Rdev}
		x, err := readXattrs(p)
		if err != nil {
			return err
		}
		x = portableXattrs(x)
		for _, k := range slices.Sorted(maps.Keys(x)) {
			n.xattrs += k + "=" + x[k] + ";"
		}
		switch n.typ {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			n.size, n.sum = int64(len(b)), hex.EncodeToString(sum[:])
		case unix.S_IFLNK:
			if n.link, err = os.Readlink(p); err != nil {
				return err
			}
			n.mode = 0 // symlink modes mean nothing
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	return out
}

// assertSameTree reports every path that differs between two snapshots.
func assertSameTree(t *testing.T, got, want map[string]node) {
	t.Helper()
	var diffs []string
	for _, p := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %s (want %v)", p, want[p]))
		case g != want[p]:
			diffs = append(diffs, fmt.Sprintf("%s:\n   got %v\n  want %v", p, g, want[p]))
		}
	}
	for _, p := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %s (%v)", p, got[p]))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("trees differ:\n%s", strings.Join(diffs, "\n"))
	}
}

// copyTree copies src to dst keeping owners, modes, times, links and xattrs.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	testutil.RequireTools(t, "cp")
	out, err := exec.Command("cp", "-a", "--", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cp -a %s %s: %v: %s", src, dst, err, out)
	}
}

// mountOverlay mounts lower+upper on merged and unmounts it at cleanup.
// redirect_dir, index and metacopy are off, as godwit's snapshotter mounts.
func mountOverlay(t *testing.T, lower, upper, work, merged string) {
	t.Helper()
	for _, d := range []string{upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=off,index=off,metacopy=off", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		testutil.Missing(t, fmt.Sprintf("needs an overlay mount (%v)", err))
	}
	t.Cleanup(func() {
		if err := unix.Unmount(merged, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount %s: %v", merged, err)
		}
	})
}

func writeFile(t *testing.T, p, body string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
