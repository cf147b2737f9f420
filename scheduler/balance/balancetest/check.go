package balancetest

import (
	"cmp"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/state"
)

// Want is the expected outcome of one plan.
type Want struct {
	Triggered bool
	// Stop is the Decision's Stop, exactly.
	Stop string
	// Moves are the moves in order, each "container:from>to".
	Moves []string
	// Rejected maps every rejected container's ID to its rule, exactly.
	Rejected map[string]string
	// Reasons maps some rejected containers' IDs to a part of their
	// reason.
	Reasons map[string]string
}

// shuffleSeeds are the orders the determinism check tries.
var shuffleSeeds = []uint64{1, 2, 3}

// tolerance is how far two imbalances computed differently (sums kept
// move by move, against sums from scratch) may differ.
const tolerance = 1e-9

// rules are the Rejection rules Plan may give.
var rules = []string{
	balance.RuleMigrating, balance.RulePinned, balance.RuleCooldown, balance.RuleNoLoad,
	balance.RuleNodeTaking, balance.RuleNodeLimit, balance.RuleBalanced, balance.RuleNotWorth,
	balance.RuleNoDestination, balance.RuleTargetReached, balance.RuleClusterLimit,
}

// MoveString is how Want.Moves writes a move.
func MoveString(m balance.Move) string { return m.Container + ":" + m.From + ">" + m.To }

// Check plans in on s, fails t unless the Decision matches want, and
// returns the Decision. Whatever want says, it also fails t when the
// Decision breaks an invariant (CheckInvariants), when shuffling the
// state's lists or the input's slices changes it, or when a real
// state.Snapshot holding what s holds gives another.
func Check(t testing.TB, s *State, in balance.Input, want Want) balance.Decision {
	t.Helper()
	d, err := balance.Plan(s, in)
	if err != nil {
		t.Fatalf("Plan: %v", err)
	}
	if d.Triggered != want.Triggered {
		t.Errorf("triggered = %v, want %v (%s)", d.Triggered, want.Triggered, d.Reason)
	}
	if d.Stop != want.Stop {
		t.Errorf("stop = %q, want %q (%s)", d.Stop, want.Stop, d.Reason)
	}
	var moves []string
	for _, m := range d.Moves {
		moves = append(moves, MoveString(m))
	}
	if !slices.Equal(moves, want.Moves) {
		t.Errorf("moves = %q, want %q%s", moves, want.Moves, describe(d))
	}
	rejected := map[string]string{}
	for _, r := range d.Rejected {
		rejected[r.Container] = r.Rule
	}
	if !maps.Equal(rejected, want.Rejected) && (len(rejected) > 0 || len(want.Rejected) > 0) {
		t.Errorf("rejected (container: rule) = %v, want %v%s", rejected, want.Rejected, describe(d))
	}
	for id, part := range want.Reasons {
		if got := reasonOf(d, id); !strings.Contains(got, part) {
			t.Errorf("reason for %s = %q, want it to contain %q", id, got, part)
		}
	}

	CheckInvariants(t, s, in, d)
	for _, seed := range shuffleSeeds {
		again, err := balance.Plan(s.Shuffled(seed), ShuffledInput(in, seed))
		if err != nil || !reflect.DeepEqual(again, d) {
			t.Errorf("with the inputs shuffled (seed %d), Plan decided differently (err %v):\n got %+v\nwant %+v", seed, err, again, d)
		}
	}
	st, err := s.Store()
	if err != nil {
		t.Fatal(err)
	}
	real, err := balance.Plan(st.Snapshot(), in)
	if err != nil || !reflect.DeepEqual(real, d) {
		t.Errorf("on a state.Snapshot of the same cluster, Plan decided differently (err %v):\n got %+v\nwant %+v", err, real, d)
	}
	return d
}

