package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// Pre-copy on the fake clock: each round's pre-dump takes preDumpTook, and
// its images go to the destination at the world's bandwidth.
const (
	preDumpTook = 500 * time.Millisecond
	pageSize    = 4096
	fastLink    = 100 << 20 // bytes per second
	slowLink    = 10 << 20
)

// preCopyWorld is pre-copy's part of the fake hosts: a scripted workload
// whose dirty pages per round are given, standing in for soft-dirty
// tracking, which this kernel lacks.
type preCopyWorld struct {
	// dirty is the pages each round finds dirty; past its end, the last.
	dirty []int64
	// bandwidth is how fast rounds reach the destination, bytes/s.
	bandwidth int64
	// preDumped and received are the rounds each side holds.
	preDumped, received int
	// dumpedOn and restoredOn are the DumpOptions.PreDumps and
	// RestoreOptions.PreDumps the sides were given.
	dumpedOn, restoredOn int
}

func (p *preCopyWorld) pages(round int) int64 {
	return p.dirty[min(round, len(p.dirty))-1]
}

func (s fakeSource) PreDump(ctx context.Context, id string, round int) (PreCopyIteration, error) {
	w := s.w
	if _, err := w.call(ctx, "src.PreDump"); err != nil {
		return PreCopyIteration{}, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.srcDumped || !w.srcRunning:
		return PreCopyIteration{}, errors.New("pre-dump of a container that does not run")
	case round > w.preCopy.preDumped+1:
		return PreCopyIteration{}, fmt.Errorf("pre-dump round %d after round %d: rounds come in order", round, w.preCopy.preDumped)
	case round == w.preCopy.preDumped+1:
		w.preCopy.preDumped = round
		w.clock.advance(preDumpTook)
	}
	pages := w.preCopy.pages(round)
	return PreCopyIteration{DirtyPages: pages, Duration: preDumpTook, Bytes: pages * pageSize}, nil
}

func (s fakeSource) SendPreDump(ctx context.Context, id string, round int, address, token string, progress func(done, total int64)) error {
	w := s.w
	if address != fakeAddress {
		w.t.Errorf("SendPreDump to %q, want the destination's address %q", address, fakeAddress)
	}
	if _, err := w.call(ctx, "src.SendPreDump"); err != nil {
		return err
	}
	w.mu.Lock()
	held := w.preCopy.preDumped >= round
	size := w.preCopy.pages(round) * pageSize
	took := time.Duration(float64(size) / float64(w.preCopy.bandwidth) * float64(time.Second))
	w.mu.Unlock()
	if !held {
		return fmt.Errorf("no pre-dump round %d to send", round)
	}
	p := w.pipe(token)
	select {
	case <-p.connected:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(peerWait):
		return errors.New("the receiver never came")
	}
	w.clock.advance(took)
	progress(size, size)
	close(p.delivered)
	return nil
}

