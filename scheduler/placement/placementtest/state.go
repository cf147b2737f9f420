package placementtest

import (
	"slices"
	"strings"

	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// Sizes for capacities and requests.
const (
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// NodeSpec describes one fake node; its methods set one property each and
// return the NodeSpec, so that a node is one line:
//
//	Node("n1", 4000, 8*GiB).Labels("zone=eu").Running(2, 500, GiB)
type NodeSpec struct {
	node      state.Node
	allocated state.Resources
	count     int
	images    []string
}

// Node is a ready, alive node with the given capacity in thousandths of a
// CPU and bytes.
func Node(name string, milliCPU, memoryBytes int64) *NodeSpec {
	return &NodeSpec{node: state.Node{
		Name:           name,
		Address:        name + ":7000",
		Capacity:       state.Resources{MilliCPU: milliCPU, MemoryBytes: memoryBytes},
		Schedulability: state.Schedulable,
		Health:         state.HealthAlive,
	}}
}

// Labels sets node labels given as "key=value" (a pair without "=" is a
// label with an empty value).
func (n *NodeSpec) Labels(kv ...string) *NodeSpec {
	if n.node.Labels == nil {
		n.node.Labels = make(map[string]string, len(kv))
	}
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		n.node.Labels[k] = v
	}
	return n
}

// Flags sets the node's CPU feature flags, sorted as state.CPU requires.
func (n *NodeSpec) Flags(flags ...string) *NodeSpec {
	n.node.CPU.Flags = slices.Sorted(slices.Values(flags))
	return n
}

// Status gives the node the status st, through the Health and
// Schedulability that produce it.
func (n *NodeSpec) Status(st state.NodeStatus) *NodeSpec {
	n.node.Health, n.node.Schedulability = state.HealthAlive, state.Schedulable
	switch st {
	case state.NodeCordoned:
		n.node.Schedulability = state.Cordoned
	case state.NodeDraining:
		n.node.Schedulability = state.Draining
	case state.NodeSuspect:
		n.node.Health = state.HealthSuspect
	case state.NodeDown:
		n.node.Health = state.HealthDown
	}
	return n
}

// Images adds images (name:tag) the node holds.
func (n *NodeSpec) Images(images ...string) *NodeSpec {
	n.images = append(n.images, images...)
	return n
}

// Running adds count containers to the node, each requesting milliCPU and
// memoryBytes; the node's allocation grows by their effective requests
// (placement.EffectiveRequest), as the real state counts them.
func (n *NodeSpec) Running(count int, milliCPU, memoryBytes int64) *NodeSpec {
	r := placement.EffectiveRequest(state.Resources{MilliCPU: milliCPU, MemoryBytes: memoryBytes})
	for range count {
		n.allocated = n.allocated.Add(r)
	}
	n.count += count
	return n
}

// State is a fake placement.State holding the nodes it was built with.
// It is read-only once built, so one State serves many placements,
// concurrently too.
type State struct {
	nodes     []*state.Node
	allocated map[string]state.Resources
	count     map[string]int
	images    map[nodeImage]bool
}

type nodeImage struct{ node, image string }

var _ placement.State = (*State)(nil)

// NewState builds a State from nodes; Nodes returns them in this order.
func NewState(nodes ...*NodeSpec) *State {
	s := &State{
		allocated: make(map[string]state.Resources, len(nodes)),
		count:     make(map[string]int, len(nodes)),
		images:    make(map[nodeImage]bool),
	}
	for _, ns := range nodes {
		n := ns.node
		s.nodes = append(s.nodes, &n)
		s.allocated[n.Name] = ns.allocated
		s.count[n.Name] = ns.count
		for _, img := range ns.images {
			s.images[nodeImage{n.Name, img}] = true
		}
	}
	return s
}

// Nodes returns the nodes in the order NewState was given them.
func (s *State) Nodes() []*state.Node { return slices.Clone(s.nodes) }

// Allocated returns what Running reserved on the node.
func (s *State) Allocated(node string) state.Resources { return s.allocated[node] }

// ContainerCount returns how many containers Running put on the node.
func (s *State) ContainerCount(node string) int { return s.count[node] }

// HasImage reports whether Images gave the node the image.
func (s *State) HasImage(node, image string) bool { return s.images[nodeImage{node, image}] }

// reversed is s with its nodes listed in the opposite order.
type reversed struct{ *State }

func (r reversed) Nodes() []*state.Node {
	n := slices.Clone(r.State.nodes)
	slices.Reverse(n)
	return n
}
