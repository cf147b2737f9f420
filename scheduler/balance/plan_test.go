package balance_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/balance"
	bt "github.com/godwit/godwit/scheduler/balance/balancetest"
	"github.com/godwit/godwit/scheduler/state"
)

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// ctr is a container using milliCPU and 512 MiB.
func ctr(id string, milliCPU int64) *bt.ContainerSpec { return bt.Container(id, milliCPU, 512*bt.MiB) }

// hot is the cluster most cases start from: node a runs four containers
// of 0.8 CPU (80% of its CPU), b and c one each of 0.4 and 0.6 CPU; every
// container uses 512 MiB. Two moves, c1 to b (the coolest) then c2 to c,
// bring the imbalance from 0.86 to 0.08, under the target 0.10.
func hot(a, b, c *bt.NodeSpec) []*bt.NodeSpec {
	return []*bt.NodeSpec{
		a.Run(ctr("c1", 800), ctr("c2", 800), ctr("c3", 800), ctr("c4", 800)),
		b.Run(ctr("c5", 400)),
		c.Run(ctr("c6", 600)),
	}
}

func node(name string) *bt.NodeSpec { return bt.Node(name, 4000, 8*bt.GiB) }

func migration(id, container, from, to string, phase state.MigrationPhase) *state.Migration {
	return &state.Migration{ID: id, CreatedIndex: 10, Container: container, ContainerName: container, Source: from, Dest: to,
		Strategy: "stream", Phase: phase, Created: now.Add(-time.Minute), Updated: now.Add(-time.Minute)}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name  string
		nodes []*bt.NodeSpec
		// edit changes the input (policy, history, recent moves) and the
		// state (open migrations) before the plan.
		edit func(s *bt.State, in *balance.Input)
		want bt.Want
	}{
		{
			name:  "the most loaded node gives to the least loaded until the target",
			nodes: hot(node("a"), node("b"), node("c")),
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c1:a>b", "c2:a>c"},
				Rejected: map[string]string{"c3": balance.RuleTargetReached, "c4": balance.RuleTargetReached}},
		},
		{
			name: "below the trigger nothing is planned",
			nodes: []*bt.NodeSpec{
				node("a").Run(ctr("c1", 800)), node("b").Run(ctr("c2", 700)), node("c").Run(ctr("c3", 600)),
			},
			want: bt.Want{Stop: balance.StopBelowTrigger},
		},
		{
			name: "between target and trigger, an idle balancer stays idle",
			nodes: []*bt.NodeSpec{
				node("a").Run(small("c", 8)...), node("b").Run(bt.Container("b1", 600, 512*bt.MiB)), node("c").Run(bt.Container("c1x", 600, 512*bt.MiB)),
			},
			// CPU only, without the floor: the imbalance is the CPU's
			// coefficient of variation, 0.14, between a target of 0.10 and
			// a trigger of 0.20.
			edit: func(s *bt.State, in *balance.Input) { hysteresis(in) },
			want: bt.Want{Stop: balance.StopBelowTrigger},
		},
		{
			name: "between target and trigger, a balancing balancer goes on to the target",
			nodes: []*bt.NodeSpec{
				node("a").Run(small("c", 8)...), node("b").Run(bt.Container("b1", 600, 512*bt.MiB)), node("c").Run(bt.Container("c1x", 600, 512*bt.MiB)),
			},
			edit: func(s *bt.State, in *balance.Input) { hysteresis(in); in.Balancing = true },
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c1:a>b"}, Rejected: rejectAll(balance.RuleTargetReached, "c2", "c3", "c4", "c5", "c6", "c7", "c8")},
		},
		{
			name: "a balancing balancer goes on to 90% of the target",
			// CPU's coefficient of variation is 0.099: under the target
			// of 0.10, over 90% of it.
			nodes: []*bt.NodeSpec{
				node("a").Run(sized("c", 10, 76)...), node("b").Run(bt.Container("b1", 620, 512*bt.MiB)), node("c").Run(bt.Container("c1x", 620, 512*bt.MiB)),
			},
			edit: func(s *bt.State, in *balance.Input) { hysteresis(in); in.Balancing = true },
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c1:a>b"},
				Rejected: rejectAll(balance.RuleTargetReached, "c10", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9")},
		},
		{
			name: "a balancing balancer stops at the target",
			nodes: []*bt.NodeSpec{
				node("a").Run(ctr("c1", 800)), node("b").Run(ctr("c2", 700)), node("c").Run(ctr("c3", 600)),
			},
			edit: func(s *bt.State, in *balance.Input) { in.Balancing = true },
			want: bt.Want{Stop: balance.StopBelowTrigger},
		},
		{
			name:  "fewer than two ready nodes: nothing to balance",
			nodes: []*bt.NodeSpec{node("a").Run(ctr("c1", 3000)), node("b").Status(state.NodeCordoned)},
			want:  bt.Want{Stop: balance.StopTooFewNodes},
		},
		{
			name: "pinned containers stay: run --pin and the pin label",
			nodes: []*bt.NodeSpec{
				node("a").Run(ctr("c1", 800).Pin(), ctr("c2", 800).Pin(), ctr("c3", 800).Label(balance.PinLabel+"=true"), ctr("c4", 800)),
				node("b").Run(ctr("c5", 400)),
				node("c").Run(ctr("c6", 600)),
			},
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays, Moves: []string{"c4:a>b"},
				Rejected: map[string]string{"c1": balance.RulePinned, "c2": balance.RulePinned, "c3": balance.RulePinned},
				Reasons:  map[string]string{"c1": "run --pin", "c2": "run --pin", "c3": balance.PinLabel}},
		},
		{
			// run --node chooses where a container starts: the balancer
			// moves it as any other, its destination chosen as if it had
			// not been placed by hand (the cluster test starts
			// every burner on one node so).
			name:  "run --node is not a pin: containers started on a node by hand are moved",
			nodes: hot(node("a"), node("b"), node("c")),
			edit: func(s *bt.State, in *balance.Input) {
				for _, c := range s.Containers() {
					if c.Node == "a" {
						c = c.Clone()
						c.Spec.Node = "a"
						s.PutContainer(c)
					}
				}
			},
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c1:a>b", "c2:a>c"},
				Rejected: map[string]string{"c3": balance.RuleTargetReached, "c4": balance.RuleTargetReached}},
		},
		{
			name:  "a container moved within the cooldown stays",
			nodes: hot(node("a"), node("b"), node("c")),
			edit: func(s *bt.State, in *balance.Input) {
				in.Recent = []balance.PastMove{{Container: "c1", From: "c", To: "a", At: now.Add(-5 * time.Minute)}}
			},
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c2:a>b", "c3:a>c"},
				Rejected: map[string]string{"c1": balance.RuleCooldown, "c4": balance.RuleTargetReached},
				Reasons:  map[string]string{"c1": "moved 5m0s ago (c to a); the cooldown (10m0s) lets it move again in 5m0s"}},
		},
		{
			name:  "past the cooldown a container moves, but never back to a node it left within return_after",
			nodes: hot(node("a"), node("b"), node("c")),
			edit: func(s *bt.State, in *balance.Input) {
				in.Recent = []balance.PastMove{{Container: "c1", From: "b", To: "a", At: now.Add(-15 * time.Minute)}}
			},
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c2:a>b", "c1:a>c"},
				Rejected: map[string]string{"c3": balance.RuleTargetReached, "c4": balance.RuleTargetReached}},
		},
		{
			name:  "a container without samples stays, and counts as its request",
			nodes: hot(node("a"), node("b"), node("c")),
			edit:  func(s *bt.State, in *balance.Input) { delete(in.Samples, "c1") },
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c2:a>b", "c3:a>c"},
				Rejected: map[string]string{"c1": balance.RuleNoLoad, "c4": balance.RuleTargetReached},
				Reasons:  map[string]string{"c1": "no load sample in the last 5m0s"}},
		},
		{
			name: "containers that do not run are neither counted nor candidates",
			nodes: []*bt.NodeSpec{
				node("a").Run(ctr("c1", 800), ctr("c2", 800), ctr("c3", 800), ctr("c4", 800), ctr("s1", 3000).Stopped(),
					ctr("s2", 3000).Reported(state.ReportedExited), ctr("s3", 3000).Reported(state.ReportedPending)),
				node("b").Run(ctr("c5", 400), ctr("s4", 3000).Reported(state.ReportedLost)),
				node("c").Run(ctr("c6", 600)),
			},
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c1:a>b", "c2:a>c"},
				Rejected: map[string]string{"c3": balance.RuleTargetReached, "c4": balance.RuleTargetReached}},
		},
		{
			name:  "a migration in flight counts: its container stays, its load lands, its nodes count it against their limit",
			nodes: hot(node("a"), node("b"), node("c")),
			edit: func(s *bt.State, in *balance.Input) {
				s.PutMigration(migration("m-1", "c1", "a", "b", state.MigrationTransfer))
				in.Policy.Target = 0.05
			},
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays, Moves: []string{"c2:a>c"},
				Rejected: map[string]string{"c1": balance.RuleMigrating, "c3": balance.RuleNodeLimit, "c4": balance.RuleNodeLimit},
				Reasons:  map[string]string{"c1": "migration m-1 is moving it from a to b (transfer)"}},
		},
		{
			name:  "a loaded node receiving a migration gives nothing",
			nodes: hot(node("a"), node("b"), node("c")),
			edit: func(s *bt.State, in *balance.Input) {
				s.PutMigration(migration("m-1", "c5", "b", "a", state.MigrationSync))
			},
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays,
				Rejected: rejectAll(balance.RuleNodeTaking, "c1", "c2", "c3", "c4"),
				Reasons:  map[string]string{"c1": "migration m-1 is moving a container to a"}},
		},
		{
			name: "no destination that lacks a CPU feature of the source",
			nodes: []*bt.NodeSpec{
				node("a").Flags("avx512", "sse").Run(ctr("c1", 1000), ctr("c2", 1000)),
				node("b").Flags("sse").Run(ctr("c5", 200)),
				node("c").Flags("avx512", "sse").Run(ctr("c3", 1000), ctr("c4", 1000)),
			},
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays,
				Rejected: rejectAll(balance.RuleNoDestination, "c1", "c2", "c3", "c4"),
				Reasons:  map[string]string{"c1": "b: placement's cpu filter: CPU lacks 1 required feature: avx512"}},
		},
		{
			name: "no destination without the labels a container's constraints require",
			nodes: []*bt.NodeSpec{
				node("a").Labels("zone=eu").Run(ctr("c1", 1600).Constraint("zone=eu"), ctr("c2", 1600).Constraint("zone=eu")),
				node("b").Labels("zone=us").Run(ctr("c5", 200)),
				node("c").Labels("zone=eu").Run(ctr("c6", 1800)),
			},
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays,
				Rejected: rejectAll(balance.RuleNoDestination, "c1", "c2"),
				Reasons:  map[string]string{"c1": "b: placement's constraint filter: needs label zone=eu, node has zone=us"}},
		},
		{
			name:  "measured use must stay under the headroom on the destination",
			nodes: hot(node("a"), node("b"), node("c")),
			edit:  func(s *bt.State, in *balance.Input) { in.Policy.Headroom = 0.75 },
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays,
				Rejected: rejectAll(balance.RuleNoDestination, "c1", "c2", "c3", "c4"),
				Reasons:  map[string]string{"c1": "b: measured CPU would reach 1.20 CPU of 4.00 CPU, over the 25% headroom allows"}},
		},
		{
			name: "requests must stay under the headroom on the destination",
			nodes: []*bt.NodeSpec{
				node("a").Run(ctr("c1", 800), ctr("c2", 800), ctr("c3", 800), ctr("c4", 800)),
				// b uses 0.4 CPU but reserved 3 of its 4.
				node("b").Run(ctr("c5", 400).Request(3000, 512*bt.MiB)),
				node("c").Run(ctr("c6", 600)),
			},
			// c1 goes to c; then a move to b would still pay, but b has no
			// room left for its request, and one to c would not pay.
			edit: func(s *bt.State, in *balance.Input) { in.Policy.Target = 0.05 },
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays, Moves: []string{"c1:a>c"},
				Rejected: rejectAll(balance.RuleNoDestination, "c2", "c3", "c4"),
				Reasons:  map[string]string{"c2": "b: placement's capacity filter: needs 0.8 CPU, has 0.6 CPU free of 3.6 CPUs (capacity less the 10% headroom)"}},
		},
		{
			name: "cordoned, draining, suspect and down nodes neither give nor take",
			nodes: append(hot(node("a"), node("b"), node("c")),
				node("d").Status(state.NodeCordoned), node("e").Status(state.NodeDraining),
				node("f").Status(state.NodeSuspect), node("g").Status(state.NodeDown),
				node("h").Status(state.NodeCordoned).Run(ctr("h1", 3900))),
			want: bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c1:a>b", "c2:a>c"},
				Rejected: map[string]string{"c3": balance.RuleTargetReached, "c4": balance.RuleTargetReached}},
		},
		{
			name:  "at most max_moves_per_node moves touch a node",
			nodes: hot(node("a"), node("b"), node("c")),
			edit:  func(s *bt.State, in *balance.Input) { in.Policy.MaxMovesPerNode = 1 },
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays, Moves: []string{"c1:a>b"},
				Rejected: rejectAll(balance.RuleNodeLimit, "c2", "c3", "c4")},
		},
		{
			name:  "at most max_moves moves in the cluster",
			nodes: hot(node("a"), node("b"), node("c")),
			edit:  func(s *bt.State, in *balance.Input) { in.Policy.MaxMoves = 1 },
			want: bt.Want{Triggered: true, Stop: balance.StopClusterLimit, Moves: []string{"c1:a>b"},
				Rejected: rejectAll(balance.RuleClusterLimit, "c2", "c3", "c4")},
		},
		{
			name:  "migrations in flight elsewhere count against max_moves",
			nodes: append(hot(node("a"), node("b"), node("c")), node("x").Run(ctr("x1", 2000)), node("y")),
			edit: func(s *bt.State, in *balance.Input) {
				s.PutMigration(migration("m-1", "x1", "x", "y", state.MigrationPrepare))
				in.Policy.MaxMoves = 1
			},
			// x1's load lands on y: x is not loaded, x1 no candidate.
			want: bt.Want{Triggered: true, Stop: balance.StopClusterLimit,
				Rejected: rejectAll(balance.RuleClusterLimit, "c1", "c2", "c3", "c4")},
		},
		{
			name:  "a move is made only when its gain exceeds cost_multiple times its cost",
			nodes: hot(node("a"), node("b"), node("c")),
			edit:  func(s *bt.State, in *balance.Input) { in.Policy.CostMultiple = 100 },
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays,
				Rejected: rejectAll(balance.RuleNotWorth, "c1", "c2", "c3", "c4"),
				Reasons:  map[string]string{"c1": "best destination b: gain 43.13 x stability 1.00 (load steady for 5m0s of stable_for 2m0s) = 43.13, not above cost_multiple 100 x cost 2.50 (2s downtime, 512 MiB)"}},
		},
		{
			name: "a load steady for a short while weighs its gain down",
			nodes: []*bt.NodeSpec{
				node("a").Run(ctr("c1", 800).Steady(30*time.Second), ctr("c2", 800).Steady(30*time.Second), ctr("c3", 800).Steady(30*time.Second), ctr("c4", 800)),
				node("b").Run(ctr("c5", 400)),
				node("c").Run(ctr("c6", 600)),
			},
			edit: func(s *bt.State, in *balance.Input) { in.Policy.CostMultiple = 10 },
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays, Moves: []string{"c4:a>b"},
				Rejected: rejectAll(balance.RuleNotWorth, "c1", "c2", "c3"),
				Reasons:  map[string]string{"c1": "stability 0.25 (load steady for 30s of stable_for 2m0s)"}},
		},
		{
			name: "a node the planned moves bring down to the mean gives no more",
			nodes: []*bt.NodeSpec{
				node("a").Run(ctr("c1", 800), ctr("c2", 800), ctr("c3", 800), ctr("c4", 800)),
				node("b").Run(ctr("c5", 400)),
				node("c").Run(ctr("c6", 600)),
				node("d").Run(ctr("c7", 1600), ctr("c8", 1700)),
			},
			// a and d give in turn, most loaded first, until both are
			// down to the mean.
			edit: func(s *bt.State, in *balance.Input) { in.Policy.Target = 0.01; in.Policy.MaxMovesPerNode = 4 },
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays, Moves: []string{"c1:a>b", "c7:d>c", "c2:a>b"},
				Rejected: rejectAll(balance.RuleBalanced, "c3", "c4", "c8"),
				Reasons:  map[string]string{"c3": "the planned moves bring a down to the mean load"}},
		},
		{
			name:  "memory spread on lightly used nodes is judged against the mean floor",
			nodes: lightMemory(),
			want:  bt.Want{Stop: balance.StopBelowTrigger},
		},
		{
			name:  "without the mean floor, the same memory spread triggers moves",
			nodes: lightMemory(),
			edit:  func(s *bt.State, in *balance.Input) { in.Policy.MeanFloor = 0 },
			// Two moves even memory out and unbalance CPU, which was even.
			want: bt.Want{Triggered: true, Stop: balance.StopNoMovePays, Moves: []string{"c1:a>b", "c2:a>c"},
				Rejected: rejectAll(balance.RuleNodeLimit, "c3", "c4")},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, in := bt.Cluster(now, tc.nodes...)
			if tc.edit != nil {
				tc.edit(s, &in)
			}
			bt.Check(t, s, in, tc.want)
		})
	}
}

