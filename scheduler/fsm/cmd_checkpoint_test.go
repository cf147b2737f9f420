package fsm_test

import (
	"testing"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

func TestCheckpointAway(t *testing.T) {
	away := fsm.CheckpointAway{ID: "c1", Source: "n1", Generation: 1, Holder: "n2", Checkpoint: "0123456789ab", At: t1}
	with := func(f func(*fsm.CheckpointAway)) fsm.CheckpointAway {
		c := away
		f(&c)
		return c
	}
	runCases(t, moving, []cmdCase{
		{name: "the container waits on the holder, stopped, at the next generation", cmd: away,
			check: func(t *testing.T, h *harness, v any) {
				c := h.container("c1")
				if c.Node != "n2" || c.Generation != 2 || c.Desired != state.DesiredStopped || c.Reported != state.ReportedCheckpointed ||
					c.Checkpoint != "0123456789ab" || v != uint64(2) {
					t.Errorf("container %+v (result %v): want checkpointed on n2 at generation 2, desired stopped", c, v)
				}
				if got := h.snap().ContainerCount("n1"); got != 1 {
					t.Errorf("n1 holds %d containers, want 1 (db)", got)
				}
				wantEvents(t, h, state.EventContainerCheckpointed)
			}},
		{name: "again changes nothing", setup: func(h *harness) { h.must(away) }, cmd: away,
			check: func(t *testing.T, h *harness, _ any) { unchanged(t, h) }},
		{name: "a complete report of the holder does not lose it", setup: func(h *harness) { h.must(away) },
			cmd: fsm.ReportContainers{Node: "n2", Epoch: 1, Complete: true, At: t1},
			check: func(t *testing.T, h *harness, _ any) {
				if c := h.container("c1"); c.Reported != state.ReportedCheckpointed || c.Checkpoint == "" {
					t.Errorf("container %+v after n2's complete report without it: want still checkpointed there", c)
				}
			}},
		{name: "restored: the holder reports it running", setup: func(h *harness) { h.must(away) },
			cmd: fsm.ReportContainers{Node: "n2", Epoch: 1, Reports: []fsm.Report{{ID: "c1", State: state.ReportedRunning}}, At: t1},
			check: func(t *testing.T, h *harness, _ any) {
				if c := h.container("c1"); c.Reported != state.ReportedRunning || c.Checkpoint != "" {
					t.Errorf("container %+v: want running, its checkpoint no longer awaited", c)
				}
			}},
		{name: "a running drain of the source counts it",
			setup: func(h *harness) {
				h.must(fsm.StartDrain{Node: "n1", MaxParallel: 1, At: t1})
			},
			cmd: away,
			check: func(t *testing.T, h *harness, _ any) {
				if d, _ := h.snap().Drain("n1"); d.Checkpointed != 1 {
					t.Errorf("drain %+v: want 1 checkpointed", d)
				}
			}},
		{name: "not on the source", cmd: with(func(c *fsm.CheckpointAway) { c.Source = "n3" }), wantErr: fsm.ErrWrongNode},
		{name: "a stale generation", cmd: with(func(c *fsm.CheckpointAway) { c.Generation = 7 }), wantErr: fsm.ErrStaleGeneration},
		{name: "kept on its own node", cmd: with(func(c *fsm.CheckpointAway) { c.Holder = "n1" }), wantErr: fsm.ErrInvalid},
		{name: "no checkpoint", cmd: with(func(c *fsm.CheckpointAway) { c.Checkpoint = "" }), wantErr: fsm.ErrInvalid},
		{name: "an unknown holder", cmd: with(func(c *fsm.CheckpointAway) { c.Holder = "zz" }), wantErr: state.ErrNotFound},
		{name: "while it moves", setup: func(h *harness) { h.must(move("m1", "c1", "n3")) }, cmd: away, wantErr: state.ErrMigrationOpen},
	})
}
