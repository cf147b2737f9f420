package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/internal/tunnel"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// Post-copy (migrate/README.md): the source dumps everything but the
// container's memory and leaves CRIU serving the pages (`runc checkpoint
// --lazy-pages`, in the migration's own namespace, migration_stream.go);
// the destination restores at once with CRIU's lazy-pages daemon, which
// fetches the pages through a data connection as the container faults
// them in, and the rest in the background. The restored copy is held
// stopped until the commit; the pages keep flowing after it. Both ends of
// that flow belong to the agents, not to the driver's calls: a driver
// that dies after the commit loses nothing, while losing either agent (or
// its node) before the last page is in loses the container.

// FailpointDestinationLazyRestore kills the destination agent in a
// post-copy restore, once its lazy-pages daemon fetches from the source
// and before CRIU restores: the fault test of a node lost while pages are
// in flight.
const FailpointDestinationLazyRestore = "migrate/destination/lazy-restore"

// Pid files of the page processes, in the migration's pagesWorkDir: an
// agent restarted while one runs can still end it. The processes are not
// in the agent's process group, so that serving pages survives what is
// meant for the agent alone (a terminal's Ctrl-C).
const (
	// lazyDumpPidFile records a source's lazy dump (endServing).
	lazyDumpPidFile = "lazy-dump.pid"
	// lazyPagesPidFile and pageServerPidFile record a destination's
	// lazy-pages daemon and page server (dropPages).
	lazyPagesPidFile  = "lazy-pages.pid"
	pageServerPidFile = "page-server.pid"
)

// recordPid writes pid into migration id's pid file name.
func (a *Agent) recordPid(id, name string, pid int) error {
	dir := a.pagesWorkDir(id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name), []byte(strconv.Itoa(pid)), 0o600)
}

// killRecorded kills the process of migration id's pid file name, if it
// still runs a command line holding marker (a pid file outlives a
// reboot, and pids are reused).
func (a *Agent) killRecorded(id, name, marker string) {
	data, err := os.ReadFile(filepath.Join(a.pagesWorkDir(id), name))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || !runtime.Alive(pid) {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmdline), marker) {
		return
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
		a.log.Info("killed a page process left by an earlier run of the agent", "migration", id, "pid", pid, "process", name)
	}
}

// lazyServe is a source's lazy dump and the connection it serves on.
type lazyServe struct {
	dump *runtime.LazyCheckpoint
	mu   sync.Mutex
	tun  *tunnel.Tunnel // nil until the destination connects
}

// lazyFetch is a destination's lazy-pages daemon and its connection.
type lazyFetch struct {
	daemon *runtime.LazyPages
	tun    *tunnel.Tunnel
	// workDir is the daemon's work directory, which the restore shares.
	workDir string
	// timed is the page connection, timed for the log.
	timed *pagesConn
}

func (f *lazyFetch) stop() {
	f.daemon.Kill()
	f.tun.Close()
}

// dumpLazy starts container c's lazy dump into criuDir, serving its pages
// in the migration's namespace, and returns once CRIU serves them. The
// caller has paused c: CRIU leaves it paused when it lets go.
func (a *Agent) dumpLazy(ctx context.Context, id string, c *Container, criuDir string) error {
	var lc *runtime.LazyCheckpoint
	err := a.inPagesNetns(id, func() error {
		var err error
		lc, err = a.runc.StartLazyCheckpoint(ctx, c.ID, runtime.LazyCheckpointOptions{
			ImagePath: criuDir,
			WorkPath:  a.paths(c.ID).dumpWork(),
			Port:      pagesPort,
		})
		return err
	})
	if err != nil {
		return err
	}
	if err := a.recordPid(id, lazyDumpPidFile, lc.Pid); err != nil {
		lc.Kill()
		return err
	}
	st := a.pages()
	st.mu.Lock()
	st.serving[id] = &lazyServe{dump: lc}
	st.mu.Unlock()
	go func() {
		err := lc.Wait(context.Background())
		a.log.Info("lazy dump ended", "migration", id, "container", c.Name, "err", err)
	}()
	return nil
}