// hysteresis sets a policy that weighs CPU alone, without the mean
// floor, with a target of 0.10 and a trigger of 0.20.
func hysteresis(in *balance.Input) {
	in.Policy.MemoryWeight, in.Policy.MeanFloor, in.Policy.Target, in.Policy.Trigger = 0, 0, 0.10, 0.20
}

// lightMemory is three nodes at 50% CPU each, a at 20% of its memory
// and b and c at 5%: plainly, memory's coefficient of variation is 0.71;
// over the mean floor of 0.5, it is 0.14.
func lightMemory() []*bt.NodeSpec {
	m := func(id string, milliCPU, mib int64) *bt.ContainerSpec { return bt.Container(id, milliCPU, mib*bt.MiB) }
	return []*bt.NodeSpec{
		node("a").Run(m("c1", 500, 400), m("c2", 500, 400), m("c3", 500, 400), m("c4", 500, 400)),
		node("b").Run(m("c5", 2000, 400)),
		node("c").Run(m("c6", 2000, 400)),
	}
}

// small is n containers named prefix1... using 0.1 CPU and 64 MiB.
func small(prefix string, n int) []*bt.ContainerSpec { return sized(prefix, n, 100) }

// sized is n containers named prefix1... using milliCPU and 64 MiB.
func sized(prefix string, n int, milliCPU int64) []*bt.ContainerSpec {
	var cs []*bt.ContainerSpec
	for i := 1; i <= n; i++ {
		cs = append(cs, bt.Container(fmt.Sprint(prefix, i), milliCPU, 64*bt.MiB))
	}
	return cs
}

