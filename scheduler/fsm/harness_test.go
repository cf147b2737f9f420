package fsm_test

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

const testCIDR = "10.1.0.0/24"

// harness applies commands to an FSM as raft would: encoded, at
// increasing log indexes.
type harness struct {
	t     testing.TB
	f     *fsm.FSM
	index uint64
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, f: fsm.New(state.NewStore(), slog.New(slog.DiscardHandler))}
}

// cluster returns a harness with the cluster CIDR set and nodes n1 and n2
// registered (epoch 1).
func cluster(t testing.TB) *harness {
	h := newHarness(t)
	h.must(fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix(testCIDR), At: t0})
	h.must(fsm.RegisterNode{Node: testNode("n1"), At: t0})
	h.must(fsm.RegisterNode{Node: testNode("n2"), At: t0})
	return h
}

func testNode(name string) state.Node {
	return state.Node{
		Name: name, Address: name + ":7001",
		Capacity: state.Resources{MilliCPU: 4000, MemoryBytes: 8 << 30},
		Labels:   map[string]string{"zone": "a"},
		CPU:      state.CPU{Vendor: "GenuineIntel", Flags: []string{"sse4_2", "avx2"}},
		Versions: state.Versions{Godwit: "0.5.0", Runc: "1.2.0", CRIU: "4.0", Kernel: "6.18"},
	}
}

func spec(cpu int64) state.ContainerSpec {
	return state.ContainerSpec{Image: "busybox", Args: []string{"sleep", "1000"},
		Request: state.Resources{MilliCPU: cpu, MemoryBytes: cpu << 20}}
}

// apply applies cmd at the next index and returns the FSM's result.
func (h *harness) apply(cmd fsm.Command) fsm.Result {
	h.t.Helper()
	data, err := fsm.Encode(cmd)
	if err != nil {
		h.t.Fatalf("encode %T: %v", cmd, err)
	}
	return h.applyData(data)
}

func (h *harness) applyData(data []byte) fsm.Result {
	h.t.Helper()
	h.index++
	res, ok := h.f.Apply(&raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data}).(fsm.Result)
	if !ok {
		h.t.Fatalf("Apply did not return an fsm.Result")
	}
	return res
}

// must applies cmd and fails the test if it is refused.
func (h *harness) must(cmd fsm.Command) any {
	h.t.Helper()
	res := h.apply(cmd)
	if res.Err != nil {
		h.t.Fatalf("apply %T: %v", cmd, res.Err)
	}
	return res.Value
}

// place places one container and returns it.
func (h *harness) place(id, name, node string, cpu int64) *state.Container {
	h.t.Helper()
	v := h.must(fsm.PlaceContainers{Containers: []fsm.NewContainer{{ID: id, Name: name, Node: node, Spec: spec(cpu)}}, At: t0})
	out := v.([]fsm.PlaceOutcome)
	if out[0].Err != nil {
		h.t.Fatalf("place %s: %v", name, out[0].Err)
	}
	return out[0].Container
}

func (h *harness) snap() *state.Snapshot { return h.f.Store().Snapshot() }

func (h *harness) node(name string) *state.Node {
	h.t.Helper()
	n, ok := h.snap().Node(name)
	if !ok {
		h.t.Fatalf("node %s is not in the state", name)
	}
	return n
}

func (h *harness) container(id string) *state.Container {
	h.t.Helper()
	c, ok := h.snap().ContainerByID(id)
	if !ok {
		h.t.Fatalf("container %s is not in the state", id)
	}
	return c
}

// eventKinds returns the kinds of the events of the last applied index.
func (h *harness) eventKinds() []string {
	evs, _, err := h.f.Store().EventsSince(h.index - 1)
	if err != nil {
		h.t.Fatalf("events: %v", err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind)
	}
	return out
}
