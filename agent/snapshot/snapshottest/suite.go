package snapshottest

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/internal/testutil"
)

// NewSnapshotter opens the snapshotter under test on root, failing t if it
// cannot. The suite closes what it opens.
type NewSnapshotter func(t *testing.T, root string) snapshot.Snapshotter

// NewRoot returns a fresh, empty directory for one snapshotter root.
type NewRoot func(t *testing.T) string

// Run runs the conformance suite: one sub-test per contract of
// snapshot.Snapshotter, each on a fresh root. It needs root, to mount.
func Run(t *testing.T, open NewSnapshotter, newRoot NewRoot) {
	testutil.RequireRoot(t)
	tests := []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"ChainThreeDeep", testChainThreeDeep},
		{"ViewIsReadOnly", testViewIsReadOnly},
		{"ActiveSnapshotsAreIsolated", testActiveIsolation},
		{"StatAndList", testStatAndList},
		{"Errors", testErrors},
		{"CommitMovesKey", testCommitMovesKey},
		{"RemoveRefusesParents", testRemoveRefusesParents},
		{"RemovedKeyStartsFresh", testRemovedKeyStartsFresh},
		{"Reopen", testReopen},
		{"Close", testClose},
		{"ConcurrentPrepare", testConcurrentPrepare},
		{"DiffApplyRoundTrip", testDiffApplyRoundTrip},
		{"DiffWithoutParent", testDiffWithoutParent},
		{"DiffCommitted", testDiffCommitted},
		{"ApplyLayers", testApplyLayers},
		{"Sync", testSync},             // sync.go
		{"SyncErrors", testSyncErrors}, // sync.go
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &harness{open: open, newRoot: newRoot, root: newRoot(t), ctx: t.Context()}
			h.sn = h.reopen(t)
			tc.run(t, h)
		})
	}
}

// harness is one sub-test's snapshotter and the root it lives on.
type harness struct {
	open NewSnapshotter
	// newRoot makes more roots, for a test that needs two snapshotters.
	newRoot NewRoot
	root    string
	ctx     context.Context
	sn      snapshot.Snapshotter
}

// reopen opens a snapshotter on the harness root and closes it at cleanup.
func (h *harness) reopen(t *testing.T) snapshot.Snapshotter {
	t.Helper()
	sn := h.open(t, h.root)
	t.Cleanup(func() {
		if err := sn.Close(); err != nil {
			t.Errorf("close snapshotter: %v", err)
		}
	})
	return sn
}

// mount mounts mounts on a fresh directory and returns it with a function
// that unmounts it. Cleanup unmounts it too, if the test did not.
func mount(t *testing.T, mounts []snapshot.Mount) (string, func()) {
	t.Helper()
	dir := t.TempDir()
	if err := snapshot.MountAll(mounts, dir); err != nil {
		t.Fatalf("mount %+v: %v", mounts, err)
	}
	var once sync.Once
	unmount := func() {
		once.Do(func() {
			if err := snapshot.Unmount(dir); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
			if Mounted(t, dir) {
				t.Errorf("%s is still mounted after Unmount", dir)
			}
		})
	}
	t.Cleanup(unmount)
	return dir, unmount
}

// mountKey mounts the active snapshot or view key from its Mounts.
func (h *harness) mountKey(t *testing.T, key string) (string, func()) {
	t.Helper()
	mounts, err := h.sn.Mounts(h.ctx, key)
	if err != nil {
		t.Fatalf("mounts of %q: %v", key, err)
	}
	return mount(t, mounts)
}

// readKey returns the tree of the active snapshot or view key, as mounted.
func (h *harness) readKey(t *testing.T, key string) map[string]Node {
	t.Helper()
	dir, unmount := h.mountKey(t, key)
	defer unmount()
	return ReadTree(t, dir)
}

// build prepares key on parent, mounts it, lets change write into it and
// unmounts it again.
func (h *harness) build(t *testing.T, key, parent string, change func(t *testing.T, dir string)) {
	t.Helper()
	mounts, err := h.sn.Prepare(h.ctx, key, parent)
	if err != nil {
		t.Fatalf("prepare %q on %q: %v", key, parent, err)
	}
	dir, unmount := mount(t, mounts)
	if change != nil {
		change(t, dir)
	}
	unmount()
}

// commit builds name on parent through a mount and commits it.
func (h *harness) commit(t *testing.T, name, parent string, change func(t *testing.T, dir string)) {
	t.Helper()
	key := name + "-active"
	h.build(t, key, parent, change)
	if err := h.sn.Commit(h.ctx, name, key); err != nil {
		t.Fatalf("commit %q as %q: %v", key, name, err)
	}
}

