package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/agent/runtime"
)

// Checkpoint phases, as CheckpointRequest.Progress reports them.
const (
	PhaseDumping = "dumping" // CRIU is freezing the container and writing its memory
	PhaseRootfs  = "rootfs"  // the writable layer's diff is being written
	PhaseSealing = "sealing" // every file is being hashed into the manifest
	PhaseDone    = "done"
)

const (
	// dumpPoll is how often the size of CRIU's images is reported while
	// it dumps.
	dumpPoll = 200 * time.Millisecond
	// stagingPrefix marks a checkpoint directory being written or
	// imported; a restarted agent removes what one left behind.
	stagingPrefix = ".new-"
	// checkpointIDLen is the length of a checkpoint ID: hex, like a short
	// container ID.
	checkpointIDLen = 12
)

// Progress is how far a long operation has come: its phase, and the bytes
// done out of the total in that phase (Total is 0 when unknown).
type Progress struct {
	Phase       string
	Done, Total int64
}

// CheckpointRequest asks for a checkpoint of a running container.
type CheckpointRequest struct {
	// LeaveRunning keeps the container running; otherwise it ends
	// checkpointed, with its root filesystem and IP kept for a restore.
	LeaveRunning bool
	// Progress, when set, is called as the checkpoint advances.
	Progress func(Progress)
	// ParentImages, when set, is the absolute directory of a pre-dump's
	// CRIU images (pre-copy, migration_precopy.go): CRIU writes only the
	// pages dirtied since and leaves the rest there. The link CRIU makes
	// to it is removed before sealing, since a checkpoint holds regular
	// files only; whoever restores the checkpoint links it again after
	// verifying both.
	ParentImages string
	// rootfsChanges, when set, writes the root filesystem's part of the
	// checkpoint into dir in place of the writable layer's whole diff,
	// reporting bytes written, and returns the file's name: a migration
	// that synced the layer sends only what changed since
	// (migration_rootfs.go).
	rootfsChanges func(ctx context.Context, c *Container, dir string, report func(int64)) (string, error)
	// pendingDigests seals the checkpoint without digesting its files
	// (bundle.WritePendingManifest): a migration's source sends them at
	// once, digesting them as it sends (migration_transfer.go), so that
	// the freeze does not pay a pass over every page first.
	pendingDigests bool
}

func (r CheckpointRequest) report(phase string, done, total int64) {
	if r.Progress != nil {
		r.Progress(Progress{Phase: phase, Done: done, Total: total})
	}
}

// Checkpoint dumps a running container with CRIU into a new checkpoint
// under the data dir and returns its manifest. The checkpoint holds CRIU's
// images (established TCP connections included; the container's network
// namespace and the shim's pipes are external), the writable layer's diff
// and the spec, sealed by a manifest with every file's digest.
//
// Without LeaveRunning the container ends checkpointed: its processes are
// gone, its root filesystem and IP stay reserved on this node, and its
// network namespace is released so that it may be restored here or
// elsewhere. If anything fails after CRIU dumped it, the container is
// restored from the dump at once, so a failed checkpoint never loses it.
func (a *Agent) Checkpoint(ctx context.Context, ref string, req CheckpointRequest) (*bundle.Manifest, error) {
	// A scheduler that lost track of a move must not stop the copy here.
	if err := a.onContainer(ref, func(c *Container) error {
		return a.fenceGeneration("checkpoint", c, commandGeneration(ctx), 0)
	}); err != nil {
		return nil, err
	}
	m, err := a.checkpoint(ctx, ref, newID()[:checkpointIDLen], req)
	if a.cfg.Observer != nil {
		a.cfg.Observer.CheckpointDone(err)
	}
	return m, err
}

