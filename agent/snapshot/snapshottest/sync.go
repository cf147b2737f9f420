package snapshottest

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/archive"
	"github.com/godwit/godwit/agent/snapshot"
)

// Syncing an active snapshot to another snapshotter while it is in use
// (Mark, Changes, Receive, ReceiveChanges), as a live migration does.

// syncBigSize is a file written long before the mark: Changes must not
// send it again.
const syncBigSize = 1 << 20

// syncBefore is what the container writes before the mark, on top of
// baseTree.
func syncBefore(t *testing.T, d string) {
	mkdir(t, filepath.Join(d, "app"), 0o755)
	writeFile(t, filepath.Join(d, "app", "data.txt"), "v1\n", 0o644)
	writeFile(t, filepath.Join(d, "app", "keep.txt"), "keep\n", 0o644)
	writeFile(t, filepath.Join(d, "app", "del.txt"), "delete me\n", 0o644)
	writeFile(t, filepath.Join(d, "app", "same-size"), "AAAA", 0o644)
	writeFile(t, filepath.Join(d, "app", "mode"), "mode\n", 0o644)
	mkdir(t, filepath.Join(d, "app", "olddir", "sub"), 0o755)
	writeFile(t, filepath.Join(d, "app", "olddir", "a"), "a\n", 0o644)
	writeFile(t, filepath.Join(d, "app", "olddir", "sub", "b"), "b\n", 0o644)
	mkdir(t, filepath.Join(d, "app", "todelete"), 0o700)
	writeFile(t, filepath.Join(d, "app", "todelete", "x"), "x\n", 0o644)
	mkdir(t, filepath.Join(d, "app", "dirfile"), 0o755)
	writeFile(t, filepath.Join(d, "app", "dirfile", "child"), "child\n", 0o644)
	writeFile(t, filepath.Join(d, "app", "filedir"), "file\n", 0o644)
	symlink(t, "data.txt", filepath.Join(d, "app", "link"))
	writeFile(t, filepath.Join(d, "app", "h1"), "linked\n", 0o644)
	must(t, os.Link(filepath.Join(d, "app", "h1"), filepath.Join(d, "app", "h2")))
	must(t, unix.Mkfifo(filepath.Join(d, "app", "pipe"), 0o600))
	// Changes to the parent's files: copy-ups (tree/keep brings its
	// directory up too, which is replaced after the mark) and a deletion.
	writeFile(t, filepath.Join(d, "a.txt"), "alpha, changed\n", 0o644)
	writeFile(t, filepath.Join(d, "tree", "keep"), "keep, changed\n", 0o644)
	must(t, os.Remove(filepath.Join(d, "dir", "b.txt")))
}

// syncAfter is what the container writes after the mark, until it is
// frozen: every kind of change.
func syncAfter(t *testing.T, d string) {
	app := func(p ...string) string { return filepath.Join(append([]string{d, "app"}, p...)...) }
	writeFile(t, app("data.txt"), "v2, longer\n", 0o644)
	must(t, os.Remove(app("del.txt")))
	writeFile(t, app("same-size"), "BBBB", 0o644)
	must(t, os.Chmod(app("mode"), 0o600))
	must(t, os.Lchown(app("keep.txt"), 1234, 5678))
	// A directory replaced: its old entries must not come back.
	must(t, os.RemoveAll(app("olddir")))
	mkdir(t, app("olddir"), 0o750)
	writeFile(t, app("olddir", "new"), "new\n", 0o644)
	must(t, os.RemoveAll(app("todelete")))
	must(t, os.RemoveAll(app("dirfile")))
	writeFile(t, app("dirfile"), "now a file\n", 0o644)
	must(t, os.Remove(app("filedir")))
	mkdir(t, app("filedir"), 0o755)
	writeFile(t, app("filedir", "inner"), "inner\n", 0o644)
	must(t, os.Remove(app("link")))
	symlink(t, "keep.txt", app("link"))
	writeFile(t, app("h1"), "linked, changed\n", 0o644)
	must(t, os.Link(app("keep.txt"), app("h3")))
	writeFile(t, app("new.txt"), "new\n", 0o640)
	mkdir(t, app("empty"), 0o700)
	// The parent's files: a directory replaced (opaque on overlay), a
	// file replaced by a directory, deletions, a deleted file back.
	must(t, os.RemoveAll(filepath.Join(d, "tree")))
	mkdir(t, filepath.Join(d, "tree"), 0o755)
	writeFile(t, filepath.Join(d, "tree", "fresh"), "fresh\n", 0o644)
	must(t, os.Remove(filepath.Join(d, "exec.sh")))
	mkdir(t, filepath.Join(d, "exec.sh"), 0o755)
	writeFile(t, filepath.Join(d, "exec.sh", "inner"), "inner\n", 0o644)
	must(t, os.Remove(filepath.Join(d, "link")))
	must(t, os.RemoveAll(filepath.Join(d, "dir", "sub")))
	writeFile(t, filepath.Join(d, "dir", "b.txt"), "bravo, back\n", 0o600)
}

