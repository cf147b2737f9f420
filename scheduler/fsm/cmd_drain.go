package fsm

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// A drain's record, one per node:
//
//	StartDrain ──▶ running ──EndDrain──▶ done (node empty) | failed | cancelled
//	   (node: draining)   │                     (node: cordoned)
//	                      └─ SetSchedulability away from draining (uncordon,
//	                         cordon) ──▶ cancelled (node: ready or cordoned)
//
// Every end leaves the node cordoned unless the operator's uncordon ended
// it: a drained node is kept empty for its maintenance, and one whose drain
// failed or was cancelled keeps what it still runs and gets nothing new
// until the operator uncordons it.

// StartDrain starts draining a node: the node becomes draining (nothing
// new is placed on it) and the drain runs, counting the node's containers
// as left. Refused when a drain of the node runs (ErrDrainRunning), the
// node is down (ErrNodeDown), MaxParallel is below 1, OnDeadline is not a
// policy while Deadline is set, or Deadline is not after At (ErrInvalid).
// A drain that ended before is replaced. Result value: the stored
// *state.Drain.
type StartDrain struct {
	Node string `json:"node"`
	// Deadline is when OnDeadline applies; zero for none.
	Deadline    time.Time            `json:"deadline,omitzero"`
	OnDeadline  state.DeadlinePolicy `json:"on_deadline,omitempty"`
	MaxParallel int                  `json:"max_parallel"`
	Requested   state.Requester      `json:"requested"`
	At          time.Time            `json:"at"`
}

func (StartDrain) Type() CommandType { return TypeStartDrain }
func (c StartDrain) when() time.Time { return c.At }

func (c StartDrain) validate() error {
	switch {
	case c.MaxParallel < 1:
		return fmt.Errorf("drain node %q: max parallel %d: %w: move at least one container at a time", c.Node, c.MaxParallel, ErrInvalid)
	case !c.Deadline.IsZero() && !c.OnDeadline.Known():
		return fmt.Errorf("drain node %q: on deadline %q: %w (want %s, %s or %s)", c.Node, c.OnDeadline, ErrInvalid,
			state.OnDeadlineCheckpoint, state.OnDeadlineStop, state.OnDeadlineFail)
	case c.Deadline.IsZero() && c.OnDeadline != "":
		return fmt.Errorf("drain node %q: a policy on deadline (%s) without a deadline: %w", c.Node, c.OnDeadline, ErrInvalid)
	case !c.Deadline.IsZero() && !c.Deadline.After(c.At):
		return fmt.Errorf("drain node %q: the deadline %s is not after the start %s: %w", c.Node,
			c.Deadline.Format(time.RFC3339), c.At.Format(time.RFC3339), ErrInvalid)
	}
	return nil
}

func (c StartDrain) apply(tx *state.Txn) (any, error) {
	n, err := lookupNode(tx, c.Node)
	if err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if n.Health == state.HealthDown {
		return nil, fmt.Errorf("drain node %q: %w: its containers cannot move live; remove them or wait for it to register again", c.Node, ErrNodeDown)
	}
	if d, ok := tx.Drain(c.Node); ok && d.Running() {
		return nil, fmt.Errorf("drain node %q: %w since %s; follow it with 'godwit node drain %s --watch' or end it with 'godwit node uncordon %s'",
			c.Node, ErrDrainRunning, d.Started.Format(time.RFC3339), c.Node, c.Node)
	}
	if err := setSchedulability(tx, n, state.Draining); err != nil {
		return nil, err
	}
	d := &state.Drain{
		Node:        c.Node,
		Deadline:    c.Deadline,
		OnDeadline:  c.OnDeadline,
		MaxParallel: c.MaxParallel,
		Status:      state.DrainRunning,
		Started:     c.At,
		Updated:     c.At,
		Left:        tx.ContainerCount(c.Node),
		Requested:   c.Requested,
	}
	if err := tx.PutDrain(d); err != nil {
		return nil, err
	}
	msg := fmt.Sprintf("%d containers to move, %d at a time", d.Left, d.MaxParallel)
	if !d.Deadline.IsZero() {
		msg += fmt.Sprintf(", by %s, then %s", d.Deadline.Format(time.RFC3339), d.OnDeadline)
	}
	tx.EmitEvent(state.Event{Kind: state.EventDrainStarted, Node: c.Node, Message: msg})
	stored, _ := tx.Drain(c.Node)
	return stored, nil
}

// UpdateDrain records a running drain's progress: the containers that
// cannot move now and why (Blocked replaces the record's), and the
// counts. Each container newly blocked, or blocked for a new reason, is
// an event of its own, so that the operator hears at once. Refused when
// the node has no running drain (ErrDrainNotRunning) or a count is
// negative (ErrInvalid); the same progress again changes nothing. Result
// value: the stored *state.Drain.
type UpdateDrain struct {
	Node    string            `json:"node"`
	Blocked map[string]string `json:"blocked,omitempty"`
	Left    int               `json:"left"`
	Moved   int               `json:"moved"`
	Failed  int               `json:"failed"`
	At      time.Time         `json:"at"`
}

func (UpdateDrain) Type() CommandType { return TypeUpdateDrain }
func (c UpdateDrain) when() time.Time { return c.At }

