package fsm

import (
	"fmt"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// A migration's record moves through the phases of migrate.Phase, one
// raft entry per step:
//
//	CreateMigration ──▶ prepare ─▶ sync ─▶ dump ─▶ transfer ─▶ restore ─▶ ready
//	                    └──────── RecordMigrationPhase (forward only) ──────┘
//	ready ──CommitMove──▶ committed ──FinishMigration──▶ done
//	  any phase before committed ──AbortMigration──▶ aborted
//	  any phase before committed ──FenceMigration──▶ the same phase,
//	    aborting: it can no longer commit, only abort
//	  aborted, the destination owing its cleanup ──CleanedDestination──▶
//	    aborted, clean
//
// CommitMove is the commit point: in one entry the migration becomes
// committed and the container moves to the destination with its
// generation bumped, so that no snapshot of the state, on any replica,
// shows one without the other.

// migrationStep is the one transition function of a migration's phase.
// It returns a copy of m in phase to, with to's start time at, or nil when
// m is in phase to already (a retried step changes nothing). It refuses
// what migrate.Record refuses: an unknown phase (ErrInvalid), leaving
// aborted (ErrAborted), aborting once committed (ErrCommitted), going
// back (ErrBackwards), committing before ready (ErrNotReady); and, where
// migrate.Record allows skipping to done, finishing before the commit
// (ErrNotCommitted): the container runs on the destination only once its
// move committed.
func migrationStep(m *state.Migration, to state.MigrationPhase, at time.Time) (*state.Migration, error) {
	switch {
	case !to.Known():
		return nil, fmt.Errorf("migration %s: phase %q: %w", m.ID, to, ErrInvalid)
	case to == m.Phase:
		return nil, nil
	case m.Phase == state.MigrationAborted:
		return nil, fmt.Errorf("migration %s: %w (%s): it cannot move to %s; start a new one", m.ID, ErrAborted, m.Error, to)
	case to == state.MigrationAborted:
		if m.Committed() {
			return nil, fmt.Errorf("migration %s: %w: the container is %s's now, so it can only finish", m.ID, ErrCommitted, m.Dest)
		}
	case to.Order() < m.Phase.Order():
		return nil, fmt.Errorf("migration %s: %w: from %s to %s", m.ID, ErrBackwards, m.Phase, to)
	case to == state.MigrationCommitted && m.Aborting:
		return nil, fmt.Errorf("migration %s: %w: the leader decided to abort it (%s)", m.ID, ErrAborted, m.Error)
	case to == state.MigrationCommitted && m.Phase != state.MigrationReady:
		return nil, fmt.Errorf("migration %s: %w: it is in %s, and only a ready migration commits", m.ID, ErrNotReady, m.Phase)
	case to == state.MigrationDone && m.Phase != state.MigrationCommitted:
		return nil, fmt.Errorf("migration %s: %w: it is in %s; commit it first", m.ID, ErrNotCommitted, m.Phase)
	}
	next := m.Clone()
	next.Phase = to
	if next.Started == nil {
		next.Started = map[state.MigrationPhase]time.Time{}
	}
	next.Started[to] = at
	next.Updated = at
	return next, nil
}

// lookupMigration returns the migration with the ID or an error wrapping
// state.ErrNotFound.
func lookupMigration(tx *state.Txn, id string) (*state.Migration, error) {
	if id == "" {
		return nil, fmt.Errorf("migration ID is empty: %w", ErrInvalid)
	}
	m, ok := tx.Migration(id)
	if !ok {
		return nil, fmt.Errorf("migration %s %w: list migrations with 'godwit migration ls'", id, state.ErrNotFound)
	}
	return m, nil
}

func emitMigration(tx *state.Txn, kind string, m *state.Migration, node, message string) {
	tx.EmitEvent(state.Event{Kind: kind, Node: node, Container: m.Container, Migration: m.ID, Message: message})
}

// CreateMigration records the start of a move, in phase prepare, with the
// container's generation as it is now. It is refused when a migration
// with the ID exists (ErrMigrationExists), the container has an open
// migration (state.ErrMigrationOpen), is not on Source (ErrWrongNode) or
// is lost (ErrInvalid), Source is down (ErrNodeDown), Dest is Source
// (ErrInvalid) or is not ready (ErrNodeNotReady: cordoned, draining,
// suspect or down).
// A move that is part of a drain names the node in DrainNode: that node
// must be Source and have a running drain (ErrDrainNotRunning), and the
// drain's open moves must be fewer than its MaxParallel
// (ErrDrainParallel). Ended migrations beyond state.MigrationHistory are
// pruned, oldest first. Result value: the stored *state.Migration.
type CreateMigration struct {
	ID string `json:"id"`
	// Container is the container's ID.
	Container string `json:"container"`
	Source    string `json:"source"`
	Dest      string `json:"dest"`
	// Strategy is the chosen strategy (a migrate.Strategy word).
	Strategy  string          `json:"strategy"`
	Requested state.Requester `json:"requested"`
	// Reason is why: "operator", "drain NODE", "balancer".
	Reason         string    `json:"reason"`
	WhyDestination string    `json:"why_destination,omitempty"`
	WhyStrategy    string    `json:"why_strategy,omitempty"`
	DrainNode      string    `json:"drain_node,omitempty"`
	At             time.Time `json:"at"`
}

func (CreateMigration) Type() CommandType { return TypeCreateMigration }
func (c CreateMigration) when() time.Time { return c.At }

func (c CreateMigration) validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("create migration: ID is empty: %w", ErrInvalid)
	case c.Container == "":
		return fmt.Errorf("create migration %s: container is empty: %w", c.ID, ErrInvalid)
	case c.Source == "" || c.Dest == "":
		return fmt.Errorf("create migration %s: source and destination must both be named: %w", c.ID, ErrInvalid)
	case c.Dest == c.Source:
		return fmt.Errorf("create migration %s: the destination is the source, %s: %w; choose another node", c.ID, c.Source, ErrInvalid)
	case c.Strategy == "":
		return fmt.Errorf("create migration %s: strategy is empty: %w", c.ID, ErrInvalid)
	case c.Reason == "":
		return fmt.Errorf("create migration %s: reason is empty: %w", c.ID, ErrInvalid)
	}
	return nil
}

