package fsm_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// enabled is the default policy, enabled, with a trigger of 0.3, as
// alice sets it.
func enabled() fsm.SetBalancePolicy {
	p := balance.Default()
	p.Enabled, p.Trigger = true, 0.3
	return fsm.SetBalancePolicy{Policy: p, Change: "enabled=true trigger=0.3", Requested: state.Requester{Who: "alice", Role: "operator"}, At: t1}
}

// policyOf is the policy h's state holds, decoded.
func (h *harness) policyOf() balance.Policy {
	h.t.Helper()
	rec, _ := h.snap().BalancePolicy()
	p, err := fsm.DecodeBalancePolicy(rec)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

func TestSetBalancePolicy(t *testing.T) {
	t.Run("a new cluster runs the default policy, disabled", func(t *testing.T) {
		h := cluster(t)
		if _, ok := h.snap().BalancePolicy(); ok {
			t.Error("a new cluster has a stored policy")
		}
		if got := h.policyOf(); got != balance.Default() || got.Enabled {
			t.Errorf("policy %+v, want balance.Default(), disabled", got)
		}
	})
	runCases(t, cluster, []cmdCase{
		{name: "stored with who set it, and an event saying what changed", cmd: enabled(),
			check: func(t *testing.T, h *harness, v any) {
				if got, want := h.policyOf(), enabled().Policy; got != want {
					t.Errorf("policy %+v, want %+v", got, want)
				}
				rec, _ := h.snap().BalancePolicy()
				if rec.Requested.Who != "alice" || !rec.Updated.Equal(t1) {
					t.Errorf("record %+v: want set by alice at %v", rec, t1)
				}
				if stored, ok := v.(*state.BalancePolicy); !ok || string(stored.Policy) != string(rec.Policy) {
					t.Errorf("result %#v, want the stored record", v)
				}
				evs := h.lastEvents()
				if len(evs) != 1 || evs[0].Kind != state.EventBalancePolicy || evs[0].Message != "enabled=true trigger=0.3 by alice" {
					t.Errorf("events %+v, want one balance-policy saying what changed and who", evs)
				}
			}},
		{name: "replaces the policy before",
			setup: func(h *harness) { h.must(enabled()) },
			cmd:   fsm.SetBalancePolicy{Policy: balance.Default(), Change: "enabled=false", At: t1},
			check: func(t *testing.T, h *harness, _ any) {
				if got := h.policyOf(); got.Enabled || got.Trigger != balance.DefaultTrigger {
					t.Errorf("policy %+v, want the default again", got)
				}
			}},
		{name: "an invalid policy is refused with balance's reason",
			setup: func(h *harness) { h.must(enabled()) },
			cmd: func() fsm.Command {
				c := enabled()
				c.Policy.Target = 0.5 // above the trigger
				return c
			}(),
			wantErr: balance.ErrInvalidPolicy},
		{name: "a policy of zero values is refused", cmd: fsm.SetBalancePolicy{At: t1}, wantErr: fsm.ErrInvalid},
	})
}

func TestDecodeBalancePolicy(t *testing.T) {
	tests := []struct {
		name    string
		rec     *state.BalancePolicy
		want    func(*balance.Policy)
		wantErr error
	}{
		{name: "none stored: the default", rec: nil},
		{name: "a key the record lacks keeps its default", rec: &state.BalancePolicy{Policy: []byte(`{"enabled":true,"trigger":0.4}`)},
			want: func(p *balance.Policy) { p.Enabled, p.Trigger = true, 0.4 }},
		{name: "a record that does not decode: the default and an error", rec: &state.BalancePolicy{Policy: []byte(`{"trigger":"high"}`)},
			wantErr: fsm.ErrBadCommand},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := balance.Default()
			if tc.want != nil {
				tc.want(&want)
			}
			got, err := fsm.DecodeBalancePolicy(tc.rec)
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("error %v, want %v", err, tc.wantErr)
			}
			if got != want {
				t.Errorf("policy %+v, want %+v", got, want)
			}
		})
	}
}

// decision is an executed decision: web moved from n1 to n2 (migration
// m1), db refused.
func decision() state.BalanceDecision {
	return state.BalanceDecision{
		Time: t1, Imbalance: 0.41, CPU: 0.5, Memory: 0.3, Predicted: 0.12, Target: 0.15, Trigger: 0.25, Nodes: 3, Stop: balance.StopTarget,
		Reason: "2 moves planned bring the imbalance to 0.120",
		Moves: []state.BalanceMove{
			{Container: "c1", Name: "web", From: "n1", To: "n2", Load: state.Resources{MilliCPU: 800, MemoryBytes: 512 << 20},
				Gain: 30, Stability: 1, Cost: 2.5, Bytes: 512 << 20, Downtime: 2 * time.Second, Duration: 5 * time.Second,
				ImbalanceAfter: 0.2, Reason: "n1 is the most loaded node", Migration: "m1"},
			{Container: "c2", Name: "db", From: "n1", To: "n3", Gain: 10, Cost: 2, Refused: "container db is already moving"},
		},
	}
}