// servePages is MigrateServePages: it takes the destination's page
// connection from accept and splices it to the lazy dump's page server.
// The splice is the agent's: it goes on after the call returns.
func (a *Agent) servePages(ctx context.Context, id string, accept func(context.Context) (net.Conn, error)) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseAborted {
		return rec.Phase, fenced(id, migrate.ErrAborted)
	}
	st := a.pages()
	st.mu.Lock()
	s := st.serving[id]
	st.mu.Unlock()
	if s == nil {
		return rec.Phase, errorf(ErrInvalidState, "migration %s: node %s serves no memory pages for it (an agent restarted after the dump cannot serve them again): abort the migration", id, a.cfg.Name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.dump.Done():
		return rec.Phase, errorf(ErrInvalidState, "migration %s: the lazy dump on node %s has ended (%v): it serves no more pages; abort the migration", id, a.cfg.Name, s.dump.Wait(ctx))
	default:
	}
	if s.tun != nil {
		select {
		case <-s.tun.Done():
		default:
			return rec.Phase, errorf(ErrInvalidState, "migration %s: node %s serves its pages to a destination already", id, a.cfg.Name)
		}
	}
	remote, err := accept(ctx)
	if err != nil {
		return rec.Phase, err
	}
	local, err := a.dialPages(ctx, id, pagesPort)
	if err != nil {
		remote.Close()
		return rec.Phase, err
	}
	// Not ctx: serving outlives this call and its driver.
	tun := tunnel.Splice(context.Background(), local, remote)
	s.tun = tun
	go func() {
		err := tun.Wait(context.Background())
		a.log.Info("memory pages served to the destination", "migration", id, "bytes", tun.Stats().ToRemote, "err", err)
		if err == nil {
			a.observeTransfer(TransferPages, tun.Stats().ToRemote)
		}
	}()
	return rec.Phase, nil
}

