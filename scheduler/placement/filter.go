package placement

import (
	"fmt"
	"slices"
	"strings"

	"github.com/godwit/godwit/scheduler/state"
)

// Filter names, as in Rejection.Filter, in the order they run.
const (
	FilterStatus     = "status"
	FilterPinned     = "pinned"
	FilterExcluded   = "excluded"
	FilterConstraint = "constraint"
	FilterCPU        = "cpu"
	FilterCapacity   = "capacity"
)

// DefaultMilliCPU and DefaultMemoryBytes are what a container that
// requests no CPU or no memory counts as (state.Resources.Effective).
const (
	DefaultMilliCPU    = state.DefaultMilliCPU
	DefaultMemoryBytes = state.DefaultMemoryBytes
	// maxListedFlags is how many missing CPU features a rejection names.
	maxListedFlags = 5
)

// EffectiveRequest is r with DefaultMilliCPU and DefaultMemoryBytes in
// place of zeros: what placement reserves in its arithmetic, and what the
// state counts as allocated for the container, so that both agree.
func EffectiveRequest(r state.Resources) state.Resources { return r.Effective() }

// filters run in this order; the first to return a reason rejects the
// node. Each returns "" to let the node through.
var filters = [...]struct {
	name  string
	check func(p *placer) string
}{
	{FilterStatus, filterStatus},
	{FilterPinned, filterPinned},
	{FilterExcluded, filterExcluded},
	{FilterConstraint, filterConstraint},
	{FilterCPU, filterCPU},
	{FilterCapacity, filterCapacity},
}

// filter returns the name of the first filter that refuses the current
// node and its reason, or "" when the node passes them all.
func (p *placer) filter() (name, reason string) {
	// Most nodes of most requests pass, which is told without a call.
	if p.onlyStatusAndCapacity && p.cur.status == state.NodeReady && p.need.Fits(p.free) {
		return "", ""
	}
	for _, f := range filters {
		if r := f.check(p); r != "" {
			return f.name, r
		}
	}
	return "", ""
}

// filterStatus admits only ready nodes: the operator's cordon and drain,
// and a node whose lease lapsed, all mean nothing new goes there.
func filterStatus(p *placer) string {
	switch st := p.cur.status; st {
	case state.NodeReady:
		return ""
	case state.NodeSuspect:
		return "node is suspect: its agent missed its heartbeats"
	case state.NodeDown:
		return "node is down: its agent has been unreachable past the down threshold"
	case state.NodeCordoned:
		return "node is cordoned"
	case state.NodeDraining:
		return "node is draining"
	default:
		return "node is " + string(st)
	}
}

// filterPinned admits only the node the container is pinned to, if any.
func filterPinned(p *placer) string {
	if pin := p.req.Spec.Node; pin != "" && p.cur.node.Name != pin {
		return p.pinnedReason
	}
	return ""
}

// filterExcluded refuses the nodes the caller excluded.
func filterExcluded(p *placer) string {
	if slices.Contains(p.req.Exclude, p.cur.node.Name) {
		return "excluded from this placement (a move never lands where it starts)"
	}
	return ""
}

// filterConstraint admits a node that has every constrained label with
// the constrained value, and names every one it lacks otherwise.
func filterConstraint(p *placer) string {
	var missing []string
	for _, c := range p.req.Spec.Constraints {
		v, ok := p.cur.node.Labels[c.Key]
		// Concatenation, not fmt: with a constraint, a large share of a
		// cluster's nodes may be refused here on every placement.
		switch {
		case !ok:
			missing = append(missing, "needs label "+c.Key+"="+c.Value+", node has no "+c.Key+" label")
		case v != c.Value:
			missing = append(missing, "needs label "+c.Key+"="+c.Value+", node has "+c.Key+"="+v)
		}
	}
	return strings.Join(missing, " and ")
}

