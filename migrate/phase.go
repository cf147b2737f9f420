package migrate

import (
	"errors"
	"fmt"
	"time"
)

// Phase is where a migration stands. Both sides and the driver record it
// by migration ID, and every step is idempotent: asking for the phase a
// migration is already in does nothing.
type Phase string

// The phases in order. A strategy may skip some (only pre-copy iterates
// in PhaseSync; post-copy restores before the memory has arrived), never
// go back. Until PhaseCommitted the move can be aborted, which ends in
// PhaseAborted with the source running; from PhaseCommitted on it can only
// finish. README.md draws what each side holds in each phase.
const (
	PhasePrepare   Phase = "prepare"   // compatibility, image layers, IP and netns on the destination
	PhaseSync      Phase = "sync"      // writable layer (and pre-copy memory) sent while the container runs
	PhaseDump      Phase = "dump"      // container frozen and dumped: the downtime starts
	PhaseTransfer  Phase = "transfer"  // images and the last rootfs changes sent
	PhaseRestore   Phase = "restore"   // destination restores the container, held stopped
	PhaseReady     Phase = "ready"     // destination holds a stopped copy; source holds its stopped copy and images
	PhaseCommitted Phase = "committed" // the driver decided: the destination's copy is the container
	PhaseDone      Phase = "done"      // destination runs it (downtime ends), routes moved, source's copy removed
	PhaseAborted   Phase = "aborted"   // destination clean, source running again from where it was
)

// The sides of a migration, as an agent records its own.
const (
	RoleSource      = "source"
	RoleDestination = "destination"
)

// order ranks the forward phases; PhaseAborted is outside the order.
var order = map[Phase]int{
	PhasePrepare: 1, PhaseSync: 2, PhaseDump: 3, PhaseTransfer: 4,
	PhaseRestore: 5, PhaseReady: 6, PhaseCommitted: 7, PhaseDone: 8,
}

// Errors of phase changes. They fence the two outcomes apart: once
// committed a migration cannot be aborted, once aborted it cannot be
// committed, so a late or repeated call from a driver that lost track
// never produces a second running copy.
var (
	ErrCommitted = errors.New("migration already committed")
	ErrAborted   = errors.New("migration already aborted")
	ErrBackwards = errors.New("migration phase cannot go back")
	ErrNotReady  = errors.New("migration is not ready to commit")
)

// Record is one side's durable account of a migration: its ID, the phase
// reached and when each phase began, so that a restarted agent or driver
// knows where the move stands and the statistics can be computed.
type Record struct {
	ID string `json:"id"`
	// Container is the migrating container's name.
	Container string `json:"container,omitempty"`
	// ContainerID is its full ID, as the destination recorded it in
	// Prepare: what it made for the container before the restore (its
	// network) is found by it.
	ContainerID string `json:"container_id,omitempty"`
	// Role is the recording agent's side, RoleSource or RoleDestination
	// (empty in the driver's record): an agent refuses a call meant for
	// the other side, such as an abort that would discard a source's only
	// copy.
	Role     string              `json:"role,omitempty"`
	Strategy Strategy            `json:"strategy"`
	Phase    Phase               `json:"phase"`
	Started  map[Phase]time.Time `json:"started"`
	// Error is why the migration was aborted, if it was.
	Error string `json:"error,omitempty"`
	// PreCopy is how pre-copy's rounds went (driver's record, PreCopy
	// only): a resumed driver goes on from the last round, and the final
	// dump takes it as its parent.
	PreCopy *PreCopyOutcome `json:"pre_copy,omitempty"`
}

// NewRecord starts the record of migration id in PhasePrepare.
func NewRecord(id string, s Strategy, now time.Time) *Record {
	return &Record{ID: id, Strategy: s, Phase: PhasePrepare, Started: map[Phase]time.Time{PhasePrepare: now}}
}

// Advance moves r to phase p at now. It reports changed false, and does
// nothing, when r is already in p: retried calls are harmless. Moving back,
// leaving PhaseAborted, or committing before PhaseReady is refused.
// Aborting is Abort's job.
func (r *Record) Advance(p Phase, now time.Time) (changed bool, err error) {
	switch {
	case p == r.Phase:
		return false, nil
	case r.Phase == PhaseAborted:
		return false, fmt.Errorf("migration %s: %w: cannot move to %s", r.ID, ErrAborted, p)
	case p == PhaseAborted:
		return false, fmt.Errorf("migration %s: use Abort to abort", r.ID)
	case order[p] == 0:
		return false, fmt.Errorf("migration %s: unknown phase %q", r.ID, p)
	case order[p] < order[r.Phase]:
		return false, fmt.Errorf("migration %s: %w: from %s to %s", r.ID, ErrBackwards, r.Phase, p)
	case p == PhaseCommitted && r.Phase != PhaseReady:
		return false, fmt.Errorf("migration %s: %w: it is in %s, and only a ready migration commits", r.ID, ErrNotReady, r.Phase)
	}
	r.Phase = p
	r.Started[p] = now
	return true, nil
}

// Abort ends r before its commit, recording why. Aborting an aborted
// migration does nothing (changed false); aborting a committed one is
// refused with ErrCommitted, since the destination's copy is then the
// container.
func (r *Record) Abort(why string, now time.Time) (changed bool, err error) {
	switch {
	case r.Phase == PhaseAborted:
		return false, nil
	case order[r.Phase] >= order[PhaseCommitted]:
		return false, fmt.Errorf("migration %s: %w: it can only finish now", r.ID, ErrCommitted)
	}
	r.Phase = PhaseAborted
	r.Started[PhaseAborted] = now
	r.Error = why
	return true, nil
}

// Downtime is how long the container was frozen: from the dump to the
// destination running it, or to the source running it again after an
// abort. It is zero while the migration is still in flight, or when it
// never froze the container.
func (r *Record) Downtime() time.Duration {
	frozen, ok := r.Started[PhaseDump]
	if !ok {
		return 0
	}
	for _, end := range []Phase{PhaseDone, PhaseAborted} {
		if t, ok := r.Started[end]; ok {
			return t.Sub(frozen)
		}
	}
	return 0
}

// PhaseDurations is how long each phase lasted, up to the phase r is in
// (whose duration is open and left out).
func (r *Record) PhaseDurations() map[Phase]time.Duration {
	out := map[Phase]time.Duration{}
	var prev Phase
	for _, p := range []Phase{PhasePrepare, PhaseSync, PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady, PhaseCommitted, PhaseDone, PhaseAborted} {
		t, ok := r.Started[p]
		if !ok {
			continue
		}
		if prev != "" {
			out[prev] = t.Sub(r.Started[prev])
		}
		prev = p
	}
	return out
}
