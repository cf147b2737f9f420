package placement_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/godwit/godwit/scheduler/placement"
	pt "github.com/godwit/godwit/scheduler/placement/placementtest"
	"github.com/godwit/godwit/scheduler/state"
)

// TestReserveBatchNeverOvercommits decides a batch on one unchanging
// state, each decision reserved before the next, as the leader decides a
// raft entry's containers: the nodes fill up to their capacity and no
// further, in the order the algorithm prefers.
func TestReserveBatchNeverOvercommits(t *testing.T) {
	tests := []struct {
		name  string
		nodes []*pt.NodeSpec
		req   placement.Request
		batch int
		// want is the node chosen for each container in order; "" from
		// the first container that fits nowhere (all later ones too).
		want []string
	}{
		{
			name: "binpack fills the fuller node, then the other, then refuses",
			nodes: []*pt.NodeSpec{
				pt.Node("a", 1000, 8*pt.GiB).Running(1, 500, pt.GiB),
				pt.Node("b", 1000, 8*pt.GiB),
			},
			req:   request(250, 256*pt.MiB),
			batch: 8,
			want:  []string{"a", "a", "b", "b", "b", "b", "", ""},
		},
		{
			name: "spread alternates as the counts grow",
			nodes: []*pt.NodeSpec{
				pt.Node("a", 4000, 8*pt.GiB),
				pt.Node("b", 4000, 8*pt.GiB),
			},
			req:   spread(request(100, 64*pt.MiB)),
			batch: 4,
			want:  []string{"a", "b", "a", "b"},
		},
		{
			name: "a zero request reserves the defaults",
			nodes: []*pt.NodeSpec{
				pt.Node("a", 3*placement.DefaultMilliCPU, pt.GiB),
			},
			req:   request(0, 0),
			batch: 4,
			want:  []string{"a", "a", "a", ""},
		},
		{
			name: "memory runs out before CPU",
			nodes: []*pt.NodeSpec{
				pt.Node("a", 8000, pt.GiB),
			},
			req:   request(100, 400*pt.MiB),
			batch: 3,
			want:  []string{"a", "a", ""},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := pt.NewState(tc.nodes...)
			var r placement.Reservations
			view := placement.Reserve(s, &r)
			// The scheduler's Placer decides its batches on a Table,
			// reserving on the Table itself: it must decide exactly as
			// Reserve does, rejections' words included.
			table := placement.NewTable(s)
			var got []string
			for i := range tc.batch {
				d, err := placement.Place(view, tc.req)
				if err != nil && !errors.Is(err, placement.ErrNoNode) {
					t.Fatalf("place: %v", err)
				}
				onTable, tableErr := placement.Place(table, tc.req)
				if !reflect.DeepEqual(onTable, d) || (tableErr == nil) != (err == nil) {
					t.Fatalf("container %d: on the Table, Place decided %+v (err %v), not %+v (err %v)", i, onTable, tableErr, d, err)
				}
				got = append(got, d.Node)
				if d.Node != "" {
					r.Add(d.Node, tc.req.Spec.Request)
					table.Add(d.Node, tc.req.Spec.Request)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("chosen %q, want %q", got, tc.want)
			}
			for _, n := range s.Nodes() {
				if a := view.Allocated(n.Name); !a.Fits(n.Capacity) {
					t.Errorf("node %s: %+v reserved over its capacity %+v", n.Name, a, n.Capacity)
				}
			}
		})
	}
}

// TestReservationsAddRemove checks what Reserve reports as containers
// are reserved and their reservations removed again.
func TestReservationsAddRemove(t *testing.T) {
	s := pt.NewState(
		pt.Node("a", 4000, 8*pt.GiB).Running(2, 500, pt.GiB).Images("busybox:latest"),
		pt.Node("b", 4000, 8*pt.GiB),
	)
	small := state.Resources{MilliCPU: 100, MemoryBytes: 128 * pt.MiB}
	defaults := placement.EffectiveRequest(state.Resources{})
	var r placement.Reservations
	view := placement.Reserve(s, &r)

	steps := []struct {
		name   string
		do     func()
		node   string
		want   state.Resources
		count  int
		length int
	}{
		{"nothing reserved: the state's", func() {}, "a", state.Resources{MilliCPU: 1000, MemoryBytes: 2 * pt.GiB}, 2, 0},
		{"one added on a", func() { r.Add("a", small) }, "a", state.Resources{MilliCPU: 1100, MemoryBytes: 2*pt.GiB + 128*pt.MiB}, 3, 1},
		{"a zero request counts its defaults", func() { r.Add("b", state.Resources{}) }, "b", defaults, 1, 2},
		{"a second on b", func() { r.Add("b", small) }, "b", defaults.Add(small), 2, 3},
		{"removed from b", func() { r.Remove("b", small) }, "b", defaults, 1, 2},
		{"b empty again", func() { r.Remove("b", state.Resources{}) }, "b", state.Resources{}, 0, 1},
		{"removing from an empty node changes nothing", func() { r.Remove("b", small) }, "b", state.Resources{}, 0, 1},
		{"a back to the state's", func() { r.Remove("a", small) }, "a", state.Resources{MilliCPU: 1000, MemoryBytes: 2 * pt.GiB}, 2, 0},
	}
	for _, st := range steps {
		st.do()
		if got := view.Allocated(st.node); got != st.want {
			t.Errorf("%s: Allocated(%s) = %+v, want %+v", st.name, st.node, got, st.want)
		}
		if got := view.ContainerCount(st.node); got != st.count {
			t.Errorf("%s: ContainerCount(%s) = %d, want %d", st.name, st.node, got, st.count)
		}
		if got := r.Len(); got != st.length {
			t.Errorf("%s: Len() = %d, want %d", st.name, got, st.length)
		}
	}
	if !view.HasImage("a", "busybox:latest") || view.HasImage("b", "busybox:latest") {
		t.Errorf("HasImage is not the state's")
	}
	if got := len(view.Nodes()); got != 2 {
		t.Errorf("Nodes() returned %d nodes, want the state's 2", got)
	}
	if got := placement.Reserve(s, nil).Allocated("a"); got != s.Allocated("a") {
		t.Errorf("Reserve(s, nil).Allocated(a) = %+v, want the state's %+v", got, s.Allocated("a"))
	}
}