// lockRunning locks container ref for a dump and returns it with its
// image; it must be running (what names the dump for the error). The
// caller unlocks e.op.
func (a *Agent) lockRunning(ctx context.Context, ref, what string) (*entry, *image.Image, error) {
	e, err := a.lookup(ref)
	if err != nil {
		return nil, nil, err
	}
	e.op.Lock()
	c := e.c
	if err := a.refresh(ctx, c); err != nil {
		e.op.Unlock()
		return nil, nil, err
	}
	if c.State != StateRunning {
		e.op.Unlock()
		return nil, nil, errorf(ErrInvalidState, "container %s is %s: only a running container can be %s", c.Name, c.State, what)
	}
	img, err := a.images.Get(c.ImageID)
	if err != nil {
		e.op.Unlock()
		return nil, nil, fmt.Errorf("container %s: image %s: %w", c.Name, c.Image, err)
	}
	return e, img, nil
}

// checkpoint is Checkpoint into the checkpoint id (a migration names its
// checkpoint after itself).
func (a *Agent) checkpoint(ctx context.Context, ref, id string, req CheckpointRequest) (_ *bundle.Manifest, err error) {
	e, img, err := a.lockRunning(ctx, ref, "checkpointed")
	if err != nil {
		return nil, err
	}
	defer e.op.Unlock()
	c := e.c
	staging := filepath.Join(a.cfg.checkpointsDir(), stagingPrefix+id)
	log := a.log.With("container", c.Name, "id", c.ID, "checkpoint", id)
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return nil, fmt.Errorf("container %s: checkpoint: %w", c.Name, err)
	}
	removeStaging := true // false once the staging dir holds the only copy of the container
	defer func() {
		if err != nil && removeStaging {
			os.RemoveAll(staging)
		}
	}()

	p := a.paths(c.ID)
	if err := os.RemoveAll(p.dumpWork()); err != nil {
		return nil, fmt.Errorf("container %s: checkpoint: %w", c.Name, err)
	}
	criuDir := filepath.Join(staging, bundle.CRIUDir)
	req.report(PhaseDumping, 0, 0)
	stopWatch := watchSize(criuDir, func(n int64) { req.report(PhaseDumping, n, 0) })
	dump := runtime.CheckpointOptions{
		ImagePath:      criuDir,
		WorkPath:       p.dumpWork(),
		LeaveRunning:   req.LeaveRunning,
		TCPEstablished: true,
	}
	if req.ParentImages != "" {
		if dump.ExtraArgs, err = parentPathArgs(criuDir, req.ParentImages); err != nil {
			return nil, fmt.Errorf("container %s: checkpoint: %w", c.Name, err)
		}
	}
	err = a.runc.Checkpoint(ctx, c.ID, dump)
	stopWatch()
	if err != nil {
		return nil, fmt.Errorf("container %s: checkpoint: %w", c.Name, err)
	}
	log.Info("container dumped", "leave_running", req.LeaveRunning)

	var m *bundle.Manifest
	if req.ParentImages != "" {
		err = unlinkParentImages(criuDir)
	}
	if err == nil {
		m, err = a.seal(ctx, c, img.Layers, id, staging, req)
	}
	if err == nil {
		err = os.Rename(staging, a.checkpointDir(id))
	}
	if err != nil {
		if !req.LeaveRunning {
			// CRIU killed the container; its images are all there is.
			removeStaging = false
			if req.ParentImages != "" {
				// The restore reads the pages left in the parent.
				if lerr := linkParentImages(criuDir, req.ParentImages); lerr != nil {
					err = errors.Join(err, lerr)
				}
			}
			return nil, a.rollBack(ctx, c, staging, err)
		}
		return nil, fmt.Errorf("container %s: checkpoint: %w", c.Name, err)
	}
	c.LastCheckpoint = id
	if !req.LeaveRunning {
		if err := a.checkpointed(ctx, c, id); err != nil {
			return nil, err
		}
	}
	req.report(PhaseDone, m.Size(), m.Size())
	log.Info("checkpoint written", "size", m.Size(), "frozen_us", m.Stats.FrozenTimeUs)
	return m, nil
}

