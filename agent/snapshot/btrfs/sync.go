package btrfs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/godwit/godwit/agent/archive"
	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/internal/metadata"
)

// Syncing an active snapshot to another snapshotter. A mark is a read-only
// snapshot of the active subvolume, marks/<id>/<mark>, with the time it
// was taken in <mark>.json: SyncTar compares the live subvolume with it,
// SyncBtrfs sends it whole (Mark) and then the live subvolume incrementally
// against it (`btrfs send -p`, Changes). The receiving side keeps what a
// SyncBtrfs Receive got, received/<id>/<name>, as the parent that the
// incremental stream names by UUID; ReceiveChanges consumes it.
const (
	marksDir    = "marks"
	receivedDir = "received"
	// nextSuffix names the read-only snapshot Changes sends; incomingPrefix
	// the directories btrfs receive writes into.
	nextSuffix     = ".next"
	incomingPrefix = "incoming-"
	markInfoExt    = ".json"
)

// btrfsCommand is btrfs-progs' tool: send is a kernel ioctl, but receive
// replays the stream in user space, so both go through it.
const btrfsCommand = "btrfs"

// markInfo is a mark's <mark>.json.
type markInfo struct {
	// Taken is just before the snapshot was taken.
	Taken time.Time `json:"taken"`
}

// SyncFormats implements snapshot.Snapshotter: btrfs send streams when
// the btrfs tool is installed, and layer tars.
func (s *Snapshotter) SyncFormats() []snapshot.SyncFormat {
	if _, err := exec.LookPath(btrfsCommand); err != nil {
		return []snapshot.SyncFormat{snapshot.SyncTar}
	}
	return []snapshot.SyncFormat{snapshot.SyncBtrfs, snapshot.SyncTar}
}

func (s *Snapshotter) markPath(id, mark string) string {
	return filepath.Join(s.root, marksDir, id, mark)
}

func (s *Snapshotter) checkSync(mark string, f snapshot.SyncFormat) error {
	if err := snapshot.CheckMark(mark); err != nil {
		return err
	}
	return snapshot.CheckFormat(f, s.SyncFormats())
}

// Mark implements snapshot.Snapshotter.
func (s *Snapshotter) Mark(ctx context.Context, key, mark string, f snapshot.SyncFormat, w io.Writer) error {
	if err := s.checkSync(mark, f); err != nil {
		return err
	}
	rec, parents, err := s.ms.Lookup(ctx, key, "mark", snapshot.KindActive)
	if err != nil {
		return err
	}
	p := s.markPath(rec.ID, mark)
	if err := os.MkdirAll(filepath.Dir(p), privateMode); err != nil {
		return fmt.Errorf("mark snapshot %q: %w", key, err)
	}
	if err := destroySubvolume(p); err != nil { // marked again: replace it
		return fmt.Errorf("mark snapshot %q: %w", key, err)
	}
	info := markInfo{Taken: time.Now()}
	if err := snapshotSubvolume(s.path(rec.ID), p, true); err != nil {
		return fmt.Errorf("mark snapshot %q: %w", key, err)
	}
	data, err := json.Marshal(info)
	if err == nil {
		err = os.WriteFile(p+markInfoExt, data, 0o600)
	}
	if err == nil {
		err = s.send(ctx, key, f, parents, "", p, w)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("mark snapshot %q: %w", key, err), s.dropMark(rec.ID, mark))
	}
	return nil
}

// send writes snap in format f: for SyncTar its diff against before, or
// against key's parent (parents) when before is empty; for SyncBtrfs a
// send stream, incremental against before when it is set.
func (s *Snapshotter) send(ctx context.Context, key string, f snapshot.SyncFormat, parents []metadata.Record, before, snap string, w io.Writer) error {
	if f == snapshot.SyncBtrfs {
		args := []string{"send", "-q"}
		if before != "" {
			args = append(args, "-p", before)
		}
		return runBtrfs(ctx, append(args, snap), nil, w)
	}
	parentDir := filepath.Join(s.root, emptyDir)
	if len(parents) > 0 {
		parentDir = s.path(parents[0].ID)
	}
	return archive.WriteTreeDiff(ctx, parentDir, snap, w)
}

