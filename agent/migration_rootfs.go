package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/migrate"
)

// A migration's root filesystem (migrate/README.md). Before the freeze the
// destination gets the image layers it lacks (migration_layers.go), then
// the container's writable layer while it runs: the source marks its
// snapshot under the migration's ID as it sends it (Snapshotter.Mark),
// the destination receives it into a snapshot of its own named after the
// migration. At the freeze the checkpoint carries only what changed since
// (Snapshotter.Changes) in a file of its own, and the destination's
// restore applies that to the synced snapshot and gives it to the
// container, instead of building the layer from the image and a whole
// diff. Each side keeps what it did in a small state file beside the
// journal, so that a retried call, an abort and a restarted agent know.

// rootfsChangesPrefix names the checkpoint file of the changes since the
// sync; the format is its extension. The manifest names no rootfs diff
// then, so nothing takes the file for a whole layer.
const rootfsChangesPrefix = "rootfs-changes."

// syncKeyPrefix names the destination's synced snapshot, by migration.
const syncKeyPrefix = "migration-"

// rootfsState is what one side keeps of a migration's root filesystem.
type rootfsState struct {
	Role string `json:"role"`
	// Destination: the image the container needs, as Prepare described
	// it, and whether this migration fetched it (an abort removes it).
	Image        string   `json:"image,omitempty"`
	Layers       []string `json:"layers,omitempty"`
	FetchedImage bool     `json:"fetched_image,omitempty"`
	// Format is the sync's format, "" for none.
	Format snapshot.SyncFormat `json:"format,omitempty"`
	// Key is the snapshot synced: on the source the container's, marked
	// with the migration's ID; on the destination the one received.
	Key    string `json:"key,omitempty"`
	Synced bool   `json:"synced,omitempty"`
	// Applied (destination): the checkpoint's changes are in Key.
	Applied bool `json:"applied,omitempty"`
}

func (a *Agent) rootfsStatePath(id string) string {
	return filepath.Join(a.cfg.DataDir, "migration-rootfs", id+".json")
}

// loadRootfs returns migration id's state, nil when it has none.
func (a *Agent) loadRootfs(id string) (*rootfsState, error) {
	data, err := os.ReadFile(a.rootfsStatePath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("migration %s: root filesystem state: %w", id, err)
	}
	var st rootfsState
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("migration %s: root filesystem state %s is corrupt: %w", id, a.rootfsStatePath(id), err)
	}
	return &st, nil
}

// saveRootfs writes migration id's state atomically.
func (a *Agent) saveRootfs(id string, st *rootfsState) error {
	p := a.rootfsStatePath(id)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return err
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.WriteFile(p+".tmp", data, 0o600); err != nil {
		return fmt.Errorf("migration %s: save root filesystem state: %w", id, err)
	}
	if err := os.Rename(p+".tmp", p); err != nil {
		return fmt.Errorf("migration %s: save root filesystem state: %w", id, err)
	}
	return nil
}

// rootfsFormats are the sync formats this node sends, for Describe.
func (a *Agent) rootfsFormats() []string {
	var out []string
	for _, f := range a.snaps.SyncFormats() {
		out = append(out, string(f))
	}
	return out
}

