package fsm_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

var t1 = t0.Add(time.Minute)

// moving returns a cluster of n1, n2 and n3 with web (c1, reported
// running) and db (c2) on n1.
func moving(tb testing.TB) *harness {
	h := cluster(tb)
	h.must(fsm.RegisterNode{Node: testNode("n3"), At: t0})
	h.place("c1", "web", "n1", 100)
	h.place("c2", "db", "n1", 200)
	h.must(fsm.ReportContainers{Node: "n1", Epoch: 1, At: t0, Reports: []fsm.Report{{ID: "c1", State: state.ReportedRunning}}})
	return h
}

// move is an operator's move of a container from n1.
func move(id, container, dest string) fsm.CreateMigration {
	return fsm.CreateMigration{ID: id, Container: container, Source: "n1", Dest: dest, Strategy: "stop-copy",
		Reason: "operator", Requested: state.Requester{Who: "alice", Role: "operator"},
		WhyDestination: "most free memory", WhyStrategy: "pre-copy needs soft-dirty", At: t1}
}

func phase(id string, p state.MigrationPhase) fsm.RecordMigrationPhase {
	return fsm.RecordMigrationPhase{ID: id, Phase: p, At: t1.Add(time.Duration(p.Order()) * time.Second)}
}

// ready creates migration id of c1 from n1 to n2 and brings it to ready.
func (h *harness) ready(id string) {
	h.t.Helper()
	h.must(move(id, "c1", "n2"))
	h.must(phase(id, state.MigrationReady))
}

func (h *harness) migration(id string) *state.Migration {
	h.t.Helper()
	m, ok := h.snap().Migration(id)
	if !ok {
		h.t.Fatalf("migration %s is not in the state", id)
	}
	return m
}

// lastEvents returns the events of the last applied index.
func (h *harness) lastEvents() []state.Event {
	h.t.Helper()
	evs, _, err := h.f.Store().EventsSince(h.index - 1)
	if err != nil {
		h.t.Fatalf("events: %v", err)
	}
	return evs
}

// wantMigrationEvent checks that the last write emitted one event of kind
// that names the migration, its container and the node.
func wantMigrationEvent(t *testing.T, h *harness, kind, id, container, node string) {
	t.Helper()
	for _, e := range h.lastEvents() {
		if e.Kind == kind {
			if e.Migration != id || e.Container != container || e.Node != node || e.Message == "" {
				t.Errorf("%s event %+v: want migration %s, container %s, node %s and a message", kind, e, id, container, node)
			}
			return
		}
	}
	t.Errorf("no %s event in %v", kind, h.eventKinds())
}

// unchanged checks that the last command changed nothing: no table
// records its index, no event.
func unchanged(t *testing.T, h *harness) {
	t.Helper()
	if got := h.snap().Index(); got == h.index {
		t.Errorf("the state changed at index %d, want no change", got)
	}
	wantEvents(t, h)
}

