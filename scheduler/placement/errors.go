package placement

import (
	"fmt"
	"strings"
)

// maxErrorNodes is how many nodes' rejections NoNodeError.Error lists one
// by one; the rest are counted, since an error message with a thousand
// lines helps nobody (run --dry-run lists them all).
const maxErrorNodes = 10

// NoNodeError is Place's error when every node was rejected. It matches
// ErrNoNode with errors.Is.
type NoNodeError struct {
	// Pinned is the node the request was pinned to, "" when none.
	Pinned string
	// Rejected is every node with the filter that refused it, sorted by
	// node name; empty when the cluster has no nodes at all.
	Rejected []Rejection
}

// Is makes errors.Is(err, ErrNoNode) true.
func (e *NoNodeError) Is(target error) bool { return target == ErrNoNode }

// Error says why no node fits and what to do about it: for a pinned
// request, what the pinned node lacks; otherwise a count of rejections by
// filter and the first nodes' reasons and remedies, one per line.
func (e *NoNodeError) Error() string {
	var b strings.Builder
	b.WriteString(ErrNoNode.Error())
	if len(e.Rejected) == 0 {
		b.WriteString(": the cluster has no nodes; start an agent with --join to add one")
		return b.String()
	}
	if e.Pinned != "" {
		for _, r := range e.Rejected {
			if r.Node == e.Pinned {
				fmt.Fprintf(&b, ": it is pinned to node %s, which is refused by the %s filter: %s", r.Node, r.Filter, r.Reason)
				if r.Advice != "" {
					fmt.Fprintf(&b, "; %s", r.Advice)
				}
				b.WriteString("; or run it without --node")
				return b.String()
			}
		}
		fmt.Fprintf(&b, ": it is pinned to node %s, which is not in the cluster; check the name with `godwit node ls`, or run it without --node", e.Pinned)
		return b.String()
	}

	fmt.Fprintf(&b, ": %d %s refused it (%s):", len(e.Rejected), plural(len(e.Rejected), "node", "nodes"), e.countByFilter())
	for i, r := range e.Rejected {
		if i == maxErrorNodes {
			fmt.Fprintf(&b, "\n  ... and %d more (`godwit run --dry-run` lists every node)", len(e.Rejected)-i)
			break
		}
		fmt.Fprintf(&b, "\n  %s: %s: %s", r.Node, r.Filter, r.Reason)
		if r.Advice != "" {
			fmt.Fprintf(&b, "; %s", r.Advice)
		}
	}
	return b.String()
}

// countByFilter is "capacity 3, status 1": how many nodes each filter
// refused, in filter order.
func (e *NoNodeError) countByFilter() string {
	var counts []string
	for _, f := range filters {
		n := 0
		for _, r := range e.Rejected {
			if r.Filter == f.name {
				n++
			}
		}
		if n > 0 {
			counts = append(counts, fmt.Sprintf("%s %d", f.name, n))
		}
	}
	return strings.Join(counts, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
