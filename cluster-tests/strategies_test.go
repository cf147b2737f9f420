package clustertests

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// roundTrips is how many times each strategy moves the workload from a to
// b and back.
const roundTrips = 3

// pageImage matches the CRIU images that hold a container's memory.
var pageImage = regexp.MustCompile(`^(pages|pagemap)-[0-9]+\.img$`)

// TestStrategiesThereAndBack moves the workload from host a to host b and
// back three times with each strategy this machine supports, while a
// client on host c keeps one TCP connection open: after each move the
// counter went on, the memory is the same bytes, the connection still
// answers (it was never re-opened) and exactly one copy runs, as runc on
// the hosts sees it. A stream move writes no memory page on the source's
// disk (its data dir is watched the whole move); stop-copy does, which
// shows the watch sees them.
func TestStrategiesThereAndBack(t *testing.T) {
	tests := []struct {
		strategy migrate.Strategy
		cluster  string
		n        int
		// pagesOnSource: whether the source's disk holds memory pages
		// during a move (nil: not checked; post-copy writes the few pages
		// it cannot serve lazily).
		pagesOnSource *bool
	}{
		{strategy: migrate.StopCopy, cluster: "sgs", n: 27, pagesOnSource: ptr(true)},
		{strategy: migrate.Stream, cluster: "sgt", n: 21, pagesOnSource: ptr(false)},
		{strategy: migrate.PostCopy, cluster: "sgp", n: 22},
	}
	for _, tt := range tests {
		t.Run(string(tt.strategy), func(t *testing.T) {
			m := startPagesCluster(t, tt.cluster, tt.n, devcluster.AgentOptions{}, devcluster.AgentOptions{})
			hosts := []*devcluster.Host{m.a, m.b}
			assertOneCopy(t, "w", m.a, hosts)
			for i := range 2 * roundTrips {
				from, to := m.a, m.b
				if i%2 == 1 {
					from, to = m.b, m.a
				}
				before := m.client.Count()
				watch := watchPages(t, from.DataDir())
				opts := migrate.DriveOptions{OnEvent: func(ev migrate.Event) {
					// The source's checkpoint is complete while the
					// destination restores: look at it then as well.
					if ev.Phase == migrate.PhaseRestore && ev.BytesDone == 0 {
						watch.scan()
					}
				}}
				res, err := migrate.Drive(context.Background(), migrate.Migration{
					ID: fmt.Sprintf("m-%s-%d", tt.strategy, i), Container: "w", Strategy: tt.strategy,
				}, migrationAgent(from), migrationAgent(to), opts)
				pages := watch.stop()
				if err != nil {
					t.Fatalf("move %d %s -> %s: %v", i, from.Name(), to.Name(), err)
				}
				if res.Strategy != tt.strategy || res.Record.Phase != migrate.PhaseDone {
					t.Errorf("move %d: strategy %s, record in %s; want %s, done", i, res.Strategy, res.Record.Phase, tt.strategy)
				}
				assertOneCopy(t, "w", to, hosts)
				m.assertWentOn(t, before)
				m.route(t, to)
				if got := m.client.Ask("still-here"); got != "still-here" {
					t.Errorf("echo after move %d = %q", i, got)
				}
				if want := tt.pagesOnSource; want != nil && (len(pages) > 0) != *want {
					t.Errorf("move %d: memory pages on the source's disk: %v; want some: %v", i, pages, *want)
				}
				t.Logf("move %d %s -> %s: downtime %s, total %s, checkpoint bytes sent %d, phases %v",
					i, from.Name(), to.Name(), res.Downtime.Round(time.Millisecond), res.Total.Round(time.Millisecond), res.BytesSent, res.Phases)
			}
		})
	}
}

