package btrfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/godwit/godwit/agent/archive"
	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/internal/metadata"
)

// ErrNotBtrfs: the snapshotter root is not on a btrfs filesystem.
var ErrNotBtrfs = errors.New("snapshot root is not on btrfs")

const (
	snapshotsDir = "snapshots"
	// emptyDir is an empty directory that stands in as the "parent" tree
	// when diffing a snapshot that has no parent.
	emptyDir    = "empty"
	privateMode = 0o700
)

// Snapshotter implements snapshot.Snapshotter on btrfs subvolumes.
type Snapshotter struct {
	root string
	ms   *metadata.Store
	log  *slog.Logger
}

var _ snapshot.Snapshotter = (*Snapshotter)(nil)

// New opens (or creates) the btrfs snapshotter at root, which must be on
// btrfs. It deletes subvolumes that a crash left without metadata.
func New(root string, log *slog.Logger) (*Snapshotter, error) {
	if log == nil {
		log = slog.Default()
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("btrfs snapshot root: %w", err)
	}
	kind, err := snapshot.Detect(root)
	if err != nil {
		return nil, err
	}
	if kind != snapshot.Btrfs {
		return nil, fmt.Errorf("%s: put the data dir on a btrfs filesystem or use the %s snapshotter: %w", root, snapshot.Overlay, ErrNotBtrfs)
	}
	for _, d := range []string{snapshotsDir, emptyDir} {
		if err := os.MkdirAll(filepath.Join(root, d), privateMode); err != nil {
			return nil, fmt.Errorf("create btrfs snapshot root: %w", err)
		}
	}
	ms, err := metadata.Open(root)
	if err != nil {
		return nil, err
	}
	s := &Snapshotter{root: root, ms: ms, log: log.With("snapshotter", snapshot.Btrfs, "root", root)}
	if err := s.removeOrphans(); err != nil {
		ms.Close()
		return nil, err
	}
	return s, nil
}

func (s *Snapshotter) path(id string) string { return filepath.Join(s.root, snapshotsDir, id) }

// removeOrphans deletes subvolumes the metadata does not know, left by a
// crash between creating a subvolume and recording it.
func (s *Snapshotter) removeOrphans() error {
	orphans, err := s.ms.Orphans(filepath.Join(s.root, snapshotsDir))
	if err != nil {
		return fmt.Errorf("list btrfs snapshots: %w", err)
	}
	for _, id := range orphans {
		p := s.path(id)
		s.log.Warn("removing orphaned snapshot", "path", p)
		var err error
		if sub, _ := isSubvolume(p); sub {
			err = destroySubvolume(p)
		} else {
			err = os.RemoveAll(p)
		}
		if err != nil {
			s.log.Warn("remove orphaned snapshot", "path", p, "err", err)
		}
	}
	// Marks and received subvolumes of snapshots that are gone, and
	// receives a crash cut short (sync.go).
	for _, d := range []string{marksDir, receivedDir} {
		orphans, err := s.ms.Orphans(filepath.Join(s.root, d))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("list btrfs %s: %w", d, err)
		}
		for _, id := range orphans {
			p := filepath.Join(s.root, d, id)
			s.log.Warn("removing the sync leftovers of a snapshot that is gone", "path", p)
			if err := s.dropIncoming(p); err != nil {
				s.log.Warn("remove sync leftovers", "path", p, "err", err)
			}
		}
	}
	return nil
}

// Prepare implements snapshot.Snapshotter.
func (s *Snapshotter) Prepare(ctx context.Context, key, parent string) ([]snapshot.Mount, error) {
	return s.create(ctx, snapshot.KindActive, key, parent)
}

// View implements snapshot.Snapshotter.
func (s *Snapshotter) View(ctx context.Context, key, parent string) ([]snapshot.Mount, error) {
	return s.create(ctx, snapshot.KindView, key, parent)
}

func (s *Snapshotter) create(ctx context.Context, kind snapshot.Kind, key, parent string) ([]snapshot.Mount, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var rec metadata.Record
	var created bool
	err := s.ms.Update(func(tx *metadata.Tx) error {
		var err error
		if rec, err = tx.Create(key, parent, kind, time.Now()); err != nil {
			return err
		}
		readOnly := kind == snapshot.KindView
		if parent == "" {
			if err := createSubvolume(s.path(rec.ID)); err != nil {
				return err
			}
			created = true
			if readOnly {
				return setReadOnly(s.path(rec.ID), true)
			}
			return nil
		}
		p, err := tx.Get(parent)
		if err != nil {
			return err
		}
		if err := snapshotSubvolume(s.path(p.ID), s.path(rec.ID), readOnly); err != nil {
			return err
		}
		created = true
		return nil
	})
	if err != nil {
		if created {
			if derr := destroySubvolume(s.path(rec.ID)); derr != nil {
				s.log.Warn("delete subvolume of failed snapshot; it is retried when the snapshotter next opens", "snapshot", key, "err", derr)
			}
		}
		return nil, err
	}
	return s.mounts(rec), nil
}