func TestRecordBalanceDecision(t *testing.T) {
	runCases(t, moving, []cmdCase{
		{name: "kept under its raft index, with a balance-decision event", cmd: fsm.RecordBalanceDecision{Decision: decision(), At: t1},
			check: func(t *testing.T, h *harness, v any) {
				got := h.snap().BalanceDecisions(0)
				if len(got) != 1 || got[0].Index != h.index || len(got[0].Moves) != 2 || got[0].Moves[0].Migration != "m1" ||
					got[0].Moves[1].Refused == "" || got[0].Imbalance != 0.41 {
					t.Fatalf("decisions %+v, want the one recorded, at index %d, with both moves", got, h.index)
				}
				if d, ok := v.(*state.BalanceDecision); !ok || d.Index != h.index {
					t.Errorf("result %#v, want the stored decision", v)
				}
				evs := h.lastEvents()
				want := "imbalance 0.410 (target 0.150), predicted 0.120: 1 move started (web n1 to n2), 1 refused"
				if len(evs) != 1 || evs[0].Kind != state.EventBalanceDecision || evs[0].Message != want {
					t.Errorf("events %+v, want one balance-decision: %q", evs, want)
				}
			}},
		{name: "a zero time is the command's",
			cmd: func() fsm.Command {
				d := decision()
				d.Time = time.Time{}
				return fsm.RecordBalanceDecision{Decision: d, At: t1.Add(time.Hour)}
			}(),
			check: func(t *testing.T, h *harness, _ any) {
				if got := h.snap().BalanceDecisions(1)[0].Time; !got.Equal(t1.Add(time.Hour)) {
					t.Errorf("time %v, want the command's", got)
				}
			}},
		{name: "the oldest go beyond the history kept",
			setup: func(h *harness) {
				for range state.BalanceHistory {
					h.must(fsm.RecordBalanceDecision{Decision: decision(), At: t1})
				}
			},
			cmd: fsm.RecordBalanceDecision{Decision: decision(), At: t1.Add(time.Hour)},
			check: func(t *testing.T, h *harness, _ any) {
				got := h.snap().BalanceDecisions(0)
				if len(got) != state.BalanceHistory || got[len(got)-1].Index != h.index || !got[len(got)-1].Time.Equal(t1) {
					t.Fatalf("%d decisions kept, the last at %d; want %d, the last the newest (%d)", len(got), got[len(got)-1].Index, state.BalanceHistory, h.index)
				}
				if first := got[0].Index; first == 0 || got[1].Index <= first {
					t.Errorf("decisions not in index order: %d, %d", first, got[1].Index)
				}
				if last := h.snap().BalanceDecisions(3); len(last) != 3 || last[2].Index != h.index {
					t.Errorf("the last 3: %d of them, the newest at %d; want 3, the newest at %d", len(last), last[len(last)-1].Index, h.index)
				}
			}},
		{name: "one that started nothing is refused",
			cmd: func() fsm.Command {
				d := decision()
				d.Moves = d.Moves[1:]
				return fsm.RecordBalanceDecision{Decision: d, At: t1}
			}(),
			wantErr: fsm.ErrInvalid},
		{name: "a move neither started nor refused is refused",
			cmd: func() fsm.Command {
				d := decision()
				d.Moves[1].Refused = ""
				return fsm.RecordBalanceDecision{Decision: d, At: t1}
			}(),
			wantErr: fsm.ErrInvalid},
		{name: "a move without its destination is refused",
			cmd: func() fsm.Command {
				d := decision()
				d.Moves[0].To = ""
				return fsm.RecordBalanceDecision{Decision: d, At: t1}
			}(),
			wantErr: fsm.ErrInvalid},
	})
}

func TestBalanceDecisionEventNamesAFewMoves(t *testing.T) {
	h := moving(t)
	d := decision()
	d.Moves = nil
	for i := range 7 {
		d.Moves = append(d.Moves, state.BalanceMove{Container: fmt.Sprint("c", i), Name: fmt.Sprint("w", i), From: "n1", To: "n2", Migration: fmt.Sprint("m", i)})
	}
	h.must(fsm.RecordBalanceDecision{Decision: d, At: t1})
	msg := h.lastEvents()[0].Message
	if !strings.Contains(msg, "7 moves started (w0 n1 to n2, ") || !strings.Contains(msg, "w4 n1 to n2 and 2 more)") || strings.Contains(msg, "w5") {
		t.Errorf("event %q: want the first five moves named and the other two counted", msg)
	}
}

func TestBalanceDecisionRecord(t *testing.T) {
	d := balance.Decision{
		Now: t1, Measure: balance.Measure{Imbalance: 0.4, CPU: 0.5, Memory: 0.2}, Predicted: 0.1, Target: 0.15, Trigger: 0.25,
		Triggered: true, Stop: balance.StopTarget, Reason: "why", InFlight: 1,
		Moves: []balance.Move{{Container: "c1", Name: "web", From: "n1", To: "n2", Gain: 9, Stability: 0.5, Cost: 2, Bytes: 7,
			Downtime: time.Second, Duration: 2 * time.Second, ImbalanceAfter: 0.1, Reason: "because", CostBasis: "defaults"}},
		Nodes: []balance.NodeUsage{{Node: "n1"}, {Node: "n2"}},
	}
	rec := fsm.BalanceDecisionRecord(d)
	want := state.BalanceDecision{Time: t1, Imbalance: 0.4, CPU: 0.5, Memory: 0.2, Predicted: 0.1, Target: 0.15, Trigger: 0.25,
		Nodes: 2, InFlight: 1, Stop: balance.StopTarget, Reason: "why",
		Moves: []state.BalanceMove{{Container: "c1", Name: "web", From: "n1", To: "n2", Gain: 9, Stability: 0.5, Cost: 2, Bytes: 7,
			Downtime: time.Second, Duration: 2 * time.Second, ImbalanceAfter: 0.1, Reason: "because", CostBasis: "defaults"}}}
	if mustJSON(rec) != mustJSON(want) {
		t.Errorf("record\n%s\nwant\n%s", mustJSON(rec), mustJSON(want))
	}
}