// planRootfs is the destination's part of Prepare for the root
// filesystem: the image must be here with the container's layers, or
// absent (its layers missing here are then fetched from the source); the
// sync takes the source's first format this node receives.
func (a *Agent) planRootfs(id string, c migrate.Container) (migrate.Prepared, error) {
	var out migrate.Prepared
	layers := make([]digest.Digest, len(c.ImageLayers))
	for i, l := range c.ImageLayers {
		d, err := digest.Parse(l)
		if err != nil {
			return out, errorf(ErrInvalid, "migration %s: image layer %q: %w", id, l, err)
		}
		layers[i] = d
	}
	_, err := a.images.Get(c.Image)
	switch {
	case err == nil:
		m := &bundle.Manifest{ID: id, Image: bundle.Image{Name: c.Image, Layers: layers}}
		if _, err := a.checkpointImage(m); err != nil {
			return out, err
		}
	case errors.Is(err, image.ErrNotFound):
		if len(layers) == 0 {
			return out, errorf(ErrInvalid, "migration %s: image %s has no layers to fetch", id, c.Image)
		}
		out.MissingImage = true
		for _, d := range layers {
			if !a.images.HasLayer(d) {
				out.MissingLayers = append(out.MissingLayers, d.String())
			}
		}
	default:
		return out, err
	}
	ours := a.snaps.SyncFormats()
	for _, f := range c.RootfsFormats {
		if slices.Contains(ours, snapshot.SyncFormat(f)) {
			out.RootfsFormat = f
			break
		}
	}
	st, err := a.loadRootfs(id)
	if err != nil {
		return out, err
	}
	if st == nil {
		st = &rootfsState{Role: migrate.RoleDestination}
	}
	st.Image, st.Layers, st.Format = c.Image, c.ImageLayers, snapshot.SyncFormat(out.RootfsFormat)
	return out, a.saveRootfs(id, st)
}

// MigrateSyncRootfs sends the migrating container's writable layer to w,
// the destination's data connection, in format, while the container
// runs, and marks the layer so that the dump carries only what changes
// after. The stream ends with its sha256, which the destination checks.
// Repeated, it sends the whole layer again.
func (a *Agent) MigrateSyncRootfs(ctx context.Context, id, format string, w io.Writer, progress func(done, total int64)) error {
	rec, unlock, err := a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return err
	}
	defer unlock()
	if err := syncAllowed(rec); err != nil {
		return err
	}
	f := snapshot.SyncFormat(format)
	if err := snapshot.CheckFormat(f, a.snaps.SyncFormats()); err != nil {
		return errorf(ErrInvalid, "migration %s: root filesystem sync on node %s: %w", id, a.cfg.Name, err)
	}
	e, err := a.lookup(rec.Container)
	if err != nil {
		return err
	}
	e.op.Lock()
	key := e.c.SnapshotKey
	e.op.Unlock()
	st := &rootfsState{Role: migrate.RoleSource, Format: f, Key: key}
	if err := a.saveRootfs(id, st); err != nil { // an abort must find the mark
		return err
	}
	if progress == nil {
		progress = func(done, total int64) {}
	}
	// The size is known only at the end: the last report gives it.
	cw := &countingWriter{w: w, report: func(n int64) { progress(n, 0) }}
	tw := newTrailerWriter(cw)
	if err := a.snaps.Mark(ctx, key, id, f, tw); err != nil {
		return fmt.Errorf("migration %s: sync the root filesystem of container %s: %w", id, rec.Container, err)
	}
	if err := tw.finish(); err != nil {
		return err
	}
	progress(cw.n, cw.n)
	st.Synced = true
	if err := a.saveRootfs(id, st); err != nil {
		return err
	}
	a.log.Info("root filesystem synced", "migration", id, "container", rec.Container, "format", f, "bytes", tw.n)
	return a.advance(rec, migrate.PhaseSync)
}

// syncAllowed refuses a sync once the migration is aborted or past it.
func syncAllowed(rec *migrate.Record) error {
	switch rec.Phase {
	case migrate.PhasePrepare, migrate.PhaseSync:
		return nil
	case migrate.PhaseAborted:
		return migrationError(fmt.Errorf("migration %s: %w", rec.ID, migrate.ErrAborted))
	}
	return errorf(ErrInvalidState, "migration %s is in %s: too late to sync its root filesystem", rec.ID, rec.Phase)
}

// rootfsChanges is the checkpoint's root filesystem for migration id's
// dump: when the source synced the layer, only what changed since, in the
// sync's format; nil otherwise (the whole diff, which is always right).
func (a *Agent) rootfsChanges(id string) func(ctx context.Context, c *Container, dir string, report func(int64)) (string, error) {
	st, err := a.loadRootfs(id)
	if err != nil {
		a.log.Warn("the dump carries the whole root filesystem diff", "migration", id, "err", err)
		return nil
	}
	if st == nil || st.Role != migrate.RoleSource || !st.Synced {
		return nil
	}
	return func(ctx context.Context, c *Container, dir string, report func(int64)) (string, error) {
		name := rootfsChangesPrefix + string(st.Format)
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", err
		}
		err = a.snaps.Changes(ctx, st.Key, id, st.Format, &countingWriter{w: f, report: report})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return name, err
	}
}