func describe(d balance.Decision) string {
	var b strings.Builder
	b.WriteString("\n  " + d.Reason)
	for _, m := range d.Moves {
		b.WriteString("\n  move " + MoveString(m) + ": " + m.Reason)
	}
	for _, r := range d.Rejected {
		b.WriteString("\n  rejected " + r.Container + " on " + r.Node + ": " + r.Rule + ": " + r.Reason)
	}
	return b.String()
}

func reasonOf(d balance.Decision, id string) string {
	for _, r := range d.Rejected {
		if r.Container == id {
			return r.Reason
		}
	}
	return "(not rejected)"
}

// CheckInvariants fails t when d, planned on s with in, breaks a rule
// every Decision keeps (see the package documentation).
func CheckInvariants(t testing.TB, s balance.State, in balance.Input, d balance.Decision) {
	t.Helper()
	p := in.Policy
	nodes := map[string]*state.Node{}
	for _, n := range s.Nodes() {
		nodes[n.Name] = n
	}
	containers := map[string]*state.Container{}
	for _, c := range s.Containers() {
		containers[c.ID] = c
	}
	open := s.Migrations(state.MigrationFilter{Open: true})

	// Nodes: the ready ones measured, the others excluded, once each.
	seen := map[string]int{}
	usage := map[string]balance.NodeUsage{}
	for _, u := range d.Nodes {
		seen[u.Node]++
		usage[u.Node] = u
		n, ok := nodes[u.Node]
		if !ok || n.Status() != state.NodeReady {
			t.Errorf("node %s is measured, but it is not a ready node of the state", u.Node)
		}
	}
	for _, e := range d.Excluded {
		seen[e.Node]++
		if e.Reason == "" {
			t.Errorf("node %s excluded without a reason", e.Node)
		}
	}
	for name := range nodes {
		if seen[name] != 1 {
			t.Errorf("node %s appears %d times among the measured and excluded nodes, want once", name, seen[name])
		}
	}
	if !slices.IsSortedFunc(d.Nodes, func(a, b balance.NodeUsage) int { return strings.Compare(a.Node, b.Node) }) {
		t.Errorf("nodes not sorted by name")
	}
	measure := func(f func(balance.NodeUsage) state.Resources) balance.Measure {
		us := make([]balance.Usage, 0, len(d.Nodes))
		for _, u := range d.Nodes {
			us = append(us, balance.Usage{Capacity: u.Capacity, Used: f(u)})
		}
		return balance.Imbalance(us, p)
	}
	if got := measure(func(u balance.NodeUsage) state.Resources { return u.Used }); !near(got.Imbalance, d.Imbalance) ||
		!near(got.CPU, d.CPU) || !near(got.Memory, d.Memory) {
		t.Errorf("imbalance now = %+v, but the nodes' loads measure %+v", d.Measure, got)
	}

	if !d.Triggered {
		if len(d.Moves) > 0 || len(d.Rejected) > 0 {
			t.Errorf("not triggered, yet %d moves and %d rejections", len(d.Moves), len(d.Rejected))
		}
		return
	}

	// Replay the moves from the base loads, measuring from scratch.
	loads := map[string]state.Resources{}
	for _, u := range d.Nodes {
		loads[u.Node] = u.Base
	}
	measureLoads := func() float64 {
		return measure(func(u balance.NodeUsage) state.Resources { return loads[u.Node] }).Imbalance
	}
	before := measureLoads()
	touching := map[string]int{}
	requested := map[string]state.Resources{}
	for _, m := range open {
		touching[m.Source]++
		touching[m.Dest]++
		if c, ok := containers[m.Container]; ok && !m.Committed() {
			requested[m.Dest] = requested[m.Dest].Add(c.Spec.Request.Effective())
		}
	}
	moved := map[string]bool{}
	n := float64(len(d.Nodes))
	for _, m := range d.Moves {
		c, ok := containers[m.Container]
		switch {
		case !ok:
			t.Errorf("move %s: no such container", MoveString(m))
			continue
		case moved[m.Container]:
			t.Errorf("move %s: the container moves twice in one plan", MoveString(m))
		case c.Node != m.From || m.From == m.To:
			t.Errorf("move %s: the container is on %s", MoveString(m), c.Node)
		}
		moved[m.Container] = true
		checkMoveRules(t, in, m, c, nodes, open, usage)

		touching[m.From]++
		touching[m.To]++
		requested[m.To] = requested[m.To].Add(c.Spec.Request.Effective())
		if dest, ok := nodes[m.To]; ok {
			limit := func(x int64) int64 { return int64(math.Floor(float64(x) * (1 - p.Headroom))) }
			if r := s.Allocated(m.To).Add(requested[m.To]); r.MilliCPU > limit(dest.Capacity.MilliCPU) || r.MemoryBytes > limit(dest.Capacity.MemoryBytes) {
				t.Errorf("move %s: requests on %s reach %+v, over the headroom's limit of its capacity %+v", MoveString(m), m.To, r, dest.Capacity)
			}
		}

		if !near(m.ImbalanceBefore, before) {
			t.Errorf("move %s: imbalance before = %v, the replay measures %v", MoveString(m), m.ImbalanceBefore, before)
		}
		loads[m.From] = loads[m.From].Sub(m.Load)
		loads[m.To] = loads[m.To].Add(m.Load)
		after := measureLoads()
		if !near(m.ImbalanceAfter, after) {
			t.Errorf("move %s: imbalance after = %v, the replay measures %v", MoveString(m), m.ImbalanceAfter, after)
		}
		if gain := balance.GainScale * n * (before*before - after*after); math.Abs(gain-m.Gain) > 1e-6*max(1, math.Abs(gain)) {
			t.Errorf("move %s: gain = %v, the replay's imbalances give %v", MoveString(m), m.Gain, gain)
		}
		if after > before+tolerance {
			t.Errorf("move %s raises the imbalance from %v to %v", MoveString(m), before, after)
		}
		if m.Gain*m.Stability <= p.CostMultiple*m.Cost {
			t.Errorf("move %s does not pay: gain %v x stability %v <= %v x cost %v", MoveString(m), m.Gain, m.Stability, p.CostMultiple, m.Cost)
		}
		if m.Reason == "" || m.CostBasis == "" {
			t.Errorf("move %s without a reason or a cost basis", MoveString(m))
		}
		before = after
	}
	if !near(d.Predicted, before) {
		t.Errorf("predicted imbalance = %v, the replay of the moves measures %v", d.Predicted, before)
	}
	for _, u := range d.Nodes {
		if u.Predicted != loads[u.Node] {
			t.Errorf("node %s: predicted load %+v, the replay gives %+v", u.Node, u.Predicted, loads[u.Node])
		}
	}
	for node, k := range touching {
		if planned := k - countOpen(open, node); planned > 0 && k > p.MaxMovesPerNode {
			t.Errorf("node %s: %d moves open and planned, over max_moves_per_node %d", node, k, p.MaxMovesPerNode)
		}
	}
	if total := len(open) + len(d.Moves); len(d.Moves) > 0 && total > p.MaxMoves {
		t.Errorf("%d migrations open and planned, over max_moves %d", total, p.MaxMoves)
	}

	// Every running container on a loaded node is moved or rejected,
	// once; nothing else is.
	rejected := map[string]int{}
	for _, r := range d.Rejected {
		rejected[r.Container]++
		if !slices.Contains(rules, r.Rule) || r.Reason == "" {
			t.Errorf("rejection of %s: rule %q reason %q: want a known rule and a reason", r.Container, r.Rule, r.Reason)
		}
		if c, ok := containers[r.Container]; !ok || c.Node != r.Node || c.Name != r.Name {
			t.Errorf("rejection of %s names node %s and name %s, which are not the container's", r.Container, r.Node, r.Name)
		}
	}
	if !slices.IsSortedFunc(d.Rejected, func(a, b balance.Rejection) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.Name, b.Name), strings.Compare(a.Container, b.Container))
	}) {
		t.Errorf("rejections not sorted by node and name")
	}
	for id, c := range containers {
		candidate := usage[c.Node].Loaded && c.Desired == state.DesiredRunning &&
			(c.Reported == state.ReportedRunning || c.Reported == state.ReportedMigrating)
		times := rejected[id]
		if moved[id] {
			times++
		}
		switch {
		case candidate && times != 1:
			t.Errorf("container %s on loaded node %s is moved or rejected %d times, want once", id, c.Node, times)
		case !candidate && times != 0:
			t.Errorf("container %s (on %s, %s) is not a candidate, yet moved or rejected", id, c.Node, c.Reported)
		}
	}
}