// Changes implements snapshot.Snapshotter.
func (s *Snapshotter) Changes(ctx context.Context, key, mark string, f snapshot.SyncFormat, w io.Writer) error {
	if err := s.checkSync(mark, f); err != nil {
		return err
	}
	rec, parents, err := s.ms.Lookup(ctx, key, "changes of", snapshot.KindActive)
	if err != nil {
		return err
	}
	p := s.markPath(rec.ID, mark)
	data, err := os.ReadFile(p + markInfoExt)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("snapshot %q has no mark %q: %w", key, mark, snapshot.ErrNotFound)
	}
	var info markInfo
	if err == nil {
		err = json.Unmarshal(data, &info)
	}
	if err != nil {
		return fmt.Errorf("changes of snapshot %q: mark %q: %w", key, mark, err)
	}
	if f == snapshot.SyncTar {
		if err := archive.WriteTreeChanges(ctx, p, s.path(rec.ID), info.Taken, w); err != nil {
			return fmt.Errorf("changes of snapshot %q: %w", key, err)
		}
		return nil
	}
	// btrfs send reads read-only subvolumes only: send a read-only
	// snapshot of the (frozen) active one.
	next := p + nextSuffix
	if err := destroySubvolume(next); err != nil {
		return fmt.Errorf("changes of snapshot %q: %w", key, err)
	}
	if err := snapshotSubvolume(s.path(rec.ID), next, true); err != nil {
		return fmt.Errorf("changes of snapshot %q: %w", key, err)
	}
	err = s.send(ctx, key, f, parents, p, next, w)
	if derr := destroySubvolume(next); derr != nil {
		s.log.Warn("delete the snapshot sent as changes; it goes with the mark", "snapshot", key, "err", derr)
	}
	if err != nil {
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
	if _, err := os.Stat(s.markPath(rec.ID, mark) + markInfoExt); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("snapshot %q has no mark %q: %w", key, mark, snapshot.ErrNotFound)
	}
	return s.dropMark(rec.ID, mark)
}

func (s *Snapshotter) dropMark(id, mark string) error {
	p := s.markPath(id, mark)
	err := errors.Join(destroySubvolume(p+nextSuffix), destroySubvolume(p))
	if rerr := os.Remove(p + markInfoExt); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// Receive implements snapshot.Snapshotter. A SyncBtrfs stream becomes a
// read-only subvolume kept under received/<id>, and key a writable
// snapshot of it (a whole tree, not a snapshot of parent's subvolume,
// whose tree it holds all the same).
func (s *Snapshotter) Receive(ctx context.Context, key, parent string, f snapshot.SyncFormat, r io.Reader) error {
	if err := snapshot.CheckFormat(f, s.SyncFormats()); err != nil {
		return err
	}
	if f == snapshot.SyncTar {
		if _, err := s.Prepare(ctx, key, parent); err != nil {
			return err
		}
		if err := s.Apply(ctx, key, r); err != nil {
			return errors.Join(err, s.Remove(context.WithoutCancel(ctx), key))
		}
		return nil
	}
	// Check the names before a long receive.
	if err := s.ms.View(func(tx *metadata.Tx) error {
		if _, err := tx.Get(key); err == nil {
			return fmt.Errorf("receive snapshot %q: %w", key, snapshot.ErrExists)
		}
		if parent == "" {
			return nil
		}
		p, err := tx.Get(parent)
		if err == nil && p.Kind != snapshot.KindCommitted {
			err = fmt.Errorf("receive snapshot %q on %q: it is %s: %w", key, parent, p.Kind, snapshot.ErrInvalidKind)
		}
		return err
	}); err != nil {
		return err
	}
	incoming, sub, err := s.receiveStream(ctx, r)
	if err != nil {
		return fmt.Errorf("receive snapshot %q: %w", key, err)
	}
	var created string
	err = s.ms.Update(func(tx *metadata.Tx) error {
		rec, err := tx.Create(key, parent, snapshot.KindActive, time.Now())
		if err != nil {
			return err
		}
		kept := filepath.Join(s.root, receivedDir, rec.ID)
		if err := os.RemoveAll(kept); err != nil { // a crash's leftover
			return err
		}
		if err := os.Rename(incoming, kept); err != nil {
			return err
		}
		incoming = kept
		if err := snapshotSubvolume(filepath.Join(kept, filepath.Base(sub)), s.path(rec.ID), false); err != nil {
			return err
		}
		created = s.path(rec.ID)
		return nil
	})
	if err != nil {
		if created != "" {
			err = errors.Join(err, destroySubvolume(created))
		}
		return errors.Join(fmt.Errorf("receive snapshot %q: %w", key, err), s.dropIncoming(incoming))
	}
	return nil
}

// receiveStream runs btrfs receive on r into a fresh directory under
// received/ and returns it with the path of the one subvolume it made.
func (s *Snapshotter) receiveStream(ctx context.Context, r io.Reader) (dir, sub string, err error) {
	base := filepath.Join(s.root, receivedDir)
	if err := os.MkdirAll(base, privateMode); err != nil {
		return "", "", err
	}
	dir, err = os.MkdirTemp(base, incomingPrefix)
	if err != nil {
		return "", "", err
	}
	// -e: stop at the stream's end marker; -C: the stream's paths cannot
	// leave dir.
	if err := runBtrfs(ctx, []string{"receive", "-q", "-e", "-C", dir}, r, nil); err != nil {
		return "", "", errors.Join(err, s.dropIncoming(dir))
	}
	entries, err := os.ReadDir(dir)
	if err == nil && len(entries) != 1 {
		err = fmt.Errorf("the stream made %d entries, want one subvolume", len(entries))
	}
	if err != nil {
		return "", "", errors.Join(fmt.Errorf("btrfs receive: %w", err), s.dropIncoming(dir))
	}
	return dir, filepath.Join(dir, entries[0].Name()), nil
}

// dropIncoming deletes a directory of received subvolumes.
func (s *Snapshotter) dropIncoming(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if sub, _ := isSubvolume(p); sub {
			err = errors.Join(err, destroySubvolume(p))
		}
	}
	return errors.Join(err, os.RemoveAll(dir))
}

