package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/doctor"
	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/agent/network"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/agent/snapshot/snapshotters"
	"github.com/godwit/godwit/migrate"
)

// Agent runs one node's containers. Its methods are safe for concurrent
// use; operations on one container are serialised.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	images *image.Store
	snaps  snapshot.Snapshotter
	// snapshotter is the resolved kind ("overlay" or "btrfs").
	snapshotter string
	net         *network.Manager
	runc        *runtime.Runc

	// unpackMu serialises unpacking image layers into snapshots, so two
	// runs of the same image never unpack the same layer twice.
	unpackMu sync.Mutex

	mu         sync.Mutex // guards containers
	containers map[string]*entry

	mig migrations
	// caps probes the host for migration strategies once (nodeinfo.go).
	caps capabilityProbe
	// host is what checkpoints record of this host, read once
	// (checkpoints.go readHostInfo).
	host func() bundle.HostInfo
	// report is what the agent tells the scheduler (clusterreport.go).
	report clusterReport
}

// entry is one container and the lock that serialises operations on it.
type entry struct {
	op sync.Mutex
	c  *Container
}

// New opens the node's stores under cfg.DataDir and re-adopts the
// containers that earlier runs of the agent left behind.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	for _, dir := range []string{cfg.DataDir, cfg.RunDir, cfg.containersDir(), cfg.checkpointsDir()} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("node %s: %w", cfg.Name, err)
		}
	}
	log := cfg.Log.With("node", cfg.Name)
	a := &Agent{cfg: cfg, log: log, containers: map[string]*entry{}}

	var err error
	if a.images, err = image.Open(cfg.imagesDir(), log); err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	a.snapshotter = cfg.Snapshotter
	if a.snapshotter == "" {
		if a.snapshotter, err = snapshot.Detect(cfg.DataDir); err != nil {
			return nil, fmt.Errorf("detect snapshotter for %s: %w", cfg.DataDir, err)
		}
	}
	if a.snaps, err = snapshotters.Open(a.snapshotter, cfg.snapshotsDir(), log); err != nil {
		return nil, fmt.Errorf("open %s snapshotter: %w", a.snapshotter, err)
	}
	a.net, err = network.New(network.Config{
		NodeName: cfg.Name,
		RunDir:   cfg.RunDir,
		StateDir: cfg.networkDir(),
		CIDR:     cfg.ContainerCIDR,
		Log:      log,
	})
	if err != nil {
		return nil, fmt.Errorf("container network: %w", err)
	}
	a.runc = &runtime.Runc{Binary: cfg.Runc, Root: cfg.runcRoot(), Log: log}
	// Stream and post-copy migrations need pipes larger than the default
	// limit; a failure only costs those strategies, as doctor reports.
	if before, after, err := doctor.RaisePipeMaxSize(); err != nil {
		log.Warn("stream and post-copy migrations will not work here", "err", err)
	} else if after != before {
		log.Info("raised fs.pipe-max-size for CRIU's page server", "from", before, "to", after)
	}
	if err := a.clearStaging(); err != nil {
		return nil, fmt.Errorf("checkpoints: %w", err)
	}
	journal, err := migrate.OpenJournal(a.migrationsDir())
	if err != nil {
		return nil, err
	}
	a.mig.journal = observedJournal{Journal: journal, obs: cfg.Observer}
	a.mig.locks = map[string]*sync.Mutex{}
	a.host = sync.OnceValue(a.readHostInfo)
	go a.host() // read now, not in the first checkpoint's freeze
	a.mig.holds = a.newHolds()

	if err := a.adopt(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// Close releases the stores. Containers keep running: their shims own them.
func (a *Agent) Close() error {
	return errors.Join(a.net.Close(), a.snaps.Close())
}

// Name is the node's name.
func (a *Agent) Name() string { return a.cfg.Name }

// adopt loads every container record and reconciles it with what runc and
// the shims report: a container still running is kept as it is, one whose
// process ended while the agent was away is marked exited.
func (a *Agent) adopt(ctx context.Context) error {
	records, err := a.loadRecords()
	if err != nil {
		return fmt.Errorf("load container records: %w", err)
	}
	for _, c := range records {
		a.containers[c.ID] = &entry{c: c}
		if c.State != StateRunning {
			continue
		}
		if err := a.refresh(ctx, c); err != nil {
			return err
		}
		if c.State == StateRunning {
			shimPid, alive := runtime.ShimAlive(a.paths(c.ID).state())
			a.log.Info("re-adopted container", "container", c.Name, "id", c.ID,
				"pid", c.Pid, "shim_pid", shimPid, "shim_alive", alive)
		}
	}
	return nil
}

// refresh updates a running container's record from the shim's exit status
// and runc's view, and saves it when it changed.
func (a *Agent) refresh(ctx context.Context, c *Container) error {
	if c.State != StateRunning {
		return nil
	}
	exit, exited, err := runtime.ReadExit(a.paths(c.ID).state())
	if err != nil {
		return fmt.Errorf("container %s: read exit status: %w", c.Name, err)
	}
	if !exited {
		st, err := a.runc.State(ctx, c.ID)
		switch {
		case err == nil && (st.Status == "running" || st.Status == "paused"):
			return nil
		case err != nil && !errors.Is(err, runtime.ErrNotExist):
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		// runc has no running container and the shim recorded nothing: the
		// node rebooted or the shim was killed with its container.
		a.log.Warn("container found not running and without an exit status",
			"container", c.Name, "id", c.ID)
		exit = &runtime.ExitStatus{Code: -1}
	}
	if err := c.transition(StateExited); err != nil {
		return err
	}
	c.Pid = 0
	c.Finished = exit.At
	c.ExitCode = exit.Code
	c.ExitSignal = exit.Signal
	return a.save(c)
}

// lookup finds a container by name, full ID or unique ID prefix.
func (a *Agent) lookup(ref string) (*entry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ref == "" {
		return nil, errorf(ErrInvalid, "empty container reference: name a container or give its ID")
	}
	var matches []*entry
	for id, e := range a.containers {
		if e.c.Name == ref || id == ref {
			return e, nil
		}
		if strings.HasPrefix(id, ref) {
			matches = append(matches, e)
		}
	}
	switch len(matches) {
	case 0:
		return nil, errorf(ErrNotFound, "no container %q on node %s: list them with `godwit ps -a`", ref, a.cfg.Name)
	case 1:
		return matches[0], nil
	default:
		return nil, errorf(ErrInvalid, "container %q is ambiguous: %d containers have IDs starting with it; give more of the ID",
			ref, len(matches))
	}
}

// List returns copies of the container records, refreshed, oldest first:
// the running ones, or all of them.
func (a *Agent) List(ctx context.Context, all bool) ([]Container, error) {
	a.mu.Lock()
	entries := make([]*entry, 0, len(a.containers))
	for _, e := range a.containers {
		entries = append(entries, e)
	}
	a.mu.Unlock()

	out := make([]Container, 0, len(entries))
	for _, e := range entries {
		e.op.Lock()
		err := a.refresh(ctx, e.c)
		c := *e.c
		e.op.Unlock()
		if err != nil {
			return nil, err
		}
		if all || c.State == StateRunning {
			out = append(out, c)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// validID reports whether id has the form of the IDs newID makes: a
// caller-chosen ID names directories.
func validID(id string) bool {
	if len(id) != 64 {
		return false
	}
	for _, r := range id {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func newID() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}
