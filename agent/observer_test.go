package agent

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/migrate"
)

// recordingObserver records what an Observer hears.
type recordingObserver struct {
	mu          sync.Mutex
	started     []string
	ended       []MigrationEnd
	transfers   map[string]int64
	checkpoints []error
}

var _ Observer = (*recordingObserver)(nil)

func (o *recordingObserver) MigrationStarted(role string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.started = append(o.started, role)
}

func (o *recordingObserver) MigrationEnded(e MigrationEnd) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended = append(o.ended, e)
}

func (o *recordingObserver) MigrationTransfer(kind string, n int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.transfers == nil {
		o.transfers = map[string]int64{}
	}
	o.transfers[kind] += n
}

func (o *recordingObserver) CheckpointDone(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.checkpoints = append(o.checkpoints, err)
}

// observedAgent is an agent with an observed migration journal and no
// containers, enough for the migration calls that only move records.
func observedAgent(t *testing.T) (*Agent, *recordingObserver) {
	t.Helper()
	a, _ := testAgent(t)
	obs := &recordingObserver{}
	a.cfg.Observer = obs
	a.containers = map[string]*entry{}
	j, err := migrate.OpenJournal(a.migrationsDir())
	if err != nil {
		t.Fatal(err)
	}
	a.mig.journal = observedJournal{Journal: j, obs: obs}
	a.mig.locks = map[string]*sync.Mutex{}
	return a, obs
}

// A source's record, written as its calls write it: the observer hears
// the start once, the end once, and the downtime from the freeze to the
// driver's Finish.
func TestObserverSeesASourcesMigration(t *testing.T) {
	a, obs := observedAgent(t)
	const freezeAgo = 2 * time.Second
	rec, unlock, err := a.migration("m1", migrate.RoleSource, true)
	if err != nil {
		t.Fatal(err)
	}
	// Its container is gone by the Finish: the finish only moves the
	// record.
	rec.Strategy, rec.Container = migrate.Stream, "web"
	for _, put := range []func() error{
		func() error { return a.mig.journal.Put(rec) }, // describe
		func() error { return a.mig.journal.Put(rec) }, // a repeated describe
		func() error { return a.advanceAt(rec, migrate.PhaseDump, time.Now().Add(-freezeAgo)) },
		func() error { return a.advance(rec, migrate.PhaseTransfer) },
	} {
		if err := put(); err != nil {
			t.Fatal(err)
		}
	}
	unlock()
	if len(obs.started) != 1 || obs.started[0] != migrate.RoleSource || len(obs.ended) != 0 {
		t.Fatalf("before Finish: started %v, ended %d; want one source start and no end", obs.started, len(obs.ended))
	}

	for range 2 { // a repeated Finish ends nothing more
		if _, err := a.MigrateFinish(context.Background(), "m1", "10.0.0.2:7701"); err != nil {
			t.Fatal(err)
		}
	}
	if len(obs.ended) != 1 {
		t.Fatalf("%d ends heard, want 1", len(obs.ended))
	}
	e := obs.ended[0]
	if e.ID != "m1" || e.Role != migrate.RoleSource || e.Strategy != migrate.Stream || e.Outcome != migrate.PhaseDone {
		t.Errorf("end %+v, want m1, source, stream, done", e)
	}
	if e.Downtime < freezeAgo || e.Downtime > freezeAgo+time.Minute {
		t.Errorf("downtime %v, want the %v since the freeze (and the test's own few milliseconds)", e.Downtime, freezeAgo)
	}
	for _, p := range []migrate.Phase{migrate.PhasePrepare, migrate.PhaseDump, migrate.PhaseTransfer, migrate.PhaseCommitted} {
		if _, ok := e.Phases[p]; !ok {
			t.Errorf("no duration for phase %s in %v", p, e.Phases)
		}
	}
	if d := e.Phases[migrate.PhaseDump]; d < freezeAgo {
		t.Errorf("dump phase %v: want it to run from the freeze, %v ago", d, freezeAgo)
	}
	if len(obs.started) != 1 {
		t.Errorf("started %v after Finish, want the one start", obs.started)
	}
}

// A destination asked to abort a migration it never heard of records it
// aborted at once: one start and one abort, no downtime.
func TestObserverSeesADestinationsAbort(t *testing.T) {
	a, obs := observedAgent(t)
	for range 2 {
		if _, err := a.MigrateAbort(context.Background(), "m2", "the driver gave up"); err != nil {
			t.Fatal(err)
		}
	}
	if len(obs.started) != 1 || obs.started[0] != migrate.RoleDestination {
		t.Errorf("started %v, want one destination start", obs.started)
	}
	if len(obs.ended) != 1 || obs.ended[0].Outcome != migrate.PhaseAborted || obs.ended[0].Downtime != 0 {
		t.Fatalf("ended %+v, want one abort without downtime", obs.ended)
	}
}