func TestCreateMigration(t *testing.T) {
	runCases(t, moving, []cmdCase{
		{name: "recorded in prepare at the container's generation", cmd: move("m1", "c1", "n2"),
			check: func(t *testing.T, h *harness, v any) {
				m := h.migration("m1")
				if m.Phase != state.MigrationPrepare || m.Generation != 1 || m.ContainerName != "web" || m.Container != "c1" ||
					m.Source != "n1" || m.Dest != "n2" || m.CreatedIndex != h.index || !m.Started[state.MigrationPrepare].Equal(t1) ||
					!m.Created.Equal(t1) || m.Requested.Who != "alice" || m.WhyDestination == "" || m.WhyStrategy == "" {
					t.Errorf("migration %+v: want web (c1) n1 -> n2 in prepare since %v at generation 1, created at index %d, with its reasons",
						m, t1, h.index)
				}
				if v.(*state.Migration).ID != "m1" {
					t.Errorf("result %+v, want the stored migration", v)
				}
				if c := h.container("c1"); c.Node != "n1" || c.Generation != 1 {
					t.Errorf("container %+v moved before its commit", c)
				}
				if got := h.snap().Incoming("n2"); got.MilliCPU != 100 {
					t.Errorf("n2 incoming %+v, want web's request", got)
				}
				wantMigrationEvent(t, h, state.EventMigrationCreated, "m1", "c1", "n1")
			}},
		{name: "a second open migration is refused",
			setup:   func(h *harness) { h.must(move("m1", "c1", "n2")) },
			cmd:     move("m2", "c1", "n3"),
			wantErr: state.ErrMigrationOpen},
		{name: "once the first is aborted the container may move again",
			setup: func(h *harness) {
				h.must(move("m1", "c1", "n2"))
				h.must(fsm.AbortMigration{ID: "m1", Error: "destination full"})
			},
			cmd: move("m2", "c1", "n3"),
			check: func(t *testing.T, h *harness, _ any) {
				if m, ok := h.snap().OpenMigrationOf("c1"); !ok || m.ID != "m2" {
					t.Errorf("open migration of c1: %+v, want m2", m)
				}
			}},
		{name: "another container moves at the same time",
			setup: func(h *harness) { h.must(move("m1", "c1", "n2")) },
			cmd:   move("m2", "c2", "n2")},
		{name: "the same ID again (a retried proposal)",
			setup:   func(h *harness) { h.must(move("m1", "c1", "n2")) },
			cmd:     move("m1", "c2", "n2"),
			wantErr: fsm.ErrMigrationExists},
		{name: "not on the source",
			cmd: func() fsm.Command { c := move("m1", "c1", "n3"); c.Source = "n2"; return c }(), wantErr: fsm.ErrWrongNode},
		{name: "destination is the source", cmd: move("m1", "c1", "n1"), wantErr: fsm.ErrInvalid},
		{name: "destination cordoned",
			setup:   func(h *harness) { h.must(fsm.SetSchedulability{Name: "n2", Schedulability: state.Cordoned}) },
			cmd:     move("m1", "c1", "n2"),
			wantErr: fsm.ErrNodeNotReady},
		{name: "destination suspect",
			setup:   func(h *harness) { h.must(fsm.SetNodeHealth{Name: "n2", Health: state.HealthSuspect}) },
			cmd:     move("m1", "c1", "n2"),
			wantErr: fsm.ErrNodeNotReady},
		{name: "destination unknown", cmd: move("m1", "c1", "n9"), wantErr: state.ErrNotFound},
		{name: "source down",
			setup:   func(h *harness) { h.must(fsm.SetNodeHealth{Name: "n1", Health: state.HealthDown}) },
			cmd:     move("m1", "c1", "n2"),
			wantErr: fsm.ErrNodeDown},
		{name: "container lost",
			setup: func(h *harness) {
				h.must(fsm.ReportContainers{Node: "n1", Epoch: 1, Complete: true, Seen: []string{"c2"}})
			},
			cmd:     move("m1", "c1", "n2"),
			wantErr: fsm.ErrInvalid},
		{name: "unknown container", cmd: move("m1", "zz", "n2"), wantErr: state.ErrNotFound},
		{name: "no strategy", cmd: func() fsm.Command { c := move("m1", "c1", "n2"); c.Strategy = ""; return c }(), wantErr: fsm.ErrInvalid},
		{name: "part of a drain that does not run",
			cmd:     func() fsm.Command { c := move("m1", "c1", "n2"); c.DrainNode = "n1"; return c }(),
			wantErr: fsm.ErrDrainNotRunning},
		{name: "part of a drain at its parallel limit",
			setup: func(h *harness) {
				h.must(fsm.StartDrain{Node: "n1", MaxParallel: 1, At: t0})
				c := move("m1", "c1", "n2")
				c.DrainNode = "n1"
				h.must(c)
			},
			cmd:     func() fsm.Command { c := move("m2", "c2", "n3"); c.DrainNode = "n1"; return c }(),
			wantErr: fsm.ErrDrainParallel},
		{name: "part of a drain",
			setup: func(h *harness) { h.must(fsm.StartDrain{Node: "n1", MaxParallel: 1, At: t0}) },
			cmd:   func() fsm.Command { c := move("m1", "c1", "n2"); c.DrainNode, c.Reason = "n1", "drain n1"; return c }(),
			check: func(t *testing.T, h *harness, _ any) {
				if m := h.migration("m1"); m.DrainNode != "n1" || m.Reason != "drain n1" {
					t.Errorf("migration %+v: want it part of n1's drain", m)
				}
			}},
	})
}