func (c CreateMigration) apply(tx *state.Txn) (any, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	if _, ok := tx.Migration(c.ID); ok {
		return nil, fmt.Errorf("create migration %s: %w", c.ID, ErrMigrationExists)
	}
	ctr, err := lookupContainer(tx, c.Container)
	if err != nil {
		return nil, fmt.Errorf("create migration %s: %w", c.ID, err)
	}
	if open, ok := tx.OpenMigrationOf(ctr.ID); ok {
		return nil, fmt.Errorf("migrate %s: container %w: %s (%s, from %s to %s); wait for it or cancel it with 'godwit migration cancel %s'",
			ctr.Name, state.ErrMigrationOpen, open.ID, open.Phase, open.Source, open.Dest, open.ID)
	}
	if ctr.Node != c.Source {
		return nil, fmt.Errorf("migrate %s from %s: %w: it is on %s", ctr.Name, c.Source, ErrWrongNode, ctr.Node)
	}
	if ctr.Reported == state.ReportedLost {
		return nil, fmt.Errorf("migrate %s: the container is lost: %w: there is nothing to move; start it again", ctr.Name, ErrInvalid)
	}
	src, err := lookupNode(tx, c.Source)
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", ctr.Name, err)
	}
	if src.Health == state.HealthDown {
		return nil, fmt.Errorf("migrate %s: source node %q: %w; nothing can be moved from it", ctr.Name, c.Source, ErrNodeDown)
	}
	dst, err := lookupNode(tx, c.Dest)
	if err != nil {
		return nil, fmt.Errorf("migrate %s: %w", ctr.Name, err)
	}
	if st := dst.Status(); st != state.NodeReady {
		return nil, fmt.Errorf("migrate %s: destination %q is %s: %w; choose another node, or uncordon it", ctr.Name, c.Dest, st, ErrNodeNotReady)
	}
	if c.DrainNode != "" {
		if err := drainHasRoom(tx, c.DrainNode, c.Source); err != nil {
			return nil, fmt.Errorf("migrate %s: %w", ctr.Name, err)
		}
	}
	m := &state.Migration{
		ID:             c.ID,
		CreatedIndex:   tx.WriteIndex(),
		Container:      ctr.ID,
		ContainerName:  ctr.Name,
		Source:         c.Source,
		Dest:           c.Dest,
		Strategy:       c.Strategy,
		Phase:          state.MigrationPrepare,
		Generation:     ctr.Generation,
		Requested:      c.Requested,
		Reason:         c.Reason,
		DrainNode:      c.DrainNode,
		WhyDestination: c.WhyDestination,
		WhyStrategy:    c.WhyStrategy,
		Started:        map[state.MigrationPhase]time.Time{state.MigrationPrepare: c.At},
		Created:        c.At,
		Updated:        c.At,
	}
	if err := tx.PutMigration(m); err != nil {
		return nil, err
	}
	if _, err := tx.PruneMigrations(state.MigrationHistory); err != nil {
		return nil, err
	}
	emitMigration(tx, state.EventMigrationCreated, m, c.Source,
		fmt.Sprintf("%s from %s to %s by %s at generation %d: %s", ctr.Name, c.Source, c.Dest, c.Strategy, ctr.Generation, c.Reason))
	stored, _ := tx.Migration(m.ID)
	return stored, nil
}

