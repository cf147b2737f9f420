package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

func TestApplyPreservesMetadata(t *testing.T) {
	uid, gid := os.Getuid(), os.Getgid()
	if uid == 0 {
		uid, gid = 1234, 5678 // as root, show that owners are restored
	}
	owned := func(e tEntry) tEntry { e.uid, e.gid = uid, gid; return e }
	withMode := func(e tEntry, mode int64) tEntry { e.mode = mode; return e }
	withXattr := func(e tEntry) tEntry { e.xattrs = map[string]string{"user.godwit": "value"}; return e }
	longName := "deep/" + strings.Repeat("d", 120) + "/file"
	archive := buildTar(t,
		dir("./"),
		owned(dir("./etc/")),
		owned(reg("./etc/passwd", "root:x:0:0::/root:/bin/sh\n")),
		symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
		symlink("lib", "usr/lib"),
		withMode(reg("bin/tool", "#!/bin/sh\n"), 0o4755),
		hardlink("bin/tool2", "bin/tool"),
		withMode(tEntry{name: "run/fifo", typ: tar.TypeFifo}, 0o620),
		withXattr(reg("xattr", "x")),
		withMode(dir("ro/"), 0o555),
		reg("ro/inside", "in a read-only dir"),
		reg(longName, "long"),
		reg("empty", ""),
	)
	n, err := Check(context.Background(), bytes.NewReader(archive))
	must(t, err)
	if n != int64(len(archive)) {
		t.Errorf("Check read %d of %d bytes", n, len(archive))
	}
	root := t.TempDir()
	// Let an unprivileged run clean up the read-only directory.
	t.Cleanup(func() { _ = os.Chmod(filepath.Join(root, "ro"), 0o755) })
	must(t, Apply(context.Background(), root, bytes.NewReader(archive), WhiteoutDelete))

	got := snapshotTree(t, root)
	check := func(p string, typ uint32, mode uint32) node {
		t.Helper()
		n, ok := got[p]
		if !ok {
			t.Fatalf("%s missing after Apply", p)
		}
		if n.typ != typ || (typ != unix.S_IFLNK && n.mode != mode) {
			t.Errorf("%s: type %o mode %o, want type %o mode %o", p, n.typ, n.mode, typ, mode)
		}
		if n.mtime.Sec != testMtime.Unix() || n.mtime.Nsec != int64(testMtime.Nanosecond()) {
			t.Errorf("%s: mtime %d.%09d, want %v", p, n.mtime.Sec, n.mtime.Nsec, testMtime)
		}
		return n
	}
	if n := check("etc", unix.S_IFDIR, 0o755); int(n.uid) != uid || int(n.gid) != gid {
		t.Errorf("etc owned by %d:%d, want %d:%d", n.uid, n.gid, uid, gid)
	}
	if n := check("etc/passwd", unix.S_IFREG, 0o644); int(n.uid) != uid || n.size != 26 {
		t.Errorf("etc/passwd: %v", n)
	}
	if n := check("etc/localtime", unix.S_IFLNK, 0); n.link != "/usr/share/zoneinfo/UTC" {
		t.Errorf("etc/localtime -> %q", n.link)
	}
	if n := check("lib", unix.S_IFLNK, 0); n.link != "usr/lib" {
		t.Errorf("lib -> %q", n.link)
	}
	check("bin/tool", unix.S_IFREG, 0o4755)
	check("run/fifo", unix.S_IFIFO, 0o620)
	if n := check("xattr", unix.S_IFREG, 0o644); n.xattrs != "user.godwit=value;" {
		t.Errorf("xattr file has xattrs %q", n.xattrs)
	}
	check("ro", unix.S_IFDIR, 0o555)
	check("ro/inside", unix.S_IFREG, 0o644)
	check(longName, unix.S_IFREG, 0o644)
	check("empty", unix.S_IFREG, 0o644)

	var a, b unix.Stat_t
	must(t, unix.Lstat(filepath.Join(root, "bin/tool"), &a))
	must(t, unix.Lstat(filepath.Join(root, "bin/tool2"), &b))
	if a.Ino != b.Ino || a.Nlink != 2 {
		t.Errorf("bin/tool2 is not a hard link of bin/tool (inodes %d, %d; links %d)", a.Ino, b.Ino, a.Nlink)
	}
	// bin and run were never listed: they are made with the usual mode.
	if bin := got["bin"]; bin.typ != unix.S_IFDIR || bin.mode != implicitDirMode {
		t.Errorf("implicit bin: %v", bin)
	}
}

