package agent

import (
	"errors"
	"time"

	"github.com/godwit/godwit/migrate"
)

// Observer hears what an operator counts of the agent's work: this
// agent's side of each migration as it starts and ends, the transfers a
// source sends, and the checkpoints operators ask for (Config.Observer;
// cmd/godwit feeds internal/metrics with it). Its methods run on the
// calls' own paths, some under a migration's lock: they must return at
// once, and never call the agent.
type Observer interface {
	// MigrationStarted is called once per migration and agent, when the
	// agent first records it, as role (migrate.RoleSource or
	// RoleDestination).
	MigrationStarted(role string)
	// MigrationEnded is called once per migration and agent, when the
	// agent's record of it reaches PhaseDone or PhaseAborted.
	MigrationEnded(MigrationEnd)
	// MigrationTransfer is called when a source has sent one transfer of
	// a migration whole: bytes of kind TransferCheckpoint or
	// TransferPages.
	MigrationTransfer(kind string, bytes int64)
	// CheckpointDone is called when a checkpoint an operator asked for
	// (Checkpoint) ended, with its error (nil: written).
	CheckpointDone(err error)
}

// The kinds of a migration's transfers, for Observer.MigrationTransfer.
const (
	// TransferCheckpoint is the checkpoint the source sends after its
	// dump: CRIU's images (all of the memory for stop-copy) and the root
	// filesystem's last changes.
	TransferCheckpoint = "checkpoint"
	// TransferPages is the memory a stream or post-copy source sends
	// beside CRIU's images, through the page server.
	TransferPages = "pages"
)

// MigrationEnd is one agent's account of a migration that ended, from
// its record.
type MigrationEnd struct {
	ID       string
	Role     string
	Strategy migrate.Strategy
	// Outcome is migrate.PhaseDone or migrate.PhaseAborted.
	Outcome migrate.Phase
	// Phases is how long each phase lasted in this agent's record
	// (migrate.Record.PhaseDurations). A source records prepare (from its
	// describe), sync, dump (from the freeze), transfer, and committed:
	// from the driver's Finish, which comes once the destination runs the
	// container, to the end of its clean-up.
	Phases map[migrate.Phase]time.Duration
	// Downtime is how long the container ran nowhere, as the source saw
	// it: from the freeze to the driver's Finish (done) or to running it
	// again (aborted). Zero on a destination, or when the migration ended
	// before the freeze.
	Downtime time.Duration
}

// migrationEnd is the account of r, which has ended.
func migrationEnd(r *migrate.Record) MigrationEnd {
	e := MigrationEnd{ID: r.ID, Role: r.Role, Strategy: r.Strategy, Outcome: r.Phase, Phases: r.PhaseDurations()}
	if r.Role != migrate.RoleSource {
		return e
	}
	frozen, ok := r.Started[migrate.PhaseDump]
	if !ok {
		return e
	}
	for _, end := range []migrate.Phase{migrate.PhaseCommitted, migrate.PhaseAborted} {
		if t, ok := r.Started[end]; ok && t.After(frozen) {
			e.Downtime = t.Sub(frozen)
			break
		}
	}
	return e
}

// migrationJournal is what the agent uses of its migration journal
// (*migrate.Journal, or the observedJournal around it).
type migrationJournal interface {
	Get(id string) (*migrate.Record, error)
	Put(r *migrate.Record) error
	Open() ([]*migrate.Record, error)
}

var (
	_ migrationJournal = (*migrate.Journal)(nil)
	_ migrationJournal = observedJournal{}
)

// observedJournal is the agent's migration journal: every record the
// agent writes goes through Put, so it is where the Observer learns that
// a migration started (the first write of its ID) or ended (the first
// write of it in PhaseDone or PhaseAborted). It reads the previous
// record to tell, a small file already in the page cache, and only when
// someone observes.
type observedJournal struct {
	*migrate.Journal
	obs Observer
}

// Put writes r (migrate.Journal.Put) and tells the observer what
// changed.
func (j observedJournal) Put(r *migrate.Record) error {
	if j.obs == nil {
		return j.Journal.Put(r)
	}
	prev, err := j.Journal.Get(r.ID)
	isNew := errors.Is(err, migrate.ErrUnknownMigration)
	if err := j.Journal.Put(r); err != nil {
		return err
	}
	if isNew {
		j.obs.MigrationStarted(r.Role)
	}
	ended := r.Phase == migrate.PhaseDone || r.Phase == migrate.PhaseAborted
	if ended && (isNew || (prev != nil && prev.Phase != r.Phase)) {
		j.obs.MigrationEnded(migrationEnd(r))
	}
	return nil
}

// observeTransfer tells the observer, if any, of a transfer sent whole.
func (a *Agent) observeTransfer(kind string, bytes int64) {
	if a.cfg.Observer != nil {
		a.cfg.Observer.MigrationTransfer(kind, bytes)
	}
}

// tally wraps progress so that *sent follows the bytes it reports.
func tally(sent *int64, progress func(done, total int64)) func(done, total int64) {
	return func(done, total int64) {
		*sent = done
		if progress != nil {
			progress(done, total)
		}
	}
}

// ContainerCounts counts this node's containers by state, every state
// present (zero included). It never waits for a container busy in a long
// operation: such a container counts in the state it was last seen in
// (as in the heartbeat's report).
func (a *Agent) ContainerCounts() map[State]int {
	out := make(map[State]int, len(transitions))
	for s := range transitions {
		out[s] = 0
	}
	for _, c := range a.snapshotContainers() {
		out[c.State]++
	}
	return out
}