func (d fakeDest) ReceivePreDump(ctx context.Context, id string, round int, token string) error {
	w := d.w
	if _, err := w.call(ctx, "dst.ReceivePreDump"); err != nil {
		return err
	}
	p := w.pipe(token)
	p.once.Do(func() { close(p.connected) })
	select {
	case <-p.delivered:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(peerWait):
		return errors.New("the sender never delivered")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.dstPrepared || w.dstAborted {
		return errors.New("pre-dump for a migration the destination did not prepare")
	}
	w.preCopy.received = max(w.preCopy.received, round)
	return nil
}

// preCopyWorldWith is a world migrating by pre-copy a workload dirtying
// dirty pages per round over a link of bandwidth bytes per second.
func preCopyWorldWith(t *testing.T, bandwidth int64, dirty ...int64) *world {
	w := newWorld(t)
	w.strategy = PreCopy
	w.preCopy = preCopyWorld{dirty: dirty, bandwidth: bandwidth}
	return w
}

var preCopyMigration = Migration{ID: "m1", Container: "web", Strategy: PreCopy}

// preCopyCalls is w's calls with each round's concurrent send and receive
// in one order, as canonical does for the checkpoint's.
func preCopyCalls(w *world) []string {
	calls := w.callList()
	for i := 0; i+1 < len(calls); i++ {
		if calls[i] == "src.SendPreDump" && calls[i+1] == "dst.ReceivePreDump" {
			calls[i], calls[i+1] = calls[i+1], calls[i]
		}
	}
	return calls
}

// roundCalls is the calls of n pre-copy rounds.
func roundCalls(n int) []string {
	var calls []string
	for range n {
		calls = append(calls, "src.PreDump", "dst.ReceivePreDump", "src.SendPreDump")
	}
	return calls
}

// TestPreCopyRounds drives scripted workloads through pre-copy with the
// default policy: the rounds stop on the rule the workload calls for, the
// final dump builds on the last round, and the record says why.
func TestPreCopyRounds(t *testing.T) {
	const wholeMemory = 131072 // 512 MiB of 4 KiB pages
	tests := []struct {
		name      string
		bandwidth int64
		dirty     []int64
		rule      string
		rounds    int
	}{
		{name: "shrinking over a fast link: the predicted freeze reaches the target", bandwidth: fastLink,
			dirty: []int64{wholeMemory, 20000, 3000, 100}, rule: RuleFreezeOnTarget, rounds: 3},
		{name: "shrinking over a slow link: few dirty pages left", bandwidth: slowLink,
			dirty: []int64{wholeMemory, 20000, 3000, 100}, rule: RuleFewDirtyPages, rounds: 4},
		{name: "an idle container: one round is enough", bandwidth: slowLink,
			dirty: []int64{200}, rule: RuleFewDirtyPages, rounds: 1},
		{name: "a workload dirtying faster than the link: the dirty set grows", bandwidth: slowLink,
			dirty: []int64{wholeMemory, 60000, 70000}, rule: RuleGrowing, rounds: 3},
		{name: "never converges: the iteration limit", bandwidth: slowLink,
			dirty: []int64{wholeMemory, 130000, 129000, 128000, 127000, 126000, 125000, 124000, 123000}, rule: RuleMaxIterations,
			rounds: DefaultConvergence.MaxIterations},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := preCopyWorldWith(t, tt.bandwidth, tt.dirty...)
			c := &collected{}
			res, err := Drive(context.Background(), preCopyMigration, fakeSource{w}, fakeDest{w}, options(w, c))
			if err != nil {
				t.Fatalf("Drive: %v", err)
			}
			w.check()
			if got := w.running(); got != "destination" {
				t.Errorf("running copy: %s, want the destination's only", got)
			}

			wantCalls := append([]string{"src.Describe", "dst.Prepare"}, roundCalls(tt.rounds)...)
			wantCalls = append(wantCalls, "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish")
			if got := preCopyCalls(w); !slices.Equal(got, wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, wantCalls)
			}
			pc := res.PreCopy
			if pc == nil || pc.Rule != tt.rule || len(pc.Rounds) != tt.rounds {
				t.Fatalf("pre-copy outcome %+v, want %d rounds stopped by %q", pc, tt.rounds, tt.rule)
			}
			if !strings.Contains(pc.Detail, fmt.Sprint(tt.rounds)) {
				t.Errorf("the decision %q does not give the numbers", pc.Detail)
			}
			if res.Record.PreCopy == nil || res.Record.PreCopy.Rule != tt.rule {
				t.Errorf("the record keeps %+v, want the rule %q", res.Record.PreCopy, tt.rule)
			}
			if w.preCopy.received != tt.rounds {
				t.Errorf("the destination received %d rounds, want %d", w.preCopy.received, tt.rounds)
			}
			if w.preCopy.dumpedOn != tt.rounds || w.preCopy.restoredOn != tt.rounds {
				t.Errorf("Dump and Restore were told of %d and %d pre-dumps, want %d: the final dump builds on the last round",
					w.preCopy.dumpedOn, w.preCopy.restoredOn, tt.rounds)
			}

			// The rounds ran in PhaseSync, before the freeze: the
			// downtime does not count them; their bytes are the rounds'.
			wantPhases := []Phase{PhasePrepare, PhaseSync}
			for range tt.rounds {
				wantPhases = append(wantPhases, PhaseSync) // persisted after each round
			}
			wantPhases = append(wantPhases, PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady, PhaseCommitted, PhaseDone)
			if got := c.phaseList(); !slices.Equal(got, wantPhases) {
				t.Errorf("records saved in phases %v, want %v", got, wantPhases)
			}
			transferTook := chunks * chunkTook
			if want := dumpTook + transferTook + restoreTook + commitTook; res.Downtime != want {
				t.Errorf("downtime %v, want %v (the rounds ran before the freeze)", res.Downtime, want)
			}
			for i, r := range pc.Rounds {
				if want := w.preCopy.pages(i+1) * pageSize; r.Sent != want || r.DirtyPages != w.preCopy.pages(i+1) {
					t.Errorf("round %d: %d pages, %d bytes sent; want %d, %d", i+1, r.DirtyPages, r.Sent, w.preCopy.pages(i+1), want)
				}
			}
			if res.BytesSent != chunks*chunk {
				t.Errorf("bytes sent %d, want the checkpoint's %d", res.BytesSent, chunks*chunk)
			}
			if bw := pc.Bandwidth(); bw < float64(tt.bandwidth)*0.99 || bw > float64(tt.bandwidth)*1.01 {
				t.Errorf("measured bandwidth %.0f B/s, want the link's %d", bw, tt.bandwidth)
			}

			// An operator watching sees each round and why they stopped.
			var stopped bool
			for _, e := range c.events {
				if e.Phase == PhaseSync && strings.Contains(e.Message, "stopping ("+tt.rule+")") {
					stopped = true
				}
			}
			if !stopped {
				t.Errorf("no event says the rounds stopped by %q", tt.rule)
			}
		})
	}
}

