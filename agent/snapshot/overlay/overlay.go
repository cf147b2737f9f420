package overlay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/archive"
	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/internal/metadata"
)

// ErrTooManyLayers: the overlay mount options naming every lower dir do not
// fit in the page the kernel copies them into.
var ErrTooManyLayers = errors.New("too many overlay layers for one mount")

// ErrUnsupportedRoot: the root's filesystem or path cannot hold overlay
// upper and lower dirs.
var ErrUnsupportedRoot = errors.New("snapshot root cannot be used for overlay")

const (
	snapshotsDir = "snapshots"
	fsDir        = "fs"
	workDir      = "work"
	dirMode      = 0o755
	privateMode  = 0o700
)

// fixedOptions keep the upper dir a complete description of the layer's
// changes (see the package doc).
var fixedOptions = []string{"index=off", "redirect_dir=off", "metacopy=off"}

// Snapshotter implements snapshot.Snapshotter on overlayfs.
type Snapshotter struct {
	root string
	ms   *metadata.Store
	log  *slog.Logger
}

var _ snapshot.Snapshotter = (*Snapshotter)(nil)

// New opens (or creates) the overlay snapshotter at root. It removes
// snapshot directories that a crash left without metadata.
func New(root string, log *slog.Logger) (*Snapshotter, error) {
	if log == nil {
		log = slog.Default()
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("overlay snapshot root: %w", err)
	}
	// The kernel splits lowerdir on ':' and the option list on ','.
	if strings.ContainsAny(root, ":,") {
		return nil, fmt.Errorf("overlay snapshot root %q contains ':' or ',', which overlayfs options cannot carry: choose another data dir: %w", root, ErrUnsupportedRoot)
	}
	if err := os.MkdirAll(filepath.Join(root, snapshotsDir), privateMode); err != nil {
		return nil, fmt.Errorf("create overlay snapshot root: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return nil, fmt.Errorf("statfs overlay snapshot root: %w", err)
	}
	if st.Type == unix.OVERLAYFS_SUPER_MAGIC {
		return nil, fmt.Errorf("overlay snapshot root %s is itself on overlayfs, which cannot hold upper dirs: put the data dir on ext4, xfs or tmpfs (or mount a volume there): %w", root, ErrUnsupportedRoot)
	}
	ms, err := metadata.Open(root)
	if err != nil {
		return nil, err
	}
	s := &Snapshotter{root: root, ms: ms, log: log.With("snapshotter", snapshot.Overlay, "root", root)}
	if err := s.removeOrphans(); err != nil {
		ms.Close()
		return nil, err
	}
	return s, nil
}

func (s *Snapshotter) dir(id string) string    { return filepath.Join(s.root, snapshotsDir, id) }
func (s *Snapshotter) fsPath(id string) string { return filepath.Join(s.dir(id), fsDir) }

// removeOrphans deletes snapshot directories the metadata does not know:
// left by a crash inside Prepare or Remove.
func (s *Snapshotter) removeOrphans() error {
	orphans, err := s.ms.Orphans(filepath.Join(s.root, snapshotsDir))
	if err != nil {
		return fmt.Errorf("list overlay snapshots: %w", err)
	}
	for _, id := range orphans {
		s.log.Warn("removing orphaned snapshot directory", "dir", s.dir(id))
		if err := os.RemoveAll(s.dir(id)); err != nil {
			s.log.Warn("remove orphaned snapshot directory", "dir", s.dir(id), "err", err)
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
	var mounts []snapshot.Mount
	var created string
	err := s.ms.Update(func(tx *metadata.Tx) error {
		rec, err := tx.Create(key, parent, kind, time.Now())
		if err != nil {
			return err
		}
		parents, err := tx.Parents(rec)
		if err != nil {
			return err
		}
		if mounts, err = s.mounts(rec, parents); err != nil {
			return err
		}
		created = s.dir(rec.ID)
		return s.makeDirs(rec, parents)
	})
	if err != nil {
		if created != "" {
			os.RemoveAll(created)
		}
		return nil, err
	}
	return mounts, nil
}

// makeDirs creates the snapshot's fs (and, when it will be an upper dir,
// work) directory. The fs dir takes the owner and mode of the nearest
// parent's root, because overlayfs shows the upper dir's root attributes
// as the merged root's.
func (s *Snapshotter) makeDirs(rec metadata.Record, parents []metadata.Record) error {
	fs := s.fsPath(rec.ID)
	if err := os.MkdirAll(s.dir(rec.ID), privateMode); err != nil {
		return fmt.Errorf("create snapshot %q: %w", rec.Key, err)
	}
	if err := os.Mkdir(fs, dirMode); err != nil {
		return fmt.Errorf("create snapshot %q: %w", rec.Key, err)
	}
	if err := os.Chmod(fs, dirMode); err != nil { // past the agent's umask
		return fmt.Errorf("create snapshot %q: %w", rec.Key, err)
	}
	if len(parents) == 0 {
		return nil
	}
	if rec.Kind == snapshot.KindActive {
		if err := os.Mkdir(filepath.Join(s.dir(rec.ID), workDir), privateMode); err != nil {
			return fmt.Errorf("create snapshot %q: %w", rec.Key, err)
		}
	}
	fi, err := os.Stat(s.fsPath(parents[0].ID))
	if err != nil {
		return fmt.Errorf("create snapshot %q: parent %q: %w", rec.Key, parents[0].Key, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if err := os.Lchown(fs, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("create snapshot %q: %w", rec.Key, err)
		}
	}
	if err := os.Chmod(fs, fi.Mode().Perm()|fi.Mode()&(os.ModeSetuid|os.ModeSetgid|os.ModeSticky)); err != nil {
		return fmt.Errorf("create snapshot %q: %w", rec.Key, err)
	}
	return nil
}

// mounts describes how to mount rec on top of parents (nearest first).
func (s *Snapshotter) mounts(rec metadata.Record, parents []metadata.Record) ([]snapshot.Mount, error) {
	access := "rw"
	if rec.Kind == snapshot.KindView {
		access = "ro"
	}
	switch {
	case len(parents) == 0:
		return []snapshot.Mount{{Type: snapshot.MountTypeBind, Source: s.fsPath(rec.ID), Options: []string{"rbind", access}}}, nil
	case rec.Kind == snapshot.KindView && len(parents) == 1:
		// overlayfs needs two lower dirs when it has no upper dir; one
		// read-only layer is just a read-only bind.
		return []snapshot.Mount{{Type: snapshot.MountTypeBind, Source: s.fsPath(parents[0].ID), Options: []string{"rbind", "ro"}}}, nil
	}
	lowers := make([]string, len(parents))
	for i, p := range parents {
		lowers[i] = s.fsPath(p.ID)
	}
	opts := append([]string{}, fixedOptions...)
	if rec.Kind == snapshot.KindActive {
		opts = append(opts,
			"upperdir="+s.fsPath(rec.ID),
			"workdir="+filepath.Join(s.dir(rec.ID), workDir))
	} else {
		opts = append(opts, "ro")
	}
	opts = append(opts, "lowerdir="+strings.Join(lowers, ":"))
	m := snapshot.Mount{Type: "overlay", Source: "overlay", Options: opts}
	if n := m.DataLen(); n > snapshot.MaxMountDataLen() {
		return nil, fmt.Errorf("snapshot %q has %d layers whose overlay options take %d bytes, over the kernel's %d: flatten the image or use a shorter data dir path: %w",
			rec.Key, len(parents), n, snapshot.MaxMountDataLen(), ErrTooManyLayers)
	}
	return []snapshot.Mount{m}, nil
}

// Mounts implements snapshot.Snapshotter.
func (s *Snapshotter) Mounts(ctx context.Context, key string) ([]snapshot.Mount, error) {
	rec, parents, err := s.ms.Lookup(ctx, key, "mount", snapshot.KindActive, snapshot.KindView)
	if err != nil {
		return nil, err
	}
	return s.mounts(rec, parents)
}

// Commit implements snapshot.Snapshotter. The upper dir becomes a lower
// dir as it is; the work dir stays for overlayfs's leftovers.
func (s *Snapshotter) Commit(ctx context.Context, name, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.ms.Update(func(tx *metadata.Tx) error {
		_, err := tx.Commit(name, key)
		return err
	})
}

// Stat implements snapshot.Snapshotter.
func (s *Snapshotter) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	return s.ms.Stat(ctx, key)
}

// List implements snapshot.Snapshotter.
func (s *Snapshotter) List(ctx context.Context) ([]snapshot.Info, error) {
	return s.ms.List(ctx)
}

// Remove implements snapshot.Snapshotter. The directory goes after the
// metadata; if deleting it fails, the next New retries.
func (s *Snapshotter) Remove(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var rec metadata.Record
	err := s.ms.Update(func(tx *metadata.Tx) error {
		var err error
		rec, err = tx.Remove(key)
		return err
	})
	if err != nil {
		return err
	}
	if err := os.RemoveAll(s.dir(rec.ID)); err != nil {
		s.log.Warn("remove snapshot directory; it is retried when the snapshotter next opens", "snapshot", key, "dir", s.dir(rec.ID), "err", err)
	}
	return nil
}

// Diff implements snapshot.Snapshotter: the fs dir is the layer, with the
// whiteouts overlayfs wrote for deletions.
func (s *Snapshotter) Diff(ctx context.Context, key string, w io.Writer) error {
	rec, _, err := s.ms.Lookup(ctx, key, "diff", snapshot.KindActive, snapshot.KindCommitted)
	if err != nil {
		return err
	}
	if err := archive.WriteOverlayDiff(ctx, s.fsPath(rec.ID), w); err != nil {
		return fmt.Errorf("diff snapshot %q: %w", key, err)
	}
	return nil
}

// Apply implements snapshot.Snapshotter. On a snapshot with parents,
// deletions become overlay whiteouts in the upper dir; on one without, the
// fs dir is the whole tree and they delete.
func (s *Snapshotter) Apply(ctx context.Context, key string, r io.Reader) error {
	rec, parents, err := s.ms.Lookup(ctx, key, "apply to", snapshot.KindActive)
	if err != nil {
		return err
	}
	mode := archive.WhiteoutOverlay
	if len(parents) == 0 {
		mode = archive.WhiteoutDelete
	}
	if err := archive.Apply(ctx, s.fsPath(rec.ID), r, mode); err != nil {
		return fmt.Errorf("apply to snapshot %q: %w", key, err)
	}
	return nil
}

// Close implements snapshot.Snapshotter.
func (s *Snapshotter) Close() error { return s.ms.Close() }
