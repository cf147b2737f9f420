package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Step durations on the fake clock: the fakes advance it, so the
// statistics are exact and no test reads the wall clock.
const (
	prepareTook = 1 * time.Second
	dumpTook    = 2 * time.Second
	chunkTook   = 1 * time.Second // per progress report
	restoreTook = 3 * time.Second
	commitTook  = 1 * time.Second
	finishTook  = 5 * time.Second

	chunk  = 1 << 20
	chunks = 4
	// peerWait bounds how long a fake transfer side waits for the other,
	// so that a driver that never cancels fails the test instead of
	// hanging it.
	peerWait = 10 * time.Second
)

var errBoom = errors.New("boom")

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fault makes a fake method fail.
type fault struct {
	err error
	// times is how many calls fail; zero means every call.
	times int
	// applied makes the step take effect before the error comes back: a
	// lost reply.
	applied bool
}

// pipe is where a Send and a Receive with the same token meet.
type pipe struct {
	connected, delivered chan struct{}
	once                 sync.Once
}

// world is both agents as the driver sees them, with what each host
// holds, so that a test asserts the outcome: which copy runs. Every
// method is idempotent by effect, like the real agents': a repeated call
// changes nothing more.
type world struct {
	t      *testing.T
	clock  *fakeClock
	faults map[string]fault
	// onCall runs when a method is called, before anything else.
	onCall map[string]func()

	mu     sync.Mutex
	calls  []string
	count  map[string]int
	pipes  map[string]*pipe
	tokens map[string]string // "send", "receive": the last token each side got
	ended  map[string]error  // "src.Send", "dst.Receive": what each returned last

	// What the hosts hold.
	srcRunning, srcDumped, srcFinished    bool
	dstPrepared, dstReceived, dstRestored bool
	dstRunning, dstCommitted, dstAborted  bool
	// commitFenced: the caller ruled the commit out without the
	// destination (DriveOptions.FenceDestination), so the source may run
	// again before the destination acknowledged an abort.
	commitFenced                               bool
	resumedSource                              bool
	dumps, receives, restores, commits, aborts int // effective state changes

	// strategy is the one Prepare expects (default StopCopy).
	strategy Strategy
	// checksums are the transfer checksums the destination takes;
	// sentChecksum the one the source's Send was given.
	checksums    []string
	sentChecksum string
	// Pre-copy (driver_precopy_test.go): what the source holds and
	// the destination received, and what Dump and Restore were told.
	preCopy preCopyWorld
	// The root filesystem (driver_rootfs_test.go): the image layers and
	// the writable layer's sync.
	rootfs rootfsWorld
	// Memory pages on their own connection, stream and post-copy
	// (driver_pages_test.go).
	pages pagesWorld
}

func newWorld(t *testing.T) *world {
	return &world{
		t:          t,
		clock:      &fakeClock{now: t0},
		faults:     map[string]fault{},
		onCall:     map[string]func(){},
		count:      map[string]int{},
		pipes:      map[string]*pipe{},
		tokens:     map[string]string{},
		ended:      map[string]error{},
		srcRunning: true,
		strategy:   StopCopy,
	}
}

// call records a call to name and says whether its step takes effect and
// what it returns.
func (w *world) call(ctx context.Context, name string) (apply bool, err error) {
	w.mu.Lock()
	w.calls = append(w.calls, name)
	w.count[name]++
	n := w.count[name]
	f, faulty := w.faults[name]
	hook := w.onCall[name]
	w.mu.Unlock()
	if hook != nil {
		hook()
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	if !faulty || (f.times > 0 && n > f.times) {
		return true, nil
	}
	return f.applied, f.err
}

// check asserts the rules that hold whatever fails: never two running
// copies, never both a resumed source and a committed destination.
func (w *world) check() {
	w.t.Helper()
	if w.srcRunning && w.dstRunning {
		w.t.Errorf("two running copies: the source and the destination")
	}
	if w.resumedSource && w.dstCommitted {
		w.t.Errorf("the source resumed its copy and the destination committed its own")
	}
}

// end records what a transfer side returned.
func (w *world) end(name string, err *error) {
	w.mu.Lock()
	w.ended[name] = *err
	w.mu.Unlock()
}

func (w *world) pipe(token string) *pipe {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.pipes[token]
	if p == nil {
		p = &pipe{connected: make(chan struct{}), delivered: make(chan struct{})}
		w.pipes[token] = p
	}
	return p
}

func (w *world) running() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.srcRunning && w.dstRunning:
		return "both"
	case w.srcRunning:
		return "source"
	case w.dstRunning:
		return "destination"
	}
	return "none"
}

func (w *world) callList() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return canonical(slices.Clone(w.calls))
}

// canonical orders the transfer's two concurrent calls, which may start
// in either order.
func canonical(calls []string) []string {
	for i := 0; i+1 < len(calls); i++ {
		if calls[i] == "src.Send" && calls[i+1] == "dst.Receive" {
			calls[i], calls[i+1] = calls[i+1], calls[i]
		}
	}
	return calls
}