// whiteoutLayer removes gone and gonedir, makes opq opaque (after writing
// opq/new, which must survive), and whites out same/x, which the layer
// itself wrote and which must survive too.
func whiteoutLayer(t *testing.T) []byte {
	return buildTar(t,
		reg(".wh.gone", ""),
		reg(".wh.gonedir", ""),
		dir("opq/"),
		reg("opq/new", "new"),
		dir("opq/kept/"),
		reg("opq/.wh..wh..opq", ""),
		reg("same/x", "mine"),
		reg("same/.wh.x", ""),
		reg(".wh..wh.plnk", ""),
	)
}

// whiteoutLower is the parent tree whiteoutLayer applies to.
func whiteoutLower(t *testing.T, dir string) {
	writeFile(t, filepath.Join(dir, "keep"), "keep", 0o644)
	writeFile(t, filepath.Join(dir, "gone"), "gone", 0o644)
	writeFile(t, filepath.Join(dir, "gonedir/sub/f"), "f", 0o644)
	writeFile(t, filepath.Join(dir, "opq/old"), "old", 0o644)
	writeFile(t, filepath.Join(dir, "opq/kept/old"), "old", 0o644)
	writeFile(t, filepath.Join(dir, "same/y"), "y", 0o644)
}

// whiteoutResult is what the merged tree must hold.
var whiteoutResult = []string{"keep", "opq", "opq/kept", "opq/new", "same", "same/x", "same/y"}

func listTree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	for p := range snapshotTree(t, root) {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func TestApplyWhiteoutDelete(t *testing.T) {
	root := t.TempDir()
	whiteoutLower(t, root)
	must(t, Apply(context.Background(), root, bytes.NewReader(whiteoutLayer(t)), WhiteoutDelete))
	if got := listTree(t, root); !slices.Equal(got, whiteoutResult) {
		t.Errorf("tree after whiteouts = %q, want %q", got, whiteoutResult)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "same/x")); string(b) != "mine" {
		t.Errorf("same/x = %q: a whiteout removed its own layer's file", b)
	}

	// A whiteout for something the parent never had changes nothing, and
	// does not create its directory.
	must(t, Apply(context.Background(), root, bytes.NewReader(buildTar(t, reg("nowhere/.wh.y", ""))), WhiteoutDelete))
	if got := listTree(t, root); !slices.Equal(got, whiteoutResult) {
		t.Errorf("tree after a whiteout of nothing = %q, want %q", got, whiteoutResult)
	}
}

func TestApplyWhiteoutOverlay(t *testing.T) {
	requireOverlay(t)
	tmp := t.TempDir()
	lower, upper := filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper")
	whiteoutLower(t, lower)
	must(t, os.Mkdir(upper, 0o755))
	must(t, Apply(context.Background(), upper, bytes.NewReader(whiteoutLayer(t)), WhiteoutOverlay))

	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(upper, "gone"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("upper/gone is mode %o rdev %d, want a 0/0 character device", st.Mode, st.Rdev)
	}
	x, err := readXattrs(filepath.Join(upper, "opq"))
	must(t, err)
	if x[overlayOpaqueXattr] != overlayOpaqueValue {
		t.Errorf("upper/opq xattrs %v, want %s=%s", x, overlayOpaqueXattr, overlayOpaqueValue)
	}

	merged := filepath.Join(tmp, "merged")
	mountOverlay(t, lower, upper, filepath.Join(tmp, "work"), merged)
	if got := listTree(t, merged); !slices.Equal(got, whiteoutResult) {
		t.Errorf("merged tree = %q, want %q", got, whiteoutResult)
	}
}

