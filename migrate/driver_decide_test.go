package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
)

// The caller's decision (DriveOptions.Decide) is the move's commit point:
// the scheduler records the new node and generation in raft between the
// destination's ready copy and its commit.

func TestDecideIsTheCommitPoint(t *testing.T) {
	errRefused := errors.New("stale generation")
	cases := []struct {
		name string
		// decide is what Decide returns, by call.
		decide func(call int) error
		// commitFails makes the destination's first Commit fail.
		commitFails bool
		wantRunning string
		wantErr     error
		wantCalls   []string
	}{
		{
			name:        "decided: the destination runs it",
			decide:      func(int) error { return nil },
			wantRunning: "destination",
			wantCalls:   []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "decide", "dst.Commit", "src.Finish"},
		},
		{
			name:        "refused: the move aborts and the source runs it",
			decide:      func(int) error { return errRefused },
			wantRunning: "source",
			wantErr:     errRefused,
			wantCalls:   []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "decide", "dst.Abort", "src.Resume"},
		},
		{
			name:        "unknown: neither aborts nor commits",
			decide:      func(int) error { return fmt.Errorf("raft apply timed out: %w", ErrDecisionUnknown) },
			wantRunning: "none",
			wantErr:     ErrHeld,
			wantCalls:   []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "decide"},
		},
		{
			// Once decided, a failed commit is never answered by an
			// abort: the move only finishes.
			name:        "decided, the destination's commit fails once: it is not aborted",
			decide:      func(int) error { return nil },
			commitFails: true,
			wantRunning: "destination",
			wantCalls:   []string{"src.Describe", "dst.Prepare", "src.Dump", "dst.Receive", "src.Send", "dst.Restore", "decide", "dst.Commit", "dst.Commit", "src.Finish"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			if tc.commitFails {
				w.faults["dst.Commit"] = fault{err: errors.New("connection reset"), times: 1}
			}
			opts := options(w, &collected{})
			calls := 0
			opts.Decide = func(ctx context.Context, rec *Record) error {
				if rec.Phase != PhaseReady {
					t.Errorf("Decide called in %s, want %s", rec.Phase, PhaseReady)
				}
				calls++
				w.mu.Lock()
				w.calls = append(w.calls, "decide")
				w.mu.Unlock()
				return tc.decide(calls)
			}
			_, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, opts)
			w.check()
			if tc.wantErr == nil && err != nil {
				t.Fatalf("Drive: %v", err)
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Fatalf("Drive: %v, want %v", err, tc.wantErr)
			}
			if got := w.running(); got != tc.wantRunning {
				t.Errorf("running copy: %s, want %s", got, tc.wantRunning)
			}
			if got := w.callList(); !slices.Equal(got, tc.wantCalls) {
				t.Errorf("calls:\n got %v\nwant %v", got, tc.wantCalls)
			}
		})
	}
}

func TestResumeAfterAnUnknownDecisionAsksAgain(t *testing.T) {
	w := newWorld(t)
	c := &collected{}
	opts := options(w, c)
	opts.Decide = func(context.Context, *Record) error { return ErrDecisionUnknown }
	res, err := Drive(context.Background(), webMigration, fakeSource{w}, fakeDest{w}, opts)
	var de *DecisionError
	if !errors.As(err, &de) || de.ID != "m1" {
		t.Fatalf("Drive: %v, want a *DecisionError for m1", err)
	}
	// The caller learns the decision was made: Resume finishes the move.
	opts.Decide = func(context.Context, *Record) error { return nil }
	if _, err := Resume(context.Background(), res.Record, fakeSource{w}, fakeDest{w}, opts); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	w.check()
	if got := w.running(); got != "destination" {
		t.Errorf("running copy after Resume: %s, want the destination's", got)
	}
}
