package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/godwit/godwit/migrate"

	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/agent/internal/names"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/agent/snapshot"
)

const (
	// DefaultStopTimeout is how long Stop waits after SIGTERM before it
	// sends SIGKILL.
	DefaultStopTimeout = 10 * time.Second
	// killWait is how long to wait for a container to die after SIGKILL.
	killWait = 10 * time.Second
	// exitPoll is how often to look for the shim's exit record.
	exitPoll = 50 * time.Millisecond
)

// RunRequest asks for a new container from an image.
type RunRequest struct {
	Name        string
	Image       string
	Args        []string // replaces the image's entrypoint and command
	Env         []string // added to, and overriding, the image's
	WorkingDir  string
	Hostname    string
	User        string
	CPUs        float64
	MemoryBytes int64
	Labels      map[string]string
	IP          net.IP // nil: allocate from the node's CIDR
	// ID is the container's ID when the scheduler chose it; empty: a new
	// one.
	ID string
}

// Run creates a container from an image and starts it. On any failure it
// undoes every step it took, so nothing is left behind.
func (a *Agent) Run(ctx context.Context, req RunRequest) (_ *Container, err error) {
	if err := a.checkFence("run", req.Name); err != nil {
		return nil, err
	}
	given := commandGeneration(ctx)
	if err := a.fenceNew("run", firstNonEmpty(req.Name, req.ID), req.ID, given); err != nil {
		return nil, err
	}
	img, err := a.images.Get(req.Image)
	if err != nil {
		if errors.Is(err, image.ErrNotFound) {
			return nil, errorf(ErrNotFound, "no image %q on node %s: import it with `godwit image import`", req.Image, a.cfg.Name)
		}
		return nil, err
	}
	id := req.ID
	if id == "" {
		id = newID()
	} else if !validID(id) {
		return nil, errorf(ErrInvalid, "container ID %q is not 64 lowercase hex digits", id)
	}
	c := &Container{
		ID:          id,
		Name:        req.Name,
		Image:       img.Name,
		ImageID:     img.ID.String(),
		State:       StateCreated,
		Args:        req.Args,
		Env:         mergeEnv(img.Config.Env, req.Env),
		WorkingDir:  firstNonEmpty(req.WorkingDir, img.Config.WorkingDir, "/"),
		Hostname:    req.Hostname,
		User:        firstNonEmpty(req.User, img.Config.User),
		CPUs:        req.CPUs,
		MemoryBytes: req.MemoryBytes,
		Labels:      req.Labels,
		Snapshotter: a.snapshotter,
		SnapshotKey: "container-" + id,
		Created:     time.Now().UTC(),
	}
	if c.Name == "" {
		c.Name = "c-" + id[:8]
	}
	if c.Hostname == "" {
		c.Hostname = c.Name
	}
	if len(c.Args) == 0 {
		c.Args = append(append([]string{}, img.Config.Entrypoint...), img.Config.Cmd...)
	}
	if len(c.Args) == 0 {
		return nil, errorf(ErrInvalid, "image %s has no command: give one after `--`", img.Name)
	}
	// The first generation is the scheduler's (1); a run without one
	// starts from what the cluster said of the ID, if anything.
	gen, _, epoch := a.placement(id)
	c.Generation, c.ArrivalEpoch = max(gen, given), epoch
	e, err := a.reserve(c)
	if err != nil {
		return nil, err
	}
	defer e.op.Unlock()
	log := a.log.With("container", c.Name, "id", id)

	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		var errs []error
		for i := len(undo) - 1; i >= 0; i-- {
			errs = append(errs, undo[i]())
		}
		errs = append(errs, os.RemoveAll(a.paths(id).dir))
		a.forget(id)
		if cerr := errors.Join(errs...); cerr != nil {
			log.Error("clean up after failed run", "err", cerr)
		}
	}()

	parent, err := a.unpack(ctx, img)
	if err != nil {
		return nil, err
	}
	mounts, err := a.snaps.Prepare(ctx, c.SnapshotKey, parent)
	if err != nil {
		return nil, fmt.Errorf("container %s: prepare root filesystem: %w", c.Name, err)
	}
	undo = append(undo, func() error { return a.snaps.Remove(context.WithoutCancel(ctx), c.SnapshotKey) })

	p := a.paths(id)
	if err := os.MkdirAll(p.rootfs(), 0o755); err != nil {
		return nil, err
	}
	if err := snapshot.MountAll(mounts, p.rootfs()); err != nil {
		return nil, fmt.Errorf("container %s: mount root filesystem: %w", c.Name, err)
	}
	undo = append(undo, func() error { return snapshot.Unmount(p.rootfs()) })

	ep, err := a.net.Setup(ctx, id, req.IP)
	if err != nil {
		return nil, fmt.Errorf("container %s: network: %w", c.Name, err)
	}
	undo = append(undo, func() error { return a.net.Teardown(context.WithoutCancel(ctx), id) })
	c.IP = ep.IP.String()

	spec, err := runtime.GenerateSpec(runtime.SpecOptions{
		ID:          id,
		Name:        c.Name,
		Args:        c.Args,
		Env:         c.Env,
		Cwd:         c.WorkingDir,
		Hostname:    c.Hostname,
		User:        c.User,
		CPUs:        c.CPUs,
		MemoryBytes: c.MemoryBytes,
		Labels:      c.Labels,
		RootfsPath:  p.rootfs(),
		NetnsPath:   ep.NetnsPath,
		CgroupsPath: a.cfg.cgroupsPath(id),
	})
	if err != nil {
		return nil, errorf(ErrInvalid, "container %s: %w", c.Name, err)
	}
	if err := runtime.WriteBundle(p.bundle(), spec); err != nil {
		return nil, fmt.Errorf("container %s: write bundle: %w", c.Name, err)
	}
	if err := a.save(c); err != nil {
		return nil, err
	}
	if err := a.start(ctx, c, startOptions{}); err != nil {
		return nil, err
	}
	log.Info("container running", "image", c.Image, "ip", c.IP, "pid", c.Pid)
	out := *c
	return &out, nil
}