// changeTree makes the same set of changes whether dir is an overlay's
// merged view or a plain copy: content, metadata, deletions, type changes,
// links and a replaced directory.
func changeTree(t *testing.T, dir string, chown bool) {
	p := func(s string) string { return filepath.Join(dir, s) }
	f, err := os.OpenFile(p("mod"), os.O_APPEND|os.O_WRONLY, 0)
	must(t, err)
	_, err = f.WriteString(" appended")
	must(t, err)
	must(t, f.Close())
	writeFile(t, p("new/dir/file"), "new file", 0o640)
	must(t, os.Remove(p("del")))
	must(t, os.RemoveAll(p("deldir")))
	// A directory removed and made again hides what the parent had in it.
	must(t, os.RemoveAll(p("opq")))
	writeFile(t, p("opq/fresh"), "fresh", 0o644)
	must(t, os.Chmod(p("chm"), 0o600))
	if chown {
		must(t, os.Lchown(p("own"), 2000, 3000))
	}
	must(t, os.Symlink("/etc/hostname", p("newlink")))
	writeFile(t, p("hl1"), "linked", 0o644)
	must(t, os.Link(p("hl1"), p("hl2")))
	must(t, unix.Lsetxattr(p("xat"), "user.k", []byte("v"), 0))
	must(t, os.Remove(p("f2d")))
	writeFile(t, p("f2d/x"), "was a file", 0o644)
	must(t, os.RemoveAll(p("d2f")))
	writeFile(t, p("d2f"), "was a dir", 0o644)
	must(t, unix.Mkfifo(p("pipe"), 0o644))
	writeFile(t, p("suid"), "suid", 0o4755)
	writeFile(t, p("sub/"+strings.Repeat("n", 150)), "long name", 0o644)
	must(t, os.Rename(p("ren"), p("ren2")))
	must(t, os.Remove(p("sub/gone")))
}

func populateLower(t *testing.T, dir string, chown bool) {
	p := func(s string) string { return filepath.Join(dir, s) }
	for _, f := range []string{"mod", "del", "deldir/a", "deldir/b/c", "opq/old", "opq/sub/old", "chm", "own", "xat", "f2d", "d2f/x", "ren", "sub/gone", "sub/unchanged", "unchanged"} {
		writeFile(t, p(f), "content of "+f, 0o644)
	}
	must(t, os.Symlink("unchanged", p("oldlink")))
	if chown {
		must(t, os.Lchown(p("own"), 1000, 1000))
	}
}

func TestWriteOverlayDiffRoundTrip(t *testing.T) {
	requireOverlay(t)
	ctx := context.Background()
	tmp := t.TempDir()
	lower, upper, merged := filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "merged")
	populateLower(t, lower, true)
	mountOverlay(t, lower, upper, filepath.Join(tmp, "work"), merged)
	changeTree(t, merged, true)
	want := snapshotTree(t, merged)

	var diff bytes.Buffer
	must(t, WriteOverlayDiff(ctx, upper, &diff))
	assertDiffMembers(t, diff.Bytes(),
		[]string{".wh.del", ".wh.deldir", "opq/", "opq/.wh..wh..opq", "sub/.wh.gone", ".wh.ren", "ren2", "hl2"},
		[]string{"unchanged", "sub/unchanged", "oldlink"})

	t.Run("apply onto a copy of the lower dir", func(t *testing.T) {
		applied := filepath.Join(tmp, "applied")
		copyTree(t, lower, applied)
		must(t, Apply(ctx, applied, bytes.NewReader(diff.Bytes()), WhiteoutDelete))
		assertSameTree(t, snapshotTree(t, applied), want)
		assertHardlinked(t, applied, "hl1", "hl2")
	})
	t.Run("apply as a new overlay upper", func(t *testing.T) {
		upper2, merged2 := filepath.Join(tmp, "upper2"), filepath.Join(tmp, "merged2")
		must(t, os.Mkdir(upper2, 0o755))
		must(t, Apply(ctx, upper2, bytes.NewReader(diff.Bytes()), WhiteoutOverlay))
		mountOverlay(t, lower, upper2, filepath.Join(tmp, "work2"), merged2)
		assertSameTree(t, snapshotTree(t, merged2), want)
	})
}