func (h *harness) keys(t *testing.T) []string {
	t.Helper()
	infos, err := h.sn.List(h.ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	var keys []string
	for _, i := range infos {
		keys = append(keys, fmt.Sprintf("%s(%s on %q)", i.Key, i.Kind, i.Parent))
	}
	return keys
}

// File system helpers that fail the test on error.

func writeFile(t *testing.T, name, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, name string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(name, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// readFile returns name's content, or "" with ok false when it is missing.
func readFile(t *testing.T, name string) (string, bool) {
	t.Helper()
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		return "", false
	}
	must(t, err)
	return string(b), true
}

func testChainThreeDeep(t *testing.T, h *harness) {
	h.commit(t, "one", "", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "one.txt"), "one\n", 0o644)
		writeFile(t, filepath.Join(dir, "shared.txt"), "from one\n", 0o644)
		writeFile(t, filepath.Join(dir, "doomed.txt"), "gone in three\n", 0o644)
		mkdir(t, filepath.Join(dir, "etc"), 0o755)
	})
	h.commit(t, "two", "one", func(t *testing.T, dir string) {
		if got, _ := readFile(t, filepath.Join(dir, "one.txt")); got != "one\n" {
			t.Errorf("one.txt through the mount of two: %q", got)
		}
		writeFile(t, filepath.Join(dir, "two.txt"), "two\n", 0o600)
		writeFile(t, filepath.Join(dir, "shared.txt"), "from two\n", 0o644)
		writeFile(t, filepath.Join(dir, "etc", "conf"), "two\n", 0o644)
	})
	h.commit(t, "three", "two", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "three.txt"), "three\n", 0o644)
		must(t, os.Remove(filepath.Join(dir, "doomed.txt")))
		symlink(t, "three.txt", filepath.Join(dir, "latest"))
	})

	want := map[string]string{
		"one.txt":    "one\n",
		"two.txt":    "two\n",
		"three.txt":  "three\n",
		"shared.txt": "from two\n",
		"etc/conf":   "two\n",
		"latest":     "three\n", // read through the symlink
	}
	check := func(t *testing.T, dir string) {
		t.Helper()
		for name, content := range want {
			if got, ok := readFile(t, filepath.Join(dir, name)); !ok || got != content {
				t.Errorf("%s: got %q (exists %t), want %q", name, got, ok, content)
			}
		}
		if _, ok := readFile(t, filepath.Join(dir, "doomed.txt")); ok {
			t.Error("doomed.txt, deleted in three, is visible")
		}
	}

	t.Run("view", func(t *testing.T) {
		mounts, err := h.sn.View(h.ctx, "three-view", "three")
		if err != nil {
			t.Fatal(err)
		}
		dir, _ := mount(t, mounts)
		check(t, dir)
	})
	t.Run("active", func(t *testing.T) {
		mounts, err := h.sn.Prepare(h.ctx, "four", "three")
		if err != nil {
			t.Fatal(err)
		}
		dir, unmount := mount(t, mounts)
		check(t, dir)
		writeFile(t, filepath.Join(dir, "four.txt"), "four\n", 0o644)
		writeFile(t, filepath.Join(dir, "one.txt"), "changed in four\n", 0o644)
		unmount()

		// The change stays in four and does not leak into its parents.
		dir, _ = h.mountKey(t, "four")
		if got, _ := readFile(t, filepath.Join(dir, "one.txt")); got != "changed in four\n" {
			t.Errorf("one.txt in four after remount: %q", got)
		}
		mounts, err = h.sn.View(h.ctx, "one-view", "one")
		if err != nil {
			t.Fatal(err)
		}
		oneDir, _ := mount(t, mounts)
		if got, _ := readFile(t, filepath.Join(oneDir, "one.txt")); got != "one\n" {
			t.Errorf("committed one changed under a child: one.txt = %q", got)
		}
		for _, name := range []string{"two.txt", "four.txt"} {
			if _, ok := readFile(t, filepath.Join(oneDir, name)); ok {
				t.Errorf("%s of a child is visible in one", name)
			}
		}
	})
}

func testViewIsReadOnly(t *testing.T, h *harness) {
	h.commit(t, "base", "", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "f"), "base\n", 0o644)
	})
	h.commit(t, "top", "base", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "g"), "top\n", 0o644)
	})
	cases := []struct {
		name, parent string
		wantFiles    []string
	}{
		{"empty", "", nil},
		{"one layer", "base", []string{"f"}},
		{"two layers", "top", []string{"f", "g"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mounts, err := h.sn.View(h.ctx, "view-"+tc.name, tc.parent)
			if err != nil {
				t.Fatal(err)
			}
			dir, _ := mount(t, mounts)
			var got []string
			for name := range ReadTree(t, dir) {
				if name != "." {
					got = append(got, name)
				}
			}
			slices.Sort(got)
			if !slices.Equal(got, tc.wantFiles) {
				t.Errorf("view shows %q, want %q", got, tc.wantFiles)
			}
			err = os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0o644)
			if !errors.Is(err, unix.EROFS) {
				t.Errorf("creating a file in a view: %v, want EROFS", err)
			}
			if tc.wantFiles != nil {
				err = os.WriteFile(filepath.Join(dir, tc.wantFiles[0]), []byte("x"), 0o644)
				if !errors.Is(err, unix.EROFS) {
					t.Errorf("overwriting a file in a view: %v, want EROFS", err)
				}
			}
		})
	}
}

