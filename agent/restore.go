package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/agent/network"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/agent/snapshot"
)

// RestoreRequest asks to restore a container from a checkpoint stored on
// this node.
type RestoreRequest struct {
	// Container names the container; with CheckpointID empty, its latest
	// checkpoint is restored.
	Container    string
	CheckpointID string
	// Name, when set, restores as a new container of that name.
	Name string
}

// RestoreResult is a restored container and what it was restored from.
type RestoreResult struct {
	Container *Container
	// Checkpoint is the restored checkpoint's manifest, with the
	// restore's statistics in its Stats.
	Checkpoint *bundle.Manifest
	// Warnings are compatibility differences that did not prevent the
	// restore.
	Warnings []string
}

// Restore restores a container from a checkpoint stored on this node:
// req.CheckpointID, or the latest checkpoint of req.Container. Every file
// is checked against the manifest, and the checkpoint against this host,
// before CRIU reads anything.
//
// The container comes back with the same IP, a new shim and its log. When
// it still exists here (checkpointed, stopped or exited) it is restored in
// place, its writable layer reset to the checkpoint's unless the layer has
// not changed since; otherwise, or with req.Name, a new container is made
// from the checkpoint.
func (a *Agent) Restore(ctx context.Context, req RestoreRequest) (*RestoreResult, error) {
	if err := a.checkFence("restore", req.Container); err != nil {
		return nil, err
	}
	m, err := a.pickCheckpoint(ctx, req)
	if err != nil {
		return nil, err
	}
	dir := a.checkpointDir(m.ID)
	if m, err = bundle.Verify(dir); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", m.ID, err)
	}
	res, err := a.restore(ctx, dir, m, req.Name, false)
	if err != nil {
		return nil, err
	}
	if recorded, err := bundle.RecordRestore(dir, res.Checkpoint.Stats.RestoreTimeUs, res.Checkpoint.Stats.PagesRestored); err == nil {
		res.Checkpoint = recorded
	} else {
		a.log.Warn("record restore statistics", "checkpoint", m.ID, "err", err)
	}
	return res, nil
}

// pickCheckpoint finds the checkpoint a restore request names.
func (a *Agent) pickCheckpoint(ctx context.Context, req RestoreRequest) (*bundle.Manifest, error) {
	if req.CheckpointID != "" {
		return a.findCheckpoint(ctx, req.CheckpointID)
	}
	if req.Container == "" {
		return nil, errorf(ErrInvalid, "name the container to restore, or give a checkpoint ID")
	}
	ref := req.Container
	if e, err := a.lookup(req.Container); err == nil {
		e.op.Lock()
		last, id := e.c.LastCheckpoint, e.c.ID
		e.op.Unlock()
		if m, err := a.findCheckpoint(ctx, last); last != "" && err == nil {
			return m, nil
		}
		ref = id // its last checkpoint was removed: take the newest left
	}
	ms, err := a.ListCheckpoints(ctx, ref)
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, errorf(ErrNotFound, "container %s has no checkpoint on node %s: take one with `godwit checkpoint %s`, or restore from an archive with --from",
			req.Container, a.cfg.Name, req.Container)
	}
	return ms[len(ms)-1], nil
}

// RestoreArchive imports the archive r (unencrypted), verifying every
// digest before anything else reads it, and restores the container it
// holds, named name when name is set. The imported copy is removed once
// the restore has finished, whether it succeeded or not.
func (a *Agent) RestoreArchive(ctx context.Context, r io.Reader, name string) (*RestoreResult, error) {
	if err := a.checkFence("restore", name); err != nil {
		return nil, err
	}
	dir := filepath.Join(a.cfg.checkpointsDir(), stagingPrefix+"import-"+newID()[:checkpointIDLen])
	// Removing hundreds of MiB takes a while and nobody waits for it: the
	// caller gets its answer first. A crash before it is done leaves a
	// staging dir that the next start removes (clearStaging).
	defer func() {
		go func() {
			if err := os.RemoveAll(dir); err != nil {
				a.log.Warn("remove imported checkpoint", "path", dir, "err", err)
			}
		}()
	}()
	start := time.Now()
	m, err := bundle.Import(ctx, r, dir, bundle.ImportOptions{})
	if err != nil {
		return nil, errorf(ErrInvalid, "checkpoint archive refused, nothing was restored: %w", err)
	}
	a.log.Info("checkpoint archive imported and verified", "checkpoint", m.ID, "container", m.Container.Name,
		"bytes", m.Size(), "duration", time.Since(start).Round(time.Millisecond))
	return a.restore(ctx, dir, m, name, false)
}

