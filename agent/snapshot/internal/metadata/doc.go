// Package metadata is the snapshotters' record of which snapshots exist:
// key, parent, kind, creation time and the short internal id that names
// each snapshot's directory or subvolume. It lives in one JSON file per
// snapshotter root, replaced atomically on every change, and is guarded by
// a mutex within the process and an exclusive flock across processes.
package metadata