func testActiveIsolation(t *testing.T, h *harness) {
	h.commit(t, "base", "", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "f"), "base\n", 0o644)
	})
	h.build(t, "left", "base", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "f"), "left\n", 0o644)
		writeFile(t, filepath.Join(dir, "only-left"), "left\n", 0o644)
	})
	h.build(t, "right", "base", nil)
	right := h.readKey(t, "right")
	if got := right["f"].Content; got != "base\n" {
		t.Errorf("f in right = %q, want the parent's %q", got, "base\n")
	}
	if _, ok := right["only-left"]; ok {
		t.Error("a file written in left is visible in right")
	}
}

func testStatAndList(t *testing.T, h *harness) {
	before := time.Now().Add(-time.Second) // filesystems may store coarser times
	h.commit(t, "base", "", nil)
	h.build(t, "work", "base", nil)
	if _, err := h.sn.View(h.ctx, "look", "base"); err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Second)

	want := []snapshot.Info{
		{Key: "base", Kind: snapshot.KindCommitted},
		{Key: "look", Parent: "base", Kind: snapshot.KindView},
		{Key: "work", Parent: "base", Kind: snapshot.KindActive},
	}
	infos, err := h.sn.List(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != len(want) {
		t.Fatalf("list = %+v, want %d snapshots", infos, len(want))
	}
	for i, w := range want {
		got := infos[i]
		if got.Key != w.Key || got.Parent != w.Parent || got.Kind != w.Kind {
			t.Errorf("list[%d] = %+v, want %+v", i, got, w)
		}
		if got.Created.Before(before) || got.Created.After(after) {
			t.Errorf("%s created %v, want between %v and %v", got.Key, got.Created, before, after)
		}
		st, err := h.sn.Stat(h.ctx, w.Key)
		if err != nil {
			t.Errorf("stat %q: %v", w.Key, err)
		} else if !st.Created.Equal(got.Created) || st.Key != got.Key || st.Kind != got.Kind || st.Parent != got.Parent {
			t.Errorf("stat %q = %+v, list says %+v", w.Key, st, got)
		}
	}
}

func testErrors(t *testing.T, h *harness) {
	h.commit(t, "base", "", nil)
	h.build(t, "work", "base", nil)
	if _, err := h.sn.View(h.ctx, "look", "base"); err != nil {
		t.Fatal(err)
	}
	ctx := h.ctx
	sn := h.sn
	prepare := func(key, parent string) func() error {
		return func() error { _, err := sn.Prepare(ctx, key, parent); return err }
	}
	view := func(key, parent string) func() error {
		return func() error { _, err := sn.View(ctx, key, parent); return err }
	}
	cases := []struct {
		name string
		op   func() error
		want error
	}{
		{"prepare with an active key", prepare("work", ""), snapshot.ErrExists},
		{"prepare with a committed name", prepare("base", ""), snapshot.ErrExists},
		{"prepare with a view key", prepare("look", "base"), snapshot.ErrExists},
		{"view with an existing key", view("work", "base"), snapshot.ErrExists},
		{"commit to an existing name", func() error { return sn.Commit(ctx, "look", "work") }, snapshot.ErrExists},
		{"prepare with an empty key", prepare("", "base"), snapshot.ErrInvalidArgument},

		{"prepare on a missing parent", prepare("new", "nope"), snapshot.ErrNotFound},
		{"view on a missing parent", view("new", "nope"), snapshot.ErrNotFound},
		{"commit a missing key", func() error { return sn.Commit(ctx, "new", "nope") }, snapshot.ErrNotFound},
		{"mounts of a missing key", func() error { _, err := sn.Mounts(ctx, "nope"); return err }, snapshot.ErrNotFound},
		{"stat a missing key", func() error { _, err := sn.Stat(ctx, "nope"); return err }, snapshot.ErrNotFound},
		{"remove a missing key", func() error { return sn.Remove(ctx, "nope") }, snapshot.ErrNotFound},
		{"diff a missing key", func() error { return sn.Diff(ctx, "nope", io.Discard) }, snapshot.ErrNotFound},
		{"apply to a missing key", func() error { return sn.Apply(ctx, "nope", emptyLayer(t)) }, snapshot.ErrNotFound},

		{"commit a view", func() error { return sn.Commit(ctx, "new", "look") }, snapshot.ErrInvalidKind},
		{"commit a committed snapshot", func() error { return sn.Commit(ctx, "new", "base") }, snapshot.ErrInvalidKind},
		{"prepare on an active parent", prepare("new", "work"), snapshot.ErrInvalidKind},
		{"prepare on a view parent", prepare("new", "look"), snapshot.ErrInvalidKind},
		{"view on an active parent", view("new", "work"), snapshot.ErrInvalidKind},
		{"mounts of a committed snapshot", func() error { _, err := sn.Mounts(ctx, "base"); return err }, snapshot.ErrInvalidKind},
		{"diff a view", func() error { return sn.Diff(ctx, "look", io.Discard) }, snapshot.ErrInvalidKind},
		{"apply to a view", func() error { return sn.Apply(ctx, "look", emptyLayer(t)) }, snapshot.ErrInvalidKind},
		{"apply to a committed snapshot", func() error { return sn.Apply(ctx, "base", emptyLayer(t)) }, snapshot.ErrInvalidKind},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.keys(t)
			if err := tc.op(); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if after := h.keys(t); !slices.Equal(before, after) {
				t.Errorf("the failed call changed the snapshots: %q -> %q", before, after)
			}
		})
	}
	// A failed Commit left the active snapshot usable.
	h.readKey(t, "work")
}