// MigrateReceiveRootfs takes the writable layer the source syncs on r into
// a new snapshot on the image's top layer, named after the migration,
// checking the stream's sha256. Repeated, it replaces what it had.
func (a *Agent) MigrateReceiveRootfs(ctx context.Context, id string, r io.Reader) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if err := syncAllowed(rec); err != nil {
		return rec.Phase, err
	}
	st, err := a.loadRootfs(id)
	if err != nil {
		return rec.Phase, err
	}
	if st == nil || st.Format == "" {
		return rec.Phase, errorf(ErrInvalidState, "migration %s: node %s did not prepare a root filesystem sync for it", id, a.cfg.Name)
	}
	img, err := a.images.Get(st.Image)
	if err != nil {
		return rec.Phase, fmt.Errorf("migration %s: image %s: %w", id, st.Image, err)
	}
	parent, err := a.unpack(ctx, img)
	if err != nil {
		return rec.Phase, err
	}
	key := syncKeyPrefix + id
	if err := a.snaps.Remove(ctx, key); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
		return rec.Phase, fmt.Errorf("migration %s: replace the synced root filesystem: %w", id, err)
	}
	st.Key, st.Synced, st.Applied = key, false, false
	if err := a.saveRootfs(id, st); err != nil { // an abort must find the snapshot
		return rec.Phase, err
	}
	tr := newTrailerReader(r)
	err = a.snaps.Receive(ctx, key, parent, st.Format, tr)
	if err == nil {
		if err = tr.verify(); err != nil {
			err = errors.Join(errorf(ErrInvalid, "%w", err), a.snaps.Remove(context.WithoutCancel(ctx), key))
		}
	}
	if err != nil {
		return rec.Phase, fmt.Errorf("migration %s: root filesystem sync refused: %w", id, err)
	}
	st.Synced = true
	if err := a.saveRootfs(id, st); err != nil {
		return rec.Phase, err
	}
	a.log.Info("root filesystem received", "migration", id, "container", rec.Container, "format", st.Format, "bytes", tr.n)
	return migrate.PhaseSync, a.advance(rec, migrate.PhaseSync)
}

// syncedRootfs gives c, restored from checkpoint m in dir, the snapshot
// its migration synced to this node, with the changes the checkpoint
// carries applied, and reports whether it did. A checkpoint that carries
// the whole diff instead makes the synced snapshot useless: it goes, and
// the caller builds the layer as for any checkpoint.
func (a *Agent) syncedRootfs(ctx context.Context, c *Container, dir string, m *bundle.Manifest) (bool, error) {
	st, err := a.loadRootfs(m.ID)
	if err != nil {
		return false, err
	}
	if st == nil || st.Role != migrate.RoleDestination || !st.Synced {
		if m.RootfsChanges != "" {
			return false, errorf(ErrInvalid, "checkpoint %s belongs to a live migration: it carries only the changes to the root filesystem since the migration synced it to its destination, so only that destination can restore it; checkpoint the container on its own (godwit checkpoint) to restore it elsewhere", m.ID)
		}
		return false, nil
	}
	if m.RootfsChanges == "" {
		a.log.Warn("the checkpoint carries the whole root filesystem: dropping the synced one", "migration", m.ID)
		if err := a.snaps.Remove(ctx, st.Key); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
			return false, err
		}
		st.Synced = false
		return false, a.saveRootfs(m.ID, st)
	}
	if !st.Applied {
		f, err := os.Open(filepath.Join(dir, m.RootfsChanges))
		if err != nil {
			return false, err
		}
		err = a.snaps.ReceiveChanges(ctx, st.Key, st.Format, f)
		f.Close()
		if err != nil {
			return false, fmt.Errorf("container %s: apply the checkpoint's root filesystem changes to the synced layer: %w", c.Name, err)
		}
		st.Applied = true
		if err := a.saveRootfs(m.ID, st); err != nil {
			return false, err
		}
	}
	if _, err := a.snaps.Stat(ctx, st.Key); err != nil {
		return false, fmt.Errorf("container %s: the root filesystem migration %s synced is gone (%w): abort the migration and start it again", c.Name, m.ID, err)
	}
	c.SnapshotKey = st.Key
	return true, nil
}