func TestRecordMigrationPhase(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := moving(tb)
		h.must(move("m1", "c1", "n2"))
		return h
	}
	stats := &state.MigrationStats{Bytes: 4096, Phases: map[state.MigrationPhase]time.Duration{state.MigrationPrepare: time.Second}}
	runCases(t, base, []cmdCase{
		{name: "forward, skipping sync",
			cmd: fsm.RecordMigrationPhase{ID: "m1", Phase: state.MigrationDump, Stats: stats, Error: "sync retried once", At: t1.Add(time.Second)},
			check: func(t *testing.T, h *harness, v any) {
				m := h.migration("m1")
				if m.Phase != state.MigrationDump || !m.Started[state.MigrationDump].Equal(t1.Add(time.Second)) ||
					!m.Started[state.MigrationPrepare].Equal(t1) || m.Stats.Bytes != 4096 || m.Error != "sync retried once" {
					t.Errorf("migration %+v: want dump since %v, prepare's start kept, the stats and error recorded", m, t1.Add(time.Second))
				}
				if _, ok := m.Started[state.MigrationSync]; ok {
					t.Error("a skipped phase has a start time")
				}
				wantMigrationEvent(t, h, state.EventMigrationPhase, "m1", "c1", "n1")
			}},
		{name: "the same phase again changes nothing",
			setup: func(h *harness) { h.must(phase("m1", state.MigrationDump)) },
			cmd:   fsm.RecordMigrationPhase{ID: "m1", Phase: state.MigrationDump, Error: "late", Stats: stats, At: t1.Add(time.Hour)},
			check: func(t *testing.T, h *harness, v any) {
				unchanged(t, h)
				if m := h.migration("m1"); m.Error != "" || m.Stats.Bytes != 0 || !m.Started[state.MigrationDump].Equal(t1.Add(3*time.Second)) {
					t.Errorf("migration %+v changed", m)
				}
				if v.(*state.Migration).Phase != state.MigrationDump {
					t.Errorf("result %+v, want the migration as stored", v)
				}
			}},
		{name: "backwards",
			setup:   func(h *harness) { h.must(phase("m1", state.MigrationTransfer)) },
			cmd:     phase("m1", state.MigrationSync),
			wantErr: fsm.ErrBackwards},
		{name: "after an abort",
			setup:   func(h *harness) { h.must(fsm.AbortMigration{ID: "m1", Error: "boom"}) },
			cmd:     phase("m1", state.MigrationDump),
			wantErr: fsm.ErrAborted},
		{name: "after the commit",
			setup: func(h *harness) {
				h.must(phase("m1", state.MigrationReady))
				h.must(fsm.CommitMove{ID: "m1"})
			},
			cmd:     phase("m1", state.MigrationReady),
			wantErr: fsm.ErrBackwards},
		{name: "committed is CommitMove's", cmd: phase("m1", state.MigrationCommitted), wantErr: fsm.ErrInvalid},
		{name: "done is FinishMigration's", cmd: phase("m1", state.MigrationDone), wantErr: fsm.ErrInvalid},
		{name: "aborted is AbortMigration's", cmd: phase("m1", state.MigrationAborted), wantErr: fsm.ErrInvalid},
		{name: "unknown phase", cmd: phase("m1", "paused"), wantErr: fsm.ErrInvalid},
		{name: "unknown migration", cmd: phase("zz", state.MigrationDump), wantErr: state.ErrNotFound},
	})
}

// A container `run --node` placed keeps that placement only while it
// stays there: a committed move elsewhere drops it.
func TestCommitMoveDropsARunNodePlacement(t *testing.T) {
	h := cluster(t)
	h.must(fsm.RegisterNode{Node: testNode("n3"), At: t0})
	s := spec(100)
	s.Node = "n1"
	h.must(fsm.PlaceContainers{Containers: []fsm.NewContainer{{ID: "c9", Name: "pinned", Node: "n1", Spec: s}}, At: t0})
	h.must(fsm.ReportContainers{Node: "n1", Epoch: 1, At: t0, Reports: []fsm.Report{{ID: "c9", State: state.ReportedRunning}}})
	h.must(move("m9", "c9", "n3"))
	h.must(phase("m9", state.MigrationReady))
	h.must(fsm.CommitMove{ID: "m9", At: t1})
	if c := h.container("c9"); c.Node != "n3" || c.Spec.Node != "" {
		t.Errorf("container %+v: want on n3 with its run --node placement dropped", c)
	}
}