type fakeSource struct{ w *world }

var _ Source = fakeSource{}

func (s fakeSource) Describe(ctx context.Context, id, container string, _ Strategy) (Container, error) {
	if _, err := s.w.call(ctx, "src.Describe"); err != nil {
		return Container{}, err
	}
	return Container{Name: container, ID: "cid-" + container, IP: "10.0.0.7"}, nil
}

func (s fakeSource) Dump(ctx context.Context, id string, opts DumpOptions) (err error) {
	w := s.w
	// What Dump returned, also when it was cancelled before it began (a
	// stream destination whose page server failed first).
	defer w.end("src.Dump", &err)
	apply, err := w.call(ctx, "src.Dump")
	if apply && opts.Strategy == Stream {
		if serr := w.streamPages(ctx, opts); serr != nil { // driver_pages_test.go
			return serr
		}
	}
	if apply {
		w.mu.Lock()
		w.preCopy.dumpedOn = opts.PreDumps
		if !w.srcDumped {
			w.srcRunning, w.srcDumped = false, true
			w.dumps++
			w.clock.advance(dumpTook)
		}
		w.mu.Unlock()
	}
	return err
}

func (s fakeSource) Send(ctx context.Context, id, address, token, checksum string, progress func(done, total int64)) (err error) {
	w := s.w
	defer w.end("src.Send", &err)
	w.mu.Lock()
	w.tokens["send"] = token
	w.sentChecksum = checksum
	w.mu.Unlock()
	if address != fakeAddress {
		w.t.Errorf("Send to %q, want the destination's address %q", address, fakeAddress)
	}
	if _, err := w.call(ctx, "src.Send"); err != nil {
		return err
	}
	w.mu.Lock()
	dumped := w.srcDumped
	w.mu.Unlock()
	if !dumped {
		return errors.New("nothing dumped to send")
	}
	p := w.pipe(token)
	select {
	case <-p.connected:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(peerWait):
		return errors.New("the receiver never came (was Send cancelled when Receive failed?)")
	}
	for i := int64(1); i <= chunks; i++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		w.clock.advance(chunkTook)
		progress(i*chunk, chunks*chunk)
	}
	close(p.delivered)
	return nil
}

func (s fakeSource) Finish(ctx context.Context, id, destination string) error {
	w := s.w
	apply, err := w.call(ctx, "src.Finish")
	if apply {
		w.mu.Lock()
		if !w.dstCommitted {
			w.t.Errorf("the source finished (dropped its copy) before the destination committed")
		}
		if !w.srcFinished {
			w.srcFinished = true
			w.clock.advance(finishTook)
		}
		w.mu.Unlock()
	}
	return err
}

func (s fakeSource) Resume(ctx context.Context, id string) error {
	w := s.w
	apply, err := w.call(ctx, "src.Resume")
	if apply {
		w.mu.Lock()
		if w.dstPrepared && !w.dstAborted && !w.commitFenced {
			w.t.Errorf("the source resumed before the destination acknowledged an abort or the commit was ruled out")
		}
		w.srcRunning, w.resumedSource = true, true
		w.rootfs.srcSynced = false // it forgets a sync of its writable layer
		w.check()
		w.mu.Unlock()
	}
	return err
}

const fakeAddress = "10.1.0.2:7420"

type fakeDest struct{ w *world }

var _ Destination = fakeDest{}

func (d fakeDest) Address() string { return fakeAddress }

func (d fakeDest) Prepare(ctx context.Context, id string, c Container, s Strategy) (Prepared, error) {
	w := d.w
	apply, err := w.call(ctx, "dst.Prepare")
	if err != nil && !apply {
		return Prepared{}, err
	}
	if apply {
		if c.Name != "web" || s != w.strategy {
			w.t.Errorf("Prepare(%+v, %s), want container web, strategy %s", c, s, w.strategy)
		}
		w.mu.Lock()
		if !w.dstPrepared {
			w.dstPrepared = true
			w.clock.advance(prepareTook)
		}
		w.mu.Unlock()
	}
	return w.rootfsPrepared(), err // driver_rootfs_test.go
}

func (d fakeDest) Receive(ctx context.Context, id, token string) (err error) {
	w := d.w
	defer w.end("dst.Receive", &err)
	w.mu.Lock()
	w.tokens["receive"] = token
	w.mu.Unlock()
	if _, err := w.call(ctx, "dst.Receive"); err != nil {
		return err
	}
	p := w.pipe(token)
	p.once.Do(func() { close(p.connected) })
	select {
	case <-p.delivered:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(peerWait):
		return errors.New("the sender never delivered (was Receive cancelled when Send failed?)")
	}
	w.mu.Lock()
	if !w.dstReceived {
		w.dstReceived = true
		w.receives++
	}
	w.mu.Unlock()
	return nil
}

