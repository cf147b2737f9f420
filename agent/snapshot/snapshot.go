package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Names of the implementations, as given to snapshotters.Open and to the
// agent's --snapshotter flag.
const (
	Overlay = "overlay"
	Btrfs   = "btrfs"
)

// Sentinel errors. Implementations wrap them with %w, so test with
// errors.Is.
var (
	// ErrNotFound: no snapshot has the key (or the parent name) given.
	ErrNotFound = errors.New("snapshot not found")
	// ErrExists: the key or name is already used by a snapshot of any kind.
	ErrExists = errors.New("snapshot already exists")
	// ErrInvalidKind: the snapshot exists but its kind does not allow the
	// operation, such as committing a view or preparing on an active parent.
	ErrInvalidKind = errors.New("snapshot kind does not allow this operation")
	// ErrHasChildren: another snapshot names this one as its parent.
	ErrHasChildren = errors.New("snapshot has children")
	// ErrInvalidArgument: a key or name is empty.
	ErrInvalidArgument = errors.New("invalid snapshot argument")
	// ErrClosed: the snapshotter was closed.
	ErrClosed = errors.New("snapshotter is closed")
)

// Kind says what a snapshot may be used for. The zero value is
// KindUnknown, so a zero Info is never mistaken for a real snapshot.
type Kind int

const (
	KindUnknown Kind = iota
	// KindActive is writable; it can be mounted, changed, diffed, applied
	// to and committed, but is never a parent.
	KindActive
	// KindView is read-only; it can be mounted and removed, nothing else.
	KindView
	// KindCommitted is immutable; it is the only kind that can be a parent.
	// It cannot be mounted directly: View or Prepare on it.
	KindCommitted
)

var kindNames = map[Kind]string{
	KindUnknown:   "unknown",
	KindActive:    "active",
	KindView:      "view",
	KindCommitted: "committed",
}

func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// MarshalText writes the kind's name, so that persisted metadata stays
// readable and does not depend on the constants' order.
func (k Kind) MarshalText() ([]byte, error) {
	if _, ok := kindNames[k]; !ok {
		return nil, fmt.Errorf("marshal snapshot kind %d: %w", int(k), ErrInvalidArgument)
	}
	return []byte(k.String()), nil
}

// UnmarshalText is the inverse of MarshalText.
func (k *Kind) UnmarshalText(text []byte) error {
	for kind, name := range kindNames {
		if name == string(text) {
			*k = kind
			return nil
		}
	}
	return fmt.Errorf("unmarshal snapshot kind %q: %w", text, ErrInvalidArgument)
}

// Info describes one snapshot.
type Info struct {
	// Key identifies the snapshot: the key given to Prepare or View, or the
	// name given to Commit.
	Key string
	// Parent is the committed snapshot this one is built on; empty for a
	// snapshot that starts from an empty directory.
	Parent  string
	Kind    Kind
	Created time.Time
}

