package state

import (
	"fmt"
	"time"
)

// DrainStatus is where a drain stands.
type DrainStatus string

const (
	// DrainRunning: the node is draining; its containers are being moved.
	DrainRunning DrainStatus = "running"
	// DrainDone: the node is empty; it stays cordoned for its maintenance.
	DrainDone DrainStatus = "done"
	// DrainFailed: the drain gave up (its deadline passed with the fail
	// policy, or a container could not move); what was left keeps running
	// on the node, which stays cordoned.
	DrainFailed DrainStatus = "failed"
	// DrainCancelled: the operator uncordoned or cordoned the node, or
	// cancelled the drain; what was left keeps running.
	DrainCancelled DrainStatus = "cancelled"
	// DrainStopped: the deadline passed and its policy (stop) stopped
	// what was left: nothing runs on the node, the stopped containers
	// stay on it (`godwit start` them after the maintenance), and it
	// stays cordoned.
	DrainStopped DrainStatus = "stopped"
)

// Known reports whether s is one of the statuses.
func (s DrainStatus) Known() bool {
	switch s {
	case DrainRunning, DrainDone, DrainFailed, DrainCancelled, DrainStopped:
		return true
	}
	return false
}

// DeadlinePolicy is what a drain does with the containers still on the
// node when its deadline passes.
type DeadlinePolicy string

const (
	// OnDeadlineCheckpoint checkpoints each container left that runs
	// (stopping it), keeps the checkpoint on another node too (not only
	// the one going into maintenance), and moves the container's record
	// there, stopped: `godwit start` restores it on that node.
	OnDeadlineCheckpoint DeadlinePolicy = "checkpoint"
	// OnDeadlineStop stops the containers left.
	OnDeadlineStop DeadlinePolicy = "stop"
	// OnDeadlineFail ends the drain as failed and leaves the rest running.
	OnDeadlineFail DeadlinePolicy = "fail"
)

// Known reports whether p is one of the policies.
func (p DeadlinePolicy) Known() bool {
	switch p {
	case OnDeadlineCheckpoint, OnDeadlineStop, OnDeadlineFail:
		return true
	}
	return false
}

// Drain is the cluster's record of emptying a node for maintenance. The
// state keeps one per node: the running one, or the last one that ended.
type Drain struct {
	// Node is the node being drained, the record's key.
	Node string `json:"node"`
	// Deadline is when OnDeadline applies; zero for no deadline.
	Deadline   time.Time      `json:"deadline,omitzero"`
	OnDeadline DeadlinePolicy `json:"on_deadline,omitempty"`
	// MaxParallel is how many of the node's containers may move at once.
	MaxParallel int         `json:"max_parallel"`
	Status      DrainStatus `json:"status"`
	Started     time.Time   `json:"started"`
	// Ended is when the drain ended; zero while it runs.
	Ended time.Time `json:"ended,omitzero"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
	// Blocked maps the ID of each container that cannot move now to why
	// (no node has room, a constraint, the CPU ...).
	Blocked map[string]string `json:"blocked,omitempty"`
	// Left is how many containers are still on the node; Moved how many
	// the drain moved; Failed how many of its moves failed.
	Left   int `json:"left"`
	Moved  int `json:"moved"`
	Failed int `json:"failed"`
	// Checkpointed is how many containers the deadline's checkpoint
	// policy checkpointed away to other nodes.
	Checkpointed int `json:"checkpointed,omitempty"`
	// Requested is who started the drain.
	Requested Requester `json:"requested"`
	// Reason says why the drain ended when it did not end done (who
	// cancelled it, what failed).
	Reason string `json:"reason,omitempty"`
}

// Running reports whether the drain is still going on.
func (d *Drain) Running() bool { return d.Status == DrainRunning }

// Clone returns a deep copy of d.
func (d *Drain) Clone() *Drain {
	c := *d
	c.Blocked = cloneMap(d.Blocked)
	return &c
}

// PutDrain inserts or replaces the drain of d's node.
func (t *Txn) PutDrain(d *Drain) error {
	if err := t.tx.Insert(TableDrains, d.Clone()); err != nil {
		return fmt.Errorf("store drain of node %q: %w", d.Node, err)
	}
	t.touch(TableDrains)
	return nil
}

// Drain returns the drain of the node: the running one, or the last one
// that ended.
func (r reader) Drain(node string) (*Drain, bool) {
	d, ok := r.first(TableDrains, indexID, node).(*Drain)
	return d, ok
}

// Drains returns every drain, running or ended, sorted by node.
func (r reader) Drains() []*Drain {
	return all[*Drain](r, TableDrains, indexID)
}