func TestCommitMove(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := moving(tb)
		h.ready("m1")
		return h
	}
	commit := fsm.CommitMove{ID: "m1", At: t1.Add(time.Minute)}
	runCases(t, base, []cmdCase{
		{name: "node and generation change with the phase", cmd: commit,
			check: func(t *testing.T, h *harness, v any) {
				if v.(uint64) != 2 {
					t.Errorf("result %v, want the new generation 2", v)
				}
				c := h.container("c1")
				if c.Node != "n2" || c.Generation != 2 || c.Reported != state.ReportedMigrating || !c.ReportedAt.Equal(commit.At) {
					t.Errorf("container %+v: want on n2 at generation 2, migrating since %v", c, commit.At)
				}
				if m := h.migration("m1"); m.Phase != state.MigrationCommitted || !m.Started[state.MigrationCommitted].Equal(commit.At) {
					t.Errorf("migration %+v: want committed at %v", m, commit.At)
				}
				snap := h.snap()
				// One raft entry changed both tables.
				if snap.TableIndex(state.TableContainers) != h.index || snap.TableIndex(state.TableMigrations) != h.index {
					t.Errorf("containers changed at %d, migrations at %d; want both at the commit's index %d",
						snap.TableIndex(state.TableContainers), snap.TableIndex(state.TableMigrations), h.index)
				}
				if snap.Allocated("n1").MilliCPU != 200 || snap.Allocated("n2").MilliCPU != 100 || snap.Incoming("n2") != (state.Resources{}) {
					t.Errorf("n1 allocated %+v, n2 %+v (incoming %+v): want web's reservation moved to n2",
						snap.Allocated("n1"), snap.Allocated("n2"), snap.Incoming("n2"))
				}
				wantEvents(t, h, state.EventMigrationCommitted)
				wantMigrationEvent(t, h, state.EventMigrationCommitted, "m1", "c1", "n2")
			}},
		{name: "again changes nothing and answers the same generation",
			setup: func(h *harness) { h.must(commit) },
			cmd:   commit,
			check: func(t *testing.T, h *harness, v any) {
				unchanged(t, h)
				if v.(uint64) != 2 || h.container("c1").Generation != 2 {
					t.Errorf("result %v, generation %d: want 2 and 2", v, h.container("c1").Generation)
				}
			}},
		{name: "before ready",
			setup:   func(h *harness) { h.must(move("m2", "c2", "n3")) },
			cmd:     fsm.CommitMove{ID: "m2"},
			wantErr: fsm.ErrNotReady},
		{name: "after an abort",
			setup:   func(h *harness) { h.must(fsm.AbortMigration{ID: "m1", Error: "operator cancelled"}) },
			cmd:     commit,
			wantErr: fsm.ErrAborted},
		{name: "stale generation",
			// No command moves a container with an open migration, which is
			// the point; Store.Write stands for a move the migration did not
			// see.
			setup: func(h *harness) {
				h.index++
				if err := h.f.Store().Write(h.index, t1, func(tx *state.Txn) error {
					c, _ := tx.ContainerByID("c1")
					c = c.Clone()
					c.Generation = 7
					return tx.PutContainer(c)
				}); err != nil {
					h.t.Fatal(err)
				}
			},
			cmd:     commit,
			wantErr: fsm.ErrStaleGeneration},
		{name: "destination down: abort instead",
			setup:   func(h *harness) { h.must(fsm.MarkNodeLost{Name: "n2"}) },
			cmd:     commit,
			wantErr: fsm.ErrNodeDown},
		{name: "source down: the commit saves the container",
			setup: func(h *harness) { h.must(fsm.MarkNodeLost{Name: "n1"}) },
			cmd:   commit,
			check: func(t *testing.T, h *harness, _ any) {
				if c := h.container("c1"); c.Node != "n2" || c.Reported != state.ReportedMigrating {
					t.Errorf("container %+v: want on n2, migrating", c)
				}
			}},
		{name: "unknown migration", cmd: fsm.CommitMove{ID: "zz"}, wantErr: state.ErrNotFound},
	})
}

