package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/internal/netnsutil"
	"github.com/godwit/godwit/internal/tunnel"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The stream and post-copy strategies on an agent (migrate/README.md):
// memory pages that move through CRIU's page-server protocol instead of
// image files.
//
// CRIU's sockets never face the network. Every CRIU process that serves
// or takes pages runs in a network namespace of the migration's own,
// which holds only a loopback interface (pagesNetns), and the agent
// carries the bytes between that loopback and a data connection to the
// other agent (internal/tunnel): the data channel's credentials and TLS
// apply to them, and nobody else can reach CRIU (a lazy dump listens on
// every address of its namespace, whatever address it is given).
//
// The source keeps its container, frozen, until the commit. Its memory
// is not on its disk (stream) or not all sent yet (post-copy), so an
// abort could not restore it from images; instead the container is
// paused (the cgroup freezer) and dumped with --leave-running, which
// leaves it paused, and its network namespace is fenced (fence): once
// CRIU has let go of its TCP sockets, the kernel would otherwise answer
// its peers, acknowledging data the destination's copy never sees, and
// the kill after the commit would reset its connections. An abort
// removes the fence and thaws the container, which runs on from where it
// was; the finish removes it with the fence still up.

const (
	// pagesPort is where a lazy dump serves its pages inside the
	// migration's own namespace: nothing else listens there.
	pagesPort = 7421
	// pagesSettle bounds waiting, once a stream dump returned, for its
	// page connection to end, and, in an abort, for a lazy dump to let go
	// of the container.
	pagesSettle = time.Minute
	// pageServerWait bounds waiting for a stream's page server to end
	// once its connection has.
	pageServerWait = 10 * time.Second
	// fenceComment marks the fence's rules in the container's namespace.
	fenceComment = "godwit migration fence"
)

// pageFile matches the files a CRIU page server writes: a stream
// migration's destination accepts nothing else from it.
var pageFile = regexp.MustCompile(`^(pagemap|pages)-[0-9]+\.img$`)

// pagesState is what an agent holds in memory of the migrations whose
// pages move beside CRIU, by migration ID.
type pagesState struct {
	mu sync.Mutex
	// servers are the destination's page servers of stream dumps under
	// way, so that an abort can end them.
	servers map[string]*runtime.PageServer
	// serving are the source's lazy dumps (post-copy).
	serving map[string]*lazyServe
	// fetching are the destination's lazy restores (post-copy).
	fetching map[string]*lazyFetch
}

func (a *Agent) pages() *pagesState {
	a.mig.mu.Lock()
	defer a.mig.mu.Unlock()
	if a.mig.pages == nil {
		a.mig.pages = &pagesState{
			servers:  map[string]*runtime.PageServer{},
			serving:  map[string]*lazyServe{},
			fetching: map[string]*lazyFetch{},
		}
	}
	return a.mig.pages
}

// pagesStrategy says whether a strategy moves pages beside CRIU.
func pagesStrategy(s migrate.Strategy) bool { return s == migrate.Stream || s == migrate.PostCopy }

// pagesWorkDir holds what migration id's page processes write: logs, a
// lazy dump's pid, a lazy restore's work directory.
func (a *Agent) pagesWorkDir(id string) string {
	return filepath.Join(a.migrationsDir(), id+".pages")
}

// pagesNetnsPath pins migration id's namespace for CRIU's sockets.
func (a *Agent) pagesNetnsPath(id string) string {
	return filepath.Join(a.cfg.RunDir, "migrations", id+".netns")
}

// pagesNetns returns migration id's namespace for CRIU's sockets,
// creating it, with its loopback up, when it is not there. The caller
// closes the handle.
func (a *Agent) pagesNetns(id string) (netns.NsHandle, error) {
	path := a.pagesNetnsPath(id)
	if _, ok := netnsutil.PinnedInode(path); !ok {
		if err := netnsutil.Remove(path); err != nil { // a pin left empty by a reboot
			return netns.None(), err
		}
		if err := netnsutil.Create(path); err != nil {
			return netns.None(), fmt.Errorf("migration %s: namespace for CRIU's page sockets: %w", id, err)
		}
		if err := loopbackUp(path); err != nil {
			return netns.None(), errors.Join(fmt.Errorf("migration %s: namespace for CRIU's page sockets: %w", id, err), netnsutil.Remove(path))
		}
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return netns.None(), fmt.Errorf("migration %s: open the namespace for CRIU's page sockets: %w", id, err)
	}
	return ns, nil
}

