package placement_test

import (
	"testing"

	"github.com/godwit/godwit/scheduler/placement"
	pt "github.com/godwit/godwit/scheduler/placement/placementtest"
	"github.com/godwit/godwit/scheduler/state"
)

// TestTableAnswersAsItsState checks a Table's own answers: what its State
// said, plus what Add reserved, for known and unknown nodes alike.
func TestTableAnswersAsItsState(t *testing.T) {
	s := pt.NewState(
		pt.Node("b", 4000, 8*pt.GiB).Running(2, 500, pt.GiB),
		pt.Node("a", 2000, 4*pt.GiB).Images("busybox:latest"),
	)
	table := placement.NewTable(s)
	table.Add("a", state.Resources{MilliCPU: 250, MemoryBytes: pt.GiB})
	table.Add("nowhere", state.Resources{MilliCPU: 250})

	var names []string
	for _, n := range table.Nodes() {
		names = append(names, n.Name)
	}
	if len(names) != 2 || names[0] != "a" || names[1] != "b" {
		t.Errorf("Nodes() = %q, want a and b in name order", names)
	}
	if got, want := table.Allocated("a"), (state.Resources{MilliCPU: 250, MemoryBytes: pt.GiB}); got != want {
		t.Errorf("Allocated(a) = %+v, want %+v (the Add)", got, want)
	}
	if got, want := table.Allocated("b"), s.Allocated("b"); got != want {
		t.Errorf("Allocated(b) = %+v, want the state's %+v", got, want)
	}
	if got := table.ContainerCount("a"); got != 1 {
		t.Errorf("ContainerCount(a) = %d, want 1 (the Add)", got)
	}
	if got := table.ContainerCount("b"); got != 2 {
		t.Errorf("ContainerCount(b) = %d, want 2", got)
	}
	if got := table.Allocated("nowhere"); got != (state.Resources{}) {
		t.Errorf("Allocated of an unknown node = %+v, want zero", got)
	}
	for _, tt := range []struct {
		node, image string
		want        bool
	}{
		{"a", "busybox:latest", true},
		{"b", "busybox:latest", false},
		{"a", "", false},
		{"nowhere", "busybox:latest", false},
	} {
		if got := table.HasImage(tt.node, tt.image); got != tt.want {
			t.Errorf("HasImage(%q, %q) = %v, want %v", tt.node, tt.image, got, tt.want)
		}
	}
}
