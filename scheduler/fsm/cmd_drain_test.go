package fsm_test

import (
	"errors"
	"maps"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

func drain(node string) fsm.StartDrain {
	return fsm.StartDrain{Node: node, Deadline: t1.Add(5 * time.Minute), OnDeadline: state.OnDeadlineCheckpoint, MaxParallel: 2,
		Requested: state.Requester{Who: "alice", Role: "operator"}, At: t1}
}

func (h *harness) drain(node string) *state.Drain {
	h.t.Helper()
	d, ok := h.snap().Drain(node)
	if !ok {
		h.t.Fatalf("node %s has no drain", node)
	}
	return d
}

// draining returns moving's cluster with n1 draining.
func draining(tb testing.TB) *harness {
	h := moving(tb)
	h.must(drain("n1"))
	return h
}

// emptied moves web and db off n1 as part of its drain.
func (h *harness) emptied() {
	h.t.Helper()
	for _, c := range []struct{ id, ctr, dest string }{{"m1", "c1", "n2"}, {"m2", "c2", "n3"}} {
		cmd := move(c.id, c.ctr, c.dest)
		cmd.DrainNode = "n1"
		h.must(cmd)
		h.must(phase(c.id, state.MigrationReady))
		h.must(fsm.CommitMove{ID: c.id})
		h.must(fsm.FinishMigration{ID: c.id})
	}
}

func TestStartDrain(t *testing.T) {
	runCases(t, moving, []cmdCase{
		{name: "cordons the node and counts what is on it", cmd: drain("n1"),
			check: func(t *testing.T, h *harness, v any) {
				d := h.drain("n1")
				if d.Status != state.DrainRunning || d.Left != 2 || d.MaxParallel != 2 || !d.Started.Equal(t1) ||
					d.OnDeadline != state.OnDeadlineCheckpoint || !d.Deadline.Equal(t1.Add(5*time.Minute)) || d.Requested.Who != "alice" {
					t.Errorf("drain %+v: want running since %v with 2 containers left, 2 at a time, checkpoint at the deadline", d, t1)
				}
				if n := h.node("n1"); n.Status() != state.NodeDraining {
					t.Errorf("node status %s, want draining", n.Status())
				}
				if v.(*state.Drain).Node != "n1" {
					t.Errorf("result %+v, want the stored drain", v)
				}
				wantEvents(t, h, state.EventNodeDraining, state.EventDrainStarted)
			}},
		{name: "twice is refused",
			setup:   func(h *harness) { h.must(drain("n1")) },
			cmd:     drain("n1"),
			wantErr: fsm.ErrDrainRunning},
		{name: "after one ended, a new one replaces it",
			setup: func(h *harness) {
				h.must(drain("n1"))
				h.must(fsm.EndDrain{Node: "n1", Status: state.DrainFailed, Reason: "deadline", At: t1})
			},
			cmd: drain("n1"),
			check: func(t *testing.T, h *harness, _ any) {
				if d := h.drain("n1"); d.Status != state.DrainRunning || !d.Ended.IsZero() || d.Reason != "" {
					t.Errorf("drain %+v: want a fresh running drain", d)
				}
			}},
		{name: "without a deadline", cmd: fsm.StartDrain{Node: "n2", MaxParallel: 1, At: t1},
			check: func(t *testing.T, h *harness, _ any) {
				if d := h.drain("n2"); !d.Deadline.IsZero() || d.Left != 0 {
					t.Errorf("drain %+v: want no deadline and nothing left", d)
				}
			}},
		{name: "down node",
			setup:   func(h *harness) { h.must(fsm.MarkNodeLost{Name: "n1"}) },
			cmd:     drain("n1"),
			wantErr: fsm.ErrNodeDown},
		{name: "no parallelism", cmd: func() fsm.Command { c := drain("n1"); c.MaxParallel = 0; return c }(), wantErr: fsm.ErrInvalid},
		{name: "unknown policy", cmd: func() fsm.Command { c := drain("n1"); c.OnDeadline = "pray"; return c }(), wantErr: fsm.ErrInvalid},
		{name: "policy without deadline",
			cmd: func() fsm.Command { c := drain("n1"); c.Deadline = time.Time{}; return c }(), wantErr: fsm.ErrInvalid},
		{name: "deadline passed", cmd: func() fsm.Command { c := drain("n1"); c.Deadline = t0; return c }(), wantErr: fsm.ErrInvalid},
		{name: "unknown node", cmd: drain("n9"), wantErr: state.ErrNotFound},
	})
}

func TestUpdateDrain(t *testing.T) {
	blocked := map[string]string{"c1": "no node has 4 GiB free", "c2": "constraint zone=b"}
	runCases(t, draining, []cmdCase{
		{name: "each newly blocked container is an event",
			setup: func(h *harness) {
				h.must(fsm.UpdateDrain{Node: "n1", Blocked: map[string]string{"c2": "constraint zone=b"}, Left: 2})
			},
			cmd: fsm.UpdateDrain{Node: "n1", Blocked: blocked, Left: 1, Moved: 1, At: t1.Add(time.Minute)},
			check: func(t *testing.T, h *harness, _ any) {
				d := h.drain("n1")
				if !maps.Equal(d.Blocked, blocked) || d.Left != 1 || d.Moved != 1 || !d.Updated.Equal(t1.Add(time.Minute)) {
					t.Errorf("drain %+v: want the blocked list and counts recorded", d)
				}
				evs := h.lastEvents()
				if len(evs) != 2 || evs[0].Container != "c1" || evs[0].Node != "n1" || evs[1].Container != "" {
					t.Errorf("events %+v: want one for c1 (newly blocked; c2 was already) and one summary", evs)
				}
				wantEvents(t, h, state.EventDrainUpdated, state.EventDrainUpdated)
			}},
		{name: "the same progress changes nothing",
			setup: func(h *harness) { h.must(fsm.UpdateDrain{Node: "n1", Blocked: blocked, Left: 2}) },
			cmd:   fsm.UpdateDrain{Node: "n1", Blocked: blocked, Left: 2},
			check: func(t *testing.T, h *harness, _ any) { unchanged(t, h) }},
		{name: "no drain running",
			setup:   func(h *harness) { h.must(fsm.EndDrain{Node: "n1", Status: state.DrainCancelled}) },
			cmd:     fsm.UpdateDrain{Node: "n1", Left: 1},
			wantErr: fsm.ErrDrainNotRunning},
		{name: "never drained", cmd: fsm.UpdateDrain{Node: "n2"}, wantErr: fsm.ErrDrainNotRunning},
		{name: "negative count", cmd: fsm.UpdateDrain{Node: "n1", Left: -1}, wantErr: fsm.ErrInvalid},
	})
}

func TestEndDrain(t *testing.T) {
	at := t1.Add(10 * time.Minute)
	runCases(t, draining, []cmdCase{
		{name: "done only when the node is empty", cmd: fsm.EndDrain{Node: "n1", Status: state.DrainDone, At: at},
			wantErr: fsm.ErrNodeNotEmpty},
		{name: "done: the node stays cordoned",
			setup: func(h *harness) { h.emptied() },
			cmd:   fsm.EndDrain{Node: "n1", Status: state.DrainDone, At: at},
			check: func(t *testing.T, h *harness, _ any) {
				d := h.drain("n1")
				if d.Status != state.DrainDone || !d.Ended.Equal(at) || d.Left != 0 {
					t.Errorf("drain %+v: want done at %v with nothing left", d, at)
				}
				if n := h.node("n1"); n.Status() != state.NodeCordoned {
					t.Errorf("node status %s, want cordoned for its maintenance", n.Status())
				}
				wantEvents(t, h, state.EventNodeCordoned, state.EventDrainEnded)
			}},
		{name: "failed leaves the rest running",
			cmd: fsm.EndDrain{Node: "n1", Status: state.DrainFailed, Reason: "deadline passed", At: at},
			check: func(t *testing.T, h *harness, _ any) {
				if d := h.drain("n1"); d.Status != state.DrainFailed || d.Reason != "deadline passed" || d.Left != 2 {
					t.Errorf("drain %+v: want failed with the reason and 2 left", d)
				}
				if n := h.node("n1"); n.Status() != state.NodeCordoned || h.snap().ContainerCount("n1") != 2 {
					t.Errorf("node %s with %d containers, want cordoned with 2", n.Status(), h.snap().ContainerCount("n1"))
				}
			}},
		{name: "the same end again changes nothing",
			setup: func(h *harness) { h.must(fsm.EndDrain{Node: "n1", Status: state.DrainCancelled}) },
			cmd:   fsm.EndDrain{Node: "n1", Status: state.DrainCancelled, At: at},
			check: func(t *testing.T, h *harness, _ any) { unchanged(t, h) }},
		{name: "another end after it ended",
			setup:   func(h *harness) { h.must(fsm.EndDrain{Node: "n1", Status: state.DrainCancelled}) },
			cmd:     fsm.EndDrain{Node: "n1", Status: state.DrainFailed},
			wantErr: fsm.ErrDrainNotRunning},
		{name: "never drained", cmd: fsm.EndDrain{Node: "n2", Status: state.DrainCancelled}, wantErr: fsm.ErrDrainNotRunning},
		{name: "running is not an end", cmd: fsm.EndDrain{Node: "n1", Status: state.DrainRunning}, wantErr: fsm.ErrInvalid},
	})
}

// TestSchedulabilityEndsADrain: the operator's uncordon or cordon, or a
// removal, ends a running drain.
func TestSchedulabilityEndsADrain(t *testing.T) {
	set := func(s state.Schedulability) fsm.Command {
		return fsm.SetSchedulability{Name: "n1", Schedulability: s, At: t1.Add(time.Minute)}
	}
	runCases(t, draining, []cmdCase{
		{name: "uncordon cancels it", cmd: set(state.Schedulable),
			check: func(t *testing.T, h *harness, _ any) {
				d := h.drain("n1")
				if d.Status != state.DrainCancelled || !d.Ended.Equal(t1.Add(time.Minute)) || d.Reason == "" {
					t.Errorf("drain %+v: want cancelled, with why", d)
				}
				if n := h.node("n1"); n.Status() != state.NodeReady {
					t.Errorf("node status %s, want ready", n.Status())
				}
				wantEvents(t, h, state.EventNodeUncordoned, state.EventDrainEnded)
			}},
		{name: "cordon cancels it too", cmd: set(state.Cordoned),
			check: func(t *testing.T, h *harness, _ any) {
				if d := h.drain("n1"); d.Status != state.DrainCancelled {
					t.Errorf("drain %+v: want cancelled", d)
				}
				wantEvents(t, h, state.EventNodeCordoned, state.EventDrainEnded)
			}},
		{name: "removing the emptied node ends it done",
			setup: func(h *harness) { h.emptied() },
			cmd:   fsm.RemoveNode{Name: "n1", At: t1.Add(time.Minute)},
			check: func(t *testing.T, h *harness, _ any) {
				if d := h.drain("n1"); d.Status != state.DrainDone || !d.Ended.Equal(t1.Add(time.Minute)) {
					t.Errorf("drain %+v: want done when the node was removed", d)
				}
				wantEvents(t, h, state.EventNodeRemoved, state.EventDrainEnded)
			}},
		{name: "draining again keeps it", cmd: set(state.Draining),
			check: func(t *testing.T, h *harness, _ any) {
				unchanged(t, h)
				if !h.drain("n1").Running() {
					t.Error("the drain stopped")
				}
			}},
	})
}

// TestDrainToTheEnd drains a node as the leader would: moves within the
// parallel limit, progress, and done once the node is empty.
func TestDrainToTheEnd(t *testing.T) {
	h := moving(t)
	h.must(fsm.StartDrain{Node: "n1", MaxParallel: 1, At: t1})
	m1 := move("m1", "c1", "n2")
	m1.DrainNode = "n1"
	h.must(m1)
	m2 := move("m2", "c2", "n3")
	m2.DrainNode = "n1"
	if res := h.apply(m2); !errors.Is(res.Err, fsm.ErrDrainParallel) {
		t.Fatalf("a second move beyond MaxParallel 1: %v, want ErrDrainParallel", res.Err)
	}
	h.must(phase("m1", state.MigrationReady))
	h.must(fsm.CommitMove{ID: "m1"})
	// Committed but not done: the move still counts against the limit.
	if res := h.apply(m2); !errors.Is(res.Err, fsm.ErrDrainParallel) {
		t.Fatalf("a second move while the first is committed, not done: %v, want ErrDrainParallel", res.Err)
	}
	h.must(fsm.FinishMigration{ID: "m1"})
	h.must(fsm.UpdateDrain{Node: "n1", Left: 1, Moved: 1})
	h.must(m2)
	h.must(phase("m2", state.MigrationReady))
	h.must(fsm.CommitMove{ID: "m2"})
	h.must(fsm.FinishMigration{ID: "m2"})
	h.must(fsm.EndDrain{Node: "n1", Status: state.DrainDone})
	if n, d := h.node("n1"), h.drain("n1"); n.Status() != state.NodeCordoned || d.Status != state.DrainDone ||
		h.snap().ContainerCount("n1") != 0 || len(h.snap().Migrations(state.MigrationFilter{DrainNode: "n1"})) != 2 {
		t.Errorf("node %s, drain %s, %d containers on n1: want cordoned, done, empty, with two moves recorded",
			n.Status(), d.Status, h.snap().ContainerCount("n1"))
	}
}