// dropRootfs forgets what migration id kept of the root filesystem. With
// undo (an abort) the destination also removes the snapshot it synced and
// the image it fetched, unless a container uses them; the source forgets
// its mark either way. Failures only leave disk space taken: warnings.
func (a *Agent) dropRootfs(ctx context.Context, id, container string, undo bool) {
	st, err := a.loadRootfs(id)
	if err != nil || st == nil {
		if err != nil {
			a.log.Warn("forget the migration's root filesystem", "migration", id, "err", err)
		}
		return
	}
	log := a.log.With("migration", id)
	switch {
	case st.Role == migrate.RoleSource && st.Key != "":
		if err := a.snaps.Unmark(ctx, st.Key, id); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
			log.Warn("forget the root filesystem sync's mark", "snapshot", st.Key, "err", err)
		}
	case st.Role == migrate.RoleDestination && undo:
		inUse := false
		if e, err := a.lookup(container); err == nil {
			e.op.Lock()
			inUse = e.c.SnapshotKey == st.Key
			e.op.Unlock()
		}
		if st.Key != "" && !inUse {
			if err := a.snaps.Remove(ctx, st.Key); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
				log.Warn("remove the synced root filesystem", "snapshot", st.Key, "err", err)
			}
		}
		if st.FetchedImage {
			if err := a.RemoveImage(ctx, st.Image); err != nil && !errors.Is(err, ErrNotFound) {
				log.Warn("remove the image fetched for the migration", "image", st.Image, "err", err)
			}
		}
	}
	if err := os.Remove(a.rootfsStatePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("forget the migration's root filesystem", "err", err)
	}
}

// The sync stream ends with the sha256 of what precedes it, so that the
// destination refuses a damaged one: a layer tar has no checksum of its
// own, and a damaged file would otherwise reach the container.
const trailerLen = sha256.Size

// trailerWriter hashes what it writes; finish appends the hash.
type trailerWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newTrailerWriter(w io.Writer) *trailerWriter { return &trailerWriter{w: w, h: sha256.New()} }

func (t *trailerWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	t.h.Write(p[:n])
	t.n += int64(n)
	return n, err
}

func (t *trailerWriter) finish() error {
	_, err := t.w.Write(t.h.Sum(nil))
	return err
}

// trailerReader returns a stream without its last trailerLen bytes, which
// verify checks against the hash of the rest.
type trailerReader struct {
	r       io.Reader
	h       hash.Hash
	n       int64
	pending []byte // read, not yet returned; its tail may be the trailer
	buf     []byte
	err     error
}

func newTrailerReader(r io.Reader) *trailerReader {
	return &trailerReader{r: r, h: sha256.New(), buf: make([]byte, 64<<10)}
}

func (t *trailerReader) Read(p []byte) (int, error) {
	for len(t.pending) <= trailerLen && t.err == nil {
		n, err := t.r.Read(t.buf)
		t.pending = append(t.pending, t.buf[:n]...)
		t.err = err
	}
	avail := len(t.pending) - trailerLen
	if avail <= 0 {
		return 0, t.err
	}
	n := copy(p, t.pending[:avail])
	t.h.Write(p[:n])
	t.n += int64(n)
	t.pending = t.pending[n:]
	return n, nil
}

// verify reads the rest of the stream and checks its trailer.
func (t *trailerReader) verify() error {
	if _, err := io.Copy(io.Discard, t); err != nil {
		return err
	}
	if len(t.pending) != trailerLen {
		return fmt.Errorf("the stream is cut short: %d bytes in all", t.n+int64(len(t.pending)))
	}
	if got := t.h.Sum(nil); !bytes.Equal(got, t.pending) {
		return fmt.Errorf("the stream's sha256 is %x, its sender says %x: it was damaged on the way", got, t.pending)
	}
	return nil
}