// restore restores the verified checkpoint in dir; held leaves the
// container's processes stopped, the container migrating, until commit.
func (a *Agent) restore(ctx context.Context, dir string, m *bundle.Manifest, name string, held bool) (*RestoreResult, error) {
	warnings, err := bundle.CheckCompatibility(m, a.host(), a.images.HasLayer)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s cannot be restored on node %s: %w", m.ID, a.cfg.Name, err)
	}
	img, err := a.checkpointImage(m)
	if err != nil {
		return nil, err
	}
	var c *Container
	if name == "" {
		e, err := a.lookup(m.Container.Name)
		switch {
		case err == nil:
			e.op.Lock()
			defer e.op.Unlock()
			if c, err = a.restoreInPlace(ctx, e.c, img, dir, m, held); err != nil {
				return nil, err
			}
		case errors.Is(err, ErrNotFound):
			name = m.Container.Name
		default:
			return nil, err
		}
	}
	if c == nil {
		if c, err = a.restoreNew(ctx, img, dir, m, name, held); err != nil {
			return nil, err
		}
	}
	a.log.Info("container restored", "container", c.Name, "id", c.ID, "checkpoint", m.ID, "ip", c.IP, "pid", c.Pid)
	out := *m
	if st, err := criuimg.ReadStats(a.paths(c.ID).restoreWork()); err == nil && st.Restore != nil {
		out.Stats.RestoreTimeUs = st.Restore.RestoreTime.Microseconds()
		out.Stats.PagesRestored = st.Restore.PagesRestored
	}
	return &RestoreResult{Container: c, Checkpoint: &out, Warnings: warnings}, nil
}

// checkpointImage returns the image the checkpointed container ran from,
// which must be on this node with the same layers.
func (a *Agent) checkpointImage(m *bundle.Manifest) (*image.Image, error) {
	img, err := a.images.Get(m.Image.Name)
	if errors.Is(err, image.ErrNotFound) {
		return nil, errorf(ErrNotFound, "checkpoint %s needs image %s, which node %s does not have: import it with `godwit image import`",
			m.ID, m.Image.Name, a.cfg.Name)
	}
	if err != nil {
		return nil, err
	}
	layers := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		layers[i] = l.Digest.String()
	}
	want := make([]string, len(m.Image.Layers))
	for i, d := range m.Image.Layers {
		want[i] = d.String()
	}
	if !slices.Equal(layers, want) {
		return nil, errorf(ErrInvalidState, "image %s on node %s has other layers than the one checkpoint %s was taken from: import the image the container ran from (layers %v)",
			m.Image.Name, a.cfg.Name, m.ID, want)
	}
	return img, nil
}

// restoreInPlace restores the existing container c, which must be the
// checkpointed one and not running. The caller holds c's lock.
func (a *Agent) restoreInPlace(ctx context.Context, c *Container, img *image.Image, dir string, m *bundle.Manifest, held bool) (*Container, error) {
	if err := a.refresh(ctx, c); err != nil {
		return nil, err
	}
	switch {
	case c.ID != m.Container.ID:
		return nil, errorf(ErrExists, "container %s on node %s is not the one checkpoint %s was taken from (ID %.12s, not %.12s): remove it, or restore with --name NEW",
			c.Name, a.cfg.Name, m.ID, c.ID, m.Container.ID)
	case c.State == StateRunning:
		return nil, errorf(ErrInvalidState, "container %s is running: stop it before restoring it, or restore a copy with --name NEW", c.Name)
	}
	if c.RootfsCheckpoint != m.ID {
		if err := a.resetRootfs(ctx, c, img, dir, m); err != nil {
			return nil, err
		}
	} else if err := a.ensureRootfs(ctx, c); err != nil {
		return nil, err
	}
	if err := a.ensureNetwork(ctx, c, held); err != nil {
		return nil, err
	}
	if err := a.writeRestoreBundle(c, dir, m, held); err != nil {
		return nil, err
	}
	if err := a.start(ctx, c, startOptions{restoreFrom: filepath.Join(dir, bundle.CRIUDir), tcpEstablished: m.Options.TCPEstablished, held: held}); err != nil {
		return nil, err
	}
	c.LastCheckpoint = m.ID
	if err := a.save(c); err != nil {
		return nil, err
	}
	out := *c
	return &out, nil
}