func rejectAll(rule string, ids ...string) map[string]string {
	m := map[string]string{}
	for _, id := range ids {
		m[id] = rule
	}
	return m
}

// TestPlanExcludesNodes checks what a plan says of the nodes it leaves
// out.
func TestPlanExcludesNodes(t *testing.T) {
	s, in := bt.Cluster(now, append(hot(node("a"), node("b"), node("c")),
		node("d").Status(state.NodeCordoned), node("e").Status(state.NodeDown), bt.Node("z", 0, bt.GiB))...)
	d, err := balance.Plan(s, in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"d": "cordoned", "e": "down", "z": "no CPU or no memory capacity"}
	if len(d.Excluded) != len(want) {
		t.Fatalf("excluded = %+v, want %v", d.Excluded, want)
	}
	for _, e := range d.Excluded {
		if !strings.Contains(e.Reason, want[e.Node]) {
			t.Errorf("node %s excluded because %q, want it to say %q", e.Node, e.Reason, want[e.Node])
		}
	}
}

// TestPlanCost checks a move's predicted cost against what the history,
// the links and the dirty rate say.
func TestPlanCost(t *testing.T) {
	tests := []struct {
		name  string
		dirty int64
		edit  func(in *balance.Input)
		// want, for the first move (c1 from a to b).
		bytes              int64
		downtime, duration time.Duration
		basis              string
	}{
		{
			name:  "nothing measured: the policy's bandwidth and downtime per GiB",
			bytes: 512 * bt.MiB, downtime: 2 * time.Second, duration: 5120 * time.Millisecond,
			basis: "512 MiB at 100 MiB/s (the policy's bandwidth, nothing measured yet); downtime 2s (4s per GiB, the policy's downtime_per_gib)",
		},
		{
			name: "past migrations between the pair give bandwidth and downtime",
			edit: func(in *balance.Input) {
				in.History = []balance.PastMigration{
					{From: "a", To: "b", Strategy: "stream", Bytes: bt.GiB, Downtime: 2 * time.Second, Total: 4 * time.Second},
					{From: "a", To: "b", Strategy: "stream", Bytes: bt.GiB, Downtime: 4 * time.Second, Total: 4 * time.Second},
					{From: "c", To: "b", Strategy: "stop-copy", Bytes: bt.GiB, Downtime: 6 * time.Second, Total: time.Second},
				}
			},
			// Bandwidth: the pair's median, 256 MiB/s; downtime per GiB:
			// the median of all three strategies (auto), 4 s.
			bytes: 512 * bt.MiB, downtime: 2 * time.Second, duration: 2 * time.Second,
			basis: "512 MiB at 256 MiB/s (median of 2 past migrations a→b); downtime 2s (4s per GiB, the median of 3 past all migrations)",
		},
		{
			name: "a measured link wins over history; the policy's strategy picks the downtime history",
			edit: func(in *balance.Input) {
				in.Policy.Strategy = "stop-copy"
				in.Links = []balance.Link{{From: "a", To: "b", BytesPerSecond: float64(bt.GiB)}}
				in.History = []balance.PastMigration{
					{From: "a", To: "b", Strategy: "stream", Bytes: bt.GiB, Downtime: time.Second, Total: 4 * time.Second},
					{From: "c", To: "b", Strategy: "stop-copy", Bytes: bt.GiB, Downtime: 6 * time.Second, Total: time.Second},
				}
			},
			bytes: 512 * bt.MiB, downtime: 3 * time.Second, duration: 500 * time.Millisecond,
			basis: "512 MiB at 1.0 GiB/s (measured a→b); downtime 3s (6s per GiB, the median of 1 past stop-copy migration)",
		},
		{
			name:  "a dirty rate adds what is dirtied while the memory is copied",
			dirty: 50 << 20,
			// 512 MiB at 100 MiB/s is 5.12 s, during which 256 MiB is
			// dirtied.
			bytes: 768 * bt.MiB, downtime: 3 * time.Second, duration: 7680 * time.Millisecond,
			basis: "768 MiB at 100 MiB/s",
		},
		{
			name: "a downtime never under min_downtime",
			edit: func(in *balance.Input) {
				in.History = []balance.PastMigration{{From: "x", To: "y", Strategy: "post-copy", Bytes: 10 * bt.GiB, Downtime: 100 * time.Millisecond, Total: 10 * time.Second}}
			},
			bytes: 512 * bt.MiB, downtime: 300 * time.Millisecond, duration: 500 * time.Millisecond,
			basis: "raised to min_downtime",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, in := bt.Cluster(now, hot(node("a"), node("b"), node("c"))...)
			for _, id := range []string{"c1", "c2", "c3", "c4"} {
				for i := range in.Samples[id] {
					in.Samples[id][i].DirtyBytesPerSecond = tc.dirty
				}
			}
			if tc.edit != nil {
				tc.edit(&in)
			}
			d := bt.Check(t, s, in, bt.Want{Triggered: true, Stop: balance.StopTarget, Moves: []string{"c1:a>b", "c2:a>c"},
				Rejected: rejectAll(balance.RuleTargetReached, "c3", "c4")})
			m := d.Moves[0]
			if m.Bytes != tc.bytes || m.Downtime != tc.downtime || m.Duration != tc.duration {
				t.Errorf("predicted %d bytes, %s downtime, %s duration; want %d, %s, %s", m.Bytes, m.Downtime, m.Duration, tc.bytes, tc.downtime, tc.duration)
			}
			wantCost := in.Policy.DowntimeWeight*tc.downtime.Seconds() + in.Policy.GiBWeight*float64(tc.bytes)/float64(bt.GiB)
			if m.Cost != wantCost {
				t.Errorf("cost = %v, want %v", m.Cost, wantCost)
			}
			if !strings.Contains(m.CostBasis, tc.basis) {
				t.Errorf("cost basis = %q, want it to contain %q", m.CostBasis, tc.basis)
			}
		})
	}
}

