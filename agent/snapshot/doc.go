// Package snapshot owns the copy-on-write root filesystems that containers
// run on: the Snapshotter contract (modelled on containerd's), the Mount
// type that carries a snapshot to whoever mounts it, and detection of which
// implementation a data dir's filesystem supports.
//
// Implementations live in sub-packages that import this one and never the
// reverse: overlay (the default, overlayfs upper and lower dirs) and btrfs
// (one subvolume per snapshot). Both run the shared conformance suite in
// snapshottest. snapshotters.Open picks one by name or by Detect.
//
// A snapshot moves through three kinds. Prepare creates an active
// (writable) snapshot; Commit turns it into a committed, immutable one that
// later snapshots can use as their parent; View creates a read-only one.
// Image layers are unpacked by Prepare, Apply, Commit per layer; a
// container's root filesystem is an active snapshot on the image's top
// layer, and its Diff is what a migration or checkpoint carries.
package snapshot