func TestMigrationEndDowntime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	record := func(role string, started map[migrate.Phase]time.Time) *migrate.Record {
		r := migrate.NewRecord("m", migrate.StopCopy, t0)
		r.Role = role
		for p, t := range started {
			r.Started[p] = t
		}
		return r
	}
	tests := []struct {
		name string
		rec  *migrate.Record
		want time.Duration
	}{
		{"source done: freeze to Finish", record(migrate.RoleSource, map[migrate.Phase]time.Time{
			migrate.PhaseDump: t0.Add(time.Second), migrate.PhaseCommitted: t0.Add(1700 * time.Millisecond), migrate.PhaseDone: t0.Add(5 * time.Second),
		}), 700 * time.Millisecond},
		{"source aborted after the freeze", record(migrate.RoleSource, map[migrate.Phase]time.Time{
			migrate.PhaseDump: t0.Add(time.Second), migrate.PhaseAborted: t0.Add(3 * time.Second),
		}), 2 * time.Second},
		{"source aborted before the freeze", record(migrate.RoleSource, map[migrate.Phase]time.Time{
			migrate.PhaseAborted: t0.Add(3 * time.Second),
		}), 0},
		{"destination", record(migrate.RoleDestination, map[migrate.Phase]time.Time{
			migrate.PhaseDump: t0.Add(time.Second), migrate.PhaseDone: t0.Add(3 * time.Second),
		}), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := migrationEnd(tt.rec).Downtime; got != tt.want {
				t.Errorf("downtime %v, want %v", got, tt.want)
			}
		})
	}
}

// Without an observer the journal writes as before.
func TestJournalWithoutObserver(t *testing.T) {
	a, _ := testAgent(t)
	j, err := migrate.OpenJournal(a.migrationsDir())
	if err != nil {
		t.Fatal(err)
	}
	oj := observedJournal{Journal: j}
	rec := migrate.NewRecord("m3", migrate.StopCopy, time.Now())
	if err := oj.Put(rec); err != nil {
		t.Fatal(err)
	}
	if got, err := j.Get("m3"); err != nil || got.Phase != migrate.PhasePrepare {
		t.Fatalf("Get after Put: %+v, %v", got, err)
	}
}

func TestTallyFollowsProgress(t *testing.T) {
	var sent, seen int64
	p := tally(&sent, func(done, _ int64) { seen = done })
	p(10, 100)
	p(100, 100)
	if sent != 100 || seen != 100 {
		t.Errorf("sent %d, the caller saw %d; want 100 and 100", sent, seen)
	}
	var alone int64
	tally(&alone, nil)(42, 0) // no caller's progress: counting alone
	if alone != 42 {
		t.Errorf("sent %d without a caller's progress, want 42", alone)
	}
}

func TestContainerCounts(t *testing.T) {
	a, _ := testAgent(t)
	busy := &entry{c: &Container{ID: "c3", Name: "busy", State: StateRunning}}
	busy.op.Lock() // a long operation holds it: counted as last seen, here never: created
	t.Cleanup(busy.op.Unlock)
	a.containers = map[string]*entry{
		"c1": {c: &Container{ID: "c1", Name: "web", State: StateStopped}},
		"c2": {c: &Container{ID: "c2", Name: "db", State: StateCheckpointed}},
		"c3": busy,
	}
	got := a.ContainerCounts()
	want := map[State]int{StateCreated: 1, StateRunning: 0, StateStopped: 1, StateExited: 0, StateCheckpointed: 1, StateMigrating: 0}
	if len(got) != len(want) {
		t.Fatalf("counts %v, want every state: %v", got, want)
	}
	for s, n := range want {
		if got[s] != n {
			t.Errorf("%s: %d, want %d", s, got[s], n)
		}
	}
}

func TestCheckpointTellsTheObserver(t *testing.T) {
	a, obs := observedAgent(t)
	_, err := a.Checkpoint(context.Background(), "absent", CheckpointRequest{})
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("checkpoint of an absent container: %v, want ErrNotFound", err)
	}
	if len(obs.checkpoints) != 1 || !errors.Is(obs.checkpoints[0], ErrNotFound) {
		t.Errorf("the observer heard %v, want the one failure", obs.checkpoints)
	}
}