// drainHasRoom checks that a move from source may join the drain of node:
// the drain runs, drains source, and moves fewer than MaxParallel
// containers now.
func drainHasRoom(tx *state.Txn, node, source string) error {
	d, ok := tx.Drain(node)
	if !ok || !d.Running() {
		return fmt.Errorf("node %q: %w", node, ErrDrainNotRunning)
	}
	if node != source {
		return fmt.Errorf("drain of node %q cannot move a container from %q: %w", node, source, ErrInvalid)
	}
	if open := len(tx.Migrations(state.MigrationFilter{Open: true, DrainNode: node})); open >= d.MaxParallel {
		return fmt.Errorf("drain of node %q: %w (%d)", node, ErrDrainParallel, d.MaxParallel)
	}
	return nil
}

// RecordMigrationPhase records that a migration reached a phase before
// its commit (prepare up to ready; the commit, the end and the abort are
// CommitMove's, FinishMigration's and AbortMigration's). Forward only, like
// migrate.Record.Advance: going back is refused (ErrBackwards), so is
// anything after an abort (ErrAborted) or a commit. Recording the phase
// the migration is in changes nothing, Error and Stats included, so a
// retried step is harmless. Otherwise a non-empty Error replaces the
// record's (the last error the driver got past) and a non-nil Stats
// replaces its statistics. Result value: the stored *state.Migration.
type RecordMigrationPhase struct {
	ID    string                `json:"id"`
	Phase state.MigrationPhase  `json:"phase"`
	Error string                `json:"error,omitempty"`
	Stats *state.MigrationStats `json:"stats,omitempty"`
	At    time.Time             `json:"at"`
}

func (RecordMigrationPhase) Type() CommandType { return TypeRecordMigrationPhase }
func (c RecordMigrationPhase) when() time.Time { return c.At }

func (c RecordMigrationPhase) apply(tx *state.Txn) (any, error) {
	if o := c.Phase.Order(); o == 0 || o > state.MigrationReady.Order() {
		return nil, fmt.Errorf("migration %s: phase %q: %w: record phases %s to %s here; commit, finish and abort have their own commands",
			c.ID, c.Phase, ErrInvalid, state.MigrationPrepare, state.MigrationReady)
	}
	old, err := lookupMigration(tx, c.ID)
	if err != nil {
		return nil, err
	}
	m, err := migrationStep(old, c.Phase, c.At)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return old, nil
	}
	if c.Error != "" {
		m.Error = c.Error
	}
	if c.Stats != nil {
		m.Stats = c.Stats.Clone()
	}
	if err := tx.PutMigration(m); err != nil {
		return nil, err
	}
	emitMigration(tx, state.EventMigrationPhase, m, m.Source, fmt.Sprintf("%s: %s -> %s", m.ContainerName, old.Phase, m.Phase))
	stored, _ := tx.Migration(m.ID)
	return stored, nil
}

// CommitMove is the commit point of a migration: atomically, the
// migration becomes committed and its container moves to Dest, with its
// generation bumped by one, its reported state migrating until the
// destination runs it, and its `run --node` placement (Spec.Node)
// dropped unless it names Dest. It is refused unless the migration is ready
// (ErrNotReady; ErrAborted after an abort) and the container still has
// the generation the migration began at (ErrStaleGeneration), and while
// the destination is down (ErrNodeDown: abort instead, the source still
// holds the container). Committing a committed migration changes nothing,
// so a proposer that lost the answer may retry. Result value: the
// container's new generation (uint64), which every later command to an
// agent carries.
type CommitMove struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

func (CommitMove) Type() CommandType { return TypeCommitMove }
func (c CommitMove) when() time.Time { return c.At }

