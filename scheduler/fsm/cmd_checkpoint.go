package fsm

import (
	"fmt"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// CheckpointAway records that a container was checkpointed on its node
// (stopping it) and that another node, Holder, now keeps the checkpoint
// too: a drain's deadline with the checkpoint policy. In one entry the
// container moves to Holder with its generation bumped (the stopped copy
// left on Source is stale from now on), desired stopped, reported
// checkpointed, with Checkpoint set, so that `godwit start` restores it
// on Holder; a running drain of Source counts it. It is refused unless
// the container is on Source at Generation (ErrWrongNode,
// ErrStaleGeneration), has no open migration (state.ErrMigrationOpen),
// and Holder is another node that is not down (ErrInvalid,
// ErrNodeDown). Recording it again changes nothing. Result value: the
// container's new generation (uint64).
type CheckpointAway struct {
	ID         string    `json:"id"`
	Source     string    `json:"source"`
	Generation uint64    `json:"generation"`
	Holder     string    `json:"holder"`
	Checkpoint string    `json:"checkpoint"`
	At         time.Time `json:"at"`
}

func (CheckpointAway) Type() CommandType { return TypeCheckpointAway }
func (c CheckpointAway) when() time.Time { return c.At }

func (c CheckpointAway) apply(tx *state.Txn) (any, error) {
	ctr, err := lookupContainer(tx, c.ID)
	if err != nil {
		return nil, err
	}
	if ctr.Node == c.Holder && ctr.Checkpoint == c.Checkpoint && ctr.Generation == c.Generation+1 {
		return ctr.Generation, nil
	}
	switch {
	case c.Checkpoint == "":
		return nil, fmt.Errorf("checkpoint container %s away: no checkpoint ID: %w", ctr.Name, ErrInvalid)
	case c.Holder == c.Source:
		return nil, fmt.Errorf("checkpoint container %s away: the holder is its own node %s: %w", ctr.Name, c.Source, ErrInvalid)
	case ctr.Node != c.Source:
		return nil, fmt.Errorf("checkpoint container %s away: it is on %s, not %s: %w", ctr.Name, ctr.Node, c.Source, ErrWrongNode)
	case ctr.Generation != c.Generation:
		return nil, fmt.Errorf("checkpoint container %s away: it is at generation %d, not %d: %w", ctr.Name, ctr.Generation, c.Generation, ErrStaleGeneration)
	}
	if m, ok := tx.OpenMigrationOf(ctr.ID); ok {
		return nil, fmt.Errorf("checkpoint container %s away: migration %s: %w", ctr.Name, m.ID, state.ErrMigrationOpen)
	}
	holder, err := lookupNode(tx, c.Holder)
	if err != nil {
		return nil, err
	}
	if holder.Health == state.HealthDown {
		return nil, fmt.Errorf("checkpoint container %s away to %s: %w", ctr.Name, c.Holder, ErrNodeDown)
	}
	away := ctr.Clone()
	away.Node = c.Holder
	away.Generation = c.Generation + 1
	away.Desired = state.DesiredStopped
	away.Reported = state.ReportedCheckpointed
	away.ReportedAt = c.At
	away.Checkpoint = c.Checkpoint
	if err := tx.PutContainer(away); err != nil {
		return nil, err
	}
	if d, ok := tx.Drain(c.Source); ok && d.Running() {
		counted := d.Clone()
		counted.Checkpointed++
		counted.Updated = c.At
		if err := tx.PutDrain(counted); err != nil {
			return nil, err
		}
	}
	tx.Emit(state.EventContainerCheckpointed, c.Holder, ctr.ID,
		fmt.Sprintf("%s checkpointed on %s and kept on %s as checkpoint %s (generation %d -> %d): `godwit start %s` restores it there",
			ctr.Name, c.Source, c.Holder, c.Checkpoint, c.Generation, away.Generation, ctr.Name))
	return away.Generation, nil
}
