package fsm

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/state"
)

// The balancer's commands. The state keeps balance.Policy as JSON (it
// imports nothing of balance); this file converts both ways and
// validates what is stored, so that every replica holds a policy the
// planner accepts.

// maxEventMoves is how many moves a balance-decision event names; the
// rest are counted.
const maxEventMoves = 5

// SetBalancePolicy replaces the balancer's policy (enabling or disabling
// it is a change of its Enabled). Refused (ErrInvalid, and
// balance.ErrInvalidPolicy with balance's message naming each bad key)
// when the policy fails balance.Policy.Validate. Emits balance-policy
// with Change. Result value: the stored *state.BalancePolicy.
type SetBalancePolicy struct {
	Policy balance.Policy `json:"policy"`
	// Change says what changed, for the event ("enabled",
	// "trigger=0.3 target=0.1"); empty says "policy replaced".
	Change    string          `json:"change,omitempty"`
	Requested state.Requester `json:"requested"`
	At        time.Time       `json:"at"`
}

func (SetBalancePolicy) Type() CommandType { return TypeSetBalancePolicy }
func (c SetBalancePolicy) when() time.Time { return c.At }

func (c SetBalancePolicy) apply(tx *state.Txn) (any, error) {
	if err := c.Policy.Validate(); err != nil {
		return nil, fmt.Errorf("set balance policy: %w: %w", ErrInvalid, err)
	}
	raw, err := json.Marshal(c.Policy)
	if err != nil {
		return nil, fmt.Errorf("set balance policy: %w: %v", ErrInvalid, err)
	}
	p := &state.BalancePolicy{Policy: raw, Updated: c.At, Requested: c.Requested}
	if err := tx.SetBalancePolicy(p); err != nil {
		return nil, err
	}
	msg := c.Change
	if msg == "" {
		msg = "policy replaced"
	}
	if c.Requested.Who != "" {
		msg += " by " + c.Requested.Who
	}
	tx.EmitEvent(state.Event{Kind: state.EventBalancePolicy, Message: msg})
	stored, _ := tx.BalancePolicy()
	return stored, nil
}

// DecodeBalancePolicy returns the policy rec holds: balance.Default()
// when rec is nil (no operator ever set one: a new cluster's balancer is
// disabled), with any key the stored JSON lacks (one a later godwit
// added) at its default. A record that does not decode returns the
// default and an error wrapping ErrBadCommand.
func DecodeBalancePolicy(rec *state.BalancePolicy) (balance.Policy, error) {
	p := balance.Default()
	if rec == nil || len(rec.Policy) == 0 {
		return p, nil
	}
	if err := json.Unmarshal(rec.Policy, &p); err != nil {
		return balance.Default(), fmt.Errorf("stored balance policy: %w: %v", ErrBadCommand, err)
	}
	return p, nil
}

// RecordBalanceDecision records a decision the leader executed: one
// that started at least one move (Migration set); moves the coordinator
// refused are kept with why (Refused). The state keeps the last
// state.BalanceHistory. Refused (ErrInvalid) when no move started, or a
// move lacks its container or nodes, or has neither a migration nor a
// refusal. Emits balance-decision. Result value: the stored
// *state.BalanceDecision (its Index is the command's raft index; its
// Time, when zero, At).
type RecordBalanceDecision struct {
	Decision state.BalanceDecision `json:"decision"`
	At       time.Time             `json:"at"`
}

func (RecordBalanceDecision) Type() CommandType { return TypeRecordBalanceDecision }
func (c RecordBalanceDecision) when() time.Time { return c.At }

func (c RecordBalanceDecision) validate() error {
	d := c.Decision
	for i, m := range d.Moves {
		switch {
		case m.Container == "" || m.From == "" || m.To == "":
			return fmt.Errorf("balance decision: move %d names no container, source or destination: %w", i, ErrInvalid)
		case (m.Migration == "") == (m.Refused == ""):
			return fmt.Errorf("balance decision: move of %s to %s: want either its migration or why it was refused: %w", m.Container, m.To, ErrInvalid)
		}
	}
	if d.Started() == 0 {
		return fmt.Errorf("balance decision: no move started: %w: only executed decisions are recorded", ErrInvalid)
	}
	return nil
}

func (c RecordBalanceDecision) apply(tx *state.Txn) (any, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	d := c.Decision.Clone()
	d.Index = tx.WriteIndex()
	if d.Time.IsZero() {
		d.Time = c.At
	}
	if err := tx.AppendBalanceDecision(d); err != nil {
		return nil, err
	}
	tx.EmitEvent(state.Event{Kind: state.EventBalanceDecision, Message: decisionMessage(d)})
	return d, nil
}

// decisionMessage is "imbalance 0.412 (target 0.150), predicted 0.120:
// 2 moves started (web n1 to n2, db n1 to n3), 1 refused".
func decisionMessage(d *state.BalanceDecision) string {
	var started []string
	refused := 0
	for _, m := range d.Moves {
		if m.Migration == "" {
			refused++
			continue
		}
		if len(started) < maxEventMoves {
			started = append(started, fmt.Sprintf("%s %s to %s", m.Name, m.From, m.To))
		}
	}
	n := d.Started()
	moves := strings.Join(started, ", ")
	if n > len(started) {
		moves += fmt.Sprintf(" and %d more", n-len(started))
	}
	msg := fmt.Sprintf("imbalance %.3f (target %.3f), predicted %.3f: %d %s started (%s)",
		d.Imbalance, d.Target, d.Predicted, n, pluralWord(n, "move", "moves"), moves)
	if refused > 0 {
		msg += fmt.Sprintf(", %d refused", refused)
	}
	return msg
}

func pluralWord(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// BalanceDecisionRecord is the record of decision d, its moves without
// their migrations yet: the leader sets each move's Migration (or
// Refused) as it starts them, then records it with
// RecordBalanceDecision.
func BalanceDecisionRecord(d balance.Decision) state.BalanceDecision {
	rec := state.BalanceDecision{
		Time: d.Now, Imbalance: d.Imbalance, CPU: d.CPU, Memory: d.Memory, Predicted: d.Predicted,
		Target: d.Target, Trigger: d.Trigger, Nodes: len(d.Nodes), InFlight: d.InFlight, Stop: d.Stop, Reason: d.Reason,
	}
	for _, m := range d.Moves {
		rec.Moves = append(rec.Moves, state.BalanceMove{
			Container: m.Container, Name: m.Name, From: m.From, To: m.To, Load: m.Load,
			Gain: m.Gain, Stability: m.Stability, Cost: m.Cost, Bytes: m.Bytes, Downtime: m.Downtime, Duration: m.Duration,
			ImbalanceAfter: m.ImbalanceAfter, Reason: m.Reason, CostBasis: m.CostBasis,
		})
	}
	return rec
}
