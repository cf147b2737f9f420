package main

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/godwit/godwit/scheduler/state"
)

// The synthetic cluster. Every number here is a choice of the benchmark,
// documented in docs/benchmarks.md; both policies run the same workload
// (the same seed), so only their decisions differ.
const (
	// Node sizes: most nodes 16 CPUs and 64 GiB, one in largeEvery twice
	// that, holding twice the containers.
	nodeMilliCPU = 16000
	nodeMemory   = 64 << 30
	largeEvery   = 5
	// One node in oldCPUEvery has an older CPU without the avx512 flags:
	// containers that started on a newer one cannot move there.
	oldCPUEvery = 5
	// NICs: newer nodes 1 GiB/s, older ones 110 MiB/s; a pair moves at
	// the slower of the two.
	fastNIC = 1 << 30
	slowNIC = 110 << 20
	// Containers per node: the mean is the --containers flag; each node
	// gets between skewLow and skewHigh times it (skewed placement).
	skewLow, skewHigh = 0.6, 1.4
	// A container's base CPU and memory are log-normal: medians and
	// log-space deviations. CPU is clipped to [minCPU, maxCPU], memory to
	// [minMemory, maxMemory].
	cpuMedian, cpuSigma  = 120, 0.9
	minCPU, maxCPU       = 5, 4000
	memMedian, memSigma  = 384 << 20, 0.8
	minMemory, maxMemory = 32 << 20, 4 << 30
	// Requests: what a container asks for over its base use.
	cpuRequestFactor, memRequestFactor = 1.5, 1.25
	// pinnedEvery: one container in this many is pinned (run --pin);
	// constrainedEvery: one in this many needs its first node's zone.
	pinnedEvery      = 33
	constrainedEvery = 10
	// Hot spots: hotShare of the groups (a group is the containers first
	// placed on one node) use hotFactor times their base CPU during a
	// phase; another draw of groups is hot the next phase.
	hotShare  = 0.10
	hotFactor = 3.0
	// Noise: each sample's CPU is the demand times a log-normal factor of
	// this deviation; memory varies by memNoise.
	cpuNoise = 0.10
	memNoise = 0.02
	// A move sends the memory plus moveOverhead (image layers and the
	// root filesystem's changes); it freezes the container for
	// moveFreeze plus moveFreezePerGiB per GiB, and the whole move takes
	// moveSetup plus the bytes at the pair's bandwidth plus the freeze.
	moveOverhead     = 32 << 20
	moveFreeze       = 0.25
	moveFreezePerGiB = 1.5
	moveSetup        = 1.0
	// Events: at the start of phase addPhase, addShare of the nodes (at
	// least one) join empty; at the start of drainPhase, drainShare of
	// the nodes (at least one) are drained.
	addPhase, drainPhase = 2, 3
	addShare, drainShare = 0.02, 0.02
)

// simNode is one node of the workload.
type simNode struct {
	node state.Node
	// nic is the node's network bandwidth, bytes per second.
	nic float64
	// joins is the phase the node joins in (0: from the start); drains
	// the phase it is drained in (-1: never).
	joins, drains int
}

// simContainer is one container of the workload.
type simContainer struct {
	id    string
	group int
	// cpu is the base CPU demand (thousandths); memory the base memory.
	cpu    float64
	memory int64
	spec   state.ContainerSpec
	// first is the node the container starts on.
	first string
	// priority orders the baseline's evictions (lowest first), as pod
	// priorities do; drawn once, so that the order is arbitrary but
	// fixed.
	priority int
}

// workload is a cluster and what happens to it.
type workload struct {
	nodes      []simNode
	containers []simContainer
	// hot[phase] are the hot groups of each phase.
	hot []map[int]bool
}

