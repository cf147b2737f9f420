package fsm

import (
	"errors"
	"testing"
	"time"

	"github.com/godwit/godwit/migrate"
	"github.com/godwit/godwit/scheduler/state"
)

// TestMigrationStepAgreesWithTheEngine pins the cluster's phase words and
// transition rule to the migrate engine's (migrate.Record): for every pair
// of phases, the record in raft and the engine's own accept and refuse the
// same moves, with the one documented difference that the cluster does
// not let a move finish before its commit.
func TestMigrationStepAgreesWithTheEngine(t *testing.T) {
	engine := []migrate.Phase{
		migrate.PhasePrepare, migrate.PhaseSync, migrate.PhaseDump, migrate.PhaseTransfer, migrate.PhaseRestore,
		migrate.PhaseReady, migrate.PhaseCommitted, migrate.PhaseDone, migrate.PhaseAborted,
	}
	phases := state.MigrationPhases()
	if len(phases) != len(engine) {
		t.Fatalf("state has %d phases, migrate %d", len(phases), len(engine))
	}
	for i, p := range phases {
		if string(p) != string(engine[i]) {
			t.Errorf("phase %d: state says %q, migrate %q", i, p, engine[i])
		}
	}
	at := time.Unix(1000, 0)
	for _, from := range phases {
		for _, to := range phases {
			rec := &migrate.Record{ID: "m", Phase: migrate.Phase(from), Started: map[migrate.Phase]time.Time{}}
			var engineErr error
			var engineChanged bool
			if to == state.MigrationAborted {
				engineChanged, engineErr = rec.Abort("why", at)
			} else {
				engineChanged, engineErr = rec.Advance(migrate.Phase(to), at)
			}
			m := &state.Migration{ID: "m", Phase: from}
			next, err := migrationStep(m, to, at)

			if to == state.MigrationDone && from != state.MigrationCommitted && from != state.MigrationDone && from != state.MigrationAborted {
				if !errors.Is(err, ErrNotCommitted) {
					t.Errorf("%s -> %s: %v, want ErrNotCommitted", from, to, err)
				}
				continue
			}
			if (err == nil) != (engineErr == nil) {
				t.Errorf("%s -> %s: cluster says %v, engine says %v", from, to, err, engineErr)
				continue
			}
			for _, pair := range []struct{ ours, theirs error }{
				{ErrAborted, migrate.ErrAborted}, {ErrCommitted, migrate.ErrCommitted},
				{ErrBackwards, migrate.ErrBackwards}, {ErrNotReady, migrate.ErrNotReady},
			} {
				if errors.Is(err, pair.ours) != errors.Is(engineErr, pair.theirs) {
					t.Errorf("%s -> %s: cluster says %v, engine says %v", from, to, err, engineErr)
				}
			}
			if err == nil && (next != nil) != engineChanged {
				t.Errorf("%s -> %s: cluster changed %v, engine changed %v", from, to, next != nil, engineChanged)
			}
			if next != nil && (next.Phase != to || !next.Started[to].Equal(at) || m.Phase != from) {
				t.Errorf("%s -> %s: got %+v from %+v; want a copy in %s started at %v", from, to, next, m, to, at)
			}
		}
	}
}
