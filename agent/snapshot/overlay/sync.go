package overlay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/godwit/godwit/agent/archive"
	"github.com/godwit/godwit/agent/snapshot"
)

// Syncing an active snapshot to another snapshotter: a mark is the record
// of what the upper dir held when Mark wrote it (archive.UpperIndex), kept
// beside the snapshot's fs dir as marks/<mark>.json, so it goes with the
// snapshot.

const marksDir = "marks"

// syncFormats: an upper dir is a layer tar already; nothing else.
var syncFormats = []snapshot.SyncFormat{snapshot.SyncTar}

// SyncFormats implements snapshot.Snapshotter.
func (s *Snapshotter) SyncFormats() []snapshot.SyncFormat { return syncFormats }

func (s *Snapshotter) markPath(id, mark string) string {
	return filepath.Join(s.dir(id), marksDir, mark+".json")
}

// Mark implements snapshot.Snapshotter: the upper dir's diff, recording
// every entry as it is read.
func (s *Snapshotter) Mark(ctx context.Context, key, mark string, f snapshot.SyncFormat, w io.Writer) error {
	if err := checkSync(mark, f); err != nil {
		return err
	}
	rec, _, err := s.ms.Lookup(ctx, key, "mark", snapshot.KindActive)
	if err != nil {
		return err
	}
	idx, err := archive.WriteOverlayMark(ctx, s.fsPath(rec.ID), w)
	if err != nil {
		return fmt.Errorf("mark snapshot %q: %w", key, err)
	}
	data, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("mark snapshot %q: %w", key, err)
	}
	if err := writeFileAtomic(s.markPath(rec.ID, mark), data); err != nil {
		return fmt.Errorf("mark snapshot %q: %w", key, err)
	}
	return nil
}

// Changes implements snapshot.Snapshotter: the upper dir compared with
// the mark's record.
func (s *Snapshotter) Changes(ctx context.Context, key, mark string, f snapshot.SyncFormat, w io.Writer) error {
	if err := checkSync(mark, f); err != nil {
		return err
	}
	rec, _, err := s.ms.Lookup(ctx, key, "diff", snapshot.KindActive)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(s.markPath(rec.ID, mark))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("snapshot %q has no mark %q: %w", key, mark, snapshot.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("changes of snapshot %q: %w", key, err)
	}
	var idx archive.UpperIndex
	if err := json.Unmarshal(data, &idx); err != nil {
		return fmt.Errorf("changes of snapshot %q: mark %q is corrupt: %w", key, mark, err)
	}
	if err := archive.WriteOverlayChanges(ctx, s.fsPath(rec.ID), &idx, w); err != nil {
		return fmt.Errorf("changes of snapshot %q: %w", key, err)
	}
	return nil
}

// Unmark implements snapshot.Snapshotter.
func (s *Snapshotter) Unmark(ctx context.Context, key, mark string) error {
	if err := snapshot.CheckMark(mark); err != nil {
		return err
	}
	rec, _, err := s.ms.Lookup(ctx, key, "unmark", snapshot.KindActive, snapshot.KindView, snapshot.KindCommitted)
	if err != nil {
		return err
	}
	err = os.Remove(s.markPath(rec.ID, mark))
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("snapshot %q has no mark %q: %w", key, mark, snapshot.ErrNotFound)
	}
	return err
}

// Receive implements snapshot.Snapshotter: Prepare, then Apply.
func (s *Snapshotter) Receive(ctx context.Context, key, parent string, f snapshot.SyncFormat, r io.Reader) error {
	if err := snapshot.CheckFormat(f, syncFormats); err != nil {
		return err
	}
	if _, err := s.Prepare(ctx, key, parent); err != nil {
		return err
	}
	if err := s.Apply(ctx, key, r); err != nil {
		return errors.Join(err, s.Remove(context.WithoutCancel(ctx), key))
	}
	return nil
}

// ReceiveChanges implements snapshot.Snapshotter. The changes apply to
// the merged tree, not to a fresh layer: a whiteout may name what only
// the upper dir holds, which must simply go (overlayfs hides a whiteout
// only where a lower dir has the name), and a replaced directory must
// lose the entries the upper dir had there. So they are applied through
// a mount of key, deleting as they say, and overlayfs makes the upper
// dir's whiteouts and opaque directories itself, as it does for the
// container's own writes.
func (s *Snapshotter) ReceiveChanges(ctx context.Context, key string, f snapshot.SyncFormat, r io.Reader) (err error) {
	if err := snapshot.CheckFormat(f, syncFormats); err != nil {
		return err
	}
	rec, parents, err := s.ms.Lookup(ctx, key, "receive changes into", snapshot.KindActive)
	if err != nil {
		return err
	}
	mounts, err := s.mounts(rec, parents)
	if err != nil {
		return err
	}
	mnt, err := os.MkdirTemp(s.dir(rec.ID), "apply-")
	if err != nil {
		return fmt.Errorf("receive changes into snapshot %q: %w", key, err)
	}
	defer os.Remove(mnt)
	// volatile: unmounting an overlay syncs its whole upper filesystem,
	// which on a migration's destination means writing out the checkpoint
	// just received, inside the freeze (0.7 to 1.5 s at 512 MiB here). The
	// changes reach the disk like any other write; the marker overlayfs
	// leaves for a volatile mount is removed after the unmount, or the
	// container's own mount would be refused.
	volatile := len(mounts) == 1 && mounts[0].Type == "overlay"
	if volatile {
		mounts[0].Options = append(mounts[0].Options, "volatile")
	}
	if err := snapshot.MountAll(mounts, mnt); err != nil {
		return fmt.Errorf("receive changes into snapshot %q: %w", key, err)
	}
	defer func() {
		uerr := snapshot.Unmount(mnt)
		if uerr == nil && volatile {
			uerr = os.RemoveAll(filepath.Join(s.dir(rec.ID), workDir, "work", "incompat", "volatile"))
		}
		if uerr != nil {
			err = errors.Join(err, fmt.Errorf("receive changes into snapshot %q: %w", key, uerr))
		}
	}()
	if err := archive.Apply(ctx, mnt, r, archive.WhiteoutDelete); err != nil {
		return fmt.Errorf("receive changes into snapshot %q: %w", key, err)
	}
	return nil
}

func checkSync(mark string, f snapshot.SyncFormat) error {
	if err := snapshot.CheckMark(mark); err != nil {
		return err
	}
	return snapshot.CheckFormat(f, syncFormats)
}

// writeFileAtomic replaces name with data, creating its directory: a crash
// leaves the old file or the new one.
func writeFileAtomic(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), privateMode); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}