func (d fakeDest) Restore(ctx context.Context, id string, opts RestoreOptions) (err error) {
	w := d.w
	// What Restore returned, also when it was cancelled before it began
	// (a post-copy source that failed first).
	defer w.end("dst.Restore", &err)
	apply, err := w.call(ctx, "dst.Restore")
	if apply {
		if perr := w.restorePages(ctx, opts); perr != nil { // driver_pages_test.go
			return perr
		}
	}
	if apply {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.preCopy.restoredOn = opts.PreDumps
		if !w.dstReceived {
			return errors.New("nothing received to restore")
		}
		if !w.dstRestored {
			w.dstRestored = true // held stopped: not running
			w.restores++
			w.clock.advance(restoreTook)
		}
	}
	return err
}

func (d fakeDest) Commit(ctx context.Context, id string) error {
	w := d.w
	apply, err := w.call(ctx, "dst.Commit")
	if apply {
		w.mu.Lock()
		defer w.mu.Unlock()
		switch {
		case w.dstAborted:
			return fmt.Errorf("commit: %w", ErrAborted)
		case !w.dstRestored:
			return fmt.Errorf("commit: %w", ErrNotReady)
		case !w.dstCommitted:
			w.dstCommitted, w.dstRunning = true, true
			w.commits++
			w.clock.advance(commitTook)
			w.check()
		}
	}
	return err
}

func (d fakeDest) Abort(ctx context.Context, id, why string) error {
	w := d.w
	apply, err := w.call(ctx, "dst.Abort")
	if apply {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.dstCommitted {
			return fmt.Errorf("abort: %w", ErrCommitted)
		}
		if !w.dstAborted {
			w.dstAborted = true
			w.dstReceived, w.dstRestored = false, false
			w.pages.dstHasPages = false
			w.aborts++
		}
	}
	return err
}

// options are the driver's options for w: its clock, fast retries, and
// the records and events collected.
type collected struct {
	mu     sync.Mutex
	events []Event
	phases []Phase // the record's phase at each OnRecord
}

func (c *collected) phaseList() []Phase {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.phases)
}

func options(w *world, c *collected) DriveOptions {
	return DriveOptions{
		Now: w.clock.Now,
		OnEvent: func(ev Event) {
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
		},
		OnRecord: func(r *Record) error {
			c.mu.Lock()
			c.phases = append(c.phases, r.Phase)
			c.mu.Unlock()
			return nil
		},
		AbortAttempts: 3,
		AbortBackoff:  time.Microsecond,
	}
}

var webMigration = Migration{ID: "m1", Container: "web", Strategy: StopCopy}

// TestDriveSendsWithTheDestinationsChecksum: the source sends with
// CRC-32C only to a destination that said it takes it, else with sha256,
// which every agent takes.
func TestDriveSendsWithTheDestinationsChecksum(t *testing.T) {
	for _, tt := range []struct {
		takes []string
		want  string
	}{
		{nil, ""},
		{[]string{"sha256"}, ""},
		{[]string{"sha256", ChecksumCRC32C}, ChecksumCRC32C},
	} {
		t.Run(strings.Join(tt.takes, ","), func(t *testing.T) {
			w := newWorld(t)
			w.checksums = tt.takes
			if _, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, options(w, &collected{})); err != nil {
				t.Fatalf("Drive: %v", err)
			}
			if w.sentChecksum != tt.want {
				t.Errorf("the source sent with checksum %q, want %q", w.sentChecksum, tt.want)
			}
		})
	}
}