// resetRootfs replaces c's writable layer with the checkpoint's: a fresh
// snapshot on the image with the checkpoint's diff applied.
func (a *Agent) resetRootfs(ctx context.Context, c *Container, img *image.Image, dir string, m *bundle.Manifest) error {
	rootfs := a.paths(c.ID).rootfs()
	if err := snapshot.Unmount(rootfs); err != nil {
		return fmt.Errorf("container %s: unmount root filesystem: %w", c.Name, err)
	}
	if err := a.snaps.Remove(ctx, c.SnapshotKey); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
		return fmt.Errorf("container %s: remove old writable layer: %w", c.Name, err)
	}
	return a.prepareRootfs(ctx, c, img, dir, m)
}

// prepareRootfs makes c's writable layer from the image and the
// checkpoint's rootfs diff, and mounts it.
func (a *Agent) prepareRootfs(ctx context.Context, c *Container, img *image.Image, dir string, m *bundle.Manifest) (err error) {
	parent, err := a.unpack(ctx, img)
	if err != nil {
		return err
	}
	// A migration's destination has the layer synced already, and the
	// checkpoint only what changed since (migration_rootfs.go).
	synced, err := a.syncedRootfs(ctx, c, dir, m)
	if err != nil {
		return err
	}
	if !synced {
		if _, err := a.snaps.Prepare(ctx, c.SnapshotKey, parent); err != nil {
			return fmt.Errorf("container %s: prepare root filesystem: %w", c.Name, err)
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.snaps.Remove(context.WithoutCancel(ctx), c.SnapshotKey))
		}
	}()
	if m.RootfsDiff != "" && !synced {
		f, err := os.Open(filepath.Join(dir, m.RootfsDiff))
		if err != nil {
			return err
		}
		err = a.snaps.Apply(ctx, c.SnapshotKey, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("container %s: apply the checkpoint's root filesystem diff: %w", c.Name, err)
		}
	}
	rootfs := a.paths(c.ID).rootfs()
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return err
	}
	mounts, err := a.snaps.Mounts(ctx, c.SnapshotKey)
	if err != nil {
		return err
	}
	if err := snapshot.MountAll(mounts, rootfs); err != nil {
		return fmt.Errorf("container %s: mount root filesystem: %w", c.Name, err)
	}
	return nil
}

// ensureNetwork gives c its network namespace again, with its IP, when a
// checkpoint released it (or a reboot lost it); unrouted when c is held
// for a migration's commit (migration_network.go).
func (a *Agent) ensureNetwork(ctx context.Context, c *Container, held bool) error {
	ep, err := a.net.Lookup(c.ID)
	if err == nil && ep.Attached {
		return nil
	}
	if err != nil && !errors.Is(err, network.ErrNotFound) {
		return fmt.Errorf("container %s: network: %w", c.Name, err)
	}
	if _, err := a.restoreNetwork(ctx, c.ID, net.ParseIP(c.IP), held); err != nil {
		return fmt.Errorf("container %s: network: %w", c.Name, err)
	}
	return nil
}

// writeRestoreBundle writes the checkpoint's spec into c's bundle, pointed
// at this node's paths for c; held adds a CRIU configuration that restores
// the processes stopped.
func (a *Agent) writeRestoreBundle(c *Container, dir string, m *bundle.Manifest, held bool) error {
	data, err := os.ReadFile(filepath.Join(dir, m.Spec))
	if err != nil {
		return err
	}
	spec, err := runtime.ParseSpec(data)
	if err != nil {
		return errorf(ErrInvalid, "checkpoint %s: %w", m.ID, err)
	}
	ep, err := a.net.Lookup(c.ID)
	if err != nil {
		return fmt.Errorf("container %s: network: %w", c.Name, err)
	}
	p := a.paths(c.ID)
	err = runtime.Relocate(spec, runtime.Relocation{
		ID:          c.ID,
		Name:        c.Name,
		RootfsPath:  p.rootfs(),
		NetnsPath:   ep.NetnsPath,
		CgroupsPath: a.cfg.cgroupsPath(c.ID),
	})
	if err != nil {
		return errorf(ErrInvalid, "checkpoint %s: %w", m.ID, err)
	}
	if held {
		if err := os.MkdirAll(p.state(), 0o700); err != nil {
			return err
		}
		if err := a.heldCRIUConfig(m.ID).Write(p.criuConfig()); err != nil { // migration_postcopy.go
			return err
		}
		runtime.SetCRIUConfig(spec, p.criuConfig())
	}
	return runtime.WriteBundle(p.bundle(), spec)
}

