package history

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
)

const checkTimeout = 10 * time.Second

// clock hands out times one millisecond apart, so that a test lays
// entries out in order (or overlapping) on purpose.
type clock struct{ t time.Time }

func (c *clock) next() time.Time {
	c.t = c.t.Add(time.Millisecond)
	return c.t
}

// recorder is a Recorder whose entries take their times from c, both
// ends, instead of the wall clock.
type recorder struct {
	*Recorder
	c *clock
}

func newRecorder() *recorder {
	r := New()
	return &recorder{Recorder: r, c: &clock{t: r.start}}
}

// entry records one entry spanning [call, ret] on c.
func (r *recorder) entry(in input, out output, call, ret time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, opAt(r.Recorder, in, out, call, ret))
	if in.kind == kindMove {
		r.moves[in.id] = len(r.ops) - 1
	}
	return len(r.ops) - 1
}

func (r *recorder) placed(node string, gen uint64) {
	t := r.c.next()
	r.entry(input{kind: kindPlaced, container: "w", node: node, generation: gen}, output{}, t, t)
}

func (r *recorder) said(node string, gen uint64) {
	call := r.c.next()
	r.entry(input{kind: kindClusterSaid, container: "w"}, output{node: node, generation: gen}, call, r.c.next())
}

func (r *recorder) saw(node string, running bool) {
	call := r.c.next()
	r.entry(input{kind: kindHostSaw, container: "w", node: node}, output{running: running}, call, r.c.next())
}

// move records a move, acknowledged now; settle (if not Open) ends it
// after during has run: entries recorded by during overlap the move.
func (r *recorder) move(id, from, to string, gen uint64, outcome Outcome, during func()) {
	call := r.c.next()
	i := r.entry(input{kind: kindMove, container: "w", id: id, from: from, to: to, generation: gen}, output{outcome: Open}, call, call)
	if during != nil {
		during()
	}
	r.mu.Lock()
	r.ops[i].Return = 1<<63 - 1
	r.mu.Unlock()
	if outcome != Open {
		ret := r.c.next()
		r.mu.Lock()
		r.ops[i].Output = output{outcome: outcome}
		r.ops[i].Return = r.at(ret)
		r.mu.Unlock()
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		history func(r *recorder)
		// wantErr: nil, ErrViolation; wantText: what the report names.
		wantErr  error
		wantText string
	}{
		{name: "a committed move: the destination runs it at the next generation", history: func(r *recorder) {
			r.placed("n1", 1)
			r.saw("n1", true)
			r.move("m1", "n1", "n2", 1, Committed, func() {
				r.saw("n1", false)
				r.saw("n2", false)
			})
			r.said("n2", 2)
			r.saw("n2", true)
			r.saw("n1", false)
		}},
		{name: "a rolled back move: the source runs it at its generation", history: func(r *recorder) {
			r.placed("n1", 1)
			r.move("m1", "n1", "n2", 1, RolledBack, func() { r.saw("n1", false) })
			r.said("n1", 1)
			r.saw("n1", true)
			r.saw("n2", false)
		}},
		{name: "seen on the destination during a move that committed", history: func(r *recorder) {
			r.placed("n1", 1)
			r.move("m1", "n1", "n2", 1, Committed, func() {
				r.saw("n1", true) // before the freeze
				r.saw("n2", true) // after the commit
			})
			r.said("n2", 2)
		}},
		{name: "two moves in a row", history: func(r *recorder) {
			r.placed("n1", 1)
			r.move("m1", "n1", "n2", 1, Committed, nil)
			r.move("m2", "n2", "n3", 2, RolledBack, nil)
			r.move("m3", "n2", "n1", 2, Committed, nil)
			r.said("n1", 3)
			r.saw("n1", true)
		}},
		{name: "the destination runs a copy of a move that rolled back", wantErr: ErrViolation, wantText: "runc on n2 showed w running",
			history: func(r *recorder) {
				r.placed("n1", 1)
				r.move("m1", "n1", "n2", 1, RolledBack, nil)
				r.saw("n2", true)
			}},
		{name: "the source still runs its copy after the commit", wantErr: ErrViolation, wantText: "runc on n1 showed w running",
			history: func(r *recorder) {
				r.placed("n1", 1)
				r.move("m1", "n1", "n2", 1, Committed, nil)
				r.saw("n2", true)
				r.saw("n1", true)
			}},
		{name: "two copies after a move", wantErr: ErrViolation, history: func(r *recorder) {
			r.placed("n1", 1)
			r.move("m1", "n1", "n2", 1, Committed, nil)
			r.saw("n1", true)
			r.saw("n2", true)
		}},
		{name: "the cluster went back a generation", wantErr: ErrViolation, wantText: "generation 1", history: func(r *recorder) {
			r.placed("n1", 1)
			r.move("m1", "n1", "n2", 1, Committed, nil)
			r.said("n2", 2)
			r.said("n1", 1)
		}},
		{name: "a committed move that did not bump the generation", wantErr: ErrViolation, history: func(r *recorder) {
			r.placed("n1", 1)
			r.move("m1", "n1", "n2", 1, Committed, nil)
			r.said("n2", 1)
		}},
		{name: "a move from a generation the container no longer had", wantErr: ErrViolation, history: func(r *recorder) {
			r.placed("n1", 1)
			r.move("m1", "n1", "n2", 1, Committed, nil)
			r.move("m2", "n2", "n3", 1, Committed, nil)
		}},
		{name: "an acknowledged move never settled", wantErr: ErrViolation, wantText: "did neither: migration m1",
			history: func(r *recorder) {
				r.placed("n1", 1)
				r.move("m1", "n1", "n2", 1, Open, nil)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRecorder()
			tt.history(r)
			err := r.Check(checkTimeout)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("Check = %v, want %v\nhistory:\n%s", err, tt.wantErr, r)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("Check = %v, want it to name %q", err, tt.wantText)
			}
		})
	}
}