func TestDriveMovesTheContainer(t *testing.T) {
	w := newWorld(t)
	c := &collected{}
	res, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, options(w, c))
	if err != nil {
		t.Fatalf("Drive: %v", err)
	}
	w.check()
	if got := w.running(); got != "destination" {
		t.Errorf("running copy: %s, want the destination's only", got)
	}
	if !w.srcFinished {
		t.Errorf("the source kept its stopped copy")
	}

	wantCalls := []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"}
	if got := w.callList(); !slices.Equal(got, wantCalls) {
		t.Errorf("calls:\n got %v\nwant %v", got, wantCalls)
	}
	wantPhases := []Phase{PhasePrepare, PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady, PhaseCommitted, PhaseDone}
	if got := c.phaseList(); !slices.Equal(got, wantPhases) {
		t.Errorf("records saved in phases %v, want %v", got, wantPhases)
	}

	send, recv := w.tokens["send"], w.tokens["receive"]
	if send == "" || send != recv {
		t.Errorf("Send got token %q, Receive %q: want the same one", send, recv)
	}
	if len(send) != 64 || strings.Trim(send, "0123456789abcdef") != "" {
		t.Errorf("token %q: want 256 bits in lowercase hex", send)
	}

	// Events: one per phase, the transfer's progress between.
	type ev struct {
		phase       Phase
		done, total int64
		throughput  float64
		eta         time.Duration
	}
	var got []ev
	for _, e := range c.events {
		if e.ID != "m1" {
			t.Errorf("event %+v: ID %q, want m1", e, e.ID)
		}
		got = append(got, ev{e.Phase, e.BytesDone, e.BytesTotal, e.Throughput, e.ETA})
	}
	const rate = float64(chunk) / 1 // bytes per second: one chunk per chunkTook
	want := []ev{
		{phase: PhasePrepare},
		{phase: PhaseDump},
		{phase: PhaseTransfer},
		{PhaseTransfer, 1 * chunk, 4 * chunk, rate, 3 * time.Second},
		{PhaseTransfer, 2 * chunk, 4 * chunk, rate, 2 * time.Second},
		{PhaseTransfer, 3 * chunk, 4 * chunk, rate, 1 * time.Second},
		{PhaseTransfer, 4 * chunk, 4 * chunk, rate, 0},
		{phase: PhaseRestore},
		{phase: PhaseReady},
		{phase: PhaseCommitted},
		{phase: PhaseDone},
	}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n got %v\nwant %v", got, want)
	}

	transferTook := chunks * chunkTook
	wantStats := Result{
		ID: "m1", Strategy: StopCopy,
		Downtime:  dumpTook + transferTook + restoreTook + commitTook,
		Total:     prepareTook + dumpTook + transferTook + restoreTook + commitTook + finishTook,
		BytesSent: chunks * chunk,
	}
	if res.ID != wantStats.ID || res.Strategy != wantStats.Strategy || res.Downtime != wantStats.Downtime ||
		res.Total != wantStats.Total || res.BytesSent != wantStats.BytesSent || len(res.Warnings) != 0 {
		t.Errorf("result %+v, want %+v", res, wantStats)
	}
	wantDurations := map[Phase]time.Duration{
		PhasePrepare: prepareTook, PhaseDump: dumpTook, PhaseTransfer: transferTook,
		PhaseRestore: restoreTook, PhaseReady: commitTook, PhaseCommitted: finishTook,
	}
	if fmt.Sprint(res.Phases) != fmt.Sprint(wantDurations) {
		t.Errorf("phase durations %v, want %v", res.Phases, wantDurations)
	}
	if res.Record.Phase != PhaseDone || res.Record.Container != "web" {
		t.Errorf("record in %s for container %q, want %s for web", res.Record.Phase, res.Record.Container, PhaseDone)
	}
}