// TestPostCopyDestinationLostBeforeTheCommit kills the destination agent
// while it restores a post-copy move, its lazy-pages daemon already
// fetching from the source: nobody acknowledges the abort, so the source
// keeps its copy frozen; once the destination is back and acknowledges,
// the source runs on from where it was (counter, memory, the client's
// connection), since it never let its container go.
func TestPostCopyDestinationLostBeforeTheCommit(t *testing.T) {
	m := startPagesCluster(t, "sga", 23, devcluster.AgentOptions{}, devcluster.AgentOptions{
		Env: []string{failpoint.Arm(agent.FailpointDestinationLazyRestore, failpoint.ActionKill)},
	})
	hosts := []*devcluster.Host{m.a, m.b}
	before := m.client.Count()
	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-postcopy-lost", Container: "w", Strategy: migrate.PostCopy},
		migrationAgent(m.a), migrationAgent(m.b), quickAbort)
	if !errors.Is(err, migrate.ErrHeld) {
		t.Fatalf("post-copy move whose destination died in the restore: err = %v, want it held", err)
	}
	if res.Record.Phase != migrate.PhaseRestore {
		t.Errorf("the fault came in %s, want %s", res.Record.Phase, migrate.PhaseRestore)
	}
	assertNoCopy(t, "w", hosts)

	restartAgent(t, m.b)
	if _, err := migrate.AbortMigration(context.Background(), res.Record, migrationAgent(m.a), migrationAgent(m.b), quickAbort); err != nil {
		t.Fatalf("abort of the held move: %v", err)
	}
	assertOneCopy(t, "w", m.a, hosts)
	m.assertWentOn(t, before)
	if got := m.client.Ask("still-here"); got != "still-here" {
		t.Errorf("echo after the abort = %q", got)
	}
	// The lazy-pages daemon the dead agent left is gone with the abort.
	if left := processesWith(t, m.b.DataDir(), "lazy-pages"); len(left) > 0 {
		t.Errorf("CRIU processes of the aborted move still run on host b: %v", left)
	}
}

// processesWith lists the processes whose command line holds every one
// of words.
func processesWith(t *testing.T, words ...string) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		cmd := strings.ReplaceAll(strings.TrimRight(string(raw), "\x00"), "\x00", " ")
		all := true
		for _, w := range words {
			all = all && strings.Contains(cmd, w)
		}
		if all {
			out = append(out, e.Name()+": "+cmd)
		}
	}
	return out
}

// TestPagesAbortBeforeTheCommitResumesTheSource makes the destination's
// restore fail (a failpoint) after a stream or post-copy dump: the source,
// which kept its container frozen rather than on disk, runs it on from
// where it was once the destination acknowledged the abort, the client's
// connection intact.
func TestPagesAbortBeforeTheCommitResumesTheSource(t *testing.T) {
	for _, tt := range []struct {
		strategy migrate.Strategy
		cluster  string
		n        int
	}{
		{migrate.Stream, "sgb", 24},
		{migrate.PostCopy, "sgc", 25},
	} {
		t.Run(string(tt.strategy), func(t *testing.T) {
			m := startPagesCluster(t, tt.cluster, tt.n, devcluster.AgentOptions{}, devcluster.AgentOptions{
				Env: []string{failpoint.Arm(agent.FailpointDestinationRestore, failpoint.ActionFail)},
			})
			hosts := []*devcluster.Host{m.a, m.b}
			before := m.client.Count()
			res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-refused-restore", Container: "w", Strategy: tt.strategy},
				migrationAgent(m.a), migrationAgent(m.b), quickAbort)
			if err == nil || errors.Is(err, migrate.ErrHeld) {
				t.Fatalf("move whose restore fails: err = %v, want a clean abort", err)
			}
			if res.Record.Phase != migrate.PhaseAborted || res.Record.Started[migrate.PhaseRestore].IsZero() {
				t.Errorf("record in %s (restore reached: %v), want aborted after the restore began", res.Record.Phase, !res.Record.Started[migrate.PhaseRestore].IsZero())
			}
			assertOneCopy(t, "w", m.a, hosts)
			m.assertWentOn(t, before)
			if got := m.client.Ask("still-here"); got != "still-here" {
				t.Errorf("echo after the abort = %q", got)
			}
			for _, h := range hosts {
				if left := processesWith(t, h.DataDir(), "criu"); len(left) > 0 {
					t.Errorf("CRIU processes of the aborted move still run on host %s: %v", h.Name(), left)
				}
			}
		})
	}
}

