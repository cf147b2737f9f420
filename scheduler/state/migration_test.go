package state

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func mig(id, container string, created uint64, phase MigrationPhase) *Migration {
	return &Migration{ID: id, CreatedIndex: created, Container: container, Source: "n1", Dest: "n2",
		Strategy: "stop-copy", Phase: phase, Generation: 1, Reason: "operator",
		Started: map[MigrationPhase]time.Time{MigrationPrepare: t0}}
}

func ids(ms []*Migration) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func TestMigrationPhaseOrder(t *testing.T) {
	var got []int
	for _, p := range MigrationPhases() {
		got = append(got, p.Order())
	}
	if want := []int{1, 2, 3, 4, 5, 6, 7, 8, 0}; !slices.Equal(got, want) {
		t.Errorf("orders %v, want %v (aborted outside the order)", got, want)
	}
	if MigrationPhase("paused").Known() || MigrationPhase("paused").Order() != 0 {
		t.Error("an unknown word is a phase")
	}
}

func TestOneOpenMigrationPerContainer(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error { return tx.PutMigration(mig("m1", "c1", 1, MigrationDump)) })

	err := s.Write(2, t0, func(tx *Txn) error { return tx.PutMigration(mig("m2", "c1", 2, MigrationPrepare)) })
	if !errors.Is(err, ErrMigrationOpen) || !strings.Contains(err.Error(), "godwit migration cancel m1") {
		t.Fatalf("second open migration of c1: %v, want ErrMigrationOpen naming m1 and how to cancel it", err)
	}
	// The same migration again, another container, and an ended one are
	// all fine.
	write(t, s, 3, func(tx *Txn) error {
		for _, m := range []*Migration{mig("m1", "c1", 1, MigrationReady), mig("m3", "c2", 3, MigrationPrepare), mig("m0", "c1", 0, MigrationAborted)} {
			if err := tx.PutMigration(m); err != nil {
				return err
			}
		}
		return nil
	})
	snap := s.Snapshot()
	if m, ok := snap.OpenMigrationOf("c1"); !ok || m.ID != "m1" || m.Phase != MigrationReady {
		t.Errorf("OpenMigrationOf(c1) = %+v, %v; want m1 in ready", m, ok)
	}
	// Once m1 ends, c1 may move again.
	write(t, s, 4, func(tx *Txn) error {
		if err := tx.PutMigration(mig("m1", "c1", 1, MigrationDone)); err != nil {
			return err
		}
		return tx.PutMigration(mig("m4", "c1", 4, MigrationPrepare))
	})
	if m, ok := s.Snapshot().OpenMigrationOf("c1"); !ok || m.ID != "m4" {
		t.Errorf("OpenMigrationOf(c1) = %+v, %v; want m4", m, ok)
	}
	if _, ok := s.Snapshot().OpenMigrationOf("c9"); ok {
		t.Error("a container that never moved has an open migration")
	}
	if got := s.Snapshot().TableIndex(TableMigrations); got != 4 {
		t.Errorf("migrations table index %d, want 4", got)
	}
}

func TestMigrationsFilter(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error {
		drained := mig("d1", "c3", 4, MigrationSync)
		drained.DrainNode = "n1"
		for _, m := range []*Migration{
			mig("a1", "c1", 1, MigrationDone),
			mig("a2", "c1", 2, MigrationAborted),
			mig("a3", "c1", 3, MigrationTransfer),
			drained,
			mig("b1", "c2", 5, MigrationCommitted),
		} {
			if err := tx.PutMigration(m); err != nil {
				return err
			}
		}
		return nil
	})
	snap := s.Snapshot()
	tests := []struct {
		name string
		f    MigrationFilter
		want []string
	}{
		{name: "all, newest first", f: MigrationFilter{}, want: []string{"b1", "d1", "a3", "a2", "a1"}},
		{name: "open", f: MigrationFilter{Open: true}, want: []string{"b1", "d1", "a3"}},
		{name: "limit", f: MigrationFilter{Limit: 2}, want: []string{"b1", "d1"}},
		{name: "container", f: MigrationFilter{Container: "c1"}, want: []string{"a3", "a2", "a1"}},
		{name: "open of a container", f: MigrationFilter{Open: true, Container: "c1"}, want: []string{"a3"}},
		{name: "of a drain", f: MigrationFilter{DrainNode: "n1"}, want: []string{"d1"}},
		{name: "none", f: MigrationFilter{Container: "c9"}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ids(snap.Migrations(tt.f)); !slices.Equal(got, tt.want) {
				t.Errorf("Migrations(%+v) = %v, want %v", tt.f, got, tt.want)
			}
		})
	}
	if m, ok := snap.Migration("a2"); !ok || m.Phase != MigrationAborted {
		t.Errorf("Migration(a2) = %+v, %v", m, ok)
	}
}