func TestFinishMigration(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := moving(tb)
		h.ready("m1")
		h.must(fsm.CommitMove{ID: "m1", At: t1})
		return h
	}
	at := t1.Add(2 * time.Minute)
	stats := &state.MigrationStats{Downtime: 80 * time.Millisecond, Total: 3 * time.Second, Bytes: 1 << 20}
	runCases(t, base, []cmdCase{
		{name: "done: the container runs on the destination", cmd: fsm.FinishMigration{ID: "m1", Stats: stats, At: at},
			check: func(t *testing.T, h *harness, v any) {
				m := h.migration("m1")
				if m.Phase != state.MigrationDone || !m.Started[state.MigrationDone].Equal(at) || m.Stats.Downtime != stats.Downtime {
					t.Errorf("migration %+v: want done at %v with the stats", m, at)
				}
				if c := h.container("c1"); c.Reported != state.ReportedRunning || c.Node != "n2" || !c.ReportedAt.Equal(at) {
					t.Errorf("container %+v: want running on n2 since %v", c, at)
				}
				if _, ok := h.snap().OpenMigrationOf("c1"); ok {
					t.Error("c1 still has an open migration")
				}
				wantEvents(t, h, state.EventContainerState, state.EventMigrationDone)
				wantMigrationEvent(t, h, state.EventMigrationDone, "m1", "c1", "n2")
			}},
		{name: "a note says how it was finished", cmd: fsm.FinishMigration{ID: "m1", Note: "finished from its record", At: at},
			check: func(t *testing.T, h *harness, _ any) {
				evs := h.lastEvents()
				if last := evs[len(evs)-1]; last.Kind != state.EventMigrationDone || !strings.HasSuffix(last.Message, "; finished from its record") {
					t.Errorf("last event %+v: want migration-done ending with the note", last)
				}
			}},
		{name: "the destination reported it running first",
			setup: func(h *harness) {
				h.must(fsm.ReportContainers{Node: "n2", Epoch: 1, Reports: []fsm.Report{{ID: "c1", State: state.ReportedRunning}}})
			},
			cmd:   fsm.FinishMigration{ID: "m1", At: at},
			check: func(t *testing.T, h *harness, _ any) { wantEvents(t, h, state.EventMigrationDone) }},
		{name: "again changes nothing",
			setup: func(h *harness) { h.must(fsm.FinishMigration{ID: "m1", At: at}) },
			cmd:   fsm.FinishMigration{ID: "m1", Stats: stats, At: at.Add(time.Hour)},
			check: func(t *testing.T, h *harness, _ any) { unchanged(t, h) }},
		{name: "before the commit",
			setup:   func(h *harness) { h.must(move("m2", "c2", "n3")) },
			cmd:     fsm.FinishMigration{ID: "m2"},
			wantErr: fsm.ErrNotCommitted},
		{name: "after an abort",
			setup: func(h *harness) {
				h.must(move("m2", "c2", "n3"))
				h.must(fsm.AbortMigration{ID: "m2", Error: "boom"})
			},
			cmd:     fsm.FinishMigration{ID: "m2"},
			wantErr: fsm.ErrAborted},
	})
}

func TestAbortMigration(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := moving(tb)
		h.must(move("m1", "c1", "n2"))
		h.must(phase("m1", state.MigrationRestore))
		return h
	}
	at := t1.Add(time.Hour)
	runCases(t, base, []cmdCase{
		{name: "the source keeps the container", cmd: fsm.AbortMigration{ID: "m1", Error: "restore failed: see criu log", At: at},
			check: func(t *testing.T, h *harness, v any) {
				m := h.migration("m1")
				if m.Phase != state.MigrationAborted || m.Error != "restore failed: see criu log" || !m.Started[state.MigrationAborted].Equal(at) {
					t.Errorf("migration %+v: want aborted at %v with the error", m, at)
				}
				if c := h.container("c1"); c.Node != "n1" || c.Generation != 1 || c.Reported != state.ReportedRunning {
					t.Errorf("container %+v: want it untouched on n1", c)
				}
				if got := h.snap().Incoming("n2"); got != (state.Resources{}) {
					t.Errorf("n2 incoming %+v after the abort, want zero", got)
				}
				wantEvents(t, h, state.EventMigrationAborted)
				wantMigrationEvent(t, h, state.EventMigrationAborted, "m1", "c1", "n1")
			}},
		{name: "again changes nothing",
			setup: func(h *harness) { h.must(fsm.AbortMigration{ID: "m1", Error: "first"}) },
			cmd:   fsm.AbortMigration{ID: "m1", Error: "second"},
			check: func(t *testing.T, h *harness, _ any) {
				unchanged(t, h)
				if h.migration("m1").Error != "first" {
					t.Error("a repeated abort replaced the error")
				}
			}},
		{name: "after the commit",
			setup: func(h *harness) {
				h.must(phase("m1", state.MigrationReady))
				h.must(fsm.CommitMove{ID: "m1"})
			},
			cmd:     fsm.AbortMigration{ID: "m1", Error: "too late"},
			wantErr: fsm.ErrCommitted},
		{name: "no reason", cmd: fsm.AbortMigration{ID: "m1"}, wantErr: fsm.ErrInvalid},
		{name: "unknown migration", cmd: fsm.AbortMigration{ID: "zz", Error: "x"}, wantErr: state.ErrNotFound},
	})
}