// Snapshotter manages snapshots for one root directory. Keys of all kinds
// share one namespace. Implementations are safe for concurrent use;
// metadata survives Close and reopening on the same root.
//
// Mounting is the caller's job: the methods return Mounts, and the caller
// must unmount a snapshot before it commits or removes it.
type Snapshotter interface {
	// Prepare creates an active (writable) snapshot named key on top of the
	// committed snapshot parent, or on an empty directory when parent is
	// empty, and returns the mounts that present it.
	//
	// Prepare with a key that exists (of any kind) fails with ErrExists; with
	// a parent that does not exist, ErrNotFound; with a parent that is not
	// committed, ErrInvalidKind; with an empty key, ErrInvalidArgument.
	Prepare(ctx context.Context, key, parent string) ([]Mount, error)

	// View creates a read-only snapshot named key showing the committed
	// snapshot parent (an empty directory when parent is empty). Writes
	// through its mounts fail. It fails like Prepare.
	View(ctx context.Context, key, parent string) ([]Mount, error)

	// Commit turns the active snapshot key into the committed snapshot
	// name, with the same parent and contents. Afterwards key no longer
	// exists. The caller must have unmounted key.
	//
	// Commit of a key that does not exist fails with ErrNotFound; of a view
	// or a committed snapshot, ErrInvalidKind; to a name that exists,
	// ErrExists. A failed Commit changes nothing.
	Commit(ctx context.Context, name, key string) error

	// Mounts returns the mounts of the active snapshot or view key again,
	// the same as Prepare or View returned (for a restarted agent).
	//
	// Mounts of a key that does not exist fails with ErrNotFound; of a
	// committed snapshot, ErrInvalidKind.
	Mounts(ctx context.Context, key string) ([]Mount, error)

	// Stat describes the snapshot key, of any kind, or fails with
	// ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)

	// List describes every snapshot, sorted by key.
	List(ctx context.Context) ([]Info, error)

	// Remove deletes the snapshot key, of any kind, and its contents. The
	// caller must have unmounted it.
	//
	// Remove of a key that does not exist fails with ErrNotFound; of a
	// snapshot that another names as its parent, ErrHasChildren (remove the
	// children first).
	Remove(ctx context.Context, key string) error

	// Diff writes the changes of the active or committed snapshot key
	// against its parent to w as an OCI image layer tar (uncompressed):
	// added and changed entries in full, deletions as .wh. whiteouts and
	// replaced directories as whiteouts or opaque markers. Applying that tar
	// to a fresh Prepare on the same parent reproduces key's tree. For a
	// snapshot without a parent the tar holds its whole tree.
	//
	// Diff of a key that does not exist fails with ErrNotFound; of a view,
	// ErrInvalidKind. The snapshot must not change while Diff runs.
	Diff(ctx context.Context, key string, w io.Writer) error

	// Apply unpacks the OCI image layer tar r (uncompressed) into the active
	// snapshot key, honouring whiteouts and opaque markers against key's
	// parents. It unpacks image layers (Prepare, Apply, Commit) and restores
	// a container's root filesystem diff. Apply before mounting key: changes
	// made underneath a mounted overlay are not reliably visible.
	//
	// Apply to a key that does not exist fails with ErrNotFound; to a view or
	// a committed snapshot, ErrInvalidKind.
	Apply(ctx context.Context, key string, r io.Reader) error

	// SyncFormats lists the formats that Mark, Changes, Receive and
	// ReceiveChanges take, preferred first; SyncTar is always one.
	SyncFormats() []SyncFormat

	// Mark records the state of the active snapshot key under the name
	// mark and writes key's tree as it was then to w in format f, for
	// Receive on another snapshotter that has key's parent: SyncTar writes
	// key's diff against its parent, as Diff does; SyncBtrfs a whole send
	// stream. key may be mounted and written while Mark runs: whatever
	// changes meanwhile is written again by Changes. Marking again under
	// the same name replaces the mark.
	//
	// Mark of a key that does not exist fails with ErrNotFound; of one
	// that is not active, ErrInvalidKind; with a bad mark name,
	// ErrInvalidArgument; in a format not in SyncFormats,
	// ErrUnsupportedFormat.
	Mark(ctx context.Context, key, mark string, f SyncFormat, w io.Writer) error

	// Changes writes what changed in the active snapshot key since mark
	// to w in format f (SyncBtrfs only if Mark wrote SyncBtrfs):
	// ReceiveChanges on what Receive made of Mark's stream reproduces
	// key's tree exactly, deletions, replaced directories, modes, owners,
	// times and links included. SyncTar writes an OCI layer tar whose
	// whiteouts apply to that tree. key must not change while Changes
	// runs (freeze its container first). The mark stays.
	//
	// Changes with a mark key does not have fails with ErrNotFound;
	// otherwise it fails like Mark.
	Changes(ctx context.Context, key, mark string, f SyncFormat, w io.Writer) error

	// Unmark forgets mark of key and frees what it held. Removing key
	// forgets its marks too.
	//
	// Unmark of a key or a mark that does not exist fails with
	// ErrNotFound.
	Unmark(ctx context.Context, key, mark string) error

	// Receive creates the active snapshot key on the committed snapshot
	// parent (empty: none) from r, a stream Mark wrote in format f on a
	// snapshotter whose key had the same parent tree. It fails like
	// Prepare, and with ErrUnsupportedFormat; on any failure key does not
	// exist afterwards.
	Receive(ctx context.Context, key, parent string, f SyncFormat, r io.Reader) error

	// ReceiveChanges applies r, a stream Changes wrote in format f, to
	// the active snapshot key, which Receive made from the matching Mark
	// (SyncBtrfs needs exactly that; SyncTar applies to any active
	// snapshot with that tree). Apply it once, before mounting key. After
	// a failure key's tree is undefined: remove it.
	//
	// ReceiveChanges to a key that does not exist fails with ErrNotFound;
	// to one that is not active, ErrInvalidKind; with SyncBtrfs to a key
	// Receive did not make from a SyncBtrfs stream, ErrInvalidArgument.
	ReceiveChanges(ctx context.Context, key string, f SyncFormat, r io.Reader) error

	// Close releases the root (and its lock) for another snapshotter.
	// Later calls fail with ErrClosed; a second Close does nothing.
	Close() error
}