func TestDriveFailures(t *testing.T) {
	unreachable := errors.New("dial 10.1.0.2:7420: no route to host")
	upToRestore := []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore"}
	tests := []struct {
		name   string
		faults map[string]fault
		// failRecordIn makes OnRecord fail when the record enters it.
		failRecordIn Phase
		wantCalls    []string
		wantPhase    Phase
		// wantRunning: "source", "destination" or "none" (held).
		wantRunning string
		wantErr     bool
		wantHeld    bool
		wantWarning bool
	}{
		{
			name:        "describe fails: nothing to abort",
			faults:      map[string]fault{"src.Describe": {err: errBoom}},
			wantCalls:   []string{"src.Describe"},
			wantPhase:   PhaseAborted,
			wantRunning: "source",
			wantErr:     true,
		},
		{
			name:        "prepare fails: the destination aborts, the source never stopped",
			faults:      map[string]fault{"dst.Prepare": {err: errBoom}},
			wantCalls:   []string{"src.Describe", "dst.Prepare", "dst.Abort"},
			wantPhase:   PhaseAborted,
			wantRunning: "source",
			wantErr:     true,
		},
		{
			name:         "record not saved before the dump: the container is never frozen",
			failRecordIn: PhaseDump,
			wantCalls:    []string{"src.Describe", "dst.Prepare", "dst.Abort"},
			wantPhase:    PhaseAborted,
			wantRunning:  "source",
			wantErr:      true,
		},
		{
			name:        "dump fails: abort, then the source resumes",
			faults:      map[string]fault{"src.Dump": {err: errBoom}},
			wantCalls:   []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Abort", "src.Resume"},
			wantPhase:   PhaseAborted,
			wantRunning: "source",
			wantErr:     true,
		},
		{
			name:        "send fails: receive is cancelled, abort, the source resumes",
			faults:      map[string]fault{"src.Send": {err: errBoom}},
			wantCalls:   []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Abort", "src.Resume"},
			wantPhase:   PhaseAborted,
			wantRunning: "source",
			wantErr:     true,
		},
		{
			name:        "receive fails (corrupt data): send is cancelled, abort, the source resumes",
			faults:      map[string]fault{"dst.Receive": {err: errors.New("digest mismatch")}},
			wantCalls:   []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Abort", "src.Resume"},
			wantPhase:   PhaseAborted,
			wantRunning: "source",
			wantErr:     true,
		},
		{
			name:        "restore fails: abort, the source resumes",
			faults:      map[string]fault{"dst.Restore": {err: errBoom}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Abort", "src.Resume"),
			wantPhase:   PhaseAborted,
			wantRunning: "source",
			wantErr:     true,
		},
		{
			name:        "the abort is acknowledged on the second try",
			faults:      map[string]fault{"dst.Restore": {err: errBoom}, "dst.Abort": {err: unreachable, times: 1}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Abort", "dst.Abort", "src.Resume"),
			wantPhase:   PhaseAborted,
			wantRunning: "source",
			wantErr:     true,
		},
		{
			name:        "commit lost on the way: the abort is acknowledged, the source resumes",
			faults:      map[string]fault{"dst.Commit": {err: unreachable}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Commit", "dst.Abort", "src.Resume"),
			wantPhase:   PhaseAborted,
			wantRunning: "source",
			wantErr:     true,
		},
		{
			name:        "commit applied, its reply lost: the abort says committed, the move finishes",
			faults:      map[string]fault{"dst.Commit": {err: unreachable, applied: true, times: 1}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Commit", "dst.Abort", "dst.Commit", "src.Finish"),
			wantPhase:   PhaseDone,
			wantRunning: "destination",
		},
		{
			// Its commit is made, but unconfirmed: the source keeps its
			// stopped copy until a resume hears from the destination.
			name:        "commit applied, the destination unreachable since: committed, with a warning to resume",
			faults:      map[string]fault{"dst.Commit": {err: unreachable, applied: true}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Commit", "dst.Abort", "dst.Commit", "dst.Commit", "dst.Commit"),
			wantPhase:   PhaseCommitted,
			wantRunning: "destination",
			wantWarning: true,
		},
		{
			name:        "finish fails: the move is made, with a warning",
			faults:      map[string]fault{"src.Finish": {err: errBoom}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Commit", "src.Finish"),
			wantPhase:   PhaseCommitted,
			wantRunning: "destination",
			wantWarning: true,
		},
		{
			name:        "destination unreachable for the abort: held, the source never resumes",
			faults:      map[string]fault{"dst.Restore": {err: unreachable}, "dst.Abort": {err: unreachable}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Abort", "dst.Abort", "dst.Abort"),
			wantPhase:   PhaseRestore,
			wantRunning: "none",
			wantErr:     true,
			wantHeld:    true,
		},
		{
			name:        "commit and abort both unknown: held",
			faults:      map[string]fault{"dst.Commit": {err: unreachable}, "dst.Abort": {err: unreachable}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Commit", "dst.Abort", "dst.Abort", "dst.Abort"),
			wantPhase:   PhaseReady,
			wantRunning: "none",
			wantErr:     true,
			wantHeld:    true,
		},
		{
			name:        "source cannot resume after the destination aborted: held",
			faults:      map[string]fault{"dst.Restore": {err: errBoom}, "src.Resume": {err: errBoom}},
			wantCalls:   append(slices.Clone(upToRestore), "dst.Abort", "src.Resume", "src.Resume", "src.Resume"),
			wantPhase:   PhaseRestore,
			wantRunning: "none",
			wantErr:     true,
			wantHeld:    true,
		},
		{
			name:        "destination unreachable before the dump: the source runs on, not held",
			faults:      map[string]fault{"dst.Prepare": {err: unreachable}, "dst.Abort": {err: unreachable}},
			wantCalls:   []string{"src.Describe", "dst.Prepare", "dst.Abort", "dst.Abort", "dst.Abort"},
			wantPhase:   PhasePrepare, // left open for --abort
			wantRunning: "source",
			wantErr:     true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.faults = tt.faults
			c := &collected{}
			opts := options(w, c)
			if tt.failRecordIn != "" {
				save := opts.OnRecord
				opts.OnRecord = func(r *Record) error {
					if r.Phase == tt.failRecordIn {
						return errors.New("disk full")
					}
					return save(r)
				}
			}
			res, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, opts)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Drive: err = %v, want an error: %v", err, tt.wantErr)
			}
			w.check()
			if got := w.callList(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tt.wantCalls)
			}
			if got := w.running(); got != tt.wantRunning {
				t.Errorf("running copy: %s, want %s", got, tt.wantRunning)
			}
			if res == nil {
				t.Fatal("no result")
			}
			if res.Record.Phase != tt.wantPhase {
				t.Errorf("record in %s, want %s", res.Record.Phase, tt.wantPhase)
			}
			if held := errors.Is(err, ErrHeld); held != tt.wantHeld {
				t.Errorf("err = %v: held %v, want %v", err, held, tt.wantHeld)
			}
			if tt.wantHeld {
				var he *HeldError
				if !errors.As(err, &he) || he.ID != "m1" || he.Phase != tt.wantPhase {
					t.Errorf("err = %#v, want a *HeldError for m1 in %s", err, tt.wantPhase)
				}
				if !strings.Contains(err.Error(), "godwit migrate --abort m1") {
					t.Errorf("err = %q: does not say how to finish the move", err)
				}
			}
			if got := len(res.Warnings) > 0; got != tt.wantWarning {
				t.Errorf("warnings %q, want some: %v", res.Warnings, tt.wantWarning)
			}
			if tt.wantRunning == "source" && w.dstRunning {
				t.Errorf("destination runs a copy after an abort")
			}
			if tt.wantPhase == PhaseAborted && w.dstPrepared && !w.dstAborted {
				t.Errorf("the destination was not cleaned")
			}
		})
	}
}

func TestDriveTransferFailureCancelsTheOtherSide(t *testing.T) {
	for _, failing := range []string{"src.Send", "dst.Receive"} {
		t.Run(failing, func(t *testing.T) {
			w := newWorld(t)
			w.faults = map[string]fault{failing: {err: errBoom}}
			_, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
			if !errors.Is(err, errBoom) {
				t.Fatalf("err = %v, want the failing side's %v", err, errBoom)
			}
			other := map[string]string{"src.Send": "dst.Receive", "dst.Receive": "src.Send"}[failing]
			if got := w.ended[other]; !errors.Is(got, context.Canceled) {
				t.Errorf("%s ended with %v, want cancelled when %s failed", other, got, failing)
			}
		})
	}
}

// TestDriveAbortFencedWithoutTheDestination: with a commit point of its
// own (Decide) and FenceDestination, a caller lets an abort the
// destination cannot acknowledge go on: the source runs the container
// again once the fence holds, and the result says the destination owes
// a cleanup. A fence that fails leaves the move held, as without one.
func TestDriveAbortFencedWithoutTheDestination(t *testing.T) {
	unreachable := errors.New("dial 10.1.0.2:7420: no route to host")
	for _, tt := range []struct {
		name        string
		fenceErr    error
		wantRunning string
		wantPhase   Phase
		wantHeld    bool
	}{
		{name: "fenced: the source runs again", wantRunning: "source", wantPhase: PhaseAborted},
		{name: "the fence fails: held", fenceErr: errBoom, wantRunning: "none", wantPhase: PhaseRestore, wantHeld: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			w.faults = map[string]fault{"dst.Restore": {err: unreachable}, "dst.Abort": {err: unreachable}}
			opts := options(w, &collected{})
			var decided, fenced int
			opts.Decide = func(context.Context, *Record) error { decided++; return nil }
			opts.FenceDestination = func(_ context.Context, rec *Record, why error) error {
				fenced++
				w.mu.Lock()
				w.commitFenced = tt.fenceErr == nil
				w.mu.Unlock()
				if rec.ID != "m1" || !errors.Is(why, unreachable) {
					t.Errorf("FenceDestination(%s, %v): want m1 and the destination's error", rec.ID, why)
				}
				return tt.fenceErr
			}
			res, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, opts)
			w.check()
			if got := w.running(); got != tt.wantRunning {
				t.Errorf("running copy: %s, want %s", got, tt.wantRunning)
			}
			if res.Record.Phase != tt.wantPhase {
				t.Errorf("record in %s, want %s", res.Record.Phase, tt.wantPhase)
			}
			if errors.Is(err, ErrHeld) != tt.wantHeld {
				t.Errorf("err = %v, want held: %v", err, tt.wantHeld)
			}
			if res.DestinationUnacked != !tt.wantHeld {
				t.Errorf("DestinationUnacked = %v, want %v", res.DestinationUnacked, !tt.wantHeld)
			}
			if fenced != 1 || decided != 0 {
				t.Errorf("fenced %d times, decided %d times; want 1 and 0", fenced, decided)
			}
			if w.dstRunning {
				t.Error("the destination runs a copy")
			}
		})
	}
}

// TestDriveInterruptedStillAborts: a driver whose context is cancelled
// (Ctrl-C) in the middle of the transfer still gives the container back
// to the source.
func TestDriveInterruptedStillAborts(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w.onCall["src.Send"] = cancel
	res, err := Drive(ctx, webMigration, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrHeld) {
		t.Fatalf("err = %v, want the cancellation, not held", err)
	}
	if res.Record.Phase != PhaseAborted || w.running() != "source" || !w.dstAborted {
		t.Errorf("record in %s, running: %s, destination aborted: %v; want aborted, source, true", res.Record.Phase, w.running(), w.dstAborted)
	}
}

// recordIn returns a record of m1 walked to phase, one second per phase.
func recordIn(t *testing.T, phase Phase) *Record {
	t.Helper()
	r := NewRecord("m1", StopCopy, t0)
	r.Container = "web"
	if phase == PhaseAborted {
		if _, err := r.Abort("earlier", t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		return r
	}
	for i, p := range []Phase{PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady, PhaseCommitted, PhaseDone} {
		if order[p] > order[phase] {
			break
		}
		if _, err := r.Advance(p, t0.Add(time.Duration(i+1)*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// worldAt is the hosts as a driver that stopped in phase left them, with
// the destination done up to (and including) dstDone.
func worldAt(t *testing.T, dstDone Phase) *world {
	w := newWorld(t)
	w.clock.now = t0.Add(time.Minute)
	w.dstPrepared = true
	if order[dstDone] >= order[PhaseDump] {
		w.srcRunning, w.srcDumped = false, true
	}
	w.dstReceived = order[dstDone] >= order[PhaseTransfer]
	w.dstRestored = order[dstDone] >= order[PhaseRestore]
	if order[dstDone] >= order[PhaseCommitted] {
		w.dstCommitted, w.dstRunning = true, true
	}
	return w
}

func TestResume(t *testing.T) {
	tests := []struct {
		name string
		// record is the driver's record; hosts is how far the agents got
		// (they may be ahead of the record: the driver died before saving).
		record, hosts Phase
		// noContainer leaves the container out of the record, as a record
		// written before it was kept.
		noContainer bool
		faults      map[string]fault
		wantCalls   []string
		wantPhase   Phase
		wantRunning string
		wantErr     error // nil: no error
		wantAnyErr  bool
	}{
		{
			name:   "ready: commits and finishes",
			record: PhaseReady, hosts: PhaseRestore,
			wantCalls: []string{"dst.Commit", "src.Finish"}, wantPhase: PhaseDone, wantRunning: "destination",
		},
		{
			name:   "committed: commits again, in case the destination did not run its copy, and finishes",
			record: PhaseCommitted, hosts: PhaseCommitted,
			wantCalls: []string{"dst.Commit", "src.Finish"}, wantPhase: PhaseDone, wantRunning: "destination",
		},
		{
			name:   "ready but the destination had committed: the repeated commit is harmless",
			record: PhaseReady, hosts: PhaseCommitted,
			wantCalls: []string{"dst.Commit", "src.Finish"}, wantPhase: PhaseDone, wantRunning: "destination",
		},
		{
			name:   "dump: dumps again (harmless), sends, restores, commits",
			record: PhaseDump, hosts: PhaseDump,
			wantCalls: []string{"src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"},
			wantPhase: PhaseDone, wantRunning: "destination",
		},
		{
			name:   "transfer, destination already restored: replayed steps do nothing twice",
			record: PhaseTransfer, hosts: PhaseRestore,
			wantCalls: []string{"dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"},
			wantPhase: PhaseDone, wantRunning: "destination",
		},
		{
			name:   "transfer fails again: abort, the source resumes",
			record: PhaseTransfer, hosts: PhaseDump,
			faults:    map[string]fault{"dst.Receive": {err: errBoom}},
			wantCalls: []string{"dst.Receive", "src.Send", "dst.Abort", "src.Resume"},
			wantPhase: PhaseAborted, wantRunning: "source", wantAnyErr: true,
		},
		{
			name:   "prepare: prepares again and moves",
			record: PhasePrepare, hosts: PhasePrepare,
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"},
			wantPhase: PhaseDone, wantRunning: "destination",
		},
		{
			name:   "prepare, the record names no container: aborted without resuming the source",
			record: PhasePrepare, hosts: PhasePrepare, noContainer: true,
			wantCalls: []string{"dst.Abort"}, wantPhase: PhaseAborted, wantRunning: "source", wantAnyErr: true,
		},
		{
			name:   "aborted: refused",
			record: PhaseAborted, hosts: PhasePrepare,
			wantCalls: nil, wantPhase: PhaseAborted, wantRunning: "source", wantErr: ErrAborted,
		},
		{
			name:   "done: nothing to do",
			record: PhaseDone, hosts: PhaseCommitted,
			wantCalls: nil, wantPhase: PhaseDone, wantRunning: "destination",
		},
		{
			name:   "ready, destination still unreachable: held",
			record: PhaseReady, hosts: PhaseRestore,
			faults:    map[string]fault{"dst.Commit": {err: errBoom}, "dst.Abort": {err: errBoom}},
			wantCalls: []string{"dst.Commit", "dst.Abort", "dst.Abort", "dst.Abort"},
			wantPhase: PhaseReady, wantRunning: "none", wantErr: ErrHeld,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := worldAt(t, tt.hosts)
			if tt.record == PhaseDone {
				w.srcFinished = true
			}
			if tt.faults != nil {
				w.faults = tt.faults
			}
			rec := recordIn(t, tt.record)
			if tt.noContainer {
				rec.Container = ""
			}
			res, err := Resume(context.Background(), rec, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			case tt.wantErr == nil && (err != nil) != tt.wantAnyErr:
				t.Errorf("err = %v, want an error: %v", err, tt.wantAnyErr)
			}
			w.check()
			if got := w.callList(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tt.wantCalls)
			}
			if res.Record.Phase != tt.wantPhase {
				t.Errorf("record in %s, want %s", res.Record.Phase, tt.wantPhase)
			}
			if got := w.running(); got != tt.wantRunning {
				t.Errorf("running copy: %s, want %s", got, tt.wantRunning)
			}
			// Each state change happened at most once however often its
			// step was called.
			for what, n := range map[string]int{"dump": w.dumps, "receive": w.receives, "restore": w.restores, "commit": w.commits} {
				if n > 1 {
					t.Errorf("%s took effect %d times", what, n)
				}
			}
		})
	}
}

func TestResumeStatisticsSpanTheStoppedDriver(t *testing.T) {
	w := worldAt(t, PhaseRestore)
	rec := recordIn(t, PhaseReady) // dump at t0+1s, ready at t0+4s
	res, err := Resume(context.Background(), rec, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
	if err != nil {
		t.Fatal(err)
	}
	// The clock stood at t0+1m when the driver came back; the commit took
	// commitTook, the finish finishTook.
	commitDone := time.Minute + commitTook
	if want := commitDone - time.Second; res.Downtime != want {
		t.Errorf("downtime %v, want %v (dump to commit)", res.Downtime, want)
	}
	if want := commitDone + finishTook; res.Total != want {
		t.Errorf("total %v, want %v", res.Total, want)
	}
}

func TestAbortMigration(t *testing.T) {
	tests := []struct {
		name          string
		record, hosts Phase
		faults        map[string]fault
		wantCalls     []string
		wantPhase     Phase
		wantRunning   string
		wantErr       error
	}{
		{
			name:   "ready: the destination discards its copy, the source resumes",
			record: PhaseReady, hosts: PhaseRestore,
			wantCalls: []string{"dst.Abort", "src.Resume"}, wantPhase: PhaseAborted, wantRunning: "source",
		},
		{
			name:   "prepare: the destination aborts, the source never stopped",
			record: PhasePrepare, hosts: PhasePrepare,
			wantCalls: []string{"dst.Abort"}, wantPhase: PhaseAborted, wantRunning: "source",
		},
		{
			name:   "committed record: refused without a call",
			record: PhaseCommitted, hosts: PhaseCommitted,
			wantCalls: nil, wantPhase: PhaseCommitted, wantRunning: "destination", wantErr: ErrCommitted,
		},
		{
			name:   "done record: refused",
			record: PhaseDone, hosts: PhaseCommitted,
			wantCalls: nil, wantPhase: PhaseDone, wantRunning: "destination", wantErr: ErrCommitted,
		},
		{
			name:   "ready record, but the destination committed: refused, record committed",
			record: PhaseReady, hosts: PhaseCommitted,
			wantCalls: []string{"dst.Abort"}, wantPhase: PhaseCommitted, wantRunning: "destination", wantErr: ErrCommitted,
		},
		{
			name:   "aborted: nothing to do",
			record: PhaseAborted, hosts: PhasePrepare,
			wantCalls: nil, wantPhase: PhaseAborted, wantRunning: "source",
		},
		{
			name:   "destination unreachable: held",
			record: PhaseTransfer, hosts: PhaseTransfer,
			faults:    map[string]fault{"dst.Abort": {err: errBoom}},
			wantCalls: []string{"dst.Abort", "dst.Abort", "dst.Abort"}, wantPhase: PhaseTransfer, wantRunning: "none", wantErr: ErrHeld,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := worldAt(t, tt.hosts)
			if tt.record == PhaseAborted {
				w.dstAborted = true
			}
			if tt.faults != nil {
				w.faults = tt.faults
			}
			c := &collected{}
			res, err := AbortMigration(context.Background(), recordIn(t, tt.record), fakeSource{w}, fakeDest{w}, options(w, c))
			if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			w.check()
			if got := w.callList(); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tt.wantCalls)
			}
			if res.Record.Phase != tt.wantPhase {
				t.Errorf("record in %s, want %s", res.Record.Phase, tt.wantPhase)
			}
			if got := w.running(); got != tt.wantRunning {
				t.Errorf("running copy: %s, want %s", got, tt.wantRunning)
			}
			if changed := tt.wantPhase != tt.record; changed != slices.Contains(c.phaseList(), tt.wantPhase) {
				t.Errorf("records saved %v: the change to %s saved: want %v", c.phaseList(), tt.wantPhase, changed)
			}
		})
	}
}

func TestAbortedDowntimeEndsWhenTheSourceRuns(t *testing.T) {
	w := newWorld(t)
	w.faults = map[string]fault{"dst.Restore": {err: errBoom}}
	res, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
	if err == nil {
		t.Fatal("Drive succeeded despite the failed restore")
	}
	if want := dumpTook + chunks*chunkTook; res.Downtime != want {
		t.Errorf("downtime %v, want %v (dump to the source running again)", res.Downtime, want)
	}
}

func TestDriveRefusesBadInput(t *testing.T) {
	for name, m := range map[string]Migration{
		"bad ID":        {ID: "../x", Container: "web", Strategy: StopCopy},
		"no container":  {ID: "m1", Strategy: StopCopy},
		"auto strategy": {ID: "m1", Container: "web", Strategy: Auto},
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			if _, err := Drive(context.Background(), m, fakeSource{w}, fakeDest{w}, options(w, &collected{})); err == nil {
				t.Error("Drive accepted it")
			}
			if calls := w.callList(); len(calls) != 0 {
				t.Errorf("calls %v, want none", calls)
			}
		})
	}
}