func TestWriteTreeDiffRoundTrip(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	parent, child, applied := filepath.Join(tmp, "parent"), filepath.Join(tmp, "child"), filepath.Join(tmp, "applied")
	chown := os.Geteuid() == 0
	populateLower(t, parent, chown)
	copyTree(t, parent, child)
	changeTree(t, child, chown)

	var diff bytes.Buffer
	must(t, WriteTreeDiff(ctx, parent, child, &diff))
	// cp -a gave every file a new ctime: unchanged ones were compared byte
	// for byte and left out.
	assertDiffMembers(t, diff.Bytes(),
		[]string{".wh.del", ".wh.deldir", "opq/.wh.old", "opq/.wh.sub", "sub/.wh.gone", ".wh.ren", "ren2", "mod", "chm", "xat", "hl2"},
		[]string{"unchanged", "sub/unchanged", "oldlink"})

	copyTree(t, parent, applied)
	must(t, Apply(ctx, applied, bytes.NewReader(diff.Bytes()), WhiteoutDelete))
	assertSameTree(t, snapshotTree(t, applied), snapshotTree(t, child))
	assertHardlinked(t, applied, "hl1", "hl2")
}

func assertHardlinked(t *testing.T, dir, a, b string) {
	t.Helper()
	var sa, sb unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dir, a), &sa))
	must(t, unix.Lstat(filepath.Join(dir, b), &sb))
	if sa.Ino != sb.Ino {
		t.Errorf("%s and %s are not hard links of one file", a, b)
	}
}

func TestDecompress(t *testing.T) {
	plain := buildTar(t, reg("a", strings.Repeat("godwit ", 1000)))
	var gz, zs bytes.Buffer
	gw := gzip.NewWriter(&gz)
	_, err := gw.Write(plain)
	must(t, err)
	must(t, gw.Close())
	zw, err := zstd.NewWriter(&zs)
	must(t, err)
	_, err = zw.Write(plain)
	must(t, err)
	must(t, zw.Close())

	cases := []struct {
		name  string
		input []byte
		want  Compression
	}{
		{"plain tar", plain, None},
		{"gzip", gz.Bytes(), Gzip},
		{"zstd", zs.Bytes(), Zstd},
		{"tiny plain stream", []byte("ab"), None},
		{"empty stream", nil, None},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc, c, err := Decompress(bytes.NewReader(tc.input))
			must(t, err)
			defer rc.Close()
			if c != tc.want {
				t.Errorf("compression %v, want %v", c, tc.want)
			}
			got, err := io.ReadAll(rc)
			must(t, err)
			want := tc.input
			if c != None {
				want = plain
			}
			if !bytes.Equal(got, want) {
				t.Errorf("decompressed %d bytes, want %d", len(got), len(want))
			}
		})
	}
	t.Run("truncated gzip is refused by Check", func(t *testing.T) {
		rc, _, err := Decompress(bytes.NewReader(gz.Bytes()[:gz.Len()/2]))
		must(t, err)
		defer rc.Close()
		_, err = Check(context.Background(), rc)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("Check of a cut gzip stream = %v, want ErrTruncated", err)
		}
	})
	if got := Zstd.String(); got != "zstd" {
		t.Errorf("Zstd.String() = %q", got)
	}
}
