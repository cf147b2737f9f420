package snapshot

import (
	"errors"
	"fmt"
	"regexp"
)

// SyncFormat names a stream that carries an active snapshot's tree from
// one snapshotter to another while it is in use (a live migration): Mark
// writes the tree and remembers it, Changes writes what changed since,
// and the receiving snapshotter's Receive and ReceiveChanges rebuild it.
type SyncFormat string

const (
	// SyncTar is an OCI layer tar, as Diff writes: every snapshotter
	// sends and receives it, whatever the other side is.
	SyncTar SyncFormat = "tar"
	// SyncBtrfs is a btrfs send stream: the whole subvolume from Mark, an
	// incremental `btrfs send -p` from Changes. Both sides must be btrfs.
	SyncBtrfs SyncFormat = "btrfs"
)

// ErrUnsupportedFormat: the snapshotter cannot send or receive the sync
// format asked for (see SyncFormats).
var ErrUnsupportedFormat = errors.New("sync format not supported by this snapshotter")

// markPattern keeps mark names usable as file and subvolume names.
var markPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// CheckMark refuses a mark name that is not 1 to 128 letters, digits,
// '_', '.' or '-' (starting with a letter or digit), with
// ErrInvalidArgument.
func CheckMark(mark string) error {
	if !markPattern.MatchString(mark) {
		return fmt.Errorf("mark %q: want 1 to 128 letters, digits, '_', '.' or '-': %w", mark, ErrInvalidArgument)
	}
	return nil
}

// CheckFormat refuses a format that is not in supported, with
// ErrUnsupportedFormat.
func CheckFormat(f SyncFormat, supported []SyncFormat) error {
	for _, s := range supported {
		if f == s {
			return nil
		}
	}
	return fmt.Errorf("%q (this snapshotter has %v): %w", f, supported, ErrUnsupportedFormat)
}