func (c CommitMove) apply(tx *state.Txn) (any, error) {
	old, err := lookupMigration(tx, c.ID)
	if err != nil {
		return nil, err
	}
	newGen := old.Generation + 1
	if old.Committed() {
		return newGen, nil
	}
	m, err := migrationStep(old, state.MigrationCommitted, c.At)
	if err != nil {
		return nil, err
	}
	ctr, err := lookupContainer(tx, old.Container)
	if err != nil {
		return nil, fmt.Errorf("commit migration %s: %w", c.ID, err)
	}
	if ctr.Generation != old.Generation {
		return nil, fmt.Errorf("commit migration %s: container %s is at generation %d, the migration began at %d: %w; abort it",
			c.ID, ctr.Name, ctr.Generation, old.Generation, ErrStaleGeneration)
	}
	if ctr.Node != old.Source {
		return nil, fmt.Errorf("commit migration %s: container %s is on %s, not %s: %w; abort it", c.ID, ctr.Name, ctr.Node, old.Source, ErrWrongNode)
	}
	dst, err := lookupNode(tx, old.Dest)
	if err != nil {
		return nil, fmt.Errorf("commit migration %s: %w", c.ID, err)
	}
	if dst.Health == state.HealthDown {
		return nil, fmt.Errorf("commit migration %s: destination %q: %w; abort it: the source still holds the container", c.ID, old.Dest, ErrNodeDown)
	}
	if err := tx.PutMigration(m); err != nil {
		return nil, err
	}
	moved := ctr.Clone()
	moved.Node = old.Dest
	if moved.Spec.Node != old.Dest {
		// `run --node` placed it and kept it there until something
		// moved it on purpose (an operator's --to, the balancer): the
		// placement no longer holds it.
		moved.Spec.Node = ""
	}
	moved.Generation = newGen
	moved.Reported = state.ReportedMigrating
	moved.ReportedAt = c.At
	if err := tx.PutContainer(moved); err != nil {
		return nil, err
	}
	emitMigration(tx, state.EventMigrationCommitted, m, m.Dest,
		fmt.Sprintf("%s moved from %s to %s: generation %d -> %d", m.ContainerName, m.Source, m.Dest, old.Generation, newGen))
	return newGen, nil
}

// FinishMigration records that a committed migration is done: the
// destination runs the container. A container still reported migrating
// becomes running. Refused before the commit (ErrNotCommitted) and after
// an abort (ErrAborted); finishing a done migration changes nothing. A
// non-nil Stats replaces the statistics. Note, when set, is added to the
// event: how the move was finished (a new leader's, from the record).
// Result value: the stored *state.Migration.
type FinishMigration struct {
	ID    string                `json:"id"`
	Stats *state.MigrationStats `json:"stats,omitempty"`
	Note  string                `json:"note,omitempty"`
	At    time.Time             `json:"at"`
}

func (FinishMigration) Type() CommandType { return TypeFinishMigration }
func (c FinishMigration) when() time.Time { return c.At }

func (c FinishMigration) apply(tx *state.Txn) (any, error) {
	old, err := lookupMigration(tx, c.ID)
	if err != nil {
		return nil, err
	}
	m, err := migrationStep(old, state.MigrationDone, c.At)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return old, nil
	}
	if c.Stats != nil {
		m.Stats = c.Stats.Clone()
	}
	if err := tx.PutMigration(m); err != nil {
		return nil, err
	}
	if ctr, ok := tx.ContainerByID(m.Container); ok && ctr.Node == m.Dest && ctr.Generation == m.Generation+1 &&
		ctr.Reported == state.ReportedMigrating {
		if err := setReported(tx, ctr, state.ReportedRunning, c.At); err != nil {
			return nil, err
		}
	}
	msg := fmt.Sprintf("%s runs on %s", m.ContainerName, m.Dest)
	if s := m.Stats; s.Total > 0 {
		msg += fmt.Sprintf(": downtime %s, total %s, %d bytes", s.Downtime, s.Total, s.Bytes)
	}
	if c.Note != "" {
		msg += "; " + c.Note
	}
	emitMigration(tx, state.EventMigrationDone, m, m.Dest, msg)
	stored, _ := tx.Migration(m.ID)
	return stored, nil
}

// AbortMigration ends a migration before its commit, recording why in
// Error (required): the source keeps the container, which is left as it
// is in the state. Refused once committed (ErrCommitted); aborting an
// aborted migration changes nothing. A non-nil Stats replaces the
// statistics. DestinationCleanup records that the destination did not
// acknowledge the abort (see state.Migration). Result value: the stored
// *state.Migration.
type AbortMigration struct {
	ID                 string                `json:"id"`
	Error              string                `json:"error"`
	Stats              *state.MigrationStats `json:"stats,omitempty"`
	DestinationCleanup bool                  `json:"destination_cleanup,omitempty"`
	At                 time.Time             `json:"at"`
}