// TestContainersAreCheckedApart: one container's entries say nothing of
// another's.
func TestContainersAreCheckedApart(t *testing.T) {
	r := New()
	r.Placed("a", "n1", 1)
	r.Placed("b", "n2", 1)
	r.HostSaw("a", "n1", time.Now(), true)
	r.HostSaw("b", "n2", time.Now(), true)
	r.ClusterSaid("b", time.Now(), "n2", 1)
	if err := r.Check(checkTimeout); err != nil {
		t.Fatalf("Check = %v\n%s", err, r)
	}
	r.HostSaw("b", "n1", time.Now(), true)
	if err := r.Check(checkTimeout); !errors.Is(err, ErrViolation) || !strings.Contains(err.Error(), "container b") {
		t.Fatalf("Check = %v, want a violation of container b\n%s", err, r)
	}
}

// TestRecorderMoves drives the exported API as a test would: a move
// acknowledged, observed, settled.
func TestRecorderMoves(t *testing.T) {
	r := New()
	r.Placed("w", "n1", 4)
	call := time.Now()
	r.MoveAcknowledged("w", "m1", "n1", "n2", 4, call)
	if err := r.Check(checkTimeout); !errors.Is(err, ErrViolation) {
		t.Fatalf("Check of an open move = %v, want a violation", err)
	}
	if err := r.MoveSettled("m1", Committed); err != nil {
		t.Fatal(err)
	}
	if err := r.MoveSettled("m1", Committed); err != nil {
		t.Fatalf("settled again alike: %v", err)
	}
	if err := r.MoveSettled("m1", RolledBack); !errors.Is(err, ErrViolation) {
		t.Fatalf("settled again otherwise: %v, want a violation", err)
	}
	if err := r.MoveSettled("m2", Committed); err == nil {
		t.Fatal("an unknown migration was settled")
	}
	if err := r.MoveSettled("m1", Open); err == nil {
		t.Fatal("a migration was settled open")
	}
	r.ClusterSaid("w", time.Now(), "n2", 5)
	r.HostSaw("w", "n2", time.Now(), true)
	if err := r.Check(checkTimeout); err != nil {
		t.Fatalf("Check = %v\n%s", err, r)
	}
	var html bytes.Buffer
	if err := r.Visualize(&html, checkTimeout); err != nil || !strings.Contains(html.String(), "<html") {
		t.Errorf("Visualize: %v, %d bytes", err, html.Len())
	}
}
