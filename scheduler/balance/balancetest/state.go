package balancetest

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/state"
)

// Sizes for capacities, requests and loads.
const (
	MiB int64 = 1 << 20
	GiB int64 = 1 << 30
)

// SampleEvery is the interval between the load samples Cluster gives a
// container, as an agent reporting every 30 s would.
const SampleEvery = 30 * time.Second

// unsteadyFactor is how much a container's load differed before it
// became steady (ContainerSpec.Steady): far outside any tolerance.
const unsteadyFactor = 3

// NodeSpec describes one fake node; its methods set one property each
// and return the NodeSpec, so that a node is one line:
//
//	Node("n1", 4000, 8*GiB).Labels("zone=eu").Flags("avx2").Run(Container("c1", 500, GiB))
type NodeSpec struct {
	node       state.Node
	containers []*ContainerSpec
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

// Labels sets node labels given as "key=value".
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

// Run places containers on the node.
func (n *NodeSpec) Run(cs ...*ContainerSpec) *NodeSpec {
	n.containers = append(n.containers, cs...)
	return n
}

// ContainerSpec describes one fake container and its load samples.
type ContainerSpec struct {
	c         state.Container
	load      state.Resources
	steady    time.Duration
	noSamples bool
	dirty     int64
}

// Container is a running container (ID and name id) whose samples have
// measured milliCPU and memoryBytes for the whole window; it requests
// what it uses.
func Container(id string, milliCPU, memoryBytes int64) *ContainerSpec {
	load := state.Resources{MilliCPU: milliCPU, MemoryBytes: memoryBytes}
	return &ContainerSpec{c: state.Container{
		ID: id, Name: id, Spec: state.ContainerSpec{Image: "busybox:latest", Request: load},
		Desired: state.DesiredRunning, Reported: state.ReportedRunning,
	}, load: load, steady: -1}
}

// Request sets what the container requests.
func (c *ContainerSpec) Request(milliCPU, memoryBytes int64) *ContainerSpec {
	c.c.Spec.Request = state.Resources{MilliCPU: milliCPU, MemoryBytes: memoryBytes}
	return c
}

// Pin sets run --pin.
func (c *ContainerSpec) Pin() *ContainerSpec { c.c.Spec.Pinned = true; return c }

// PinTo sets run --node: where the container started, which does not
// keep the balancer off it (Pin and PinLabel do).
func (c *ContainerSpec) PinTo(node string) *ContainerSpec { c.c.Spec.Node = node; return c }

// Label sets container labels given as "key=value".
func (c *ContainerSpec) Label(kv ...string) *ContainerSpec {
	if c.c.Spec.Labels == nil {
		c.c.Spec.Labels = map[string]string{}
	}
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		c.c.Spec.Labels[k] = v
	}
	return c
}

// Constraint adds node label constraints given as "key=value".
func (c *ContainerSpec) Constraint(kv ...string) *ContainerSpec {
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		c.c.Spec.Constraints = append(c.c.Spec.Constraints, state.Constraint{Key: k, Value: v})
	}
	return c
}

// Reported sets the state the container's node reported.
func (c *ContainerSpec) Reported(st state.ReportedState) *ContainerSpec { c.c.Reported = st; return c }

// Stopped makes the container desired stopped and reported stopped.
func (c *ContainerSpec) Stopped() *ContainerSpec {
	c.c.Desired, c.c.Reported = state.DesiredStopped, state.ReportedStopped
	return c
}

// Steady makes the load have held its level for d only: older samples
// measured unsteadyFactor times more.
func (c *ContainerSpec) Steady(d time.Duration) *ContainerSpec { c.steady = d; return c }

// NoSamples gives the container no samples at all.
func (c *ContainerSpec) NoSamples() *ContainerSpec { c.noSamples = true; return c }

// Dirty sets the measured dirty rate, bytes per second.
func (c *ContainerSpec) Dirty(bytesPerSecond int64) *ContainerSpec {
	c.dirty = bytesPerSecond
	return c
}

