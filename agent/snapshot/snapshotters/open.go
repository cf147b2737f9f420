package snapshotters

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/btrfs"
	"github.com/godwit/godwit/agent/snapshot/overlay"
)

// ErrUnknown: the snapshotter name is not one godwit has.
var ErrUnknown = errors.New("unknown snapshotter")

// Open opens the snapshotter kind (snapshot.Overlay or snapshot.Btrfs) on
// root. An empty kind picks one with snapshot.Detect(root).
func Open(kind, root string, log *slog.Logger) (snapshot.Snapshotter, error) {
	if kind == "" {
		var err error
		if kind, err = snapshot.Detect(root); err != nil {
			return nil, err
		}
	}
	// Each case checks err itself: returning a nil *T as the interface
	// would make a non-nil Snapshotter.
	switch kind {
	case snapshot.Overlay:
		s, err := overlay.New(root, log)
		if err != nil {
			return nil, err
		}
		return s, nil
	case snapshot.Btrfs:
		s, err := btrfs.New(root, log)
		if err != nil {
			return nil, err
		}
		return s, nil
	default:
		return nil, fmt.Errorf("snapshotter %q: use %q or %q: %w", kind, snapshot.Overlay, snapshot.Btrfs, ErrUnknown)
	}
}