// buildBase commits baseTree as key on sn, through a mount.
func buildBase(t *testing.T, sn snapshot.Snapshotter, key string) {
	t.Helper()
	mounts, err := sn.Prepare(t.Context(), key+"-active", "")
	if err != nil {
		t.Fatal(err)
	}
	dir, unmount := mount(t, mounts)
	baseTree(t, dir)
	unmount()
	must(t, sn.Commit(t.Context(), key, key+"-active"))
}

// readMounted returns the tree of active snapshot key on sn, as mounted.
func readMounted(t *testing.T, sn snapshot.Snapshotter, key string) map[string]Node {
	t.Helper()
	mounts, err := sn.Mounts(t.Context(), key)
	if err != nil {
		t.Fatalf("mounts of %q: %v", key, err)
	}
	dir, unmount := mount(t, mounts)
	defer unmount()
	return ReadTree(t, dir)
}

// CheckSync moves an active snapshot from src to dst in format f, as a
// migration does: the container writes, src marks (Mark) and dst
// receives it (Receive), the container writes every kind of change, then
// src's changes since the mark (Changes) are applied on dst
// (ReceiveChanges). dst must end with exactly src's tree, and Changes
// must not carry what did not change. Both snapshotters get a committed
// base with the same tree; their roots must be fresh.
func CheckSync(t *testing.T, src, dst snapshot.Snapshotter, f snapshot.SyncFormat) {
	ctx := t.Context()
	buildBase(t, src, "sync-base")
	buildBase(t, dst, "sync-base")
	mounts, err := src.Prepare(ctx, "c", "sync-base")
	if err != nil {
		t.Fatal(err)
	}
	dir, unmount := mount(t, mounts)
	defer unmount()
	big := make([]byte, syncBigSize)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "big"), string(big), 0o644)
	// Past the racy window, so that the mark may trust big's stat.
	time.Sleep(archive.RacyWindow + 100*time.Millisecond)
	syncBefore(t, dir)

	var marked bytes.Buffer
	if err := src.Mark(ctx, "c", "m1", f, &marked); err != nil {
		t.Fatalf("Mark in %s: %v", f, err)
	}
	atMark := ReadTree(t, dir)
	if err := dst.Receive(ctx, "c", "sync-base", f, &marked); err != nil {
		t.Fatalf("Receive in %s: %v", f, err)
	}
	if d := TreeDiff(readMounted(t, dst, "c"), atMark); d != "" {
		t.Errorf("received tree differs from the marked one:\n%s", d)
	}

	syncAfter(t, dir)
	var changes bytes.Buffer
	if err := src.Changes(ctx, "c", "m1", f, &changes); err != nil {
		t.Fatalf("Changes in %s: %v", f, err)
	}
	if changes.Len() >= syncBigSize {
		t.Errorf("the changes are %d bytes: they carry the %d-byte file written before the mark", changes.Len(), syncBigSize)
	}
	if f == snapshot.SyncTar {
		names := members(t, changes.Bytes())
		for _, p := range []string{"app/del.txt", "app/todelete", "link", "dir/sub"} {
			if !whiteoutOf(names, p) {
				t.Errorf("changes do not delete %s; members: %q", p, names)
			}
		}
	}
	if err := dst.ReceiveChanges(ctx, "c", f, &changes); err != nil {
		t.Fatalf("ReceiveChanges in %s: %v", f, err)
	}
	want := ReadTree(t, dir)
	dstDir, unmountDst := mount(t, mustMounts(t, dst, "c"))
	defer unmountDst()
	if d := TreeDiff(ReadTree(t, dstDir), want); d != "" {
		t.Errorf("after the changes, the received tree differs from the source's:\n%s", d)
	}
	if !sameInode(t, filepath.Join(dstDir, "app", "h1"), filepath.Join(dstDir, "app", "h2")) {
		t.Errorf("app/h1 and app/h2 are no longer one file")
	}

	// The mark stays until Unmark, once.
	must(t, src.Unmark(ctx, "c", "m1"))
	if err := src.Unmark(ctx, "c", "m1"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("second Unmark = %v, want ErrNotFound", err)
	}
	if err := src.Changes(ctx, "c", "m1", f, io.Discard); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Changes after Unmark = %v, want ErrNotFound", err)
	}
}