func TestPreCopyFailures(t *testing.T) {
	sync := []string{"src.Describe", "dst.Prepare"}
	tests := []struct {
		name      string
		faults    map[string]fault
		hanging   string // a call that does not answer within the step timeout
		wantCalls []string
		warning   bool
	}{
		{
			name: "a round hangs: given up after the step timeout, then as a failed round", hanging: "src.PreDump",
			wantCalls: append(slices.Clone(sync), "src.PreDump", "dst.Abort", "src.Resume"),
		},
		{
			name:   "a round fails: the destination aborts, the source drops its pre-dumps and runs on",
			faults: map[string]fault{"src.PreDump": {err: errors.New("criu: dirty tracking is off"), times: 1}},
			wantCalls: append(slices.Clone(sync),
				"src.PreDump", "dst.Abort", "src.Resume"),
		},
		{
			name:   "a round's transfer fails: the same",
			faults: map[string]fault{"dst.ReceivePreDump": {err: errors.New("digest mismatch")}},
			wantCalls: append(slices.Clone(sync),
				"src.PreDump", "dst.ReceivePreDump", "src.SendPreDump", "dst.Abort", "src.Resume"),
		},
		{
			name: "the source cannot drop its pre-dumps: a warning, the container still runs there",
			faults: map[string]fault{
				"dst.ReceivePreDump": {err: errors.New("digest mismatch")}, "src.Resume": {err: errBoom},
			},
			wantCalls: append(slices.Clone(sync),
				"src.PreDump", "dst.ReceivePreDump", "src.SendPreDump", "dst.Abort", "src.Resume", "src.Resume", "src.Resume"),
			warning: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := preCopyWorldWith(t, slowLink, 131072, 20000, 100)
			w.faults = tt.faults
			opts := options(w, &collected{})
			if tt.hanging != "" {
				hung := false
				w.onCall[tt.hanging] = func() {
					if !hung { // once: what follows answers
						hung = true
						time.Sleep(hang)
					}
				}
				opts.StepTimeout = testStep
			}
			res, err := Drive(context.Background(), preCopyMigration, fakeSource{w}, fakeDest{w}, opts)
			if err == nil || errors.Is(err, ErrHeld) {
				t.Fatalf("Drive: err = %v, want an abort, not held", err)
			}
			if tt.hanging != "" && !errors.Is(err, ErrStepTimeout) {
				t.Errorf("err = %v, want it to say %s had no answer within the step timeout", err, tt.hanging)
			}
			w.check()
			if got := preCopyCalls(w); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tt.wantCalls)
			}
			if w.running() != "source" || w.srcDumped || !w.dstAborted {
				t.Errorf("running: %s, source dumped %v, destination aborted %v; want the source running, never frozen, the destination clean",
					w.running(), w.srcDumped, w.dstAborted)
			}
			if res.Record.Phase != PhaseAborted || res.Downtime != 0 {
				t.Errorf("record in %s with downtime %v, want aborted with none", res.Record.Phase, res.Downtime)
			}
			if got := len(res.Warnings) > 0; got != tt.warning {
				t.Errorf("warnings %q, want some: %v", res.Warnings, tt.warning)
			}
		})
	}
}