func (s *Snapshotter) mounts(rec metadata.Record) []snapshot.Mount {
	access := "rw"
	if rec.Kind == snapshot.KindView {
		access = "ro"
	}
	return []snapshot.Mount{{Type: snapshot.MountTypeBind, Source: s.path(rec.ID), Options: []string{"rbind", access}}}
}

// Mounts implements snapshot.Snapshotter.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]snapshot.Mount, error) {
	rec, _, err := s.ms.Lookup(ctx, key, "mount", snapshot.KindActive, snapshot.KindView)
	if err != nil {
		return nil, err
	}
	return s.mounts(rec), nil
}

// Commit implements snapshot.Snapshotter: the active subvolume becomes
// read-only in place, which is what btrfs send requires of it later.
func (s *Snapshotter) Commit(ctx context.Context, name, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var frozen string
	err := s.ms.Update(func(tx *metadata.Tx) error {
		rec, err := tx.Commit(name, key)
		if err != nil {
			return err
		}
		if err := setReadOnly(s.path(rec.ID), true); err != nil {
			return err
		}
		frozen = s.path(rec.ID)
		return nil
	})
	if err != nil && frozen != "" {
		// The metadata still says active: keep the subvolume writable to
		// match.
		err = errors.Join(err, setReadOnly(frozen, false))
	}
	return err
}

// Stat implements snapshot.Snapshotter.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	return s.ms.Stat(ctx, key)
}

// List implements snapshot.Snapshotter.
func (s *Snapshotter) List(ctx context.Context) ([]snapshot.Info, error) {
	return s.ms.List(ctx)
}

// Remove implements snapshot.Snapshotter. The subvolume is deleted before
// the metadata forgets it, so a failure leaves the snapshot in place and
// says why. (btrfs deletes a subvolume even while it is bind-mounted, so
// unmount first.)
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var id string
	err := s.ms.Update(func(tx *metadata.Tx) error {
		rec, err := tx.Remove(key)
		if err != nil {
			return err
		}
		id = rec.ID
		return destroySubvolume(s.path(rec.ID))
	})
	if err != nil {
		return err
	}
	if err := s.dropSync(id); err != nil {
		s.log.Warn("delete the snapshot's marks and received subvolumes; they are retried when the snapshotter next opens", "snapshot", key, "err", err)
	}
	return nil
}

// Diff implements snapshot.Snapshotter by comparing the snapshot's tree
// with its parent's.
func (s *Snapshotter) Diff(ctx context.Context, key string, w io.Writer) error {
	rec, parents, err := s.ms.Lookup(ctx, key, "diff", snapshot.KindActive, snapshot.KindCommitted)
	if err != nil {
		return err
	}
	parentDir := filepath.Join(s.root, emptyDir)
	if len(parents) > 0 {
		parentDir = s.path(parents[0].ID)
	}
	if err := archive.WriteTreeDiff(ctx, parentDir, s.path(rec.ID), w); err != nil {
		return fmt.Errorf("diff snapshot %q: %w", key, err)
	}
	return nil
}

// Apply implements snapshot.Snapshotter. The subvolume holds the whole
// tree, so whiteouts delete.
func (s *Snapshotter) Apply(ctx context.Context, key string, r io.Reader) error {
	rec, _, err := s.ms.Lookup(ctx, key, "apply to", snapshot.KindActive)
	if err != nil {
		return err
	}
	if err := archive.Apply(ctx, s.path(rec.ID), r, archive.WhiteoutDelete); err != nil {
		return fmt.Errorf("apply to snapshot %q: %w", key, err)
	}
	return nil
}

// SubvolumePath returns the path of key's subvolume, for btrfs send and
// receive. Committed subvolumes are read-only; an active one may change
// under the caller unless its container is frozen.
func (s *Snapshotter) SubvolumePath(ctx context.Context, key string) (string, error) {
	rec, _, err := s.ms.Lookup(ctx, key, "locate", snapshot.KindActive, snapshot.KindView, snapshot.KindCommitted)
	if err != nil {
		return "", err
	}
	return s.path(rec.ID), nil
}

// Close implements snapshot.Snapshotter.
func (s *Snapshotter) Close() error { return s.ms.Close() }