// emptyLayer is a valid layer tar without entries.
func emptyLayer(t *testing.T) io.Reader {
	return bytes.NewReader(layer(t))
}

func testCommitMovesKey(t *testing.T, h *harness) {
	h.commit(t, "base", "", nil)
	h.commit(t, "done", "base", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "f"), "kept\n", 0o644)
	})
	if _, err := h.sn.Stat(h.ctx, "done-active"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("stat of the committed active key: %v, want ErrNotFound", err)
	}
	info, err := h.sn.Stat(h.ctx, "done")
	if err != nil {
		t.Fatal(err)
	}
	if info.Kind != snapshot.KindCommitted || info.Parent != "base" {
		t.Errorf("stat done = %+v, want committed on base", info)
	}
	if _, err := h.sn.View(h.ctx, "done-view", "done"); err != nil {
		t.Fatal(err)
	}
	if got := h.readKey(t, "done-view")["f"].Content; got != "kept\n" {
		t.Errorf("f after commit = %q", got)
	}
}

func testRemoveRefusesParents(t *testing.T, h *harness) {
	h.commit(t, "base", "", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "f"), "base\n", 0o644)
	})
	h.commit(t, "mid", "base", nil)
	h.build(t, "work", "mid", nil)
	if _, err := h.sn.View(h.ctx, "look", "base"); err != nil {
		t.Fatal(err)
	}

	steps := []struct {
		key  string
		want error
	}{
		{"base", snapshot.ErrHasChildren}, // mid and look
		{"mid", snapshot.ErrHasChildren},  // work
		{"work", nil},
		{"mid", nil},
		{"base", snapshot.ErrHasChildren}, // look
		{"look", nil},
		{"base", nil},
	}
	for _, s := range steps {
		if err := h.sn.Remove(h.ctx, s.key); !errors.Is(err, s.want) {
			t.Fatalf("remove %q: %v, want %v", s.key, err, s.want)
		}
		_, err := h.sn.Stat(h.ctx, s.key)
		switch {
		case s.want == nil && !errors.Is(err, snapshot.ErrNotFound):
			t.Errorf("stat %q after remove: %v, want ErrNotFound", s.key, err)
		case s.want != nil && err != nil:
			t.Errorf("stat %q after refused remove: %v", s.key, err)
		}
		if s.key == "base" && s.want != nil {
			// A refused Remove leaves the parent whole.
			mounts, err := h.sn.View(h.ctx, "check", "base")
			if err != nil {
				t.Fatal(err)
			}
			dir, unmount := mount(t, mounts)
			if got, _ := readFile(t, filepath.Join(dir, "f")); got != "base\n" {
				t.Errorf("base after refused remove: f = %q", got)
			}
			unmount()
			must(t, h.sn.Remove(h.ctx, "check"))
		}
	}
	if keys := h.keys(t); len(keys) != 0 {
		t.Errorf("left after removing everything: %q", keys)
	}
}

func testRemovedKeyStartsFresh(t *testing.T, h *harness) {
	cases := []struct {
		name string
		kind snapshot.Kind
	}{
		{"active", snapshot.KindActive},
		{"committed", snapshot.KindCommitted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			key := "reused-" + tc.name
			h.build(t, key, "", func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "old"), "old\n", 0o644)
			})
			if tc.kind == snapshot.KindCommitted {
				must(t, h.sn.Commit(h.ctx, key+"-c", key))
				key += "-c"
			}
			must(t, h.sn.Remove(h.ctx, key))
			h.build(t, key, "", nil)
			if tree := h.readKey(t, key); len(tree) != 1 {
				t.Errorf("a new snapshot under a removed key shows %v, want it empty", tree)
			}
		})
	}
}