// reserve claims the container's name, so two runs cannot take the same,
// and returns its entry locked: other operations on the container wait
// until the run has finished or failed.
func (a *Agent) reserve(c *Container) (*entry, error) {
	if !names.ValidContainer(c.Name) {
		return nil, errorf(ErrInvalid, "container name %q: %s", c.Name, names.ContainerRule)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.containers[c.ID]; ok {
		return nil, fmt.Errorf("container ID %.12s is taken on node %s by %s: %w", c.ID, a.cfg.Name, e.c.Name, ErrExists)
	}
	for _, e := range a.containers {
		if e.c.Name == c.Name {
			return nil, fmt.Errorf("container name %q is taken on node %s by %s: remove it or choose another --name: %w",
				c.Name, a.cfg.Name, e.c.ID[:12], ErrExists)
		}
	}
	e := &entry{c: c}
	e.op.Lock()
	a.containers[c.ID] = e
	return e, nil
}

func (a *Agent) forget(id string) {
	a.mu.Lock()
	delete(a.containers, id)
	a.mu.Unlock()
}

// startOptions make start restore the container from CRIU images
// instead of starting it afresh.
type startOptions struct {
	restoreFrom    string // CRIU images; "" starts afresh
	tcpEstablished bool
	// held: the bundle restores the processes stopped (see
	// writeRestoreBundle); the container is then migrating, not running.
	held bool
}

// start launches the container's shim, which creates and starts it with
// runc (or restores it), and records it as running.
func (a *Agent) start(ctx context.Context, c *Container, o startOptions) error {
	p := a.paths(c.ID)
	// A crash between a stop and its delete can leave runc state behind;
	// look for it on disk rather than paying for a runc call every start.
	if _, err := os.Stat(filepath.Join(a.cfg.runcRoot(), c.ID)); err == nil {
		if err := a.runc.Delete(ctx, c.ID, true); err != nil && !errors.Is(err, runtime.ErrNotExist) {
			return fmt.Errorf("container %s: clear old runc state: %w", c.Name, err)
		}
	}
	if err := runtime.ClearExit(p.state()); err != nil {
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	cfg := runtime.ShimConfig{
		ID:          c.ID,
		Bundle:      p.bundle(),
		RuncRoot:    a.cfg.runcRoot(),
		RuncBinary:  a.cfg.Runc,
		StateDir:    p.state(),
		LogMaxBytes: runtime.DefaultLogMaxBytes,
		LogMaxFiles: runtime.DefaultLogMaxFiles,
		Cgroup:      a.cfg.shimCgroup(),
	}
	if o.restoreFrom != "" {
		if err := os.RemoveAll(p.restoreWork()); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		cfg.RestoreFrom, cfg.RestoreWorkPath, cfg.RestoreTCPEstablished = o.restoreFrom, p.restoreWork(), o.tcpEstablished
	}
	shimPid, err := runtime.StartShim(ctx, a.cfg.Self, cfg)
	if err != nil {
		return fmt.Errorf("container %s: start: %w", c.Name, err)
	}
	st, err := a.runc.State(ctx, c.ID)
	if err != nil {
		return fmt.Errorf("container %s: after start: %w", c.Name, err)
	}
	if err := c.transition(StateRunning); err != nil {
		return err
	}
	if o.held {
		if err := c.transition(StateMigrating); err != nil {
			return err
		}
	}
	c.ShimPid = shimPid
	c.Pid = st.Pid
	c.Started = time.Now().UTC()
	c.Finished = time.Time{}
	c.ExitCode, c.ExitSignal = 0, ""
	// Running changes the writable layer: it no longer matches a checkpoint.
	c.RootfsCheckpoint = ""
	return a.save(c)
}

// Inspect returns a container's record, refreshed.
func (a *Agent) Inspect(ctx context.Context, ref string) (*Container, error) {
	e, err := a.lookup(ref)
	if err != nil {
		return nil, err
	}
	e.op.Lock()
	defer e.op.Unlock()
	if err := a.refresh(ctx, e.c); err != nil {
		return nil, err
	}
	out := *e.c
	return &out, nil
}

// Start starts a stopped or exited container again, in the same root
// filesystem and with the same IP.
func (a *Agent) Start(ctx context.Context, ref string) (*Container, error) {
	if err := a.checkFence("start", ref); err != nil {
		return nil, err
	}
	e, err := a.lookup(ref)
	if err != nil {
		return nil, err
	}
	e.op.Lock()
	defer e.op.Unlock()
	c := e.c
	if err := a.fenceRun("start", c, commandGeneration(ctx)); err != nil {
		return nil, err
	}
	if err := a.refuseMigratingSource("start", c); err != nil {
		return nil, err
	}
	if err := a.refresh(ctx, c); err != nil {
		return nil, err
	}
	if c.State == StateRunning {
		return nil, errorf(ErrInvalidState, "container %s is already running", c.Name)
	}
	if err := a.ensureRootfs(ctx, c); err != nil {
		return nil, err
	}
	if err := a.ensureNetwork(ctx, c, false); err != nil {
		return nil, err
	}
	if err := a.start(ctx, c, startOptions{}); err != nil {
		return nil, err
	}
	a.log.Info("container started", "container", c.Name, "id", c.ID, "pid", c.Pid)
	out := *c
	return &out, nil
}

// ensureRootfs mounts the container's root filesystem again if it is not
// mounted (after a reboot, for example).
func (a *Agent) ensureRootfs(ctx context.Context, c *Container) error {
	rootfs := a.paths(c.ID).rootfs()
	mounted, err := isMountPoint(rootfs)
	if err != nil || mounted {
		return err
	}
	mounts, err := a.snaps.Mounts(ctx, c.SnapshotKey)
	if err != nil {
		return fmt.Errorf("container %s: root filesystem: %w", c.Name, err)
	}
	return snapshot.MountAll(mounts, rootfs)
}

// Stop sends SIGTERM to the container's init process, then SIGKILL to all
// of its processes if it has not exited within timeout. Stopping a
// container that is not running does nothing.
func (a *Agent) Stop(ctx context.Context, ref string, timeout time.Duration) (*Container, error) {
	e, err := a.lookup(ref)
	if err != nil {
		return nil, err
	}
	e.op.Lock()
	defer e.op.Unlock()
	if err := a.fenceGeneration("stop", e.c, commandGeneration(ctx), 0); err != nil {
		return nil, err
	}
	if err := a.stop(ctx, e.c, timeout); err != nil {
		return nil, err
	}
	out := *e.c
	return &out, nil
}

func (a *Agent) stop(ctx context.Context, c *Container, timeout time.Duration) error {
	if err := a.refresh(ctx, c); err != nil || c.State != StateRunning {
		return err
	}
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	log := a.log.With("container", c.Name, "id", c.ID)
	exit, err := a.signalAndWait(ctx, c, syscall.SIGTERM, false, timeout)
	if err != nil {
		return err
	}
	if exit == nil {
		log.Info("container ignored SIGTERM, killing it", "timeout", timeout)
		if exit, err = a.signalAndWait(ctx, c, syscall.SIGKILL, true, killWait); err != nil {
			return err
		}
		if exit == nil {
			return fmt.Errorf("container %s did not die within %s of SIGKILL; its shim state is in %s",
				c.Name, killWait, a.paths(c.ID).state())
		}
	}
	if err := a.runc.Delete(ctx, c.ID, true); err != nil && !errors.Is(err, runtime.ErrNotExist) {
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	if err := c.transition(StateStopped); err != nil {
		return err
	}
	c.Pid = 0
	c.Finished, c.ExitCode, c.ExitSignal = exit.At, exit.Code, exit.Signal
	log.Info("container stopped", "exit_code", exit.Code, "signal", exit.Signal)
	return a.save(c)
}

// signalAndWait signals the container and waits up to wait for the shim to
// record its exit; a nil status means it is still running.
func (a *Agent) signalAndWait(ctx context.Context, c *Container, sig syscall.Signal, all bool, wait time.Duration) (*runtime.ExitStatus, error) {
	if err := a.runc.Kill(ctx, c.ID, sig, all); err != nil && !errors.Is(err, runtime.ErrNotExist) {
		// The container may have exited between refresh and kill.
		if exit, done, rerr := runtime.ReadExit(a.paths(c.ID).state()); rerr == nil && done {
			return exit, nil
		}
		return nil, fmt.Errorf("container %s: signal %s: %w", c.Name, sig, err)
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	tick := time.NewTicker(exitPoll)
	defer tick.Stop()
	for {
		exit, done, err := runtime.ReadExit(a.paths(c.ID).state())
		if err != nil || done {
			return exit, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, nil
		case <-tick.C:
		}
	}
}

// Remove deletes a container and everything the agent made for it: runc
// state, cgroup, network namespace, veth, route, IP, mount, snapshot and
// files. A running container is refused unless force is set.
func (a *Agent) Remove(ctx context.Context, ref string, force bool) error {
	e, err := a.lookup(ref)
	if err != nil {
		return err
	}
	e.op.Lock()
	defer e.op.Unlock()
	c := e.c
	if err := a.fenceGeneration("remove", c, commandGeneration(ctx), 0); err != nil {
		return err
	}
	if err := a.refresh(ctx, c); err != nil {
		return err
	}
	if c.State == StateRunning {
		if !force {
			return errorf(ErrInvalidState, "container %s is running: stop it first, or remove it with `rm -f`", c.Name)
		}
		if _, err := a.signalAndWait(ctx, c, syscall.SIGKILL, true, killWait); err != nil {
			return err
		}
	}
	var errs []error
	if err := a.runc.Delete(ctx, c.ID, true); err != nil && !errors.Is(err, runtime.ErrNotExist) {
		errs = append(errs, err)
	}
	errs = append(errs,
		a.net.Teardown(ctx, c.ID),
		snapshot.Unmount(a.paths(c.ID).rootfs()),
	)
	if err := a.snaps.Remove(ctx, c.SnapshotKey); err != nil && !errors.Is(err, snapshot.ErrNotFound) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		// Keep the record so that `rm` can be tried again.
		return fmt.Errorf("container %s: remove: %w", c.Name, err)
	}
	if err := os.RemoveAll(a.paths(c.ID).dir); err != nil {
		return fmt.Errorf("container %s: remove files: %w", c.Name, err)
	}
	a.forget(c.ID)
	a.log.Info("container removed", "container", c.Name, "id", c.ID)
	return nil
}

// Logs writes the container's output to w; with follow it keeps writing
// until ctx ends or the container exits.
func (a *Agent) Logs(ctx context.Context, ref string, follow bool, w io.Writer) error {
	e, err := a.lookup(ref)
	if err != nil {
		return err
	}
	return runtime.ReadLogs(ctx, a.paths(e.c.ID).state(), follow, w)
}

// ExecRequest runs one more process in a running container. Such processes
// are not part of the container's checkpoint.
type ExecRequest struct {
	Args       []string
	Env        []string
	WorkingDir string
}

// Exec runs req in the container and returns its exit code.
func (a *Agent) Exec(ctx context.Context, ref string, req ExecRequest, stdout, stderr io.Writer) (int, error) {
	c, err := a.Inspect(ctx, ref)
	if err != nil {
		return 0, err
	}
	if c.State != StateRunning {
		return 0, errorf(ErrInvalidState, "container %s is %s, not running: start it first", c.Name, c.State)
	}
	if len(req.Args) == 0 {
		return 0, errorf(ErrInvalid, "exec in %s: no command given", c.Name)
	}
	return a.runc.Exec(ctx, c.ID, runtime.ExecProcess{
		Args: req.Args,
		Env:  mergeEnv(c.Env, req.Env),
		Cwd:  firstNonEmpty(req.WorkingDir, c.WorkingDir),
	}, stdout, stderr)
}

// mergeEnv returns base with overrides applied, keeping base's order.
func mergeEnv(base, overrides []string) []string {
	out := append([]string{}, base...)
	index := map[string]int{}
	for i, kv := range out {
		index[envKey(kv)] = i
	}
	for _, kv := range overrides {
		if i, ok := index[envKey(kv)]; ok {
			out[i] = kv
			continue
		}
		index[envKey(kv)] = len(out)
		out = append(out, kv)
	}
	return out
}

func envKey(kv string) string {
	for i := range len(kv) {
		if kv[i] == '=' {
			return kv[:i]
		}
	}
	return kv
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// refuseMigratingSource refuses to start c while it is the source of a
// migration that has not ended: its stopped copy runs again only through
// the migration (resumed after an abort, or dropped after the commit),
// never afresh from its image, which would be a second copy, with its
// memory lost, of a container the cluster may have moved already.
func (a *Agent) refuseMigratingSource(what string, c *Container) error {
	open, err := a.mig.journal.Open()
	if err != nil {
		return err
	}
	for _, rec := range open {
		if rec.Role == migrate.RoleSource && (rec.ContainerID == c.ID || rec.Container == c.Name) {
			return errorf(ErrInvalidState, "%s container %s on node %s: it is the source of migration %s (phase %s), which has not ended: it runs again only when the move is aborted (`godwit migration cancel %s`, or `godwit migrate --abort %s` between two agents), never afresh",
				what, c.Name, a.cfg.Name, rec.ID, rec.Phase, rec.ID, rec.ID)
		}
	}
	return nil
}