// ReceiveChanges implements snapshot.Snapshotter. A SyncBtrfs stream is
// received against the subvolume Receive kept, and key's subvolume is
// replaced by a writable snapshot of the result; the kept subvolumes then
// go, and key is an ordinary active snapshot.
func (s *Snapshotter) ReceiveChanges(ctx context.Context, key string, f snapshot.SyncFormat, r io.Reader) error {
	if err := snapshot.CheckFormat(f, s.SyncFormats()); err != nil {
		return err
	}
	if f == snapshot.SyncTar {
		return s.Apply(ctx, key, r)
	}
	rec, _, err := s.ms.Lookup(ctx, key, "receive changes into", snapshot.KindActive)
	if err != nil {
		return err
	}
	kept := filepath.Join(s.root, receivedDir, rec.ID)
	if _, err := os.Stat(kept); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("receive changes into snapshot %q: it was not received from a %s stream: %w", key, snapshot.SyncBtrfs, snapshot.ErrInvalidArgument)
	}
	incoming, sub, err := s.receiveStream(ctx, r)
	if err != nil {
		return fmt.Errorf("receive changes into snapshot %q: %w", key, err)
	}
	// Swap in a writable snapshot of what arrived: make it beside the
	// received ones, drop the old subvolume, move the new one into place.
	fresh := filepath.Join(incoming, "active")
	err = snapshotSubvolume(sub, fresh, false)
	if err == nil {
		err = destroySubvolume(s.path(rec.ID))
	}
	if err == nil {
		err = os.Rename(fresh, s.path(rec.ID))
	}
	if err != nil {
		return errors.Join(fmt.Errorf("receive changes into snapshot %q: %w; remove it", key, err), s.dropIncoming(incoming))
	}
	if err := errors.Join(s.dropIncoming(incoming), s.dropIncoming(kept)); err != nil {
		s.log.Warn("delete received subvolumes; they are retried when the snapshot is removed", "snapshot", key, "err", err)
	}
	return nil
}

// dropSync deletes the marks and received subvolumes of snapshot id.
func (s *Snapshotter) dropSync(id string) error {
	var err error
	if entries, rerr := os.ReadDir(filepath.Join(s.root, marksDir, id)); rerr == nil {
		for _, e := range entries {
			if mark, ok := strings.CutSuffix(e.Name(), markInfoExt); ok {
				err = errors.Join(err, s.dropMark(id, mark))
			}
		}
	}
	err = errors.Join(err, s.dropIncoming(filepath.Join(s.root, marksDir, id)))
	return errors.Join(err, s.dropIncoming(filepath.Join(s.root, receivedDir, id)))
}

// runBtrfs runs the btrfs tool with args, stdin from in and stdout to
// out; a failure carries what it printed.
func runBtrfs(ctx context.Context, args []string, in io.Reader, out io.Writer) error {
	cmd := exec.CommandContext(ctx, btrfsCommand, args...)
	cmd.Stdin, cmd.Stdout = in, out
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if ctx.Err() != nil {
			return fmt.Errorf("btrfs %s: %w", args[0], ctx.Err())
		}
		return fmt.Errorf("btrfs %s: %w: %s", args[0], err, msg)
	}
	return nil
}