// seal writes the rest of a dumped container's checkpoint into dir (the
// rootfs diff and the spec) and its manifest.
func (a *Agent) seal(ctx context.Context, c *Container, layers []image.Layer, id, dir string, req CheckpointRequest) (*bundle.Manifest, error) {
	p := a.paths(c.ID)
	rootfsDiff, rootfsChanges := bundle.RootfsDiffName, ""
	if req.rootfsChanges != nil {
		// Only what changed since a migration's sync (migration_rootfs.go).
		rootfsDiff = ""
		var err error
		if rootfsChanges, err = req.rootfsChanges(ctx, c, dir, func(n int64) { req.report(PhaseRootfs, n, 0) }); err != nil {
			return nil, fmt.Errorf("write root filesystem changes: %w", err)
		}
	} else {
		diff, err := os.OpenFile(filepath.Join(dir, bundle.RootfsDiffName), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		cw := &countingWriter{w: diff, report: func(n int64) { req.report(PhaseRootfs, n, 0) }}
		err = a.snaps.Diff(ctx, c.SnapshotKey, cw)
		if cerr := diff.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("write root filesystem diff: %w", err)
		}
	}
	spec, err := os.ReadFile(filepath.Join(p.bundle(), bundle.SpecName))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, bundle.SpecName), spec, 0o600); err != nil {
		return nil, err
	}

	req.report(PhaseSealing, 0, 0)
	m := &bundle.Manifest{
		ID:            id,
		Container:     bundle.Container{Name: c.Name, ID: c.ID, Labels: c.Labels, IP: c.IP},
		Image:         bundle.Image{Name: c.Image},
		Host:          a.host(),
		Spec:          bundle.SpecName,
		RootfsDiff:    rootfsDiff,
		RootfsChanges: rootfsChanges,
		Options: bundle.Options{
			TCPEstablished: true,
			LeaveRunning:   req.LeaveRunning,
			External:       a.externalNetns(c),
		},
	}
	for _, l := range layers {
		m.Image.Layers = append(m.Image.Layers, l.Digest)
	}
	if st, err := criuimg.ReadStats(p.dumpWork()); err == nil && st.Dump != nil {
		d := st.Dump
		m.Stats = bundle.Stats{
			FreezingTimeUs:     d.FreezingTime.Microseconds(),
			FrozenTimeUs:       d.FrozenTime.Microseconds(),
			MemdumpTimeUs:      d.MemdumpTime.Microseconds(),
			MemwriteTimeUs:     d.MemwriteTime.Microseconds(),
			PagesScanned:       d.PagesScanned,
			PagesSkippedParent: d.PagesSkippedParent,
			PagesWritten:       d.PagesWritten,
		}
	} else {
		a.log.Warn("no CRIU dump statistics", "container", c.Name, "checkpoint", id, "err", err)
	}
	writeManifest := bundle.WriteManifest
	if req.pendingDigests {
		writeManifest = bundle.WritePendingManifest
	}
	if err := writeManifest(dir, m); err != nil {
		return nil, err
	}
	return m, nil
}

// checkpointed records that c's processes are gone into checkpoint id:
// its writable layer is as the checkpoint has it, and its network
// namespace is released (the IP stays reserved for it).
func (a *Agent) checkpointed(ctx context.Context, c *Container, id string) error {
	if err := a.runc.Delete(ctx, c.ID, true); err != nil && !errors.Is(err, runtime.ErrNotExist) {
		a.log.Warn("clear runc state after checkpoint", "container", c.Name, "err", err)
	}
	if err := a.net.Detach(ctx, c.ID); err != nil {
		// The checkpoint is complete; a network left attached only
		// stops a restore of the same IP on another agent of this host.
		a.log.Warn("release network after checkpoint", "container", c.Name, "err", err)
	}
	if err := c.transition(StateCheckpointed); err != nil {
		return err
	}
	c.Pid = 0
	c.Finished = time.Now().UTC()
	c.RootfsCheckpoint = id
	return a.save(c)
}