func (AbortMigration) Type() CommandType { return TypeAbortMigration }
func (c AbortMigration) when() time.Time { return c.At }

func (c AbortMigration) apply(tx *state.Txn) (any, error) {
	if c.Error == "" {
		return nil, fmt.Errorf("abort migration %s: say why: the error is empty: %w", c.ID, ErrInvalid)
	}
	old, err := lookupMigration(tx, c.ID)
	if err != nil {
		return nil, err
	}
	m, err := migrationStep(old, state.MigrationAborted, c.At)
	if err != nil {
		return nil, err
	}
	if m == nil {
		return old, nil
	}
	m.Error = c.Error
	m.Aborting = false
	m.DestinationCleanup = c.DestinationCleanup
	if c.Stats != nil {
		m.Stats = c.Stats.Clone()
	}
	if err := tx.PutMigration(m); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("%s stays on %s: aborted in %s: %s", m.ContainerName, m.Source, old.Phase, c.Error)
	if m.DestinationCleanup {
		msg += fmt.Sprintf("; %s did not acknowledge the abort and is asked to drop what it holds once it answers", m.Dest)
	}
	emitMigration(tx, state.EventMigrationAborted, m, m.Source, msg)
	stored, _ := tx.Migration(m.ID)
	return stored, nil
}

// FenceMigration records that the leader aborts a migration whose
// destination did not acknowledge the abort: from this entry on the move
// cannot commit (CommitMove refuses it with ErrAborted), so the source
// may run the container again whatever the destination holds; an
// AbortMigration ends it. Refused once committed (ErrCommitted) or
// aborted (ErrAborted); fencing a fenced migration changes nothing.
// Result value: the stored *state.Migration.
type FenceMigration struct {
	ID string `json:"id"`
	// Why is the destination's failure, for the record and the event.
	Why string    `json:"why"`
	At  time.Time `json:"at"`
}

func (FenceMigration) Type() CommandType { return TypeFenceMigration }
func (c FenceMigration) when() time.Time { return c.At }

func (c FenceMigration) apply(tx *state.Txn) (any, error) {
	m, err := lookupMigration(tx, c.ID)
	if err != nil {
		return nil, err
	}
	switch {
	case m.Committed():
		return nil, fmt.Errorf("migration %s: %w: the container is %s's now, so it can only finish", m.ID, ErrCommitted, m.Dest)
	case m.Phase == state.MigrationAborted:
		return nil, fmt.Errorf("migration %s: %w (%s)", m.ID, ErrAborted, m.Error)
	case m.Aborting:
		return m, nil
	}
	next := m.Clone()
	next.Aborting = true
	next.Error = c.Why
	next.Updated = c.At
	if err := tx.PutMigration(next); err != nil {
		return nil, err
	}
	emitMigration(tx, state.EventMigrationAborting, next, next.Source,
		fmt.Sprintf("%s: aborting in %s without %s's acknowledgement (%s): the move can no longer commit, so %s runs the container again",
			next.ContainerName, next.Phase, next.Dest, c.Why, next.Source))
	stored, _ := tx.Migration(next.ID)
	return stored, nil
}

// CleanedDestination records that the destination of an aborted
// migration, which had not acknowledged the abort, has dropped what it
// held. Cleaning a clean migration changes nothing; an open one is
// refused (ErrInvalid). Result value: the stored *state.Migration.
type CleanedDestination struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

func (CleanedDestination) Type() CommandType { return TypeCleanedDestination }
func (c CleanedDestination) when() time.Time { return c.At }

func (c CleanedDestination) apply(tx *state.Txn) (any, error) {
	m, err := lookupMigration(tx, c.ID)
	if err != nil {
		return nil, err
	}
	switch {
	case m.Phase != state.MigrationAborted:
		return nil, fmt.Errorf("migration %s is %s: %w: only an aborted migration's destination is cleaned", m.ID, m.Phase, ErrInvalid)
	case !m.DestinationCleanup:
		return m, nil
	}
	next := m.Clone()
	next.DestinationCleanup = false
	next.Updated = c.At
	if err := tx.PutMigration(next); err != nil {
		return nil, err
	}
	emitMigration(tx, state.EventMigrationCleaned, next, next.Dest,
		fmt.Sprintf("%s: %s dropped what it held for the aborted move", next.ContainerName, next.Dest))
	stored, _ := tx.Migration(next.ID)
	return stored, nil
}