// restoreNew makes a new container named name from the checkpoint in dir
// and restores it. It keeps the checkpointed container's ID when that is
// free here and the name is the checkpointed one, so that a container
// moved between nodes keeps its identity.
func (a *Agent) restoreNew(ctx context.Context, img *image.Image, dir string, m *bundle.Manifest, name string, held bool) (_ *Container, err error) {
	data, err := os.ReadFile(filepath.Join(dir, m.Spec))
	if err != nil {
		return nil, err
	}
	spec, err := runtime.ParseSpec(data)
	if err != nil {
		return nil, errorf(ErrInvalid, "checkpoint %s: %w", m.ID, err)
	}
	id := m.Container.ID
	if name != m.Container.Name || id == "" || a.hasID(id) {
		id = newID()
	}
	ip := net.ParseIP(m.Container.IP)
	if ip == nil {
		return nil, errorf(ErrInvalid, "checkpoint %s records no valid container IP (%q)", m.ID, m.Container.IP)
	}
	c := containerFromSpec(spec)
	c.ID, c.Name, c.Labels = id, name, m.Container.Labels
	c.Image, c.ImageID = img.Name, img.ID.String()
	c.State = StateCheckpointed
	c.Snapshotter, c.SnapshotKey = a.snapshotter, "container-"+id
	c.Created = time.Now().UTC()
	c.LastCheckpoint = m.ID
	e, err := a.reserve(c)
	if err != nil {
		return nil, err
	}
	defer e.op.Unlock()

	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		undoCtx := context.WithoutCancel(ctx)
		errs := []error{a.runc.Delete(undoCtx, id, true)}
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		errs = append(errs, os.RemoveAll(a.paths(id).dir))
		a.forget(id)
		if cerr := errors.Join(errs...); cerr != nil && !errors.Is(cerr, runtime.ErrNotExist) {
			a.log.Error("clean up after failed restore", "container", name, "id", id, "err", cerr)
		}
	}()
	if err := a.prepareRootfs(ctx, c, img, dir, m); err != nil {
		return nil, err
	}
	undo = append(undo, func() error {
		return errors.Join(snapshot.Unmount(a.paths(id).rootfs()), a.snaps.Remove(context.WithoutCancel(ctx), c.SnapshotKey))
	})
	ep, err := a.restoreNetwork(ctx, id, ip, held) // migration_network.go
	if err != nil {
		return nil, fmt.Errorf("container %s: network: the checkpoint's IP %s: %w", name, ip, err)
	}
	undo = append(undo, func() error { return a.net.Teardown(context.WithoutCancel(ctx), id) })
	c.IP = ep.IP.String()
	if err := a.writeRestoreBundle(c, dir, m, held); err != nil {
		return nil, err
	}
	if err := a.save(c); err != nil {
		return nil, err
	}
	if err := a.start(ctx, c, startOptions{restoreFrom: filepath.Join(dir, bundle.CRIUDir), tcpEstablished: m.Options.TCPEstablished, held: held}); err != nil {
		return nil, err
	}
	out := *c
	return &out, nil
}

// hasID reports whether a container with this full ID is on the node.
func (a *Agent) hasID(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.containers[id]
	return ok
}

// containerFromSpec fills a container record's process fields from the
// spec it was checkpointed with.
func containerFromSpec(s *specs.Spec) *Container {
	c := &Container{
		Args:       s.Process.Args,
		Env:        s.Process.Env,
		WorkingDir: s.Process.Cwd,
		Hostname:   s.Hostname,
		User:       fmt.Sprintf("%d:%d", s.Process.User.UID, s.Process.User.GID),
	}
	if r := s.Linux.Resources; r != nil {
		if r.CPU != nil && r.CPU.Quota != nil && r.CPU.Period != nil && *r.CPU.Period > 0 {
			c.CPUs = float64(*r.CPU.Quota) / float64(*r.CPU.Period)
		}
		if r.Memory != nil && r.Memory.Limit != nil {
			c.MemoryBytes = *r.Memory.Limit
		}
	}
	return c
}