func testReopen(t *testing.T, h *harness) {
	h.commit(t, "base", "", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "f"), "base\n", 0o644)
	})
	h.build(t, "work", "base", func(t *testing.T, dir string) {
		writeFile(t, filepath.Join(dir, "g"), "work\n", 0o644)
	})
	if _, err := h.sn.View(h.ctx, "look", "base"); err != nil {
		t.Fatal(err)
	}
	wantMounts, err := h.sn.Mounts(h.ctx, "work")
	if err != nil {
		t.Fatal(err)
	}
	before, err := h.sn.List(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	must(t, h.sn.Close())

	h.sn = h.reopen(t)
	after, err := h.sn.List(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(before, after, func(a, b snapshot.Info) bool {
		return a.Key == b.Key && a.Parent == b.Parent && a.Kind == b.Kind && a.Created.Equal(b.Created)
	}) {
		t.Errorf("after reopen: %+v, before: %+v", after, before)
	}
	gotMounts, err := h.sn.Mounts(h.ctx, "work")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(gotMounts) != fmt.Sprint(wantMounts) {
		t.Errorf("mounts of work after reopen: %+v, before: %+v", gotMounts, wantMounts)
	}
	tree := h.readKey(t, "work")
	if tree["f"].Content != "base\n" || tree["g"].Content != "work\n" {
		t.Errorf("work after reopen: %v", tree)
	}
	// The reopened snapshotter goes on where the first left off.
	must(t, h.sn.Commit(h.ctx, "work-c", "work"))
	h.build(t, "next", "work-c", nil)
	if tree := h.readKey(t, "next"); tree["g"].Content != "work\n" {
		t.Errorf("child of a snapshot committed after reopen: %v", tree)
	}
}

func testClose(t *testing.T, h *harness) {
	must(t, h.sn.Close())
	if _, err := h.sn.Stat(h.ctx, "x"); !errors.Is(err, snapshot.ErrClosed) {
		t.Errorf("stat after close: %v, want ErrClosed", err)
	}
	if _, err := h.sn.Prepare(h.ctx, "x", ""); !errors.Is(err, snapshot.ErrClosed) {
		t.Errorf("prepare after close: %v, want ErrClosed", err)
	}
	if err := h.sn.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func testConcurrentPrepare(t *testing.T, h *harness) {
	const workers = 8
	h.commit(t, "base", "", nil)
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for i := range workers {
		wg.Go(func() {
			_, errs[i] = h.sn.Prepare(h.ctx, fmt.Sprintf("w%d", i), "base")
		})
	}
	wg.Wait()
	must(t, errors.Join(errs...))
	for i := range workers {
		key := fmt.Sprintf("w%d", i)
		dir, unmount := h.mountKey(t, key)
		writeFile(t, filepath.Join(dir, "owner"), key, 0o644)
		unmount()
	}
	for i := range workers {
		key := fmt.Sprintf("w%d", i)
		if got := h.readKey(t, key)["owner"].Content; got != key {
			t.Errorf("%s holds the file of %q: concurrent Prepares share storage", key, got)
		}
	}
}

// baseTree writes the tree that the Diff round trip cases change.
func baseTree(t *testing.T, dir string) {
	writeFile(t, filepath.Join(dir, "a.txt"), "alpha\n", 0o644)
	writeFile(t, filepath.Join(dir, "exec.sh"), "#!/bin/sh\necho hi\n", 0o755)
	mkdir(t, filepath.Join(dir, "dir", "sub"), 0o750)
	must(t, os.Chmod(filepath.Join(dir, "dir"), 0o755))
	writeFile(t, filepath.Join(dir, "dir", "b.txt"), "bravo\n", 0o600)
	writeFile(t, filepath.Join(dir, "dir", "sub", "c.txt"), "charlie\n", 0o644)
	symlink(t, "a.txt", filepath.Join(dir, "link"))
	mkdir(t, filepath.Join(dir, "tree", "x", "y"), 0o755)
	writeFile(t, filepath.Join(dir, "tree", "x", "y", "z.txt"), "zulu\n", 0o644)
	writeFile(t, filepath.Join(dir, "tree", "keep"), "keep\n", 0o644)
	mkdir(t, filepath.Join(dir, "sticky"), 0o1777)
}

// whiteoutOf reports whether names (the members of a layer tar) delete
// path: a .wh. entry for it, or an opaque marker in a directory above it.
func whiteoutOf(names []string, p string) bool {
	dir, base := path.Split(p)
	if slices.Contains(names, dir+".wh."+base) {
		return true
	}
	for d := path.Dir(p); d != "."; d = path.Dir(d) {
		if slices.Contains(names, d+"/.wh..wh..opq") {
			return true
		}
	}
	return false
}

func testDiffApplyRoundTrip(t *testing.T, h *harness) {
	h.commit(t, "base", "", baseTree)
	cases := []struct {
		name   string
		change func(t *testing.T, dir string)
		// whiteouts must be deleted by the layer (a .wh. entry or an
		// opaque directory); members must be in it.
		whiteouts, members []string
	}{
		{name: "no changes"},
		{
			name:    "add file",
			change:  func(t *testing.T, d string) { writeFile(t, filepath.Join(d, "new.txt"), "new\n", 0o640) },
			members: []string{"new.txt"},
		},
		{
			name: "add nested directories",
			change: func(t *testing.T, d string) {
				mkdir(t, filepath.Join(d, "n1", "n2"), 0o711)
				writeFile(t, filepath.Join(d, "n1", "n2", "deep"), "deep\n", 0o644)
			},
			members: []string{"n1/n2/deep"},
		},
		{
			name: "modify file",
			change: func(t *testing.T, d string) {
				writeFile(t, filepath.Join(d, "dir", "b.txt"), "bravo, changed\n", 0o600)
			},
			members: []string{"dir/b.txt"},
		},
		{
			name:    "chmod file",
			change:  func(t *testing.T, d string) { must(t, os.Chmod(filepath.Join(d, "exec.sh"), 0o700)) },
			members: []string{"exec.sh"},
		},
		{
			name:    "chown file",
			change:  func(t *testing.T, d string) { must(t, os.Lchown(filepath.Join(d, "a.txt"), 1234, 5678)) },
			members: []string{"a.txt"},
		},
		{
			name:      "delete file",
			change:    func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, "dir", "b.txt"))) },
			whiteouts: []string{"dir/b.txt"},
		},
		{
			name:      "delete directory",
			change:    func(t *testing.T, d string) { must(t, os.RemoveAll(filepath.Join(d, "dir", "sub"))) },
			whiteouts: []string{"dir/sub"},
		},
		{
			name:      "delete symlink",
			change:    func(t *testing.T, d string) { must(t, os.Remove(filepath.Join(d, "link"))) },
			whiteouts: []string{"link"},
		},
		{
			name: "replace directory with file",
			change: func(t *testing.T, d string) {
				must(t, os.RemoveAll(filepath.Join(d, "dir")))
				writeFile(t, filepath.Join(d, "dir"), "now a file\n", 0o644)
			},
			members: []string{"dir"},
		},
		{
			name: "replace file with directory",
			change: func(t *testing.T, d string) {
				must(t, os.Remove(filepath.Join(d, "a.txt")))
				mkdir(t, filepath.Join(d, "a.txt"), 0o700)
				writeFile(t, filepath.Join(d, "a.txt", "inner"), "inner\n", 0o644)
			},
			members: []string{"a.txt/inner"},
		},
		{
			name: "recreate directory empty",
			change: func(t *testing.T, d string) {
				must(t, os.RemoveAll(filepath.Join(d, "tree")))
				mkdir(t, filepath.Join(d, "tree"), 0o755)
				writeFile(t, filepath.Join(d, "tree", "fresh"), "fresh\n", 0o644)
			},
			whiteouts: []string{"tree/x", "tree/keep"},
			members:   []string{"tree/fresh"},
		},
		{
			name: "retarget symlink",
			change: func(t *testing.T, d string) {
				must(t, os.Remove(filepath.Join(d, "link")))
				symlink(t, "dir/b.txt", filepath.Join(d, "link"))
			},
			members: []string{"link"},
		},
		{
			name: "rename file",
			change: func(t *testing.T, d string) {
				must(t, os.Rename(filepath.Join(d, "a.txt"), filepath.Join(d, "renamed.txt")))
			},
			whiteouts: []string{"a.txt"},
			members:   []string{"renamed.txt"},
		},
		{
			name: "hard link",
			change: func(t *testing.T, d string) {
				writeFile(t, filepath.Join(d, "h1"), "linked\n", 0o644)
				must(t, os.Link(filepath.Join(d, "h1"), filepath.Join(d, "h2")))
			},
			members: []string{"h1", "h2"},
		},
		{
			name:    "fifo",
			change:  func(t *testing.T, d string) { must(t, unix.Mkfifo(filepath.Join(d, "pipe"), 0o600)) },
			members: []string{"pipe"},
		},
		{
			name: "many changes at once",
			change: func(t *testing.T, d string) {
				must(t, os.RemoveAll(filepath.Join(d, "dir", "sub")))
				writeFile(t, filepath.Join(d, "dir", "b.txt"), "changed\n", 0o644)
				must(t, os.Remove(filepath.Join(d, "exec.sh")))
				mkdir(t, filepath.Join(d, "exec.sh"), 0o755)
				writeFile(t, filepath.Join(d, "sticky", "tmpfile"), "t\n", 0o600)
			},
			whiteouts: []string{"dir/sub"},
			members:   []string{"dir/b.txt", "sticky/tmpfile"},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			changed := fmt.Sprintf("changed-%d", i)
			h.build(t, changed, "base", tc.change)
			var buf bytes.Buffer
			if err := h.sn.Diff(h.ctx, changed, &buf); err != nil {
				t.Fatalf("diff: %v", err)
			}
			names := members(t, buf.Bytes())
			for _, p := range tc.whiteouts {
				if !whiteoutOf(names, p) {
					t.Errorf("layer does not delete %s; members: %q", p, names)
				}
			}
			for _, m := range tc.members {
				if !slices.Contains(names, m) {
					t.Errorf("layer lacks %s; members: %q", m, names)
				}
			}
			if tc.change == nil && slices.ContainsFunc(names, func(n string) bool { return n != "." && n != "" }) {
				t.Errorf("diff of an unchanged snapshot has members %q", names)
			}

			replay := fmt.Sprintf("replay-%d", i)
			if _, err := h.sn.Prepare(h.ctx, replay, "base"); err != nil {
				t.Fatal(err)
			}
			if err := h.sn.Apply(h.ctx, replay, bytes.NewReader(buf.Bytes())); err != nil {
				t.Fatalf("apply the diff: %v", err)
			}
			want := h.readKey(t, changed)
			if d := TreeDiff(h.readKey(t, replay), want); d != "" {
				t.Errorf("diff applied to a fresh child of base differs from the changed snapshot:\n%s", d)
			}
		})
	}
}