// rollBack restores c from the CRIU images in the staging checkpoint dir
// after a checkpoint failed past the dump, and returns cause with what
// became of c. The images are removed once c runs again; if it cannot be
// restored they are kept, as a failed-* checkpoint, since they are all
// that is left of it.
func (a *Agent) rollBack(ctx context.Context, c *Container, staging string, cause error) error {
	ctx = context.WithoutCancel(ctx)
	// Free what the failed steps wrote (a full disk is a likely cause):
	// the restore needs room for its logs and the container's record.
	if entries, err := os.ReadDir(staging); err == nil {
		for _, e := range entries {
			if e.Name() != bundle.CRIUDir {
				os.RemoveAll(filepath.Join(staging, e.Name()))
			}
		}
	}
	// CRIU killed it: it is as good as checkpointed, in the images only.
	err := c.transition(StateCheckpointed)
	if err == nil {
		err = a.start(ctx, c, startOptions{restoreFrom: filepath.Join(staging, bundle.CRIUDir), tcpEstablished: true})
	}
	if err == nil {
		os.RemoveAll(staging)
		a.log.Warn("checkpoint failed after the dump; container restored from it", "container", c.Name, "err", cause)
		return fmt.Errorf("container %s: checkpoint failed after CRIU dumped it (%w); the container was restored from the dump and runs", c.Name, cause)
	}
	if serr := a.save(c); serr != nil {
		err = errors.Join(err, serr)
	}
	keep := filepath.Join(a.cfg.checkpointsDir(), "failed-"+strings.TrimPrefix(filepath.Base(staging), stagingPrefix))
	if rerr := os.Rename(staging, keep); rerr != nil {
		keep = staging
	}
	return fmt.Errorf("container %s: checkpoint failed after CRIU dumped it (%w), and restoring from the dump failed too (%w); its CRIU images are kept in %s", c.Name, cause, err, keep)
}

// externalNetns names c's network namespace in CRIU's --external syntax,
// as runc declares it: the namespace is the agent's, not the container's,
// so CRIU neither dumps nor recreates it.
func (a *Agent) externalNetns(c *Container) []string {
	ep, err := a.net.Lookup(c.ID)
	if err != nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(ep.NetnsPath, &st); err != nil {
		return nil
	}
	return []string{fmt.Sprintf("net[%d]:extRootNetNS", st.Ino)}
}

// readHostInfo describes this node as checkpoint manifests record it and
// restores check it (a.host, which reads it once per agent): `runc --version` and `criu --version` are two
// process starts that a migration's dump and restore would otherwise pay
// inside the container's freeze. An agent is restarted after its runc or
// CRIU is upgraded anyway (doctor checks them at start).
func (a *Agent) readHostInfo() bundle.HostInfo {
	ctx, cancel := context.WithTimeout(context.Background(), hostInfoTimeout)
	defer cancel()
	h := bundle.HostInfo{
		Node:        a.cfg.Name,
		CRIUVersion: commandVersion(ctx, "criu", "--version", "Version: "),
		RuncVersion: commandVersion(ctx, a.cfg.Runc, "--version", "runc version "),
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		h.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		h.CPU, err = bundle.ParseCPUInfo(f)
		f.Close()
		if err != nil {
			a.log.Warn("read CPU features", "err", err)
		}
	}
	return h
}

// hostInfoTimeout bounds reading the tools' versions.
const hostInfoTimeout = 10 * time.Second

// checkpointDir is where the sealed checkpoint id lives.
func (a *Agent) checkpointDir(id string) string {
	return filepath.Join(a.cfg.checkpointsDir(), id)
}

// ListCheckpoints returns the manifests of the stored checkpoints, oldest
// first: all of them, or those of one container (by name or ID).
func (a *Agent) ListCheckpoints(ctx context.Context, container string) ([]*bundle.Manifest, error) {
	entries, err := os.ReadDir(a.cfg.checkpointsDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*bundle.Manifest
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") || strings.HasPrefix(e.Name(), "failed-") {
			continue
		}
		m, err := bundle.ReadManifest(a.checkpointDir(e.Name()))
		if err != nil {
			a.log.Warn("unreadable checkpoint", "checkpoint", e.Name(), "err", err)
			continue
		}
		if container == "" || m.Container.Name == container || m.Container.ID == container {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(x, y *bundle.Manifest) int { return x.Created.Compare(y.Created) })
	return out, nil
}

