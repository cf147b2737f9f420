package migrate

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/datachan"
)

// testStep is the step timeout of these tests, and hang how long a call
// that does not answer takes to come back (it then finds its context
// expired, as a call to a stopped agent would).
const (
	testStep = 20 * time.Millisecond
	hang     = 5 * testStep
)

// TestStepTimeouts makes one call hang (a stopped, hung or cut-off
// agent): the driver gives up on it after the step timeout, and the
// migration ends as a failure of that call would end it.
func TestStepTimeouts(t *testing.T) {
	tests := []struct {
		name    string
		hanging string
		faults  map[string]fault
		// wantRunning: "source", "destination" or "none" (held).
		wantRunning string
		wantPhase   Phase
		wantHeld    bool
		wantErr     bool
		wantWarning bool
		wantCalls   []string
	}{
		{
			name: "describe hangs: nothing to undo", hanging: "src.Describe",
			wantRunning: "source", wantPhase: PhaseAborted, wantErr: true,
			wantCalls: []string{"src.Describe"},
		},
		{
			name: "prepare hangs: the destination aborts, the source never stopped", hanging: "dst.Prepare",
			wantRunning: "source", wantPhase: PhaseAborted, wantErr: true,
			wantCalls: []string{"src.Describe", "dst.Prepare", "dst.Abort"},
		},
		{
			name: "dump hangs: the destination aborts, then the source resumes", hanging: "src.Dump",
			wantRunning: "source", wantPhase: PhaseAborted, wantErr: true,
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Abort", "src.Resume"},
		},
		{
			name: "restore hangs: aborted, the source resumes", hanging: "dst.Restore",
			wantRunning: "source", wantPhase: PhaseAborted, wantErr: true,
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Abort", "src.Resume"},
		},
		{
			name: "commit hangs: the destination, asked to abort, had not committed", hanging: "dst.Commit",
			wantRunning: "source", wantPhase: PhaseAborted, wantErr: true,
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "dst.Abort", "src.Resume"},
		},
		{
			name: "finish hangs: the move is made, with a warning", hanging: "src.Finish",
			wantRunning: "destination", wantPhase: PhaseCommitted, wantWarning: true,
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Commit", "src.Finish"},
		},
		{
			name: "abort hangs after a failed restore: held, the source keeps its copy stopped", hanging: "dst.Abort",
			faults:      map[string]fault{"dst.Restore": {err: errBoom}},
			wantRunning: "none", wantPhase: PhaseRestore, wantErr: true, wantHeld: true,
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Abort", "dst.Abort", "dst.Abort"},
		},
		{
			name: "resume hangs after the destination aborted: held", hanging: "src.Resume",
			faults:      map[string]fault{"dst.Restore": {err: errBoom}},
			wantRunning: "none", wantPhase: PhaseRestore, wantErr: true, wantHeld: true,
			wantCalls: []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "dst.Abort", "src.Resume", "src.Resume", "src.Resume"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // each waits on its own timers
			w := newWorld(t)
			if tt.faults != nil {
				w.faults = tt.faults
			}
			w.onCall[tt.hanging] = func() { time.Sleep(hang) }
			opts := options(w, &collected{})
			opts.StepTimeout = testStep
			res, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, opts)
			w.check()
			if (err != nil) != tt.wantErr || errors.Is(err, ErrHeld) != tt.wantHeld {
				t.Fatalf("err = %v, want error %v, held %v", err, tt.wantErr, tt.wantHeld)
			}
			if err != nil && !errors.Is(err, ErrStepTimeout) {
				t.Errorf("err = %v, want it to say that %s had no answer within the step timeout", err, tt.hanging)
			}
			if got := w.running(); got != tt.wantRunning {
				t.Errorf("running copy: %s, want %s", got, tt.wantRunning)
			}
			if res.Record.Phase != tt.wantPhase {
				t.Errorf("record in %s, want %s", res.Record.Phase, tt.wantPhase)
			}
			if got := len(res.Warnings) > 0; got != tt.wantWarning {
				t.Errorf("warnings %q, want some: %v", res.Warnings, tt.wantWarning)
			}
			if calls := w.callList(); !slices.Equal(calls, tt.wantCalls) {
				t.Errorf("calls %v, want %v", calls, tt.wantCalls)
			}
		})
	}
}

// stallSource records the stall timeout that each Send's context
// carries, which the agent's client sends on to the agent.
type stallSource struct {
	fakeSource
	got *time.Duration
}

func (s stallSource) Send(ctx context.Context, id, address, token, checksum string, progress func(done, total int64)) error {
	*s.got = datachan.StallTimeout(ctx)
	return s.fakeSource.Send(ctx, id, address, token, checksum, progress)
}

// TestStallTimeoutReachesTheAgents: the transfer's calls carry the
// driver's stall timeout, or none, so that the agents use their own.
func TestStallTimeoutReachesTheAgents(t *testing.T) {
	for _, stall := range []time.Duration{0, 1500 * time.Millisecond} {
		t.Run(stall.String(), func(t *testing.T) {
			w := newWorld(t)
			opts := options(w, &collected{})
			opts.StallTimeout = stall
			got := time.Duration(-1)
			if _, err := Drive(context.Background(), webMigration, stallSource{fakeSource{w}, &got}, fakeDest{w}, opts); err != nil {
				t.Fatal(err)
			}
			if got != stall {
				t.Errorf("Send's context carries a stall timeout of %s, want %s", got, stall)
			}
		})
	}
}

// deadlineCtx is a context whose deadline and error are set by hand: a
// timer that has not fired yet, or one that has.
type deadlineCtx struct {
	context.Context
	deadline time.Time
	err      error
}

func (c deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, !c.deadline.IsZero() }
func (c deadlineCtx) Err() error                  { return c.err }

func TestRanOut(t *testing.T) {
	now := time.Now()
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	bg := context.Background()
	for _, tt := range []struct {
		name         string
		parent, step context.Context
		want         bool
	}{
		{"the step's deadline passed, its timer not yet fired", bg, deadlineCtx{bg, past, nil}, true},
		{"the step's timer fired", bg, deadlineCtx{bg, past, context.DeadlineExceeded}, true},
		{"the step's deadline is ahead", bg, deadlineCtx{bg, future, nil}, false},
		{"the caller's deadline bound the step", deadlineCtx{bg, past, nil}, deadlineCtx{bg, past, nil}, false},
		{"the caller was cancelled", deadlineCtx{bg, time.Time{}, context.Canceled}, deadlineCtx{bg, past, context.Canceled}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := ranOut(tt.parent, tt.step); got != tt.want {
				t.Errorf("ranOut = %v, want %v", got, tt.want)
			}
		})
	}
}
