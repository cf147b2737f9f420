package placementtest

import (
	"reflect"
	"testing"

	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// TestNodeSpec checks that each builder method gives the fake node what a
// real node in that condition has, since every placement test relies on
// it.
func TestNodeSpec(t *testing.T) {
	for _, st := range []state.NodeStatus{state.NodeReady, state.NodeCordoned, state.NodeDraining, state.NodeSuspect, state.NodeDown} {
		t.Run("status "+string(st), func(t *testing.T) {
			s := NewState(Node("n", 1000, GiB).Status(state.NodeDown).Status(st))
			if got := s.Nodes()[0].Status(); got != st {
				t.Errorf("Status(%s) gave a node whose status is %s", st, got)
			}
		})
	}

	s := NewState(
		Node("b", 4000, 8*GiB).Labels("zone=eu", "ssd").Flags("sse", "avx2", "fpu").Images("busybox:latest").
			Running(2, 500, GiB).Running(1, 0, 0),
		Node("a", 1000, GiB),
	)
	b := s.Nodes()[0]
	tests := []struct {
		name      string
		got, want any
	}{
		{"nodes in the order given", []string{s.Nodes()[0].Name, s.Nodes()[1].Name}, []string{"b", "a"}},
		{"capacity", b.Capacity, state.Resources{MilliCPU: 4000, MemoryBytes: 8 * GiB}},
		{"labels", b.Labels, map[string]string{"zone": "eu", "ssd": ""}},
		{"flags sorted", b.CPU.Flags, []string{"avx2", "fpu", "sse"}},
		{"image held", s.HasImage("b", "busybox:latest"), true},
		{"image not held elsewhere", s.HasImage("a", "busybox:latest"), false},
		{"containers counted", s.ContainerCount("b"), 3},
		{"allocated by effective request", s.Allocated("b"), state.Resources{
			MilliCPU:    2*500 + placement.DefaultMilliCPU,
			MemoryBytes: 2*GiB + placement.DefaultMemoryBytes,
		}},
		{"nothing allocated on an empty node", s.Allocated("a"), state.Resources{}},
		{"reversed", []string{reversed{s}.Nodes()[0].Name, reversed{s}.Nodes()[1].Name}, []string{"a", "b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("got %v, want %v", tc.got, tc.want)
			}
		})
	}
}