// TestPreCopyResume: a driver that stopped after a round goes on after
// it, and one that had stopped the rounds goes straight to the dump.
func TestPreCopyResume(t *testing.T) {
	tests := []struct {
		name      string
		recorded  PreCopyOutcome
		wantCalls []string
		rounds    int
	}{
		{
			name:     "after round 1: rounds 2 and 3",
			recorded: PreCopyOutcome{Rounds: []PreCopyIteration{{DirtyPages: 131072, Sent: 131072 * pageSize, Transfer: 50 * time.Second}}},
			wantCalls: append(append([]string{"src.Describe", "dst.Prepare"}, roundCalls(3)[3:]...),
				"src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"),
			rounds: 3,
		},
		{
			name: "rounds stopped: the dump is next",
			recorded: PreCopyOutcome{Rounds: []PreCopyIteration{{DirtyPages: 131072}, {DirtyPages: 100}},
				Rule: RuleFewDirtyPages, Detail: "round 2 copied 100 pages, under 256"},
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"},
			rounds:    2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := preCopyWorldWith(t, slowLink, 131072, 20000, 100)
			w.dstPrepared = true
			w.preCopy.preDumped, w.preCopy.received = len(tt.recorded.Rounds), len(tt.recorded.Rounds)
			rec := NewRecord("m1", PreCopy, t0)
			rec.Container = "web"
			if _, err := rec.Advance(PhaseSync, t0.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			rec.PreCopy = &tt.recorded
			res, err := Resume(context.Background(), rec, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
			if err != nil {
				t.Fatalf("Resume: %v", err)
			}
			w.check()
			if got := preCopyCalls(w); !slices.Equal(got, tt.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tt.wantCalls)
			}
			if w.running() != "destination" || len(res.PreCopy.Rounds) != tt.rounds || w.preCopy.dumpedOn != tt.rounds {
				t.Errorf("running: %s, %d rounds, dump built on %d; want destination, %d, %d",
					w.running(), len(res.PreCopy.Rounds), w.preCopy.dumpedOn, tt.rounds, tt.rounds)
			}
		})
	}
}

// TestAbortMigrationInSync: --abort of a pre-copy stopped in its rounds
// cleans both sides; the container never stopped.
func TestAbortMigrationInSync(t *testing.T) {
	w := preCopyWorldWith(t, slowLink, 131072)
	w.dstPrepared = true
	w.preCopy.preDumped = 1
	rec := NewRecord("m1", PreCopy, t0)
	rec.Container = "web"
	if _, err := rec.Advance(PhaseSync, t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	res, err := AbortMigration(context.Background(), rec, fakeSource{w}, fakeDest{w}, options(w, &collected{}))
	if err != nil {
		t.Fatalf("AbortMigration: %v", err)
	}
	if want := []string{"dst.Abort", "src.Resume"}; !slices.Equal(w.callList(), want) {
		t.Errorf("calls %v, want %v: the source drops its pre-dumps", w.callList(), want)
	}
	if res.Record.Phase != PhaseAborted || w.running() != "source" {
		t.Errorf("record in %s, running: %s; want aborted, the source", res.Record.Phase, w.running())
	}
}
