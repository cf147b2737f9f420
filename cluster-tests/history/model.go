package history

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// The sequential model the checker replays a history against: for each
// container, where the cluster has it (node and generation), or nothing
// before it is placed.

// kind tells the entries of a history apart.
type kind int

const (
	kindPlaced kind = iota
	kindClusterSaid
	kindHostSaw
	kindMove
)

// placement is the model's state for one container.
type placement struct {
	placed     bool
	node       string
	generation uint64
}

func (p placement) String() string {
	if !p.placed {
		return "not placed"
	}
	return fmt.Sprintf("on %s at generation %d", p.node, p.generation)
}

// input is what an entry asked or did.
type input struct {
	kind      kind
	container string
	// node: placed and hostSaw (the host's node).
	node string
	// generation: placed; move (the generation it started at).
	generation uint64
	// move: its ID, source and destination.
	id, from, to string
}

// output is what an entry saw or how it ended.
type output struct {
	// node and generation: clusterSaid.
	node       string
	generation uint64
	// running: hostSaw.
	running bool
	// outcome: move.
	outcome Outcome
}

// step returns the states the model may be in after an entry with in
// and out in state s; none when the entry cannot have happened in s.
func step(s placement, in input, out output) []placement {
	switch in.kind {
	case kindPlaced:
		if s.placed {
			return nil
		}
		return []placement{{placed: true, node: in.node, generation: in.generation}}
	case kindClusterSaid:
		if s.placed && s.node == out.node && s.generation == out.generation {
			return []placement{s}
		}
		return nil
	case kindHostSaw:
		// A copy runs only on the node the cluster places the container
		// on; a host that runs none says nothing of the placement (a
		// move holds the container stopped).
		if !out.running || (s.placed && s.node == in.node) {
			return []placement{s}
		}
		return nil
	case kindMove:
		// A move can only start from the container's placement at its
		// generation; committed, it ends on the destination at the next
		// generation; rolled back, where it was.
		if !s.placed || s.node != in.from || s.generation != in.generation {
			return nil
		}
		moved := placement{placed: true, node: in.to, generation: in.generation + 1}
		switch out.outcome {
		case Committed:
			return []placement{moved}
		case RolledBack:
			return []placement{s}
		default: // open: either may yet be true
			return []placement{s, moved}
		}
	}
	return nil
}

// model is the porcupine model of one history, partitioned by container.
func model() porcupine.Model {
	return (&porcupine.NondeterministicModel{
		Partition: func(ops []porcupine.Operation) [][]porcupine.Operation {
			byContainer := map[string][]porcupine.Operation{}
			var order []string
			for _, op := range ops {
				c := op.Input.(input).container
				if _, ok := byContainer[c]; !ok {
					order = append(order, c)
				}
				byContainer[c] = append(byContainer[c], op)
			}
			parts := make([][]porcupine.Operation, 0, len(order))
			for _, c := range order {
				parts = append(parts, byContainer[c])
			}
			return parts
		},
		Init: func() []any { return []any{placement{}} },
		Step: func(state, in, out any) []any {
			next := step(state.(placement), in.(input), out.(output))
			states := make([]any, len(next))
			for i, s := range next {
				states[i] = s
			}
			return states
		},
		DescribeOperation: func(in, out any) string { return describe(in.(input), out.(output)) },
		DescribeState:     func(state any) string { return state.(placement).String() },
	}).ToModel()
}

// describe says what an entry was, for a violation's report.
func describe(in input, out output) string {
	switch in.kind {
	case kindPlaced:
		return fmt.Sprintf("%s placed on %s at generation %d", in.container, in.node, in.generation)
	case kindClusterSaid:
		return fmt.Sprintf("the cluster said %s is on %s at generation %d", in.container, out.node, out.generation)
	case kindHostSaw:
		if out.running {
			return fmt.Sprintf("runc on %s showed %s running", in.node, in.container)
		}
		return fmt.Sprintf("runc on %s showed %s not running", in.node, in.container)
	case kindMove:
		return fmt.Sprintf("migration %s of %s from %s to %s at generation %d: %s", in.id, in.container, in.from, in.to, in.generation, out.outcome)
	}
	return fmt.Sprintf("%+v -> %+v", in, out)
}