// filterCPU admits a node whose CPU has every required feature flag.
func filterCPU(p *placer) string {
	if p.req.RequireCPU == nil {
		return ""
	}
	missing := missingFlags(p.cpuFlags, p.cur.node.CPU.Flags)
	if len(missing) == 0 {
		return ""
	}
	listed := missing[:min(len(missing), maxListedFlags)]
	more := ""
	if n := len(missing) - len(listed); n > 0 {
		more = fmt.Sprintf(" and %d more", n)
	}
	noun := "features"
	if len(missing) == 1 {
		noun = "feature"
	}
	return fmt.Sprintf("CPU lacks %d required %s: %s%s", len(missing), noun, strings.Join(listed, ", "), more)
}

// missingFlags returns the flags of need (sorted, unique) that have
// lacks. state.CPU.Flags are sorted by contract, which allows a merge walk
// without allocating. On an unsorted list the walk can miss a flag that is
// there, never find one that is not, so a list it finds wanting is checked
// again by searching it for each flag.
func missingFlags(need, have []string) []string {
	var missing []string
	i := 0
	for _, f := range need {
		for i < len(have) && have[i] < f {
			i++
		}
		if i == len(have) || have[i] != f {
			missing = append(missing, f)
		}
	}
	if len(missing) == 0 || slices.IsSorted(have) {
		return missing
	}
	missing = missing[:0]
	for _, f := range need {
		if !slices.Contains(have, f) {
			missing = append(missing, f)
		}
	}
	return missing
}

// filterCapacity admits a node whose free capacity holds the effective
// request. On a cluster filling up, most nodes may be refused here on
// every decision, so the reason's words are kept in the node's row and
// written again only when the request or the node's allocation changed.
func filterCapacity(p *placer) string {
	if p.need.Fits(p.free) {
		return ""
	}
	r, given := p.cur, p.req.Spec.Request
	if m := &r.capacityMemo; m.reason != "" && m.request == given && m.allocated == r.allocated {
		return m.reason
	}
	capacity := r.node.Capacity
	var short []string
	if p.need.MemoryBytes > p.free.MemoryBytes {
		short = append(short, shortfall(formatBytes(p.need.MemoryBytes)+" memory", given.MemoryBytes == 0,
			p.free.MemoryBytes, capacity.MemoryBytes, formatBytes))
	}
	if p.need.MilliCPU > p.free.MilliCPU {
		short = append(short, shortfall(formatCPU(p.need.MilliCPU), given.MilliCPU == 0,
			p.free.MilliCPU, capacity.MilliCPU, formatCPU))
	}
	reason := strings.Join(short, " and ")
	r.capacityMemo = capacityMemo{request: given, allocated: r.allocated, reason: reason}
	return reason
}

// shortfall says what one dimension of a request lacks on a node:
// "needs 512 MiB memory, has 128 MiB free of 2 GiB".
func shortfall(need string, defaulted bool, free, capacity int64, format func(int64) string) string {
	if defaulted {
		need += " (the default for a container that requests none)"
	}
	if free <= 0 {
		return fmt.Sprintf("needs %s, has none free (%s reserved of %s)", need, format(capacity-free), format(capacity))
	}
	return fmt.Sprintf("needs %s, has %s free of %s", need, format(free), format(capacity))
}

// advice is what an operator can do about node n refused by filter.
func advice(filter string, n *state.Node) string {
	switch filter {
	case FilterStatus:
		switch n.Status() {
		case state.NodeCordoned:
			return "uncordon it: godwit node uncordon " + n.Name
		case state.NodeDraining:
			return "it is being drained; uncordon it once the drain ends: godwit node uncordon " + n.Name
		case state.NodeSuspect:
			return "check its agent; the node takes containers again once its heartbeats resume"
		case state.NodeDown:
			return "restart its agent, which registers the node again"
		}
	case FilterPinned:
		return "run it without --node to let any node take it"
	case FilterConstraint:
		return "relax --constraint, or label a node to match"
	case FilterCPU:
		return "choose a node with the same CPU features as the one it was checkpointed on"
	case FilterCapacity:
		return "free capacity on it (stop or move containers), lower the container's request, or add a node"
	}
	return ""
}
