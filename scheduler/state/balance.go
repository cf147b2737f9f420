package state

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// The balancer's records: its policy, and the decisions the leader
// executed. The policy is scheduler/balance's Policy, kept here as its
// JSON (state imports nothing of balance: scheduler/fsm converts it and
// validates it before it is stored). Plans that started no move are not
// recorded: they are soft state, like the load samples they come from.

// Tables of the balancer's records.
const (
	// TableBalancePolicy holds one row, the policy, once an operator set
	// it; a cluster that never did runs balance.Default().
	TableBalancePolicy = "balance_policy"
	// TableBalanceDecisions holds the last BalanceHistory executed
	// decisions, by the raft index that recorded each.
	TableBalanceDecisions = "balance_decisions"
)

// BalanceHistory is how many executed decisions the state keeps (the
// oldest go first). A decision is recorded only when it started at least
// one move, and a container may not move again within the cooldown: a
// hundred decisions span hours of active balancing on any cluster, more
// than anyone reads back with `godwit balance history`, and cost a few
// hundred KiB of every raft snapshot at most.
const BalanceHistory = 100

// balancePolicyKey is the one row of TableBalancePolicy.
const balancePolicyKey = "policy"

// BalancePolicy is the balancer's policy as raft stores it.
type BalancePolicy struct {
	// Policy is balance.Policy as JSON: its keys are `balance set`'s.
	Policy json.RawMessage `json:"policy"`
	// Updated is when it last changed, Requested who changed it.
	Updated   time.Time `json:"updated"`
	Requested Requester `json:"requested"`
}

// Clone returns a deep copy of p.
func (p *BalancePolicy) Clone() *BalancePolicy {
	c := *p
	c.Policy = cloneSlice(p.Policy)
	return &c
}

// balancePolicyRecord is TableBalancePolicy's single row.
type balancePolicyRecord struct {
	Key    string
	Policy *BalancePolicy
}

// BalanceDecision is one plan of the balancer that the leader executed:
// what it measured, what it predicted and the moves it started (and
// those the coordinator refused).
type BalanceDecision struct {
	// Index is the raft index that recorded it: its key, in time order.
	Index uint64    `json:"index"`
	Time  time.Time `json:"time"`
	// Imbalance is the imbalance the plan measured, CPU and Memory its
	// parts; Predicted the imbalance predicted once the moves in flight
	// and the planned ones are done.
	Imbalance float64 `json:"imbalance"`
	CPU       float64 `json:"cpu"`
	Memory    float64 `json:"memory"`
	Predicted float64 `json:"predicted"`
	Target    float64 `json:"target"`
	Trigger   float64 `json:"trigger"`
	// Nodes is how many ready nodes were measured; InFlight how many
	// migrations were open when it planned.
	Nodes    int `json:"nodes"`
	InFlight int `json:"in_flight,omitempty"`
	// Stop is why the plan ended where it did (a balance.Stop word),
	// Reason the same in a sentence.
	Stop   string `json:"stop"`
	Reason string `json:"reason"`
	// Moves are the planned moves, in the order they were started.
	Moves []BalanceMove `json:"moves"`
}

// Started returns how many of d's moves started a migration.
func (d *BalanceDecision) Started() int {
	n := 0
	for _, m := range d.Moves {
		if m.Migration != "" {
			n++
		}
	}
	return n
}

// Clone returns a deep copy of d.
func (d *BalanceDecision) Clone() *BalanceDecision {
	c := *d
	c.Moves = cloneSlice(d.Moves)
	return &c
}

// BalanceMove is one move of a BalanceDecision: the plan's prediction,
// and the migration that carries it out (or why none does).
type BalanceMove struct {
	// Container is the container's ID, Name its name when planned.
	Container string `json:"container"`
	Name      string `json:"name"`
	From      string `json:"from"`
	To        string `json:"to"`
	// Load is the container's measured load, what the move carries.
	Load Resources `json:"load"`
	// Gain, Stability and Cost are the plan's: the move was made because
	// Gain x Stability exceeded the policy's cost multiple times Cost.
	Gain      float64 `json:"gain"`
	Stability float64 `json:"stability"`
	Cost      float64 `json:"cost"`
	// Bytes, Downtime and Duration are predicted.
	Bytes    int64         `json:"bytes"`
	Downtime time.Duration `json:"downtime"`
	Duration time.Duration `json:"duration"`
	// ImbalanceAfter is the imbalance predicted after this move and those
	// before it.
	ImbalanceAfter float64 `json:"imbalance_after"`
	// Reason says why, in words (the migration's why-destination);
	// CostBasis what the cost prediction rests on.
	Reason    string `json:"reason"`
	CostBasis string `json:"cost_basis,omitempty"`
	// Migration is the ID of the migration started; empty when the
	// coordinator refused the move, and Refused then says why.
	Migration string `json:"migration,omitempty"`
	Refused   string `json:"refused,omitempty"`
}

// SetBalancePolicy replaces the balancer's policy.
func (t *Txn) SetBalancePolicy(p *BalancePolicy) error {
	if err := t.tx.Insert(TableBalancePolicy, &balancePolicyRecord{Key: balancePolicyKey, Policy: p.Clone()}); err != nil {
		return fmt.Errorf("store balance policy: %w", err)
	}
	t.touch(TableBalancePolicy)
	return nil
}

// AppendBalanceDecision stores d under its Index, which the caller sets
// (the raft index of the command that carries it), and drops the oldest
// decisions beyond BalanceHistory.
func (t *Txn) AppendBalanceDecision(d *BalanceDecision) error {
	if err := t.tx.Insert(TableBalanceDecisions, d.Clone()); err != nil {
		return fmt.Errorf("store balance decision %d: %w", d.Index, err)
	}
	t.touch(TableBalanceDecisions)
	all := all[*BalanceDecision](t.reader, TableBalanceDecisions, indexID)
	for _, old := range all[:max(len(all)-BalanceHistory, 0)] {
		if err := t.tx.Delete(TableBalanceDecisions, old); err != nil {
			return fmt.Errorf("drop balance decision %d: %w", old.Index, err)
		}
	}
	return nil
}

// BalancePolicy returns the policy an operator set, if one did.
func (r reader) BalancePolicy() (*BalancePolicy, bool) {
	rec, ok := r.first(TableBalancePolicy, indexID, balancePolicyKey).(*balancePolicyRecord)
	if !ok {
		return nil, false
	}
	return rec.Policy, true
}

// BalanceDecisions returns the last limit executed decisions (all that
// are kept when limit is 0 or less), oldest first.
func (r reader) BalanceDecisions(limit int) []*BalanceDecision {
	out := all[*BalanceDecision](r, TableBalanceDecisions, indexID)
	if limit > 0 && len(out) > limit {
		out = slices.Clone(out[len(out)-limit:])
	}
	return out
}

// BalancePolicy loads the balancer's policy.
func (r *Restore) BalancePolicy(p *BalancePolicy) error { return r.t.SetBalancePolicy(p) }

// BalanceDecision loads an executed decision.
func (r *Restore) BalanceDecision(d *BalanceDecision) error { return r.t.AppendBalanceDecision(d) }