func newWorkload(nodes, perNode, phases int, seed uint64) *workload {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	w := &workload{}
	added := max(1, int(math.Round(float64(nodes)*addShare)))
	drained := max(1, int(math.Round(float64(nodes)*drainShare)))
	for i := range nodes + added {
		n := simNode{joins: 0, drains: -1, nic: fastNIC}
		if i >= nodes {
			n.joins = addPhase
		}
		size := int64(1)
		if i%largeEvery == largeEvery-1 {
			size = 2
		}
		flags := []string{"avx2", "avx512f", "sse4_2"}
		if i%oldCPUEvery == 1 {
			flags, n.nic = []string{"avx2", "sse4_2"}, slowNIC
		}
		n.node = state.Node{
			Name:           fmt.Sprintf("node-%04d", i),
			Address:        fmt.Sprintf("10.0.%d.%d:7000", i/250, i%250+1),
			Capacity:       state.Resources{MilliCPU: size * nodeMilliCPU, MemoryBytes: size * nodeMemory},
			Labels:         map[string]string{"zone": string(rune('a' + i%2))},
			CPU:            state.CPU{Vendor: "AuthenticAMD", Flags: flags},
			Schedulability: state.Schedulable,
			Health:         state.HealthAlive,
			Strategies:     []string{"stop-copy", "stream"},
		}
		w.nodes = append(w.nodes, n)
	}
	// Drain nodes spread over the initial ones, never an added one.
	for k := range drained {
		w.nodes[(k*nodes/drained+nodes/(2*drained))%nodes].drains = drainPhase
	}

	for i := range nodes {
		n := w.nodes[i]
		count := int(math.Round(float64(perNode) * (skewLow + (skewHigh-skewLow)*r.Float64()) * float64(n.node.Capacity.MilliCPU/nodeMilliCPU)))
		for range count {
			c := simContainer{
				id:       fmt.Sprintf("c-%06d", len(w.containers)),
				group:    i,
				cpu:      clamp(cpuMedian*math.Exp(cpuSigma*r.NormFloat64()), minCPU, maxCPU),
				memory:   int64(clamp(memMedian*math.Exp(memSigma*r.NormFloat64()), minMemory, maxMemory)),
				first:    n.node.Name,
				priority: r.IntN(1 << 20),
			}
			c.spec = state.ContainerSpec{
				Image: "app:latest",
				Request: state.Resources{
					MilliCPU:    int64(math.Ceil(c.cpu * cpuRequestFactor)),
					MemoryBytes: int64(float64(c.memory) * memRequestFactor),
				},
				Pinned: len(w.containers)%pinnedEvery == pinnedEvery-1,
			}
			if len(w.containers)%constrainedEvery == constrainedEvery-1 {
				c.spec.Constraints = []state.Constraint{{Key: "zone", Value: n.node.Labels["zone"]}}
			}
			w.containers = append(w.containers, c)
		}
	}
	groups := make([]int, nodes)
	for i := range groups {
		groups[i] = i
	}
	hot := max(1, int(math.Round(float64(nodes)*hotShare)))
	for range phases {
		r.Shuffle(len(groups), func(i, j int) { groups[i], groups[j] = groups[j], groups[i] })
		set := map[int]bool{}
		for _, g := range groups[:hot] {
			set[g] = true
		}
		w.hot = append(w.hot, set)
	}
	return w
}

// demand is a container's CPU demand in a phase.
func (w *workload) demand(c *simContainer, phase int) float64 {
	if w.hot[min(phase, len(w.hot)-1)][c.group] {
		return c.cpu * hotFactor
	}
	return c.cpu
}

// moveCost is what moving memory bytes between two nodes really costs
// in the simulation: bytes sent, freeze and whole duration, seconds.
func moveCost(memory int64, from, to *simNode) (bytes int64, downtime, total float64) {
	bytes = memory + moveOverhead
	gib := float64(bytes) / (1 << 30)
	downtime = moveFreeze + moveFreezePerGiB*gib
	total = moveSetup + float64(bytes)/min(from.nic, to.nic) + downtime
	return bytes, downtime, total
}

func clamp(x, lo, hi float64) float64 { return math.Min(hi, math.Max(lo, x)) }
