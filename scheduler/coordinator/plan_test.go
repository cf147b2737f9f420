package coordinator

import (
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/migrate"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

var t0 = time.Date(2026, 11, 29, 6, 0, 0, 0, time.UTC)

// world is a cluster state filled through the real FSM.
type world struct {
	t     *testing.T
	f     *fsm.FSM
	index uint64
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, f: fsm.New(state.NewStore(), slog.New(slog.DiscardHandler))}
	w.must(fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix("10.90.0.0/16"), At: t0})
	return w
}

func (w *world) must(cmd fsm.Command) any {
	w.t.Helper()
	data, err := fsm.Encode(cmd)
	if err != nil {
		w.t.Fatal(err)
	}
	w.index++
	res := w.f.Apply(&raft.Log{Index: w.index, Term: 1, Type: raft.LogCommand, Data: data}).(fsm.Result)
	if res.Err != nil {
		w.t.Fatalf("apply %T: %v", cmd, res.Err)
	}
	return res.Value
}

// node registers a node with 2 CPUs, the CPU flags and the strategies.
func (w *world) node(name string, flags, strategies []string) {
	w.must(fsm.RegisterNode{Node: state.Node{
		Name: name, Address: name + ":7701",
		Capacity:   state.Resources{MilliCPU: 2000, MemoryBytes: 4 << 30},
		CPU:        state.CPU{Flags: flags},
		Strategies: strategies,
	}, At: t0})
}

// run places a running container on node.
func (w *world) run(name, node string, cpu int64, pinned bool) {
	spec := state.ContainerSpec{Image: "busybox", Request: state.Resources{MilliCPU: cpu}}
	if pinned {
		spec.Node = node
	}
	out := w.must(fsm.PlaceContainers{Containers: []fsm.NewContainer{{ID: strings.Repeat("a", 63) + name[len(name)-1:], Name: name, Node: node, Spec: spec}}, At: t0}).([]fsm.PlaceOutcome)
	if out[0].Err != nil {
		w.t.Fatal(out[0].Err)
	}
	n, _ := w.f.Store().Snapshot().Node(node)
	w.must(fsm.ReportContainers{Node: node, Epoch: n.Epoch, Reports: []fsm.Report{{ID: out[0].Container.ID, State: state.ReportedRunning}}, At: t0})
}

var (
	allStrategies = []string{"stop-copy", "stream", "post-copy"}
	flags         = []string{"avx2", "sse4_2"}
)

func TestPlanChoosesADestinationAndAStrategyWithReasons(t *testing.T) {
	w := newWorld(t)
	w.node("n1", flags, allStrategies)
	w.node("n2", flags, []string{"stop-copy"})
	w.node("old", []string{"sse4_2"}, allStrategies) // lacks avx2: cannot take n1's containers
	w.run("c1", "n1", 500, false)

	m, err := plan(w.f.Store().Snapshot(), Request{Container: "c1", Strategy: migrate.Auto})
	if err != nil {
		t.Fatal(err)
	}
	if m.Source != "n1" || m.Dest != "n2" {
		t.Errorf("planned %s -> %s, want n1 -> n2 (old lacks avx2)", m.Source, m.Dest)
	}
	if m.Strategy != string(migrate.StopCopy) || m.WhyStrategy == "" || m.WhyDestination == "" {
		t.Errorf("strategy %s (why %q), destination why %q: want stop-copy, the only one n2 supports, with reasons", m.Strategy, m.WhyStrategy, m.WhyDestination)
	}
	if m.Generation != 1 || m.ContainerName != "c1" {
		t.Errorf("planned generation %d of %q, want 1 of c1", m.Generation, m.ContainerName)
	}
}

func TestPlanRefusals(t *testing.T) {
	w := newWorld(t)
	w.node("n1", flags, allStrategies)
	w.node("n2", flags, []string{"stop-copy"})
	w.run("c1", "n1", 500, false)
	w.run("c2", "n1", 500, true)
	w.run("c3", "n1", 1900, false) // more than n2 has left once c4 runs there
	w.run("c4", "n2", 500, false)

	cases := []struct {
		name    string
		req     Request
		wantErr error
		wantMsg string
	}{
		{"unknown container", Request{Container: "nope"}, state.ErrNotFound, ""},
		{"to its own node", Request{Container: "c1", To: "n1"}, ErrInvalid, "already"},
		{"pinned without --to", Request{Container: "c2"}, ErrInvalid, "pinned"},
		{"a strategy the destination lacks", Request{Container: "c1", To: "n2", Strategy: migrate.Stream}, ErrInvalid, "stream"},
		{"no room anywhere", Request{Container: "c3"}, ErrNoDestination, "capacity"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := plan(w.f.Store().Snapshot(), tc.req)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("plan: %v, want %v", err, tc.wantErr)
			}
			if tc.wantMsg != "" && !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("plan: %q, want it to mention %q", err, tc.wantMsg)
			}
		})
	}
	// Pinned, but named outright: allowed.
	if _, err := plan(w.f.Store().Snapshot(), Request{Container: "c2", To: "n2"}); err != nil {
		t.Errorf("move a pinned container with --to: %v", err)
	}
}

// The room a move in flight promised its destination is not given to a
// second move: each would fit alone, both would overcommit the node.
func TestPlanCountsTheRoomPromisedToMovesInFlight(t *testing.T) {
	w := newWorld(t)
	w.node("n1", flags, allStrategies)
	w.node("n2", flags, allStrategies)
	w.run("c1", "n1", 1500, false)
	w.run("c2", "n1", 1500, false)
	first, err := plan(w.f.Store().Snapshot(), Request{Container: "c1"})
	if err != nil || first.Dest != "n2" {
		t.Fatalf("first move: %+v, %v; want one to n2", first, err)
	}
	w.must(fsm.CreateMigration{ID: "m1", Container: first.Container, Source: first.Source, Dest: first.Dest, Strategy: first.Strategy, Reason: "operator", At: t0})

	_, err = plan(w.f.Store().Snapshot(), Request{Container: "c2"})
	if !errors.Is(err, ErrNoDestination) {
		t.Fatalf("second move while the first is in flight: %v, want ErrNoDestination (n2's room is promised)", err)
	}
	_, err = plan(w.f.Store().Snapshot(), Request{Container: "c2", To: "n2"})
	if !errors.Is(err, ErrNoDestination) {
		t.Fatalf("second move --to n2 while the first is in flight: %v, want ErrNoDestination", err)
	}
}
