package snapshotters_test

import (
	"testing"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/snapshotters"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/internal/testutil"
)

// TestSyncAcrossSnapshotters moves a snapshot in use between an overlay
// and a btrfs snapshotter, both ways, in the portable format: the
// receiving side ends with the sender's tree exactly.
func TestSyncAcrossSnapshotters(t *testing.T) {
	testutil.RequireRoot(t)
	open := func(t *testing.T, kind string) snapshot.Snapshotter {
		root := t.TempDir()
		if kind == snapshot.Btrfs {
			root = snapshottest.NewLoopBtrfs(t) + "/snaps"
		}
		sn, err := snapshotters.Open(kind, root, snapshottest.Logger(t))
		if err != nil {
			t.Fatalf("open %s: %v", kind, err)
		}
		t.Cleanup(func() { sn.Close() })
		return sn
	}
	for _, tc := range []struct{ name, from, to string }{
		{"overlay to btrfs", snapshot.Overlay, snapshot.Btrfs},
		{"btrfs to overlay", snapshot.Btrfs, snapshot.Overlay},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snapshottest.CheckSync(t, open(t, tc.from), open(t, tc.to), snapshot.SyncTar)
		})
	}
}
