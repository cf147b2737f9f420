package main

import (
	"cmp"
	"slices"
	"strings"

	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// lowNodeUtilization is the baseline: the Kubernetes descheduler's
// LowNodeUtilization strategy with useDeviationThresholds (thresholds
// relative to the mean utilisation) and actual use as the utilisation
// (metricsUtilization), followed by a scheduler that places each evicted
// container. Per round:
//
//   - a ready node is under-utilised when every resource is below the
//     mean less Thresholds, over-utilised when any resource is above the
//     mean plus Targets (percentage points of capacity);
//   - nothing happens without an under-utilised node;
//   - over-utilised nodes, most used first, evict their containers in
//     priority order (lowest first; pinned ones never, as the
//     descheduler never evicts what it must not), while the node is
//     still over-utilised and the under-utilised nodes still have room
//     below the mean plus Targets in every resource;
//   - each evicted container goes where a scheduler would put it:
//     the least used ready node (under-utilised ones first) that
//     placement's filters accept (status, constraints, the source's CPU
//     features, requested capacity). Real kube-schedulers score
//     requests, not use: choosing by use favours the baseline.
//
// No cost model, no cooldown: the descheduler has neither (its only
// limits, evictions per node and in all, are unset by default).
type lowNodeUtilization struct {
	// Thresholds and Targets are percentage points below and above the
	// mean utilisation, for CPU and memory.
	Thresholds, Targets percents
}

type percents struct{ CPU, Memory float64 }

// baselineDeviation is the band the benchmark gives the baseline: nodes
// within 5 points of the mean are left alone, about the spread the
// target imbalance allows at this workload's utilisation.
var defaultBaseline = lowNodeUtilization{Thresholds: percents{5, 5}, Targets: percents{5, 5}}

// bnode is a ready node as the baseline sees it.
type bnode struct {
	n        *state.Node
	cpu, mem float64 // percent of capacity used
	ctrs     []*state.Container
}

func (b lowNodeUtilization) plan(s *sim) []move {
	var nodes []*bnode
	byName := map[string]*bnode{}
	for _, n := range s.st.Nodes() {
		if n.Status() != state.NodeReady {
			continue
		}
		u := s.use[n.Name]
		bn := &bnode{n: n, cpu: pct(u.MilliCPU, n.Capacity.MilliCPU), mem: pct(u.MemoryBytes, n.Capacity.MemoryBytes)}
		nodes = append(nodes, bn)
		byName[n.Name] = bn
	}
	if len(nodes) < 2 {
		return nil
	}
	for _, c := range s.st.Containers() {
		if bn := byName[c.Node]; bn != nil {
			bn.ctrs = append(bn.ctrs, c)
		}
	}
	var meanCPU, meanMem float64
	for _, bn := range nodes {
		meanCPU += bn.cpu
		meanMem += bn.mem
	}
	meanCPU /= float64(len(nodes))
	meanMem /= float64(len(nodes))
	lowCPU, lowMem := meanCPU-b.Thresholds.CPU, meanMem-b.Thresholds.Memory
	highCPU, highMem := meanCPU+b.Targets.CPU, meanMem+b.Targets.Memory

	var over []*bnode
	var availCPU, availMem float64 // absolute: thousandths and bytes
	under := 0
	for _, bn := range nodes {
		switch {
		case bn.cpu < lowCPU && bn.mem < lowMem:
			under++
			availCPU += (highCPU - bn.cpu) / 100 * float64(bn.n.Capacity.MilliCPU)
			availMem += (highMem - bn.mem) / 100 * float64(bn.n.Capacity.MemoryBytes)
		case bn.cpu > highCPU || bn.mem > highMem:
			over = append(over, bn)
		}
	}
	if under == 0 || len(over) == 0 {
		return nil
	}
	slices.SortFunc(over, func(a, b *bnode) int {
		return cmp.Or(cmp.Compare(b.cpu+b.mem, a.cpu+a.mem), strings.Compare(a.n.Name, b.n.Name))
	})

	var res placement.Reservations
	view := &single{State: placement.Reserve(s.st, &res)}
	var moves []move
	for _, src := range over {
		cands := slices.DeleteFunc(slices.Clone(src.ctrs), func(c *state.Container) bool {
			return c.Spec.Pinned || c.Spec.Node != "" || s.moving(c.ID)
		})
		slices.SortFunc(cands, func(a, b *state.Container) int {
			return cmp.Or(cmp.Compare(s.byID[a.ID].priority, s.byID[b.ID].priority), strings.Compare(a.ID, b.ID))
		})
		for _, c := range cands {
			if !(src.cpu > highCPU || src.mem > highMem) || availCPU <= 0 || availMem <= 0 {
				break
			}
			dest := b.destination(nodes, src, c, lowCPU, lowMem, view)
			if dest == nil {
				continue
			}
			ss := s.samples[c.ID]
			last := ss[len(ss)-1]
			cpu, mem := float64(last.MilliCPU), float64(last.MemoryBytes)
			src.cpu -= 100 * cpu / float64(src.n.Capacity.MilliCPU)
			src.mem -= 100 * mem / float64(src.n.Capacity.MemoryBytes)
			dest.cpu += 100 * cpu / float64(dest.n.Capacity.MilliCPU)
			dest.mem += 100 * mem / float64(dest.n.Capacity.MemoryBytes)
			availCPU -= cpu
			availMem -= mem
			res.Add(dest.n.Name, c.Spec.Request)
			moves = append(moves, move{c.ID, src.n.Name, dest.n.Name})
		}
	}
	return moves
}

// destination is where a scheduler puts an evicted container: the least
// used node (under-utilised ones first) that placement accepts.
func (b lowNodeUtilization) destination(nodes []*bnode, src *bnode, c *state.Container, lowCPU, lowMem float64, view *single) *bnode {
	order := slices.Clone(nodes)
	underFirst := func(bn *bnode) int {
		if bn.cpu < lowCPU && bn.mem < lowMem {
			return 0
		}
		return 1
	}
	slices.SortFunc(order, func(x, y *bnode) int {
		return cmp.Or(cmp.Compare(underFirst(x), underFirst(y)), cmp.Compare(x.cpu+x.mem, y.cpu+y.mem), strings.Compare(x.n.Name, y.n.Name))
	})
	spec := c.Spec
	spec.Node = ""
	cpu := src.n.CPU
	for _, bn := range order {
		if bn == src {
			continue
		}
		view.nodes[0] = bn.n
		if _, err := placement.Place(view, placement.Request{Spec: spec, Exclude: []string{src.n.Name}, RequireCPU: &cpu}); err == nil {
			return bn
		}
	}
	return nil
}

// single is a placement.State listing one node.
type single struct {
	placement.State
	nodes [1]*state.Node
}

func (v *single) Nodes() []*state.Node { return v.nodes[:] }

func pct(used, capacity int64) float64 {
	if capacity <= 0 {
		return 0
	}
	return 100 * float64(used) / float64(capacity)
}