// Cluster builds a State from nodes and the Input to plan on it at now:
// the default policy, and each container's samples every SampleEvery
// over the policy's window.
func Cluster(now time.Time, nodes ...*NodeSpec) (*State, balance.Input) {
	s := NewState()
	in := balance.Input{Now: now, Policy: balance.Default(), Samples: map[string][]balance.Sample{}}
	for _, ns := range nodes {
		n := ns.node
		s.PutNode(&n)
		for _, cs := range ns.containers {
			c := cs.c
			c.Node = n.Name
			s.PutContainer(&c)
			if !cs.noSamples {
				in.Samples[c.ID] = cs.samples(now, in.Policy.Window)
			}
		}
	}
	return s, in
}

// samples are the container's samples over window back from now.
func (c *ContainerSpec) samples(now time.Time, window time.Duration) []balance.Sample {
	var out []balance.Sample
	for age := time.Duration(0); age <= window; age += SampleEvery {
		load := c.load
		if c.steady >= 0 && age > c.steady {
			load = state.Resources{MilliCPU: load.MilliCPU * unsteadyFactor, MemoryBytes: load.MemoryBytes * unsteadyFactor}
		}
		out = append(out, balance.Sample{Time: now.Add(-age), MilliCPU: load.MilliCPU, MemoryBytes: load.MemoryBytes, DirtyBytesPerSecond: c.dirty})
	}
	return out
}

// State is a fake balance.State: nodes, containers and migrations,
// with each node's allocation and container count kept as the real
// state keeps them. Its Put methods store copies; what its readers
// return is shared and must not be modified. It is not safe for
// concurrent use while it changes.
type State struct {
	nodes      []*state.Node
	nodeIndex  map[string]int
	containers []*state.Container
	ctrIndex   map[string]int
	migrations []*state.Migration
	migIndex   map[string]int
	allocated  map[string]state.Resources
	count      map[string]int
}

var _ balance.State = (*State)(nil)

// NewState returns an empty State.
func NewState() *State {
	return &State{
		nodeIndex: map[string]int{}, ctrIndex: map[string]int{}, migIndex: map[string]int{},
		allocated: map[string]state.Resources{}, count: map[string]int{},
	}
}

// PutNode adds the node or replaces the one with its name.
func (s *State) PutNode(n *state.Node) {
	n = n.Clone()
	if i, ok := s.nodeIndex[n.Name]; ok {
		s.nodes[i] = n
		return
	}
	s.nodeIndex[n.Name] = len(s.nodes)
	s.nodes = append(s.nodes, n)
}

// PutContainer adds the container or replaces the one with its ID,
// moving its reservation as the real state does.
func (s *State) PutContainer(c *state.Container) {
	c = c.Clone()
	if i, ok := s.ctrIndex[c.ID]; ok {
		s.usage(s.containers[i], -1)
		s.containers[i] = c
	} else {
		s.ctrIndex[c.ID] = len(s.containers)
		s.containers = append(s.containers, c)
	}
	s.usage(c, 1)
}

func (s *State) usage(c *state.Container, sign int64) {
	s.count[c.Node] += int(sign)
	if c.Desired == state.DesiredRunning && c.Reported != state.ReportedLost {
		r := c.Spec.Request.Effective()
		s.allocated[c.Node] = s.allocated[c.Node].Add(state.Resources{MilliCPU: sign * r.MilliCPU, MemoryBytes: sign * r.MemoryBytes})
	}
}

// PutMigration adds the migration or replaces the one with its ID.
func (s *State) PutMigration(m *state.Migration) {
	m = m.Clone()
	if i, ok := s.migIndex[m.ID]; ok {
		s.migrations[i] = m
		return
	}
	s.migIndex[m.ID] = len(s.migrations)
	s.migrations = append(s.migrations, m)
}

