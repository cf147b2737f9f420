package btrfs

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
)

func open(t *testing.T, root string) snapshot.Snapshotter {
	t.Helper()
	s, err := New(root, snapshottest.Logger(t))
	if err != nil {
		t.Fatalf("open btrfs snapshotter: %v", err)
	}
	return s
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestConformance runs the suite with every sub-test's root in its own
// directory of one loop-mounted btrfs.
func TestConformance(t *testing.T) {
	fs := snapshottest.NewLoopBtrfs(t)
	snapshottest.Run(t, open, func(t *testing.T) string {
		dir, err := os.MkdirTemp(fs, "root-")
		must(t, err)
		return dir
	})
}

// TestIoctlNumbers pins the computed ioctl numbers to the values of the
// kernel's <linux/btrfs.h>, so a wrong struct layout cannot slip through.
func TestIoctlNumbers(t *testing.T) {
	cases := []struct {
		name      string
		got, want uintptr
	}{
		{"BTRFS_IOC_SUBVOL_CREATE", iocSubvolCreate, 0x5000940e},
		{"BTRFS_IOC_SNAP_DESTROY", iocSnapDestroy, 0x5000940f},
		{"BTRFS_IOC_SNAP_CREATE_V2", iocSnapCreateV2, 0x50009417},
		{"BTRFS_IOC_SUBVOL_GETFLAGS", iocSubvolGetFlags, 0x80089419},
		{"BTRFS_IOC_SUBVOL_SETFLAGS", iocSubvolSetFlags, 0x4008941a},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("%#x, want %#x", tc.got, tc.want)
			}
		})
	}
}

func TestNotOnBtrfs(t *testing.T) {
	s, err := New(t.TempDir(), snapshottest.Logger(t)) // /tmp: ext4 or tmpfs
	if err == nil {
		s.Close()
	}
	if !errors.Is(err, ErrNotBtrfs) {
		t.Fatalf("New off btrfs: %v, want ErrNotBtrfs", err)
	}
}

// TestSubvolumes checks what later btrfs send needs: every snapshot is a
// subvolume at SubvolumePath, committed ones are read-only, active ones
// writable.
func TestSubvolumes(t *testing.T) {
	ctx := t.Context()
	s, err := New(filepath.Join(snapshottest.NewLoopBtrfs(t), "snaps"), snapshottest.Logger(t))
	must(t, err)
	t.Cleanup(func() { s.Close() })
	_, err = s.Prepare(ctx, "base-a", "")
	must(t, err)
	must(t, s.Commit(ctx, "base", "base-a"))
	_, err = s.Prepare(ctx, "work", "base")
	must(t, err)
	_, err = s.View(ctx, "look", "base")
	must(t, err)
	_, err = s.View(ctx, "empty", "")
	must(t, err)

	cases := []struct {
		key          string
		wantReadOnly bool
	}{
		{"base", true},
		{"work", false},
		{"look", true},
		{"empty", true},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			p, err := s.SubvolumePath(ctx, tc.key)
			must(t, err)
			if sub, err := isSubvolume(p); err != nil || !sub {
				t.Fatalf("%s is not a subvolume (%v)", p, err)
			}
			flags, err := subvolumeFlags(p)
			must(t, err)
			if ro := flags&subvolReadOnly != 0; ro != tc.wantReadOnly {
				t.Errorf("read-only = %t, want %t", ro, tc.wantReadOnly)
			}
		})
	}
	if _, err := s.SubvolumePath(ctx, "nope"); !errors.Is(err, snapshot.ErrNotFound) {
		t.Errorf("path of a missing key: %v, want ErrNotFound", err)
	}
}

// TestRemoveNestedSubvolume checks that a subvolume a container created
// inside its root filesystem does not block removing the snapshot, even
// after commit made the outer one read-only.
func TestRemoveNestedSubvolume(t *testing.T) {
	ctx := t.Context()
	s, err := New(filepath.Join(snapshottest.NewLoopBtrfs(t), "snaps"), snapshottest.Logger(t))
	must(t, err)
	t.Cleanup(func() { s.Close() })
	_, err = s.Prepare(ctx, "work", "")
	must(t, err)
	p, err := s.SubvolumePath(ctx, "work")
	must(t, err)
	must(t, os.MkdirAll(filepath.Join(p, "var", "lib"), 0o755))
	must(t, createSubvolume(filepath.Join(p, "var", "lib", "nested")))
	must(t, createSubvolume(filepath.Join(p, "var", "lib", "nested", "deeper")))
	must(t, s.Commit(ctx, "done", "work"))

	must(t, s.Remove(ctx, "done"))
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("subvolume still there after remove: %v", err)
	}
}

// TestOrphansRemoved checks that a subvolume the metadata does not know
// (a crash between creating and recording it) is deleted on open.
func TestOrphansRemoved(t *testing.T) {
	root := filepath.Join(snapshottest.NewLoopBtrfs(t), "snaps")
	s := open(t, root)
	_, err := s.Prepare(t.Context(), "kept", "")
	must(t, err)
	must(t, s.Close())
	orphan := filepath.Join(root, snapshotsDir, "999")
	must(t, createSubvolume(orphan))
	must(t, setReadOnly(orphan, true))

	s = open(t, root)
	defer s.Close()
	if _, err := os.Stat(orphan); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan subvolume still there: %v", err)
	}
	if _, err := s.Stat(t.Context(), "kept"); err != nil {
		t.Errorf("known snapshot lost: %v", err)
	}
}