func TestFenceMigration(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := moving(tb)
		h.must(move("m1", "c1", "n2"))
		h.must(phase("m1", state.MigrationReady))
		return h
	}
	at := t1.Add(time.Hour)
	runCases(t, base, []cmdCase{
		{name: "the move can no longer commit", cmd: fsm.FenceMigration{ID: "m1", Why: "destination unreachable", At: at},
			check: func(t *testing.T, h *harness, _ any) {
				m := h.migration("m1")
				if !m.Aborting || !m.Open() || m.Phase != state.MigrationReady || m.Error != "destination unreachable" {
					t.Errorf("migration %+v: want ready, open and aborting, with the reason", m)
				}
				wantMigrationEvent(t, h, state.EventMigrationAborting, "m1", "c1", "n1")
				if r := h.apply(fsm.CommitMove{ID: "m1"}); !errors.Is(r.Err, fsm.ErrAborted) {
					t.Errorf("CommitMove after the fence: %v, want ErrAborted", r.Err)
				}
				if c := h.container("c1"); c.Node != "n1" || c.Generation != 1 {
					t.Errorf("container %+v: want it still on n1 at generation 1", c)
				}
				h.must(fsm.AbortMigration{ID: "m1", Error: "destination unreachable", DestinationCleanup: true})
				if m := h.migration("m1"); m.Phase != state.MigrationAborted || m.Aborting || !m.DestinationCleanup {
					t.Errorf("migration %+v after the abort: want aborted, its destination owing a cleanup", m)
				}
			}},
		{name: "after the commit",
			setup:   func(h *harness) { h.must(fsm.CommitMove{ID: "m1"}) },
			cmd:     fsm.FenceMigration{ID: "m1", Why: "x"},
			wantErr: fsm.ErrCommitted},
		{name: "after the abort",
			setup:   func(h *harness) { h.must(fsm.AbortMigration{ID: "m1", Error: "boom"}) },
			cmd:     fsm.FenceMigration{ID: "m1", Why: "x"},
			wantErr: fsm.ErrAborted},
	})
}

func TestCleanedDestination(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := moving(tb)
		h.must(move("m1", "c1", "n2"))
		return h
	}
	runCases(t, base, []cmdCase{
		{name: "the destination owes nothing more",
			setup: func(h *harness) {
				h.must(fsm.AbortMigration{ID: "m1", Error: "destination unreachable", DestinationCleanup: true})
			},
			cmd: fsm.CleanedDestination{ID: "m1"},
			check: func(t *testing.T, h *harness, _ any) {
				if m := h.migration("m1"); m.DestinationCleanup || m.Phase != state.MigrationAborted {
					t.Errorf("migration %+v: want aborted and clean", m)
				}
				wantMigrationEvent(t, h, state.EventMigrationCleaned, "m1", "c1", "n2")
			}},
		{name: "a clean migration changes nothing",
			setup: func(h *harness) { h.must(fsm.AbortMigration{ID: "m1", Error: "boom"}) },
			cmd:   fsm.CleanedDestination{ID: "m1"},
			check: func(t *testing.T, h *harness, _ any) { unchanged(t, h) }},
		{name: "an open migration", cmd: fsm.CleanedDestination{ID: "m1"}, wantErr: fsm.ErrInvalid},
	})
}

