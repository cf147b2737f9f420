package snapshot_test

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/internal/testutil"
)

func TestDetect(t *testing.T) {
	cases := []struct {
		name string
		dir  func(t *testing.T) string
		want string
	}{
		{"btrfs", func(t *testing.T) string { return snapshottest.NewLoopBtrfs(t) }, snapshot.Btrfs},
		{"not yet created dir on btrfs", func(t *testing.T) string {
			return filepath.Join(snapshottest.NewLoopBtrfs(t), "data", "snapshots")
		}, snapshot.Btrfs},
		{"ext4", func(t *testing.T) string {
			return snapshottest.NewLoopFilesystem(t, "ext4", "e2fsprogs")
		}, snapshot.Overlay},
		{"tmpfs", tmpfs, snapshot.Overlay},
		{"not yet created dir on tmpfs", func(t *testing.T) string {
			return filepath.Join(tmpfs(t), "data")
		}, snapshot.Overlay},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := snapshot.Detect(tc.dir(t))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Detect = %q, want %q", got, tc.want)
			}
		})
	}
}

func tmpfs(t *testing.T) string {
	testutil.RequireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { snapshot.Unmount(dir) })
	return dir
}
