package balancetest

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/state"
)

var now = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// TestCluster checks that the builders give the fake cluster what a real
// one in that condition has, since every balance test relies on it.
func TestCluster(t *testing.T) {
	s, in := Cluster(now,
		Node("a", 4000, 8*GiB).Labels("zone=eu").Flags("sse", "avx2").Run(
			Container("c1", 500, GiB), Container("c2", 100, 64*MiB).Request(0, 0).Pin(),
			Container("c3", 300, GiB).Stopped(), Container("c4", 200, MiB).Steady(time.Minute).Dirty(7)),
		Node("b", 2000, 4*GiB).Status(state.NodeDraining).Run(Container("c5", 100, MiB).NoSamples()),
	)
	a, _ := s.Node("a")
	c2, _ := s.ContainerByID("c2")
	c4 := in.Samples["c4"]
	tests := []struct {
		name      string
		got, want any
	}{
		{"nodes in order", []string{s.Nodes()[0].Name, s.Nodes()[1].Name}, []string{"a", "b"}},
		{"labels", a.Labels, map[string]string{"zone": "eu"}},
		{"flags sorted", a.CPU.Flags, []string{"avx2", "sse"}},
		{"status", s.Nodes()[1].Status(), state.NodeDraining},
		{"containers placed", c2.Node, "a"},
		{"pin", c2.Spec.Pinned, true},
		{"allocated: running containers' effective requests", s.Allocated("a"),
			state.Resources{MilliCPU: 500 + state.DefaultMilliCPU + 200, MemoryBytes: GiB + state.DefaultMemoryBytes + MiB}},
		{"count: every container", s.ContainerCount("a"), 4},
		{"samples over the window", len(in.Samples["c1"]), int(in.Policy.Window/SampleEvery) + 1},
		{"no samples", in.Samples["c5"] == nil, true},
		{"steady: the level for a minute", []int64{c4[0].MilliCPU, c4[2].MilliCPU, c4[3].MilliCPU}, []int64{200, 200, 200 * unsteadyFactor}},
		{"dirty rate", c4[0].DirtyBytesPerSecond, int64(7)},
		{"the default policy", in.Policy, balance.Default()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}

func TestStateMutations(t *testing.T) {
	s, _ := Cluster(now, Node("a", 4000, 8*GiB).Run(Container("c1", 500, GiB)), Node("b", 4000, 8*GiB))
	c, _ := s.ContainerByID("c1")
	moved := *c
	moved.Node = "b"
	s.PutContainer(&moved)
	if s.Allocated("a") != (state.Resources{}) || s.Allocated("b") != (state.Resources{MilliCPU: 500, MemoryBytes: GiB}) ||
		s.ContainerCount("a") != 0 || s.ContainerCount("b") != 1 {
		t.Errorf("after a move: a %+v/%d, b %+v/%d", s.Allocated("a"), s.ContainerCount("a"), s.Allocated("b"), s.ContainerCount("b"))
	}
	for i, phase := range []state.MigrationPhase{state.MigrationDone, state.MigrationSync, state.MigrationAborted} {
		s.PutMigration(&state.Migration{ID: fmt.Sprint("m", i), CreatedIndex: uint64(i), Container: "c1", Phase: phase})
	}
	ids := func(ms []*state.Migration) string {
		var out []string
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return strings.Join(out, ",")
	}
	if got := ids(s.Migrations(state.MigrationFilter{})); got != "m2,m1,m0" {
		t.Errorf("migrations = %s, want newest first", got)
	}
	if got := ids(s.Migrations(state.MigrationFilter{Open: true})); got != "m1" {
		t.Errorf("open migrations = %s, want m1", got)
	}
	s.DeleteMigration("m1")
	if got := ids(s.Migrations(state.MigrationFilter{})); got != "m2,m0" {
		t.Errorf("after deleting m1: %s", got)
	}
	st, err := s.Store()
	if err != nil {
		t.Fatal(err)
	}
	snap := st.Snapshot()
	if snap.Allocated("b") != s.Allocated("b") || len(snap.Containers()) != 1 || len(snap.Migrations(state.MigrationFilter{})) != 2 {
		t.Errorf("the store does not hold what the fake does")
	}
	sh := s.Shuffled(7)
	if !slices.EqualFunc(sortedNames(sh.Nodes()), sortedNames(s.Nodes()), func(a, b string) bool { return a == b }) {
		t.Errorf("a shuffled state lists other nodes")
	}
}

func sortedNames(ns []*state.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	slices.Sort(out)
	return out
}

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	errors []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errors = append(r.errors, fmt.Sprintf(format, args...))
}

// TestCheckInvariantsCatches breaks good decisions in the ways the
// invariants exist to catch, and expects each to be reported: a harness
// that cannot fail checks nothing.
func TestCheckInvariantsCatches(t *testing.T) {
	hot := func() (*State, balance.Input) {
		return Cluster(now,
			Node("a", 4000, 8*GiB).Flags("avx").Run(Container("c1", 800, 512*MiB), Container("c2", 800, 512*MiB),
				Container("c3", 800, 512*MiB), Container("c4", 800, 512*MiB), Container("p", 100, MiB).Pin()),
			Node("b", 4000, 8*GiB).Flags("avx").Run(Container("c5", 400, 512*MiB)),
			Node("c", 4000, 8*GiB).Flags("avx").Run(Container("c6", 600, 512*MiB)),
			Node("d", 4000, 8*GiB).Status(state.NodeCordoned),
			Node("e", 4000, 8*GiB),
		)
	}
	tests := []struct {
		name   string
		mutate func(s *State, in *balance.Input, d *balance.Decision)
		say    string
	}{
		{"a candidate neither moved nor rejected", func(s *State, in *balance.Input, d *balance.Decision) {
			d.Rejected = d.Rejected[1:]
		}, "is moved or rejected 0 times"},
		{"a rejection without a reason", func(s *State, in *balance.Input, d *balance.Decision) {
			d.Rejected[0].Reason = ""
		}, "want a known rule and a reason"},
		{"a move of a pinned container", func(s *State, in *balance.Input, d *balance.Decision) {
			d.Moves[0].Container = "p"
		}, "the container is pinned"},
		{"a move to a cordoned node", func(s *State, in *balance.Input, d *balance.Decision) {
			d.Moves[0].To = "d"
		}, "destination not ready"},
		{"a move within the cooldown", func(s *State, in *balance.Input, d *balance.Decision) {
			in.Recent = []balance.PastMove{{Container: d.Moves[0].Container, From: "x", To: "a", At: now.Add(-time.Minute)}}
		}, "within the cooldown"},
		{"a move back where the container came from", func(s *State, in *balance.Input, d *balance.Decision) {
			in.Recent = []balance.PastMove{{Container: d.Moves[0].Container, From: d.Moves[0].To, To: "a", At: now.Add(-20 * time.Minute)}}
		}, "ping-pong"},
		{"a move to a node without the source's CPU features", func(s *State, in *balance.Input, d *balance.Decision) {
			n, _ := s.Node(d.Moves[0].To)
			m := *n
			m.CPU.Flags = nil
			s.PutNode(&m)
		}, "lacks CPU feature avx"},
		{"more moves than max_moves_per_node", func(s *State, in *balance.Input, d *balance.Decision) {
			in.Policy.MaxMovesPerNode = 1
		}, "over max_moves_per_node"},
		{"more moves than max_moves", func(s *State, in *balance.Input, d *balance.Decision) {
			in.Policy.MaxMoves = 1
		}, "over max_moves"},
		{"a gain that the metric does not give", func(s *State, in *balance.Input, d *balance.Decision) {
			d.Moves[0].Gain *= 2
		}, "the replay's imbalances give"},
		{"a move that does not pay", func(s *State, in *balance.Input, d *balance.Decision) {
			d.Moves[0].Cost = 1e6
		}, "does not pay"},
		{"a wrong imbalance now", func(s *State, in *balance.Input, d *balance.Decision) {
			d.Imbalance /= 2
		}, "imbalance now"},
		{"measured use over the headroom", func(s *State, in *balance.Input, d *balance.Decision) {
			in.Policy.Headroom = 0.9
		}, "over the headroom's limit"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, in := hot()
			d, err := balance.Plan(s, in)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Moves) < 2 || len(d.Rejected) == 0 {
				t.Fatalf("the good plan has %d moves and %d rejections, want some of both", len(d.Moves), len(d.Rejected))
			}
			clean := &recorder{TB: t}
			CheckInvariants(clean, s, in, d)
			if len(clean.errors) > 0 {
				t.Fatalf("the good plan breaks invariants: %q", clean.errors)
			}
			tc.mutate(s, &in, &d)
			r := &recorder{TB: t}
			CheckInvariants(r, s, in, d)
			if !slices.ContainsFunc(r.errors, func(e string) bool { return strings.Contains(e, tc.say) }) {
				t.Errorf("CheckInvariants reported %q, want an error saying %q", r.errors, tc.say)
			}
		})
	}
}
