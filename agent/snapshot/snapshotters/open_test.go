package snapshotters_test

import (
	"errors"
	"testing"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/btrfs"
	"github.com/godwit/godwit/agent/snapshot/overlay"
	"github.com/godwit/godwit/agent/snapshot/snapshotters"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/internal/testutil"
)

func TestOpen(t *testing.T) {
	cases := []struct {
		name    string
		kind    string
		root    func(t *testing.T) string
		want    func(snapshot.Snapshotter) bool
		wantErr error
	}{
		{"detect btrfs", "", func(t *testing.T) string { return snapshottest.NewLoopBtrfs(t) + "/snaps" }, isBtrfs, nil},
		{"detect overlay", "", notBtrfs, isOverlay, nil},
		{"overlay by name on btrfs", snapshot.Overlay, func(t *testing.T) string { return snapshottest.NewLoopBtrfs(t) + "/snaps" }, isOverlay, nil},
		{"btrfs by name off btrfs", snapshot.Btrfs, notBtrfs, nil, btrfs.ErrNotBtrfs},
		{"unknown name", "zfs", func(t *testing.T) string { return t.TempDir() }, nil, snapshotters.ErrUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sn, err := snapshotters.Open(tc.kind, tc.root(t), snapshottest.Logger(t))
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Open: %v, want %v", err, tc.wantErr)
				}
				if sn != nil {
					t.Errorf("failed Open returned a non-nil snapshotter %#v", sn)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sn.Close()
			if !tc.want(sn) {
				t.Errorf("Open returned %T", sn)
			}
		})
	}
}

func isBtrfs(s snapshot.Snapshotter) bool   { _, ok := s.(*btrfs.Snapshotter); return ok }
func isOverlay(s snapshot.Snapshotter) bool { _, ok := s.(*overlay.Snapshotter); return ok }

// notBtrfs returns a temporary directory, skipping where that is on btrfs.
func notBtrfs(t *testing.T) string {
	dir := t.TempDir()
	if kind, err := snapshot.Detect(dir); err != nil || kind != snapshot.Overlay {
		testutil.Missing(t, "a temp dir that is not on btrfs (this case needs another filesystem; "+dir+" is btrfs)")
	}
	return dir
}