func mustMounts(t *testing.T, sn snapshot.Snapshotter, key string) []snapshot.Mount {
	t.Helper()
	mounts, err := sn.Mounts(t.Context(), key)
	if err != nil {
		t.Fatalf("mounts of %q: %v", key, err)
	}
	return mounts
}

func sameInode(t *testing.T, a, b string) bool {
	t.Helper()
	var sa, sb syscall.Stat_t
	must(t, syscall.Lstat(a, &sa))
	must(t, syscall.Lstat(b, &sb))
	return sa.Ino == sb.Ino
}

// testSync runs CheckSync between two snapshotters of the kind under test,
// in every format it has.
func testSync(t *testing.T, h *harness) {
	for _, f := range h.sn.SyncFormats() {
		t.Run(string(f), func(t *testing.T) {
			src := h.open(t, h.newRoot(t))
			dst := h.open(t, h.newRoot(t))
			t.Cleanup(func() { src.Close(); dst.Close() })
			CheckSync(t, src, dst, f)
		})
	}
}

// testSyncErrors checks the errors the sync methods promise.
func testSyncErrors(t *testing.T, h *harness) {
	ctx := h.ctx
	h.commit(t, "base", "", baseTree)
	h.build(t, "c", "base", nil)
	formats := h.sn.SyncFormats()
	if !slices.Contains(formats, snapshot.SyncTar) {
		t.Errorf("SyncFormats = %v, want SyncTar among them", formats)
	}
	cases := []struct {
		name string
		err  error
		want error
	}{
		{"mark a missing key", h.sn.Mark(ctx, "missing", "m", snapshot.SyncTar, io.Discard), snapshot.ErrNotFound},
		{"mark a committed snapshot", h.sn.Mark(ctx, "base", "m", snapshot.SyncTar, io.Discard), snapshot.ErrInvalidKind},
		{"mark with a bad name", h.sn.Mark(ctx, "c", "../m", snapshot.SyncTar, io.Discard), snapshot.ErrInvalidArgument},
		{"mark in an unknown format", h.sn.Mark(ctx, "c", "m", "zfs", io.Discard), snapshot.ErrUnsupportedFormat},
		{"changes without a mark", h.sn.Changes(ctx, "c", "never", snapshot.SyncTar, io.Discard), snapshot.ErrNotFound},
		{"unmark without a mark", h.sn.Unmark(ctx, "c", "never"), snapshot.ErrNotFound},
		{"receive onto an existing key", h.sn.Receive(ctx, "c", "base", snapshot.SyncTar, strings.NewReader("")), snapshot.ErrExists},
		{"receive in an unknown format", h.sn.Receive(ctx, "new", "base", "zfs", strings.NewReader("")), snapshot.ErrUnsupportedFormat},
		{"receive changes into a missing key", h.sn.ReceiveChanges(ctx, "missing", snapshot.SyncTar, strings.NewReader("")), snapshot.ErrNotFound},
	}
	if slices.Contains(formats, snapshot.SyncBtrfs) {
		cases = append(cases, struct {
			name string
			err  error
			want error
		}{"btrfs changes into a key not received from btrfs", h.sn.ReceiveChanges(ctx, "c", snapshot.SyncBtrfs, strings.NewReader("")), snapshot.ErrInvalidArgument})
	}
	for _, tc := range cases {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}

	// A broken stream leaves no snapshot behind.
	for _, f := range formats {
		if err := h.sn.Receive(ctx, "broken", "base", f, strings.NewReader("not a stream")); err == nil {
			t.Errorf("Receive of garbage in %s succeeded", f)
		}
		if _, err := h.sn.Stat(ctx, "broken"); !errors.Is(err, snapshot.ErrNotFound) {
			t.Errorf("after a failed Receive in %s, Stat = %v, want ErrNotFound", f, err)
		}
	}

	// Removing a marked snapshot forgets its marks: the key starts fresh.
	must(t, h.sn.Mark(ctx, "c", "m", formats[0], io.Discard))
	must(t, h.sn.Remove(ctx, "c"))
	h.build(t, "c", "base", nil)
	if err := h.sn.Changes(ctx, "c", "m", formats[0], io.Discard); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("Changes of a mark of a removed snapshot = %v, want ErrNotFound", err)
	}
}
