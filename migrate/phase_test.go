package migrate

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// advanceTo walks a new record through the given phases, one millisecond
// apart.
func advanceTo(t *testing.T, phases ...Phase) *Record {
	t.Helper()
	r := NewRecord("m1", StopCopy, at(0))
	for i, p := range phases {
		if _, err := r.Advance(p, at(i+1)); err != nil {
			t.Fatalf("advance to %s: %v", p, err)
		}
	}
	return r
}

func TestAdvance(t *testing.T) {
	tests := []struct {
		name    string
		from    []Phase
		to      Phase
		changed bool
		err     error
	}{
		{name: "forward", from: nil, to: PhaseSync, changed: true},
		{name: "skipping a phase", from: nil, to: PhaseDump, changed: true},
		{name: "the same phase again does nothing", from: []Phase{PhaseSync, PhaseDump}, to: PhaseDump},
		{name: "backwards", from: []Phase{PhaseSync, PhaseDump}, to: PhaseSync, err: ErrBackwards},
		{name: "commit when ready", from: []Phase{PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady}, to: PhaseCommitted, changed: true},
		{name: "commit before ready", from: []Phase{PhaseDump, PhaseTransfer}, to: PhaseCommitted, err: ErrNotReady},
		{name: "done after commit", from: []Phase{PhaseReady, PhaseCommitted}, to: PhaseDone, changed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := advanceTo(t, tt.from...)
			before := r.Phase
			changed, err := r.Advance(tt.to, at(100))
			if !errors.Is(err, tt.err) || (err == nil) != (tt.err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if changed != tt.changed {
				t.Errorf("changed = %v, want %v", changed, tt.changed)
			}
			if err != nil && r.Phase != before {
				t.Errorf("a refused move changed the phase from %s to %s", before, r.Phase)
			}
		})
	}
}

// TestCommitAndAbortExcludeEachOther is the fencing rule: whatever order
// and however often a lost driver repeats its calls, a migration ends
// committed or aborted, never both.
func TestCommitAndAbortExcludeEachOther(t *testing.T) {
	r := advanceTo(t, PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady)
	if changed, err := r.Abort("destination disk full", at(50)); !changed || err != nil {
		t.Fatalf("abort of a ready migration: changed %v, err %v", changed, err)
	}
	if changed, err := r.Abort("again", at(51)); changed || err != nil {
		t.Errorf("second abort: changed %v, err %v, want a no-op", changed, err)
	}
	if r.Error != "destination disk full" {
		t.Errorf("error = %q, want the first abort's reason", r.Error)
	}
	if _, err := r.Advance(PhaseCommitted, at(52)); !errors.Is(err, ErrAborted) {
		t.Errorf("commit after abort: err = %v, want ErrAborted", err)
	}
	c := advanceTo(t, PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady, PhaseCommitted)
	if _, err := c.Abort("late abort", at(60)); !errors.Is(err, ErrCommitted) {
		t.Errorf("abort after commit: err = %v, want ErrCommitted", err)
	}
}

func TestDowntimeAndPhaseDurations(t *testing.T) {
	r := NewRecord("m2", Stream, at(0))
	for _, step := range []struct {
		p  Phase
		ms int
	}{{PhaseSync, 100}, {PhaseDump, 400}, {PhaseTransfer, 450}, {PhaseRestore, 900}, {PhaseReady, 1200}, {PhaseCommitted, 1210}, {PhaseDone, 1250}} {
		if _, err := r.Advance(step.p, at(step.ms)); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := r.Downtime(), 850*time.Millisecond; got != want {
		t.Errorf("downtime = %v, want %v (dump to done)", got, want)
	}
	d := r.PhaseDurations()
	if d[PhasePrepare] != 100*time.Millisecond || d[PhaseTransfer] != 450*time.Millisecond || d[PhaseCommitted] != 40*time.Millisecond {
		t.Errorf("phase durations = %v", d)
	}
	if _, open := d[PhaseDone]; open {
		t.Errorf("the current phase has no duration yet: %v", d)
	}

	a := advanceTo(t, PhaseSync)
	if a.Downtime() != 0 {
		t.Errorf("downtime before any freeze = %v, want 0", a.Downtime())
	}
	a = advanceTo(t, PhaseDump, PhaseTransfer) // dump at 1 ms
	if _, err := a.Abort("channel cut", at(30)); err != nil {
		t.Fatal(err)
	}
	if got := a.Downtime(); got != 29*time.Millisecond {
		t.Errorf("downtime of an aborted move = %v, want dump to abort (29ms)", got)
	}
}
