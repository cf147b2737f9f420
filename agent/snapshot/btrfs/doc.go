// Package btrfs is the snapshotter for data dirs on btrfs: each snapshot is
// a subvolume root/snapshots/<id>. Prepare snapshots the parent's
// subvolume (or creates an empty one), View takes a read-only snapshot,
// Commit marks the active subvolume read-only in place, and mounts are
// bind mounts of the subvolume. Everything goes through btrfs ioctls, not
// the btrfs command.
//
// Committed subvolumes are read-only and every active or view subvolume is
// a snapshot of its parent's, so the pairs that incremental `btrfs send -p`
// needs are there; SubvolumePath hands out their paths.
package btrfs