func (c UpdateDrain) apply(tx *state.Txn) (any, error) {
	if c.Left < 0 || c.Moved < 0 || c.Failed < 0 {
		return nil, fmt.Errorf("update drain of node %q: negative count: %w", c.Node, ErrInvalid)
	}
	old, err := runningDrain(tx, c.Node)
	if err != nil {
		return nil, err
	}
	if old.Left == c.Left && old.Moved == c.Moved && old.Failed == c.Failed && maps.Equal(old.Blocked, c.Blocked) {
		return old, nil
	}
	d := old.Clone()
	d.Blocked = maps.Clone(c.Blocked)
	d.Left, d.Moved, d.Failed = c.Left, c.Moved, c.Failed
	d.Updated = c.At
	if err := tx.PutDrain(d); err != nil {
		return nil, err
	}
	// Sorted: the events' order must not depend on map order.
	for _, id := range slices.Sorted(maps.Keys(c.Blocked)) {
		why := c.Blocked[id]
		if prev, ok := old.Blocked[id]; ok && prev == why {
			continue
		}
		name := id
		if ctr, ok := tx.ContainerByID(id); ok {
			name = ctr.Name
		}
		tx.EmitEvent(state.Event{Kind: state.EventDrainUpdated, Node: c.Node, Container: id,
			Message: fmt.Sprintf("%s cannot move: %s", name, why)})
	}
	tx.EmitEvent(state.Event{Kind: state.EventDrainUpdated, Node: c.Node,
		Message: fmt.Sprintf("%d left, %d moved, %d failed, %d blocked", d.Left, d.Moved, d.Failed, len(d.Blocked))})
	stored, _ := tx.Drain(c.Node)
	return stored, nil
}

// runningDrain returns the node's running drain or an error wrapping
// ErrDrainNotRunning.
func runningDrain(tx *state.Txn, node string) (*state.Drain, error) {
	if node == "" {
		return nil, fmt.Errorf("node name is empty: %w", ErrInvalid)
	}
	d, ok := tx.Drain(node)
	if !ok || !d.Running() {
		return nil, fmt.Errorf("node %q: %w; start one with 'godwit node drain %s'", node, ErrDrainNotRunning, node)
	}
	return d, nil
}

// EndDrain ends a running drain: done only when no container is left on
// the node, whatever its state (ErrNodeNotEmpty); failed or cancelled
// leave what remains running. The node goes from draining to cordoned.
// Ending a drain again with the status it ended with changes nothing;
// with another, or with no drain running, it is refused
// (ErrDrainNotRunning). Result value: the stored *state.Drain.
type EndDrain struct {
	Node   string            `json:"node"`
	Status state.DrainStatus `json:"status"`
	// Reason says why a drain failed or was cancelled.
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

func (EndDrain) Type() CommandType { return TypeEndDrain }
func (c EndDrain) when() time.Time { return c.At }

func (c EndDrain) apply(tx *state.Txn) (any, error) {
	if !c.Status.Known() || c.Status == state.DrainRunning {
		return nil, fmt.Errorf("end drain of node %q: status %q: %w (want %s, %s, %s or %s)", c.Node, c.Status, ErrInvalid,
			state.DrainDone, state.DrainFailed, state.DrainCancelled, state.DrainStopped)
	}
	if d, ok := tx.Drain(c.Node); ok && d.Status == c.Status {
		return d, nil
	}
	d, err := runningDrain(tx, c.Node)
	if err != nil {
		return nil, err
	}
	if n := tx.ContainerCount(c.Node); c.Status == state.DrainDone && n > 0 {
		return nil, fmt.Errorf("end drain of node %q as done: %w (%d): move them first, or end it as failed", c.Node, ErrNodeNotEmpty, n)
	}
	if c.Status == state.DrainStopped {
		for _, ctr := range tx.ContainersOn(c.Node) {
			if ctr.Desired == state.DesiredRunning {
				return nil, fmt.Errorf("end drain of node %q as stopped: container %s is still desired running: %w", c.Node, ctr.Name, ErrInvalid)
			}
		}
	}
	if n, ok := tx.Node(c.Node); ok && n.Schedulability == state.Draining {
		if err := setSchedulability(tx, n, state.Cordoned); err != nil {
			return nil, err
		}
	}
	if err := endDrain(tx, d, c.Status, c.Reason, c.At); err != nil {
		return nil, err
	}
	stored, _ := tx.Drain(c.Node)
	return stored, nil
}

// endDrain stores d ended with status and emits the event; the caller
// sees to the node's schedulability.
func endDrain(tx *state.Txn, old *state.Drain, status state.DrainStatus, reason string, at time.Time) error {
	d := old.Clone()
	d.Status = status
	d.Reason = reason
	d.Ended = at
	d.Updated = at
	if status == state.DrainDone {
		d.Left = 0
		d.Blocked = nil
	}
	if err := tx.PutDrain(d); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s after %s: %d moved, %d failed, %d left", status, at.Sub(d.Started), d.Moved, d.Failed, d.Left)
	if reason != "" {
		msg += ": " + reason
	}
	tx.EmitEvent(state.Event{Kind: state.EventDrainEnded, Node: d.Node, Message: msg})
	return nil
}