// DeleteMigration forgets the migration.
func (s *State) DeleteMigration(id string) {
	i, ok := s.migIndex[id]
	if !ok {
		return
	}
	s.migrations = slices.Delete(s.migrations, i, i+1)
	delete(s.migIndex, id)
	for j := i; j < len(s.migrations); j++ {
		s.migIndex[s.migrations[j].ID] = j
	}
}

// Node returns the node with the name.
func (s *State) Node(name string) (*state.Node, bool) {
	i, ok := s.nodeIndex[name]
	if !ok {
		return nil, false
	}
	return s.nodes[i], true
}

// ContainerByID returns the container with the ID.
func (s *State) ContainerByID(id string) (*state.Container, bool) {
	i, ok := s.ctrIndex[id]
	if !ok {
		return nil, false
	}
	return s.containers[i], true
}

// Nodes returns the nodes in the order they were first put.
func (s *State) Nodes() []*state.Node { return slices.Clone(s.nodes) }

// Allocated returns the effective requests of the node's containers that
// hold a reservation.
func (s *State) Allocated(node string) state.Resources { return s.allocated[node] }

// ContainerCount returns how many containers are on the node.
func (s *State) ContainerCount(node string) int { return s.count[node] }

// HasImage reports false: balance's moves do not look at images.
func (s *State) HasImage(node, image string) bool { return false }

// Containers returns the containers in the order they were first put.
func (s *State) Containers() []*state.Container { return slices.Clone(s.containers) }

// Migrations returns the migrations f selects, newest first, as the
// real state does.
func (s *State) Migrations(f state.MigrationFilter) []*state.Migration {
	var out []*state.Migration
	for _, m := range s.migrations {
		if f.Open && !m.Open() || f.Container != "" && m.Container != f.Container || f.DrainNode != "" && m.DrainNode != f.DrainNode {
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *state.Migration) int {
		return cmp.Or(cmp.Compare(b.CreatedIndex, a.CreatedIndex), strings.Compare(a.ID, b.ID))
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

// Store returns a real state.Store holding what s holds, written as one
// entry at index 1: the harness plans on its snapshot too, so that the
// real state and the fake are held to the same answers.
func (s *State) Store() (*state.Store, error) {
	st := state.NewStore()
	err := st.Write(1, time.Unix(0, 0), func(t *state.Txn) error {
		for _, n := range s.nodes {
			if err := t.PutNode(n); err != nil {
				return err
			}
		}
		for _, c := range s.containers {
			if err := t.PutContainer(c); err != nil {
				return err
			}
		}
		for _, m := range s.migrations {
			if err := t.PutMigration(m); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("fill a state store: %w", err)
	}
	return st, nil
}

// Shuffled returns s with its nodes, containers and migrations listed
// in an order drawn from seed.
func (s *State) Shuffled(seed uint64) balance.State {
	return shuffled{State: s, seed: seed}
}

type shuffled struct {
	*State
	seed uint64
}

func shuffle[T any](seed uint64, xs []T) []T {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	r.Shuffle(len(xs), func(i, j int) { xs[i], xs[j] = xs[j], xs[i] })
	return xs
}

func (v shuffled) Nodes() []*state.Node { return shuffle(v.seed, v.State.Nodes()) }

func (v shuffled) Containers() []*state.Container { return shuffle(v.seed+1, v.State.Containers()) }

func (v shuffled) Migrations(f state.MigrationFilter) []*state.Migration {
	return shuffle(v.seed+2, v.State.Migrations(f))
}

// ShuffledInput returns in with every slice in it (each container's
// samples, the history, the links, the recent moves) in an order drawn
// from seed; the samples map is a new one.
func ShuffledInput(in balance.Input, seed uint64) balance.Input {
	samples := make(map[string][]balance.Sample, len(in.Samples))
	for id, ss := range in.Samples {
		samples[id] = shuffle(seed, slices.Clone(ss))
	}
	in.Samples = samples
	in.History = shuffle(seed+3, slices.Clone(in.History))
	in.Links = shuffle(seed+4, slices.Clone(in.Links))
	in.Recent = shuffle(seed+5, slices.Clone(in.Recent))
	return in
}