func loopbackUp(path string) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return err
	}
	defer ns.Close()
	h, err := netnsutil.NetlinkHandle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find the loopback interface: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring the loopback interface up: %w", err)
	}
	return nil
}

// inNetnsPath runs fn on a thread in the network namespace pinned at
// path.
func inNetnsPath(path string, fn func() error) error {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open network namespace %s: %w", path, err)
	}
	defer ns.Close()
	return netnsutil.Run(ns, fn)
}

// dropPagesNetns removes migration id's namespace for CRIU's sockets.
func (a *Agent) dropPagesNetns(id string) {
	if err := netnsutil.Remove(a.pagesNetnsPath(id)); err != nil {
		a.log.Warn("remove the namespace of the migration's page sockets", "migration", id, "err", err)
	}
}

// inPagesNetns runs fn on a thread in migration id's namespace for
// CRIU's sockets: what fn starts or dials lives there.
func (a *Agent) inPagesNetns(id string, fn func() error) error {
	ns, err := a.pagesNetns(id)
	if err != nil {
		return err
	}
	defer ns.Close()
	return netnsutil.Run(ns, fn)
}

// dialPages connects to port on the loopback of migration id's
// namespace.
func (a *Agent) dialPages(ctx context.Context, id string, port int) (net.Conn, error) {
	var conn net.Conn
	err := a.inPagesNetns(id, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("migration %s: connect to CRIU's page socket: %w", id, err)
	}
	return conn, nil
}