// endServing ends migration id's lazy dump, if one serves, and waits
// until CRIU has let go of the container: CRIU holds the container's
// processes while it serves, and a dump whose connection ends before the
// last page leaves them as they were (paused). An agent restarted since
// the dump finds it by its pid file.
func (a *Agent) endServing(ctx context.Context, id string) error {
	st := a.pages()
	st.mu.Lock()
	s := st.serving[id]
	delete(st.serving, id)
	st.mu.Unlock()
	pidFile := filepath.Join(a.pagesWorkDir(id), lazyDumpPidFile)
	defer os.Remove(pidFile)
	wait, cancel := context.WithTimeout(ctx, pagesSettle)
	defer cancel()
	if s == nil {
		data, err := os.ReadFile(pidFile)
		if err != nil {
			return nil // no lazy dump
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		if !runtime.Alive(pid) {
			return nil
		}
		a.pokePages(ctx, id)
		return waitProcessGone(wait, pid)
	}
	s.mu.Lock()
	if s.tun != nil {
		s.tun.Close()
	} else {
		a.pokePages(ctx, id)
	}
	s.mu.Unlock()
	if err := s.dump.Wait(wait); errors.Is(err, context.DeadlineExceeded) {
		s.dump.Kill()
		return fmt.Errorf("migration %s: the lazy dump did not end within %s of losing its connection", id, pagesSettle)
	}
	return nil
}

// pokePages connects to a lazy dump's page server and hangs up: a dump
// whose one connection ends lets go of the container.
func (a *Agent) pokePages(ctx context.Context, id string) {
	conn, err := a.dialPages(ctx, id, pagesPort)
	if err != nil {
		a.log.Debug("lazy dump not reached", "migration", id, "err", err)
		return
	}
	conn.Close()
}

func waitProcessGone(ctx context.Context, pid int) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for runtime.Alive(pid) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("process %d did not end: %w", pid, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// pagesServed waits until a post-copy source has served every page
// (MigrateFinish, before the source's copy goes), then drops the
// migration's namespace. It reports a lazy dump that failed: the source
// then keeps its frozen copy, the only complete one.
func (a *Agent) pagesServed(ctx context.Context, rec *migrate.Record) error {
	if rec.Strategy != migrate.PostCopy {
		return nil
	}
	id := rec.ID
	st := a.pages()
	st.mu.Lock()
	s := st.serving[id]
	st.mu.Unlock()
	pidFile := filepath.Join(a.pagesWorkDir(id), lazyDumpPidFile)
	if s != nil {
		a.log.Info("waiting for the destination to fetch every page before removing the source's copy", "migration", id)
		if err := s.dump.Wait(ctx); err != nil {
			return fmt.Errorf("migration %s: the lazy dump that serves the container's memory failed (%w): the source keeps its frozen copy, whose memory is complete; check the container on the destination", id, err)
		}
	} else if data, err := os.ReadFile(pidFile); err == nil {
		// An agent restarted while serving: its dump serves on.
		if pid, _ := strconv.Atoi(strings.TrimSpace(string(data))); runtime.Alive(pid) {
			if err := waitProcessGone(ctx, pid); err != nil {
				return fmt.Errorf("migration %s: wait for the lazy dump to serve every page: %w", id, err)
			}
		}
	}
	st.mu.Lock()
	delete(st.serving, id)
	st.mu.Unlock()
	os.RemoveAll(a.pagesWorkDir(id))
	a.dropPagesNetns(id)
	return nil
}

// restoreLazy is MigrateRestore for post-copy: it connects to the
// source's page service through dial, starts CRIU's lazy-pages daemon in
// the migration's namespace on that connection, and restores held
// stopped with the daemon's work directory (heldCRIUConfig). The daemon
// goes on fetching after the call returns, and after the commit.
func (a *Agent) restoreLazy(ctx context.Context, id string, opts migrate.RestoreOptions, dial func(context.Context) (net.Conn, error)) (migrate.Phase, error) {
	f, phase, err := a.startFetch(ctx, id, dial)
	if f == nil {
		return phase, err
	}
	failpoint.Hit(FailpointDestinationLazyRestore)
	phase, err = a.MigrateRestore(ctx, id, opts)
	if err != nil {
		a.stopFetch(id, f)
		return phase, fmt.Errorf("%w (CRIU's restore log is %s)", err, filepath.Join(f.workDir, runtime.CRIURestoreLog))
	}
	go func() {
		err := f.daemon.Wait(context.Background())
		fetched := time.Now()
		a.dropPagesNetns(id)
		if err != nil {
			// Kept: a commit is refused (pagesCommittable), an abort
			// drops it.
			a.log.Error("the lazy-pages daemon failed: the restored container lacks memory pages", "migration", id, "err", err)
			return
		}
		a.log.Info("every memory page fetched from the source", "migration", id, "bytes", f.tun.Stats().ToLocal,
			pagesTimeKey, f.timed.since(fetched))
		a.stopFetch(id, f)
		if err := os.RemoveAll(a.pagesWorkDir(id)); err != nil {
			a.log.Warn("remove the lazy restore's files", "migration", id, "err", err)
		}
	}()
	return phase, nil
}

// startFetch prepares a lazy restore of migration id: f is nil when
// there is nothing to restore (phase and err say why, err nil when the
// restore was done already).
func (a *Agent) startFetch(ctx context.Context, id string, dial func(context.Context) (net.Conn, error)) (f *lazyFetch, _ migrate.Phase, err error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return nil, "", err
	}
	defer unlock()
	switch rec.Phase {
	case migrate.PhaseReady, migrate.PhaseCommitted, migrate.PhaseDone:
		return nil, rec.Phase, nil
	case migrate.PhaseAborted:
		return nil, rec.Phase, fenced(id, migrate.ErrAborted)
	}
	if rec.Strategy != migrate.PostCopy {
		rec.Strategy = migrate.PostCopy
		if err := a.mig.journal.Put(rec); err != nil {
			return nil, rec.Phase, err
		}
	}
	st := a.pages()
	st.mu.Lock()
	old := st.fetching[id]
	st.mu.Unlock()
	if old != nil { // a repeated restore starts afresh
		a.stopFetch(id, old)
	}
	work := a.pagesWorkDir(id)
	images, lazyWork := filepath.Join(work, "images"), filepath.Join(work, "lazy")
	a.killRecorded(id, lazyPagesPidFile, "lazy-pages") // an agent restarted since an earlier try
	if err := os.RemoveAll(work); err != nil {
		return nil, rec.Phase, err
	}
	// The daemon keeps its own links to the images: the commit removes
	// the checkpoint while it still fetches. The links keep the
	// transfer's receipt good, so that the restore does not digest the
	// images again (a link changes their ctime).
	a.mig.mu.Lock()
	receipt := a.mig.receipts[id]
	a.mig.mu.Unlock()
	if err := receipt.Link(a.checkpointDir(id), bundle.CRIUDir, images); err != nil {
		return nil, rec.Phase, fmt.Errorf("migration %s: link the images for the lazy-pages daemon: %w", id, err)
	}
	remote, err := dial(ctx)
	if err != nil {
		return nil, rec.Phase, fmt.Errorf("migration %s: connect to the source's page service: %w", id, err)
	}
	l, err := a.listenPages(id)
	if err != nil {
		remote.Close()
		return nil, rec.Phase, err
	}
	// Not ctx: the pages keep coming after this call and the commit.
	timed := timePages(remote)
	tun := tunnel.Accept(context.Background(), l, timed)
	var daemon *runtime.LazyPages
	err = a.inPagesNetns(id, func() error {
		var err error
		daemon, err = runtime.StartLazyPages(ctx, runtime.LazyPagesOptions{
			ImagesDir: images, WorkDir: lazyWork, Port: l.Addr().(*net.TCPAddr).Port,
		})
		return err
	})
	if err != nil {
		tun.Close()
		return nil, rec.Phase, fmt.Errorf("migration %s: %w", id, err)
	}
	if err := a.recordPid(id, lazyPagesPidFile, daemon.Pid); err != nil {
		daemon.Kill()
		tun.Close()
		return nil, rec.Phase, err
	}
	f = &lazyFetch{daemon: daemon, tun: tun, workDir: lazyWork, timed: timed}
	st.mu.Lock()
	st.fetching[id] = f
	st.mu.Unlock()
	return f, rec.Phase, nil
}

// stopFetch ends a lazy restore that failed or is replaced.
func (a *Agent) stopFetch(id string, f *lazyFetch) {
	f.stop()
	st := a.pages()
	st.mu.Lock()
	if st.fetching[id] == f {
		delete(st.fetching, id)
	}
	st.mu.Unlock()
}

// heldCRIUConfig is the CRIU configuration of a restore held stopped from
// checkpoint id (a migration's checkpoint has the migration's ID): a
// post-copy restore also fetches its memory from the lazy-pages daemon,
// in the daemon's work directory.
func (a *Agent) heldCRIUConfig(id string) runtime.CRIUConfig {
	cfg := runtime.CRIUConfig{LeaveStopped: true}
	st := a.pages()
	st.mu.Lock()
	defer st.mu.Unlock()
	if f := st.fetching[id]; f != nil {
		cfg.LazyPages, cfg.WorkDir = true, f.workDir
	}
	return cfg
}

// pagesCommittable refuses to commit a post-copy migration whose
// lazy-pages daemon failed: the restored container would die on its
// first missing page, while the source still has them all.
func (a *Agent) pagesCommittable(id string) error {
	st := a.pages()
	st.mu.Lock()
	f := st.fetching[id]
	st.mu.Unlock()
	if f == nil {
		return nil
	}
	select {
	case <-f.daemon.Done():
		if err := f.daemon.Wait(context.Background()); err != nil {
			return errorf(ErrInvalidState, "migration %s: the restored container can no longer fetch its memory from the source (%v): it must not run; abort the migration", id, err)
		}
	default:
	}
	return nil
}

func (s *server) MigrateServePages(ctx context.Context, req *pb.MigratePagesRequest) (*pb.MigrateReply, error) {
	return reply(s.a.servePages(ctx, req.GetId(), func(ctx context.Context) (net.Conn, error) {
		return s.acceptData(ctx, req.GetDataToken())
	}))
}
