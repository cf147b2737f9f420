// Package snapshottest is the conformance suite that every
// snapshot.Snapshotter runs (Run), and the fixtures other packages' tests
// need around snapshots: a loop-mounted btrfs filesystem (NewLoopBtrfs),
// a comparable picture of a directory tree (ReadTree), a mount check
// (Mounted) and a test logger (Logger). Gating on root and tools is
// internal/testutil's.
//
// The suite mounts what the snapshotter returns and reads the files
// through those mounts, so it needs root.
package snapshottest