// listenPages listens on the loopback of migration id's namespace, on a
// port the kernel picks.
func (a *Agent) listenPages(id string) (net.Listener, error) {
	var l net.Listener
	err := a.inPagesNetns(id, func() error {
		var err error
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("migration %s: listen for CRIU's page socket: %w", id, err)
	}
	return l, nil
}

// fenceRules drop every packet into or out of a container's namespace
// but its loopback's.
var fenceRules = [][]string{
	{"INPUT", "!", "-i", "lo", "-m", "comment", "--comment", fenceComment, "-j", "DROP"},
	{"OUTPUT", "!", "-o", "lo", "-m", "comment", "--comment", fenceComment, "-j", "DROP"},
}

// fence cuts the network of the container whose namespace is netnsPath,
// loopback aside; a fence already up stays as it is.
func fence(ctx context.Context, netnsPath string) error {
	for _, rule := range fenceRules {
		if iptables(ctx, netnsPath, append([]string{"-C"}, rule...)...) == nil {
			continue
		}
		if err := iptables(ctx, netnsPath, append([]string{"-I", rule[0], "1"}, rule[1:]...)...); err != nil {
			return fmt.Errorf("fence the container's network: %w", err)
		}
	}
	return nil
}

// unfence removes what fence added; a namespace without a fence is left
// as it is.
func unfence(ctx context.Context, netnsPath string) error {
	for _, rule := range fenceRules {
		for iptables(ctx, netnsPath, append([]string{"-C"}, rule...)...) == nil {
			if err := iptables(ctx, netnsPath, append([]string{"-D"}, rule...)...); err != nil {
				return fmt.Errorf("remove the fence of the container's network: %w", err)
			}
		}
	}
	return nil
}

// iptables runs iptables with args in the network namespace netnsPath.
// The iptables CRIU needs for its own network lock serves here too.
func iptables(ctx context.Context, netnsPath string, args ...string) error {
	return inNetnsPath(netnsPath, func() error {
		out, err := exec.CommandContext(ctx, "iptables", append([]string{"-w"}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	})
}

// dumpPages is MigrateDump for stream and post-copy: it fences and
// pauses the container and dumps it with --leave-running, so that the
// source keeps it, frozen, until the commit. Stream sends the pages
// through dial (the destination's ReceivePages) as CRIU dumps them;
// post-copy leaves CRIU serving them (ServePages). Repeated, it does
// nothing. On any failure the container runs again as it was.
func (a *Agent) dumpPages(ctx context.Context, id string, opts migrate.DumpOptions, dial func(context.Context) (net.Conn, error)) (_ migrate.Phase, err error) {
	rec, unlock, dumped, err := a.lockForDump(ctx, id)
	if err != nil || dumped {
		return rec.Phase, err
	}
	defer unlock()
	if rec.Strategy != opts.Strategy {
		rec.Strategy = opts.Strategy // what Resume and Finish go by
		if err := a.mig.journal.Put(rec); err != nil {
			return rec.Phase, err
		}
	}
	e, err := a.lookup(rec.Container)
	if err != nil {
		return rec.Phase, err
	}
	// Before the container's lock: holding the packets inspects it.
	a.holdPackets(ctx, id, rec.Container)
	defer func() {
		if err != nil {
			a.releasePackets(context.WithoutCancel(ctx), id)
		}
	}()
	e.op.Lock()
	defer e.op.Unlock()
	c := e.c
	if err := a.refresh(ctx, c); err != nil {
		return rec.Phase, err
	}
	if c.State != StateRunning {
		return rec.Phase, errorf(ErrInvalidState, "container %s is %s: only a running container can be migrated", c.Name, c.State)
	}
	img, err := a.images.Get(c.ImageID)
	if err != nil {
		return rec.Phase, fmt.Errorf("container %s: image %s: %w", c.Name, c.Image, err)
	}
	ep, err := a.net.Lookup(c.ID)
	if err != nil {
		return rec.Phase, fmt.Errorf("container %s: network: %w", c.Name, err)
	}
	log := a.log.With("migration", id, "container", c.Name, "strategy", opts.Strategy)

	// Fence first, then freeze: from here the container is as good as
	// stopped for its peers, and the downtime runs.
	frozen := time.Now()
	if err := fence(ctx, ep.NetnsPath); err != nil {
		return rec.Phase, fmt.Errorf("container %s: %w; stream and post-copy need iptables in the agent's PATH (CRIU needs it too)", c.Name, err)
	}
	if err := a.runc.Pause(ctx, c.ID); err != nil {
		return rec.Phase, errors.Join(fmt.Errorf("container %s: freeze: %w", c.Name, err), unfence(context.WithoutCancel(ctx), ep.NetnsPath))
	}
	failpoint.Hit(FailpointSourceAfterFreeze)
	staging := filepath.Join(a.cfg.checkpointsDir(), stagingPrefix+id)
	defer func() {
		if err == nil {
			return
		}
		undo := context.WithoutCancel(ctx)
		a.endServing(undo, id)
		os.RemoveAll(staging)
		a.dropPagesNetns(id)
		if uerr := a.thaw(undo, c, ep.NetnsPath); uerr != nil {
			err = errors.Join(err, uerr)
			return
		}
		if c.State == StateMigrating { // failed after recording the freeze
			if terr := c.transition(StateRunning); terr == nil {
				err = errors.Join(err, a.save(c))
			}
		}
		err = fmt.Errorf("%w; the container runs on the source again", err)
	}()
	p := a.paths(c.ID)
	for _, dir := range []string{staging, p.dumpWork()} {
		if err := os.RemoveAll(dir); err != nil {
			return rec.Phase, err
		}
	}
	if err := os.MkdirAll(staging, 0o700); err != nil {
		return rec.Phase, err
	}
	criuDir := filepath.Join(staging, bundle.CRIUDir)
	start := time.Now()
	fenceAndFreeze := start.Sub(frozen)
	switch opts.Strategy {
	case migrate.Stream:
		err = a.dumpStream(ctx, id, c, criuDir, dial)
	case migrate.PostCopy:
		err = a.dumpLazy(ctx, id, c, criuDir) // migration_postcopy.go
	default:
		err = fmt.Errorf("migration %s: strategy %s does not move pages beside CRIU", id, opts.Strategy)
	}
	if err != nil {
		return rec.Phase, fmt.Errorf("container %s: checkpoint: %w", c.Name, err)
	}
	log.Info("container dumped, kept frozen until the commit",
		"fence_and_freeze", fenceAndFreeze.Round(time.Millisecond), "dump", time.Since(start).Round(time.Millisecond))
	req := CheckpointRequest{LeaveRunning: true, rootfsChanges: a.rootfsChanges(id), pendingDigests: true}
	if _, err := a.seal(ctx, c, img.Layers, id, staging, req); err != nil {
		return rec.Phase, fmt.Errorf("container %s: checkpoint: %w", c.Name, err)
	}
	if err := os.Rename(staging, a.checkpointDir(id)); err != nil {
		return rec.Phase, err
	}
	if err := c.transition(StateMigrating); err != nil {
		return rec.Phase, err
	}
	if err := a.save(c); err != nil {
		return rec.Phase, err
	}
	if err := a.advanceAt(rec, migrate.PhaseDump, frozen); err != nil {
		return rec.Phase, err
	}
	failpoint.Hit(FailpointSourceAfterDump)
	return migrate.PhaseDump, nil
}

// dumpStream dumps container c into criuDir with its memory pages sent,
// through the migration's namespace and dial's data connection, to the
// destination's page server.
func (a *Agent) dumpStream(ctx context.Context, id string, c *Container, criuDir string, dial func(context.Context) (net.Conn, error)) error {
	remote, err := dial(ctx)
	if err != nil {
		return fmt.Errorf("connect to the destination's page server: %w", err)
	}
	l, err := a.listenPages(id)
	if err != nil {
		remote.Close()
		return err
	}
	tun := tunnel.Accept(ctx, l, remote)
	defer tun.Close()
	defer a.dropPagesNetns(id) // CRIU's socket closes with the dump
	err = a.inPagesNetns(id, func() error {
		return a.runc.Checkpoint(ctx, c.ID, runtime.CheckpointOptions{
			ImagePath:      criuDir,
			WorkPath:       a.paths(c.ID).dumpWork(),
			LeaveRunning:   true,
			TCPEstablished: true,
			ExtraArgs:      []string{"--page-server", l.Addr().String()},
		})
	})
	if err != nil {
		return err
	}
	// CRIU closed its end once the page server acknowledged the last
	// page; the destination's end follows.
	settle, cancel := context.WithTimeout(ctx, pagesSettle)
	defer cancel()
	if err := tun.Wait(settle); err != nil {
		return fmt.Errorf("send the memory pages to the destination: %w", err)
	}
	st := tun.Stats()
	a.log.Info("memory pages streamed to the destination", "migration", id, "bytes", st.ToRemote)
	a.observeTransfer(TransferPages, st.ToRemote)
	return nil
}

// thaw runs a container that dumpPages froze again: fence down, then the
// freezer. The caller holds c's lock.
func (a *Agent) thaw(ctx context.Context, c *Container, netnsPath string) error {
	if err := unfence(ctx, netnsPath); err != nil {
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	if err := a.runc.Unpause(ctx, c.ID); err != nil {
		st, serr := a.runc.State(ctx, c.ID)
		if serr != nil || st.Status != runtime.StatusRunning {
			return fmt.Errorf("container %s: thaw: %w", c.Name, err)
		}
	}
	return nil
}

// paused reports whether runc has container c paused.
func (a *Agent) paused(ctx context.Context, c *Container) bool {
	st, err := a.runc.State(ctx, c.ID)
	return err == nil && st.Status == runtime.StatusPaused
}

// resumeFrozen runs the source's frozen copy of migration id again
// after an abort (MigrateResume): it ends a lazy dump's service first,
// since CRIU holds the container's processes while it serves. The copy
// is frozen when its record says migrating, and also when runc reports
// it paused (the agent stopped between the freeze and recording it; the
// agent pauses containers for nothing else). A container that is
// neither is left alone, for the stop-copy path. The caller holds the
// migration's lock.
func (a *Agent) resumeFrozen(ctx context.Context, rec *migrate.Record) error {
	if !pagesStrategy(rec.Strategy) || rec.Container == "" {
		return nil
	}
	e, err := a.lookup(rec.Container)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := a.endServing(ctx, rec.ID); err != nil {
		return err
	}
	e.op.Lock()
	defer e.op.Unlock()
	c := e.c
	if c.State != StateMigrating && !a.paused(ctx, c) {
		return nil
	}
	ep, err := a.net.Lookup(c.ID)
	if err != nil {
		return fmt.Errorf("container %s: network: %w", c.Name, err)
	}
	if err := a.thaw(ctx, c, ep.NetnsPath); err != nil {
		return err
	}
	if c.State == StateMigrating {
		if err := c.transition(StateRunning); err != nil {
			return err
		}
		if err := a.save(c); err != nil {
			return err
		}
	}
	a.dropPagesNetns(rec.ID)
	a.log.Info("migration aborted: the frozen container runs again from where it was", "migration", rec.ID, "container", c.Name)
	return nil
}

// receivePages is MigrateReceivePages: a CRIU page server, started with
// go-criu in the migration's namespace, writes the stream dump's pages
// into a staging directory, fed by accept's data connection; once it has
// them all, the directory is the migration's pages, which the restore
// adds to the checkpoint (completeStream). Repeated once it has them, it
// does nothing.
func (a *Agent) receivePages(ctx context.Context, id string, accept func(context.Context) (net.Conn, error)) (_ migrate.Phase, err error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseAborted {
		return rec.Phase, fenced(id, migrate.ErrAborted)
	}
	done := a.streamPagesDir(id)
	if _, err := os.Stat(done); err == nil {
		return rec.Phase, nil // received already
	}
	if rec.Strategy != migrate.Stream {
		rec.Strategy = migrate.Stream
		if err := a.mig.journal.Put(rec); err != nil {
			return rec.Phase, err
		}
	}
	partial := done + ".partial"
	if err := os.RemoveAll(partial); err != nil {
		return rec.Phase, err
	}
	if err := os.MkdirAll(partial, 0o700); err != nil {
		return rec.Phase, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(partial)
		}
	}()
	// The connection first: the source's dump waits for it, and its CRIU
	// gets going while the page server starts; what it sends meanwhile
	// waits in the connection.
	remote, err := accept(ctx)
	if err != nil {
		return rec.Phase, err
	}
	var ps *runtime.PageServer
	err = a.inPagesNetns(id, func() error {
		var err error
		ps, err = runtime.StartPageServer("", partial, a.pagesWorkDir(id))
		return err
	})
	if err != nil {
		remote.Close()
		return rec.Phase, fmt.Errorf("migration %s: %w", id, err)
	}
	if err := a.recordPid(id, pageServerPidFile, ps.Pid); err != nil {
		remote.Close()
		ps.Kill()
		return rec.Phase, err
	}
	st := a.pages()
	st.mu.Lock()
	st.servers[id] = ps
	st.mu.Unlock()
	defer func() {
		st.mu.Lock()
		delete(st.servers, id)
		st.mu.Unlock()
		if err != nil {
			ps.Kill()
		}
		a.dropPagesNetns(id)
	}()
	local, err := a.dialPages(ctx, id, ps.Port)
	if err != nil {
		remote.Close()
		return rec.Phase, err
	}
	timed := timePages(remote)
	tun := tunnel.Splice(ctx, local, timed)
	if err := tun.Wait(ctx); err != nil {
		tun.Close()
		return rec.Phase, fmt.Errorf("migration %s: receive the memory pages: %w", id, err)
	}
	received := time.Now()
	wait, cancel := context.WithTimeout(ctx, pageServerWait)
	defer cancel()
	if err := ps.Wait(wait); err != nil {
		return rec.Phase, fmt.Errorf("migration %s: %w", id, err)
	}
	if err := checkPageFiles(partial); err != nil {
		return rec.Phase, errorf(ErrInvalid, "migration %s: the page server's files: %w", id, err)
	}
	if err := os.Rename(partial, done); err != nil {
		return rec.Phase, err
	}
	os.RemoveAll(a.pagesWorkDir(id)) // the page server's pid and log
	a.log.Info("memory pages received from the source", "migration", id, "bytes", tun.Stats().ToLocal,
		pagesTimeKey, timed.since(received))
	return rec.Phase, nil
}

// streamPagesDir is where a stream migration's destination keeps the
// pages it received until the restore adds them to the checkpoint. It is
// a staging directory: a restarted agent removes it, and the migration,
// short of its pages, aborts.
func (a *Agent) streamPagesDir(id string) string {
	return filepath.Join(a.cfg.checkpointsDir(), stagingPrefix+id+".pages")
}

// checkPageFiles refuses a page server's directory that holds anything
// but regular page files, or no pagemap.
func checkPageFiles(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	pagemaps := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || !pageFile.MatchString(e.Name()) {
			return fmt.Errorf("%s is not a page image", e.Name())
		}
		if strings.HasPrefix(e.Name(), "pagemap-") {
			pagemaps++
		}
	}
	if pagemaps == 0 {
		return errors.New("no pagemap: the dump sent no pages")
	}
	return nil
}

// completeStream adds the pages that migration id's stream dump sent to
// the checkpoint the source sent without them: they join its CRIU images,
// and the transfer's receipt admits them (bundle.Receipt.Admit) without
// a digest. The data channel's TLS authenticated them on the way, and a
// digest taken here would only check the page server's files against
// themselves, in a pass over every page inside the freeze. Only this
// agent, holding the receipt, restores from them: one restarted since
// the checkpoint arrived refuses, and the migration aborts. Once they
// are in, it does nothing.
func (a *Agent) completeStream(id string) error {
	_, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return err
	}
	defer unlock()
	dir := a.checkpointDir(id)
	criuDir := filepath.Join(dir, bundle.CRIUDir)
	pages := a.streamPagesDir(id)
	entries, err := os.ReadDir(pages)
	if errors.Is(err, os.ErrNotExist) {
		if pagemaps, _ := filepath.Glob(filepath.Join(criuDir, "pagemap-*.img")); len(pagemaps) > 0 {
			return nil // completed already
		}
		return errorf(ErrInvalidState, "migration %s: node %s has not received the stream dump's memory pages (a restarted agent drops them): abort the migration", id, a.cfg.Name)
	}
	if err != nil {
		return err
	}
	a.mig.mu.Lock()
	receipt := a.mig.receipts[id]
	a.mig.mu.Unlock()
	if receipt == nil {
		return errorf(ErrInvalidState, "migration %s: node %s holds no receipt of the checkpoint the source sent (its agent restarted since), so nothing vouches for the streamed pages: abort the migration", id, a.cfg.Name)
	}
	admitted := make([]string, 0, len(entries))
	for _, e := range entries {
		target := filepath.Join(criuDir, e.Name())
		if _, err := os.Lstat(target); err == nil {
			return errorf(ErrInvalid, "migration %s: the checkpoint has %s already, and so do the pages the dump streamed", id, e.Name())
		}
		if err := os.Rename(filepath.Join(pages, e.Name()), target); err != nil {
			return err
		}
		admitted = append(admitted, bundle.CRIUDir+"/"+e.Name())
	}
	if err := receipt.Admit(dir, admitted...); err != nil {
		a.dropReceipt(id) // migration_transfer.go
		return fmt.Errorf("migration %s: add the streamed pages to the checkpoint: %w", id, err)
	}
	a.log.Info("memory pages added to the checkpoint", "migration", id, "files", len(admitted))
	return os.Remove(pages)
}

// dropPages ends and removes what migration id holds of pages beside
// CRIU on the destination, for an abort: a page server still waiting,
// the pages received, a lazy restore's daemon and connection.
func (a *Agent) dropPages(id string) {
	st := a.pages()
	st.mu.Lock()
	ps := st.servers[id]
	f := st.fetching[id]
	delete(st.fetching, id)
	st.mu.Unlock()
	if ps != nil {
		ps.Kill()
	}
	if f != nil {
		f.stop()
	}
	// An agent restarted since knows them only by their pid files.
	a.killRecorded(id, pageServerPidFile, "criu")
	a.killRecorded(id, lazyPagesPidFile, "lazy-pages")
	for _, dir := range []string{a.streamPagesDir(id), a.streamPagesDir(id) + ".partial", a.pagesWorkDir(id)} {
		if err := os.RemoveAll(dir); err != nil {
			a.log.Warn("remove the migration's pages", "migration", id, "path", dir, "err", err)
		}
	}
	a.dropPagesNetns(id)
}

// Server side: the data connections of the pages.

// dumpWithPages is MigrateDump for stream and post-copy.
func (s *server) dumpWithPages(ctx context.Context, id string, opts migrate.DumpOptions) (migrate.Phase, error) {
	return s.a.dumpPages(ctx, id, opts, func(ctx context.Context) (net.Conn, error) {
		if opts.Pages.Address == "" || opts.Pages.Token == "" {
			return nil, errorf(ErrInvalid, "migration %s: a stream dump needs the destination's page connection (address and token)", id)
		}
		return s.dialData(ctx, opts.Pages.Address, opts.Pages.Token)
	})
}

// restoreWithPages is MigrateRestore for stream (the pages join the
// checkpoint first) and post-copy (the pages come from the source).
func (s *server) restoreWithPages(ctx context.Context, id string, opts migrate.RestoreOptions) (migrate.Phase, error) {
	if opts.Strategy == migrate.PostCopy {
		return s.a.restoreLazy(ctx, id, opts, func(ctx context.Context) (net.Conn, error) { // migration_postcopy.go
			if opts.Pages.Address == "" || opts.Pages.Token == "" {
				return nil, errorf(ErrInvalid, "migration %s: a post-copy restore needs the source's page connection (address and token)", id)
			}
			return s.dialData(ctx, opts.Pages.Address, opts.Pages.Token)
		})
	}
	if err := s.a.completeStream(id); err != nil {
		return "", err
	}
	return s.a.MigrateRestore(ctx, id, opts)
}

func (s *server) MigrateReceivePages(ctx context.Context, req *pb.MigratePagesRequest) (*pb.MigrateReply, error) {
	return reply(s.a.receivePages(ctx, req.GetId(), func(ctx context.Context) (net.Conn, error) {
		return s.acceptData(ctx, req.GetDataToken())
	}))
}

// pagesTimeKey names, in the log line that ends a transfer of pages, how
// long they took from their first byte to their last (bench/migrate
// reads it: the pages' throughput is their bytes over that time).
const pagesTimeKey = "pages_time"

// pagesConn is a page connection that notes when its first bytes
// arrived: a page transfer is timed from there, not from the dial, which
// precedes CRIU's own start-up.
type pagesConn struct {
	net.Conn
	first atomic.Int64 // unix nanoseconds; 0 until bytes arrived
}

func timePages(c net.Conn) *pagesConn { return &pagesConn{Conn: c} }

func (c *pagesConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.first.Load() == 0 {
		c.first.CompareAndSwap(0, time.Now().UnixNano())
	}
	return n, err
}

// CloseWrite ends the write half as the connection underneath does, so
// that the tunnel's half-close still reaches the peer.
func (c *pagesConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

// since is how long the pages took from their first byte to end; zero
// when none arrived.
func (c *pagesConn) since(end time.Time) time.Duration {
	first := c.first.Load()
	if first == 0 {
		return 0
	}
	return end.Sub(time.Unix(0, first)).Round(time.Millisecond)
}