func TestPruneMigrations(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error {
		for i := range uint64(6) {
			phase := MigrationDone
			if i%2 == 0 {
				phase = MigrationDump // open: 0, 2, 4
			}
			if err := tx.PutMigration(mig(fmt.Sprint("m", i), fmt.Sprint("c", i), i+1, phase)); err != nil {
				return err
			}
		}
		return nil
	})
	var dropped int
	write(t, s, 2, func(tx *Txn) error {
		var err error
		dropped, err = tx.PruneMigrations(1)
		return err
	})
	if got := ids(s.Snapshot().Migrations(MigrationFilter{})); dropped != 2 || !slices.Equal(got, []string{"m5", "m4", "m2", "m0"}) {
		t.Errorf("pruned %d, left %v; want 2 pruned, the open ones and the newest ended one left", dropped, got)
	}
}

func TestIncoming(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error {
		for _, c := range []*Container{ctr("c1", "a", "n1", 100), ctr("c2", "b", "n1", 200), ctr("c3", "c", "n2", 400), ctr("c4", "d", "n1", 800)} {
			if err := tx.PutContainer(c); err != nil {
				return err
			}
		}
		committed := mig("m3", "c3", 3, MigrationCommitted) // c3 is on n2 already
		for _, m := range []*Migration{mig("m1", "c1", 1, MigrationTransfer), mig("m2", "c2", 2, MigrationAborted), committed, mig("m4", "c4", 4, MigrationPrepare)} {
			if err := tx.PutMigration(m); err != nil {
				return err
			}
		}
		stopped := ctr("c4", "d", "n1", 800)
		stopped.Desired = DesiredStopped
		return tx.PutContainer(stopped)
	})
	if got, want := s.Snapshot().Incoming("n2"), (Resources{MilliCPU: 100, MemoryBytes: 100 << 20}); got != want {
		t.Errorf("Incoming(n2) = %+v, want %+v: only c1's open, uncommitted move of a container that reserves", got, want)
	}
	if got := s.Snapshot().Incoming("n1"); got != (Resources{}) {
		t.Errorf("Incoming(n1) = %+v, want zero", got)
	}
}

func TestDrains(t *testing.T) {
	s := NewStore()
	d := &Drain{Node: "n2", Status: DrainRunning, MaxParallel: 2, Blocked: map[string]string{"c1": "no room"}}
	write(t, s, 1, func(tx *Txn) error {
		if err := tx.PutDrain(d); err != nil {
			return err
		}
		return tx.PutDrain(&Drain{Node: "n1", Status: DrainDone})
	})
	d.Blocked["c1"] = "changed"
	snap := s.Snapshot()
	got, ok := snap.Drain("n2")
	if !ok || !got.Running() || got.Blocked["c1"] != "no room" {
		t.Errorf("Drain(n2) = %+v, %v; want the running drain as stored, not as changed after", got, ok)
	}
	var nodes []string
	for _, d := range snap.Drains() {
		nodes = append(nodes, d.Node)
	}
	if !slices.Equal(nodes, []string{"n1", "n2"}) {
		t.Errorf("Drains() nodes %v, want [n1 n2]", nodes)
	}
}

func TestStoredMigrationsAreCopies(t *testing.T) {
	s := NewStore()
	m := mig("m1", "c1", 1, MigrationPrepare)
	m.Stats.Phases = map[MigrationPhase]time.Duration{MigrationPrepare: time.Second}
	write(t, s, 1, func(tx *Txn) error { return tx.PutMigration(m) })
	m.Started[MigrationDump] = t0
	m.Stats.Phases[MigrationPrepare] = time.Hour
	got, _ := s.Snapshot().Migration("m1")
	if len(got.Started) != 1 || got.Stats.Phases[MigrationPrepare] != time.Second {
		t.Errorf("changing the value given to PutMigration changed the stored one: %+v", got)
	}
}