// findCheckpoint resolves a checkpoint ID or unique prefix.
func (a *Agent) findCheckpoint(ctx context.Context, ref string) (*bundle.Manifest, error) {
	if ref == "" {
		return nil, errorf(ErrInvalid, "empty checkpoint reference: give a checkpoint ID (see `godwit checkpoint ls`)")
	}
	all, err := a.ListCheckpoints(ctx, "")
	if err != nil {
		return nil, err
	}
	var matches []*bundle.Manifest
	for _, m := range all {
		if m.ID == ref {
			return m, nil
		}
		if strings.HasPrefix(m.ID, ref) {
			matches = append(matches, m)
		}
	}
	switch len(matches) {
	case 0:
		return nil, errorf(ErrNotFound, "no checkpoint %q on node %s: list them with `godwit checkpoint ls`", ref, a.cfg.Name)
	case 1:
		return matches[0], nil
	}
	return nil, errorf(ErrInvalid, "checkpoint %q is ambiguous: %d checkpoints start with it; give more of the ID", ref, len(matches))
}

// InspectCheckpoint returns a stored checkpoint's manifest and what its
// CRIU images hold. The images are read, never restored; Inspect refuses
// a checkpoint whose files no longer match their digests.
func (a *Agent) InspectCheckpoint(ctx context.Context, ref string) (*bundle.Manifest, *criuimg.Report, error) {
	m, err := a.findCheckpoint(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	dir := a.checkpointDir(m.ID)
	if m, err = bundle.Verify(dir); err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s: %w", ref, err)
	}
	report, err := criuimg.Inspect(filepath.Join(dir, bundle.CRIUDir))
	if err != nil {
		return nil, nil, fmt.Errorf("checkpoint %s: %w", m.ID, err)
	}
	return m, report, nil
}

// RemoveCheckpoint deletes a stored checkpoint.
func (a *Agent) RemoveCheckpoint(ctx context.Context, ref string) error {
	m, err := a.findCheckpoint(ctx, ref)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(a.checkpointDir(m.ID)); err != nil {
		return fmt.Errorf("remove checkpoint %s: %w", m.ID, err)
	}
	a.log.Info("checkpoint removed", "checkpoint", m.ID, "container", m.Container.Name)
	return nil
}

// ExportCheckpoint writes a stored checkpoint to w as an unencrypted
// archive, reporting progress (bytes of the checkpoint's files, before
// compression) when progress is set.
func (a *Agent) ExportCheckpoint(ctx context.Context, ref string, w io.Writer, compression bundle.Compression, progress func(done, total int64)) error {
	m, err := a.findCheckpoint(ctx, ref)
	if err != nil {
		return err
	}
	err = bundle.Export(ctx, a.checkpointDir(m.ID), w, bundle.ExportOptions{Compression: compression, Progress: progress})
	if err != nil {
		return fmt.Errorf("export checkpoint %s: %w", m.ID, err)
	}
	return nil
}

// clearStaging removes checkpoints that an earlier run of the agent left
// half written or half imported.
func (a *Agent) clearStaging() error {
	entries, err := os.ReadDir(a.cfg.checkpointsDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), stagingPrefix) {
			p := filepath.Join(a.cfg.checkpointsDir(), e.Name())
			a.log.Info("removing an unfinished checkpoint", "path", p)
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// watchSize calls report with the total size of the files in dir every
// dumpPoll until the returned stop is called.
func watchSize(dir string, report func(int64)) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(dumpPoll)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				report(dirSize(dir))
			}
		}
	}()
	return func() {
		close(done)
		<-finished
	}
}

// dirSize is the total size of the regular files directly in dir.
func dirSize(dir string) int64 {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			n += info.Size()
		}
	}
	return n
}

// countingWriter reports how many bytes went through it.
type countingWriter struct {
	w      io.Writer
	n      int64
	report func(int64)
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.report(c.n)
	return n, err
}
