// Package snapshottest is the conformance suite that every
// snapshot.Snapshotter runs (Run), and the fixtures other packages' tests
// need around snapshots: a loop-mounted btrfs filesystem (NewLoopBtrfs),
// a comparable picture of a directory tree (ReadTree), and the root and
// tool checks that skip a test, or fail it under CI=true.
//
// The suite mounts what the snapshotter returns and reads the files
// through those mounts, so it needs root.
package snapshottest
