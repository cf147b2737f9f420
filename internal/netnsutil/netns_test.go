package netnsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/testutil"
)

// threadNetns is the inode of the network namespace of the thread that
// calls it.
func threadNetns(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// callerNetns is the inode of the caller's namespace, read on a locked
// thread so that the thread cannot change under the read.
func callerNetns(t *testing.T) uint64 {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return threadNetns(t)
}

// assertNoThreadIn fails t if any thread of this process is in the
// namespace ino: a thread left switched would run other goroutines there.
func assertNoThreadIn(t *testing.T, ino uint64) {
	t.Helper()
	tasks, err := filepath.Glob("/proc/self/task/*/ns/net")
	if err != nil || len(tasks) == 0 {
		t.Fatalf("list threads: %v (%d found)", err, len(tasks))
	}
	for _, p := range tasks {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			continue // the thread exited
		}
		if st.Ino == ino {
			t.Errorf("thread %s is still in the namespace after the call", p)
		}
	}
}

// pin creates a pinned namespace under the test's temporary directory
// and removes it when the test ends.
func pin(t *testing.T) (path string, ino uint64) {
	t.Helper()
	testutil.RequireRoot(t)
	path = filepath.Join(t.TempDir(), "netnsutil-test")
	if err := Create(path); err != nil {
		t.Fatalf("Create: %v", err)
	}
	t.Cleanup(func() {
		if err := Remove(path); err != nil {
			t.Errorf("Remove: %v", err)
		}
	})
	ino, ok := PinnedInode(path)
	if !ok {
		t.Fatalf("PinnedInode(%s) found no namespace right after Create", path)
	}
	return path, ino
}

func TestCreatePinsANewNamespace(t *testing.T) {
	_, ino := pin(t)
	if ino == callerNetns(t) {
		t.Errorf("the pinned namespace is the caller's own (inode %d)", ino)
	}
	assertNoThreadIn(t, ino)
}

func TestRunEntersTheNamespaceAndComesBack(t *testing.T) {
	path, ino := pin(t)
	orig := callerNetns(t)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()

	var inside uint64
	if err := Run(ns, func() error {
		inside = threadNetns(t)
		return nil
	}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if inside != ino {
		t.Errorf("fn ran in namespace %d, want the pinned %d", inside, ino)
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if got := threadNetns(t); got != orig {
		t.Errorf("the caller is in namespace %d after Run, want its own %d", got, orig)
	}
	assertNoThreadIn(t, ino)

	errFn := errors.New("fn failed")
	if err := Run(ns, func() error { return errFn }); !errors.Is(err, errFn) {
		t.Errorf("Run returned %v, want fn's error", err)
	}
	assertNoThreadIn(t, ino)
}

func TestRunIntoAClosedHandleFailsWithoutRunningFn(t *testing.T) {
	path, _ := pin(t)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	ns.Close()
	ran := false
	if err := Run(ns, func() error { ran = true; return nil }); err == nil {
		t.Error("Run into a closed handle succeeded")
	}
	if ran {
		t.Error("fn ran although entering the namespace failed")
	}
}

func TestCurrentIsTheCallersNamespace(t *testing.T) {
	ns, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		t.Fatal(err)
	}
	if want := callerNetns(t); st.Ino != want {
		t.Errorf("Current() is namespace %d, want the caller's %d", st.Ino, want)
	}
}

func TestNetlinkHandleListsTheNamespacesLinks(t *testing.T) {
	path, ino := pin(t)
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := NetlinkHandle(ns)
	if err != nil {
		t.Fatalf("NetlinkHandle: %v", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	// A new namespace holds lo alone; the caller's holds more on any
	// machine that runs these tests (at least the links other tests add).
	if len(links) != 1 || links[0].Attrs().Name != "lo" {
		names := make([]string, len(links))
		for i, l := range links {
			names[i] = l.Attrs().Name
		}
		t.Errorf("links in the new namespace = %v, want [lo]", names)
	}
	assertNoThreadIn(t, ino)
}

func TestRemoveUnpins(t *testing.T) {
	path, _ := pin(t)
	if err := Remove(path); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove, stat %s = %v, want not exist", path, err)
	}
	if _, ok := PinnedInode(path); ok {
		t.Error("PinnedInode still finds a namespace after Remove")
	}
	// A second removal finishes nothing and is not an error.
	if err := Remove(path); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestRemoveFinishesAnInterruptedRemoval(t *testing.T) {
	// The mount is gone but the file is left, as after a crash between
	// the two steps.
	path := filepath.Join(t.TempDir(), "unmounted")
	if err := os.WriteFile(path, nil, fileMode); err != nil {
		t.Fatal(err)
	}
	if _, ok := PinnedInode(path); ok {
		t.Error("PinnedInode finds a namespace on a plain file")
	}
	if err := Remove(path); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Remove, stat %s = %v, want not exist", path, err)
	}
}

func TestCreateFailureLeavesNothing(t *testing.T) {
	testutil.RequireRoot(t)
	tests := []struct {
		name string
		// prepare returns the path to create at.
		prepare func(t *testing.T, dir string) string
		enter   func() error
	}{
		{
			name: "parent is a file",
			prepare: func(t *testing.T, dir string) string {
				if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				return filepath.Join(dir, "file", "ns")
			},
			enter: unshareNetns,
		},
		{
			name:    "entering the new namespace fails",
			prepare: func(t *testing.T, dir string) string { return filepath.Join(dir, "ns") },
			enter:   func() error { return fmt.Errorf("injected: %w", unix.EPERM) },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.prepare(t, t.TempDir())
			err := create(path, tc.enter)
			if err == nil {
				t.Fatal("create succeeded")
			}
			if _, serr := os.Lstat(path); !errors.Is(serr, os.ErrNotExist) && !errors.Is(serr, unix.ENOTDIR) {
				t.Errorf("after the failed create (%v), stat %s = %v, want nothing there", err, path, serr)
			}
		})
	}
}

func TestCreateRefusesAnExistingPath(t *testing.T) {
	testutil.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "taken")
	if err := os.WriteFile(path, []byte("someone else's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Create(path); !errors.Is(err, os.ErrExist) {
		t.Errorf("Create on an existing file = %v, want os.ErrExist", err)
	}
	if data, err := os.ReadFile(path); err != nil || string(data) != "someone else's" {
		t.Errorf("the existing file now holds %q (%v), want it untouched", data, err)
	}
}