func TestPlanRefusesBadInput(t *testing.T) {
	s, in := bt.Cluster(now, hot(node("a"), node("b"), node("c"))...)
	bad := in
	bad.Policy.Trigger = 0.05
	if _, err := balance.Plan(s, bad); !errors.Is(err, balance.ErrInvalidPolicy) {
		t.Errorf("Plan with a trigger under the target: err %v, want ErrInvalidPolicy", err)
	}
	bad = in
	bad.Now = time.Time{}
	if _, err := balance.Plan(s, bad); !errors.Is(err, balance.ErrInvalidInput) {
		t.Errorf("Plan without a time: err %v, want ErrInvalidInput", err)
	}
}

// TestDecisionJSON checks the shape `balance plan -o json` prints: lists,
// never null, and each move and rejection with the fields the issue
// names.
func TestDecisionJSON(t *testing.T) {
	s, in := bt.Cluster(now, hot(node("a"), node("b"), node("c"))...)
	for _, tc := range []struct {
		name          string
		trigger, cost float64
		wantMoves     bool
	}{
		{"a plan with moves", balance.DefaultTrigger, balance.DefaultCostMultiple, true},
		{"a plan where no move pays", balance.DefaultTrigger, 1000, false},
		{"no plan", 5, balance.DefaultCostMultiple, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := in
			in.Policy.Trigger, in.Policy.CostMultiple = tc.trigger, tc.cost
			d, err := balance.Plan(s, in)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Moves    []map[string]any `json:"moves"`
				Rejected []map[string]any `json:"rejected"`
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), `"moves":[`) || !strings.Contains(string(b), `"rejected":[`) {
				t.Errorf("moves and rejected must be lists, even empty: %s", b)
			}
			if (len(got.Moves) > 0) != tc.wantMoves {
				t.Fatalf("%d moves, want some: %v", len(got.Moves), tc.wantMoves)
			}
			for _, m := range got.Moves {
				for _, k := range []string{"container", "from", "to", "gain", "cost", "reason"} {
					if _, ok := m[k]; !ok {
						t.Errorf("a move lacks %q: %v", k, m)
					}
				}
			}
			for _, r := range got.Rejected {
				for _, k := range []string{"container", "reason"} {
					if _, ok := r[k]; !ok {
						t.Errorf("a rejection lacks %q: %v", k, r)
					}
				}
			}
		})
	}
}