func TestContainersWhileMoving(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := moving(tb)
		h.must(move("m1", "c1", "n2"))
		return h
	}
	runCases(t, base, []cmdCase{
		{name: "delete refused while a migration is open", cmd: fsm.DeleteContainer{ID: "c1"}, wantErr: state.ErrMigrationOpen},
		{name: "delete allowed once it ended",
			setup: func(h *harness) { h.must(fsm.AbortMigration{ID: "m1", Error: "cancelled"}) },
			cmd:   fsm.DeleteContainer{ID: "c1"}},
		{name: "the destination's copy is neither unknown nor the container's state",
			cmd: fsm.ReportContainers{Node: "n2", Epoch: 1, Reports: []fsm.Report{{ID: "c1", State: state.ReportedStopped}},
				Unknown: []fsm.Unknown{{ID: "c1", Name: "web"}}},
			check: func(t *testing.T, h *harness, v any) {
				if out := v.(fsm.ReportOutcome); len(out.Unknown) != 0 {
					t.Errorf("unknown %v, want none", out.Unknown)
				}
				if c := h.container("c1"); c.Reported != state.ReportedRunning {
					t.Errorf("c1 %s, want still running: n2's copy is not the container yet", c.Reported)
				}
				wantEvents(t, h)
			}},
		{name: "the source's copy after the commit",
			setup: func(h *harness) {
				h.must(phase("m1", state.MigrationReady))
				h.must(fsm.CommitMove{ID: "m1"})
			},
			cmd: fsm.ReportContainers{Node: "n1", Epoch: 1, Reports: []fsm.Report{{ID: "c1", State: state.ReportedStopped}}},
			check: func(t *testing.T, h *harness, v any) {
				if out := v.(fsm.ReportOutcome); len(out.Unknown) != 0 {
					t.Errorf("unknown %v, want none", out.Unknown)
				}
				if c := h.container("c1"); c.Reported != state.ReportedMigrating {
					t.Errorf("c1 %s, want still migrating", c.Reported)
				}
			}},
		{name: "another node's report of it is still unknown",
			cmd: fsm.ReportContainers{Node: "n3", Epoch: 1, Reports: []fsm.Report{{ID: "c1", State: state.ReportedRunning}}},
			check: func(t *testing.T, h *harness, v any) {
				if out := v.(fsm.ReportOutcome); len(out.Unknown) != 1 {
					t.Errorf("unknown %v, want [c1]", out.Unknown)
				}
			}},
	})
}

// TestCommitIsAtomic reads snapshots while moves commit back and forth:
// no snapshot may show a committed migration whose container is not on
// its destination at the next generation, nor a container that moved
// without its migration committed. Run with -race.
func TestCommitIsAtomic(t *testing.T) {
	h := moving(t)
	store := h.f.Store()
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if err := consistentMoves(store.Snapshot()); err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
		}
	}()
	const moves = 200
	for i := range moves {
		from, to := "n1", "n2"
		if i%2 == 1 {
			from, to = to, from
		}
		id := fmt.Sprintf("m%d", i)
		c := move(id, "c1", to)
		c.Source = from
		h.must(c)
		h.must(phase(id, state.MigrationReady))
		h.must(fsm.CommitMove{ID: id})
		h.must(fsm.FinishMigration{ID: id})
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if c := h.container("c1"); c.Generation != moves+1 || c.Node != "n1" {
		t.Errorf("after %d moves: %+v, want generation %d on n1", moves, c, moves+1)
	}
	if err := consistentMoves(store.Snapshot()); err != nil {
		t.Fatal(err)
	}
}

// consistentMoves checks c1's generation and node against its migrations:
// each committed one bumped the generation by one and left it on its
// destination.
func consistentMoves(snap *state.Snapshot) error {
	c, ok := snap.ContainerByID("c1")
	if !ok {
		return errors.New("c1 is gone")
	}
	ms := snap.Migrations(state.MigrationFilter{Container: "c1"})
	committed := 0
	for _, m := range ms {
		if m.Committed() {
			committed++
		}
	}
	if c.Generation != uint64(committed+1) {
		return fmt.Errorf("a snapshot shows %d committed moves and generation %d", committed, c.Generation)
	}
	if len(ms) > 0 && ms[0].Committed() && c.Node != ms[0].Dest {
		return errors.New("a snapshot shows the newest move committed and the container not on its destination")
	}
	if len(ms) > 0 && !ms[0].Committed() && c.Node != ms[0].Source {
		return errors.New("a snapshot shows the container moved before its migration committed")
	}
	return nil
}