// members lists the names in a layer tar, cleaned of "./" and trailing
// slashes.
func members(t *testing.T, layer []byte) []string {
	t.Helper()
	var names []string
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return names
		}
		if err != nil {
			t.Fatalf("diff is not a valid tar: %v", err)
		}
		names = append(names, path.Clean(strings.TrimPrefix(hdr.Name, "./")))
	}
}

func testDiffWithoutParent(t *testing.T, h *harness) {
	h.build(t, "solo", "", baseTree)
	var buf bytes.Buffer
	if err := h.sn.Diff(h.ctx, "solo", &buf); err != nil {
		t.Fatal(err)
	}
	names := members(t, buf.Bytes())
	for _, m := range []string{"a.txt", "dir/sub/c.txt", "link", "tree/x/y/z.txt"} {
		if !slices.Contains(names, m) {
			t.Errorf("diff of a snapshot without parent lacks %s: %q", m, names)
		}
	}
	if _, err := h.sn.Prepare(h.ctx, "solo-replay", ""); err != nil {
		t.Fatal(err)
	}
	must(t, h.sn.Apply(h.ctx, "solo-replay", &buf))
	if d := TreeDiff(h.readKey(t, "solo-replay"), h.readKey(t, "solo")); d != "" {
		t.Errorf("replayed tree differs:\n%s", d)
	}
}

