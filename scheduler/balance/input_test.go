package balance_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/state"
)

func TestFromMigrations(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	ms := []*state.Migration{
		{ID: "m-done", Container: "c1", Source: "a", Dest: "b", Strategy: "stream", Phase: state.MigrationDone,
			Started: map[state.MigrationPhase]time.Time{state.MigrationCommitted: t0.Add(2 * time.Minute)},
			Stats:   state.MigrationStats{Bytes: 1 << 30, Downtime: time.Second, Total: 5 * time.Second}, Updated: t0.Add(3 * time.Minute)},
		{ID: "m-committed", Container: "c2", Source: "b", Dest: "c", Strategy: "stop-copy", Phase: state.MigrationCommitted,
			Started: map[state.MigrationPhase]time.Time{state.MigrationCommitted: t0.Add(time.Minute)}, Updated: t0.Add(time.Minute)},
		{ID: "m-no-commit-time", Container: "c4", Source: "c", Dest: "a", Strategy: "stream", Phase: state.MigrationDone, Updated: t0},
		{ID: "m-aborted", Container: "c3", Source: "a", Dest: "c", Phase: state.MigrationAborted,
			Stats: state.MigrationStats{Bytes: 1 << 20, Downtime: time.Second, Total: time.Second}},
		{ID: "m-open", Container: "c5", Source: "a", Dest: "c", Phase: state.MigrationTransfer},
	}
	recent, history := balance.FromMigrations(ms)
	wantRecent := []balance.PastMove{
		{Container: "c4", From: "c", To: "a", At: t0},
		{Container: "c2", From: "b", To: "c", At: t0.Add(time.Minute)},
		{Container: "c1", From: "a", To: "b", At: t0.Add(2 * time.Minute)},
	}
	wantHistory := []balance.PastMigration{{From: "a", To: "b", Strategy: "stream", Bytes: 1 << 30, Downtime: time.Second, Total: 5 * time.Second}}
	if !reflect.DeepEqual(recent, wantRecent) {
		t.Errorf("recent = %+v, want %+v", recent, wantRecent)
	}
	if !reflect.DeepEqual(history, wantHistory) {
		t.Errorf("history = %+v, want %+v", history, wantHistory)
	}
}
