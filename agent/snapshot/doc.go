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
// layer, and its Diff is what a checkpoint carries.
//
// A live migration moves an active snapshot while its container runs
// (sync.go): Mark sends its tree and remembers it, Changes sends only
// what changed since (the container frozen), and the receiving
// snapshotter's Receive and ReceiveChanges rebuild it, in a SyncFormat
// both sides have: layer tars always, btrfs send streams between btrfs
// snapshotters.
package snapshot