func testDiffCommitted(t *testing.T, h *harness) {
	h.commit(t, "base", "", baseTree)
	h.commit(t, "top", "base", func(t *testing.T, d string) {
		writeFile(t, filepath.Join(d, "top.txt"), "top\n", 0o644)
		must(t, os.Remove(filepath.Join(d, "a.txt")))
	})
	var buf bytes.Buffer
	if err := h.sn.Diff(h.ctx, "top", &buf); err != nil {
		t.Fatalf("diff of a committed snapshot: %v", err)
	}
	if _, err := h.sn.Prepare(h.ctx, "top-replay", "base"); err != nil {
		t.Fatal(err)
	}
	must(t, h.sn.Apply(h.ctx, "top-replay", &buf))
	if _, err := h.sn.View(h.ctx, "top-view", "top"); err != nil {
		t.Fatal(err)
	}
	if d := TreeDiff(h.readKey(t, "top-replay"), h.readKey(t, "top-view")); d != "" {
		t.Errorf("committed diff replayed differs:\n%s", d)
	}
}

// entry is one member of a hand-built layer.
type entry struct {
	name     string
	typ      byte
	mode     int64
	content  string
	linkname string
	uid, gid int
}

func dirEntry(name string, mode int64) entry { return entry{name: name, typ: tar.TypeDir, mode: mode} }
func fileEntry(name, content string, mode int64) entry {
	return entry{name: name, typ: tar.TypeReg, mode: mode, content: content}
}

// layer builds a layer tar from entries, as an image builder would.
func layer(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.linkname,
			Uid: e.uid, Gid: e.gid, Size: int64(len(e.content)), ModTime: time.Unix(1700000000, 0),
			Format: tar.FormatPAX,
		}
		must(t, tw.WriteHeader(hdr))
		if _, err := io.WriteString(tw, e.content); err != nil {
			t.Fatal(err)
		}
	}
	must(t, tw.Close())
	return buf.Bytes()
}