// checkMoveRules fails t when move m of container c breaks a rule of
// its own: pins, open migrations, cooldown, the ping-pong guard, the
// destination's status, labels, CPU features and measured headroom.
func checkMoveRules(t testing.TB, in balance.Input, m balance.Move, c *state.Container,
	nodes map[string]*state.Node, open []*state.Migration, usage map[string]balance.NodeUsage) {
	t.Helper()
	p := in.Policy
	// run --node (Spec.Node) chooses where a container starts, not where
	// it stays: only --pin and the label pin it.
	if c.Spec.Pinned || c.Spec.Labels[balance.PinLabel] == "true" {
		t.Errorf("move %s: the container is pinned", MoveString(m))
	}
	if c.Desired != state.DesiredRunning || c.Reported != state.ReportedRunning {
		t.Errorf("move %s: the container is %s/%s, not running", MoveString(m), c.Desired, c.Reported)
	}
	for _, o := range open {
		if o.Container == c.ID {
			t.Errorf("move %s: the container has migration %s open", MoveString(m), o.ID)
		}
	}
	for _, r := range in.Recent {
		if r.Container != c.ID {
			continue
		}
		ago := in.Now.Sub(r.At)
		if ago < p.Cooldown {
			t.Errorf("move %s: the container moved %s ago, within the cooldown %s", MoveString(m), ago, p.Cooldown)
		}
		if r.From == m.To && ago < p.ReturnAfter {
			t.Errorf("move %s: the container left %s %s ago, within return_after %s (ping-pong)", MoveString(m), m.To, ago, p.ReturnAfter)
		}
	}
	src, dest := nodes[m.From], nodes[m.To]
	if dest == nil || dest.Status() != state.NodeReady {
		t.Errorf("move %s: destination not ready", MoveString(m))
		return
	}
	for _, k := range c.Spec.Constraints {
		if dest.Labels[k.Key] != k.Value {
			t.Errorf("move %s: destination lacks label %s=%s", MoveString(m), k.Key, k.Value)
		}
	}
	if src != nil {
		for _, f := range src.CPU.Flags {
			if !slices.Contains(dest.CPU.Flags, f) {
				t.Errorf("move %s: destination lacks CPU feature %s of the source", MoveString(m), f)
			}
		}
	}
	limit := func(x int64) int64 { return int64(math.Floor(float64(x) * (1 - p.Headroom))) }
	if u := usage[m.To].Predicted; u.MilliCPU > limit(dest.Capacity.MilliCPU) || u.MemoryBytes > limit(dest.Capacity.MemoryBytes) {
		t.Errorf("move %s: measured use of %s reaches %+v, over the headroom's limit of %+v", MoveString(m), m.To, u, dest.Capacity)
	}
}

func countOpen(open []*state.Migration, node string) int {
	n := 0
	for _, m := range open {
		if m.Source == node || m.Dest == node {
			n++
		}
	}
	return n
}

func near(a, b float64) bool { return math.Abs(a-b) <= tolerance*max(1, math.Abs(b)) }