// TestPostCopyDriverGoneAfterTheCommit stops the driver right after a
// post-copy commit, before the source's finish: the pages keep flowing
// (both agents own their ends, not the driver's calls), so the container
// runs on the destination with all its memory, and a later --resume
// (Resume) finishes the move, removing the source's frozen copy.
func TestPostCopyDriverGoneAfterTheCommit(t *testing.T) {
	m := startPagesCluster(t, "sgd", 26, devcluster.AgentOptions{}, devcluster.AgentOptions{})
	hosts := []*devcluster.Host{m.a, m.b}
	before := m.client.Count()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	res, err := migrate.Drive(ctx, migrate.Migration{ID: "m-driver-gone", Container: "w", Strategy: migrate.PostCopy},
		migrationAgent(m.a), migrationAgent(m.b), migrate.DriveOptions{OnEvent: func(ev migrate.Event) {
			if ev.Phase == migrate.PhaseCommitted {
				cancel() // the driver is gone from here on
			}
		}})
	if err != nil {
		t.Fatalf("Drive: %v (a finish that fails after the commit is a warning)", err)
	}
	if res.Record.Phase != migrate.PhaseCommitted || len(res.Warnings) == 0 {
		t.Fatalf("record in %s, warnings %q: want committed, with the unfinished source named", res.Record.Phase, res.Warnings)
	}
	m.route(t, m.b)
	assertOneCopy(t, "w", m.b, hosts)
	m.assertWentOn(t, before) // reads the whole memory: every page arrived

	res, err = migrate.Resume(context.Background(), res.Record, migrationAgent(m.a), migrationAgent(m.b), migrate.DriveOptions{})
	if err != nil || res.Record.Phase != migrate.PhaseDone {
		t.Fatalf("Resume: %v, record in %s; want done", err, res.Record.Phase)
	}
	if left := processesWith(t, m.a.DataDir(), "checkpoint"); len(left) > 0 {
		t.Errorf("the source's lazy dump still runs after the finish: %v", left)
	}
	if _, err := m.a.Agent().Client().InspectContainer(context.Background(), &pb.ContainerRef{Ref: "w"}); err == nil {
		t.Error("the source still has the container after the finish")
	}
	assertOneCopy(t, "w", m.b, hosts)
}

func ptr[T any](v T) *T { return &v }

// startPagesCluster is startMoveCluster for the strategies' tests, which
// also fail on, and kill, any CRIU page process of theirs left at the
// end: those run in namespaces of their own, where the cluster's teardown
// does not look.
func startPagesCluster(t *testing.T, name string, n int, aOpts, bOpts devcluster.AgentOptions) *moveCluster {
	t.Helper()
	m := startMoveCluster(t, name, n, aOpts, bOpts)
	t.Cleanup(func() {
		for _, h := range []*devcluster.Host{m.a, m.b} {
			// The destination's daemon (criu lazy-pages) and the
			// source's lazy dump (runc checkpoint --lazy-pages).
			for _, p := range processesWith(t, h.DataDir(), "lazy-pages") {
				t.Errorf("left running on host %s: %s", h.Name(), p)
				if pid, err := strconv.Atoi(strings.SplitN(p, ":", 2)[0]); err == nil {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
	})
	return m
}

// pagesWatch looks for CRIU's memory images under a data dir, every few
// milliseconds and when asked (scan), and remembers every one it saw.
type pagesWatch struct {
	t    *testing.T
	dir  string
	done chan struct{}
	wg   sync.WaitGroup

	mu   sync.Mutex
	seen map[string]bool
}

// pagesPoll is how often a pagesWatch looks.
const pagesPoll = 5 * time.Millisecond

func watchPages(t *testing.T, dir string) *pagesWatch {
	w := &pagesWatch{t: t, dir: dir, done: make(chan struct{}), seen: map[string]bool{}}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		tick := time.NewTicker(pagesPoll)
		defer tick.Stop()
		for {
			w.scan()
			select {
			case <-w.done:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// scan walks the data dir for memory images.
func (w *pagesWatch) scan() {
	_ = filepath.WalkDir(w.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone while walking: files come and go
		}
		if d.IsDir() && path != w.dir && d.Name() == "rootfs" {
			return filepath.SkipDir // the containers' own files
		}
		if !d.IsDir() && pageImage.MatchString(d.Name()) {
			rel, _ := filepath.Rel(w.dir, path)
			w.mu.Lock()
			w.seen[rel] = true
			w.mu.Unlock()
		}
		return nil
	})
}

// stop ends the watch and returns the memory images it saw.
func (w *pagesWatch) stop() []string {
	close(w.done)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for p := range w.seen {
		out = append(out, p)
	}
	return out
}