func testApplyLayers(t *testing.T, h *harness) {
	l1 := layer(t,
		dirEntry("./", 0o755),
		dirEntry("etc/", 0o755),
		fileEntry("etc/hostname", "one\n", 0o644),
		fileEntry("etc/old", "old\n", 0o600),
		dirEntry("bin/", 0o755),
		fileEntry("bin/tool", "#!/bin/sh\n", 0o755),
		entry{name: "bin/alias", typ: tar.TypeSymlink, linkname: "tool", mode: 0o777},
		entry{name: "bin/hard", typ: tar.TypeLink, linkname: "bin/tool"},
		dirEntry("var/", 0o755),
		dirEntry("var/cache/", 0o700),
		fileEntry("var/cache/a", "a\n", 0o644),
		dirEntry("var/cache/sub/", 0o755),
		fileEntry("var/cache/sub/b", "b\n", 0o644),
		entry{name: "home/", typ: tar.TypeDir, mode: 0o755, uid: 1000, gid: 1000},
		entry{name: "home/user.txt", typ: tar.TypeReg, mode: 0o640, content: "mine\n", uid: 1000, gid: 100},
		dirEntry("tmp/", 0o1777),
	)
	l2 := layer(t,
		dirEntry("etc/", 0o755),
		fileEntry("etc/.wh.old", "", 0),
		fileEntry("etc/hostname", "two\n", 0o644),
		dirEntry("var/", 0o755),
		dirEntry("var/cache/", 0o700),
		fileEntry("var/cache/.wh..wh..opq", "", 0),
		fileEntry("var/cache/fresh", "fresh\n", 0o644),
		dirEntry("bin/", 0o755),
		fileEntry("bin/.wh.alias", "", 0),
		dirEntry("new/", 0o750),
		fileEntry("new/file", "n\n", 0o644),
	)

	const dir, reg = fs.ModeDir, fs.FileMode(0)
	want1 := map[string]Node{
		".":               {Mode: dir | 0o755},
		"etc":             {Mode: dir | 0o755},
		"etc/hostname":    {Mode: reg | 0o644, Content: "one\n"},
		"etc/old":         {Mode: reg | 0o600, Content: "old\n"},
		"bin":             {Mode: dir | 0o755},
		"bin/tool":        {Mode: reg | 0o755, Content: "#!/bin/sh\n"},
		"bin/alias":       {Mode: fs.ModeSymlink | 0o777, Target: "tool"},
		"bin/hard":        {Mode: reg | 0o755, Content: "#!/bin/sh\n"},
		"var":             {Mode: dir | 0o755},
		"var/cache":       {Mode: dir | 0o700},
		"var/cache/a":     {Mode: reg | 0o644, Content: "a\n"},
		"var/cache/sub":   {Mode: dir | 0o755},
		"var/cache/sub/b": {Mode: reg | 0o644, Content: "b\n"},
		"home":            {Mode: dir | 0o755, UID: 1000, GID: 1000},
		"home/user.txt":   {Mode: reg | 0o640, Content: "mine\n", UID: 1000, GID: 100},
		"tmp":             {Mode: dir | fs.ModeSticky | 0o777},
	}
	want2 := map[string]Node{}
	for k, v := range want1 {
		want2[k] = v
	}
	for _, gone := range []string{"etc/old", "var/cache/a", "var/cache/sub", "var/cache/sub/b", "bin/alias"} {
		delete(want2, gone)
	}
	want2["etc/hostname"] = Node{Mode: reg | 0o644, Content: "two\n"}
	want2["var/cache/fresh"] = Node{Mode: reg | 0o644, Content: "fresh\n"}
	want2["new"] = Node{Mode: dir | 0o750}
	want2["new/file"] = Node{Mode: reg | 0o644, Content: "n\n"}

	apply := func(t *testing.T, name, parent string, l []byte) {
		t.Helper()
		key := name + "-active"
		if _, err := h.sn.Prepare(h.ctx, key, parent); err != nil {
			t.Fatal(err)
		}
		if err := h.sn.Apply(h.ctx, key, bytes.NewReader(l)); err != nil {
			t.Fatalf("apply layer %s: %v", name, err)
		}
		must(t, h.sn.Commit(h.ctx, name, key))
		if _, err := h.sn.View(h.ctx, name+"-view", name); err != nil {
			t.Fatal(err)
		}
	}
	apply(t, "l1", "", l1)
	apply(t, "l2", "l1", l2)
	if d := TreeDiff(h.readKey(t, "l1-view"), want1); d != "" {
		t.Errorf("first layer unpacked wrong:\n%s", d)
	}
	if d := TreeDiff(h.readKey(t, "l2-view"), want2); d != "" {
		t.Errorf("second layer (whiteouts, opaque directory) unpacked wrong:\n%s", d)
	}
	// A container on top sees the same tree and can delete what a lower
	// layer holds.
	h.build(t, "container", "l2", func(t *testing.T, d string) {
		must(t, os.Remove(filepath.Join(d, "bin", "tool")))
	})
	got := h.readKey(t, "container")
	delete(want2, "bin/tool")
	if d := TreeDiff(got, want2); d != "" {
		t.Errorf("container on the unpacked image:\n%s", d)
	}
}
