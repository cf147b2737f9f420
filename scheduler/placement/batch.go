package placement

import (
	"math"
	"slices"

	"github.com/godwit/godwit/scheduler/state"
)

// A leader deciding a batch on one Table mostly places containers alike,
// replicas of one service, and between two such decisions only the nodes
// Add reserved on have changed. So from the second decision of a kind on,
// a Table keeps that kind's outcome for every node, each feasible node's
// rank key in order and each rejection in node order, and brings up to
// date only the nodes changed since: a decision then costs the nodes Add
// touched and copying the rejections, not a pass over every node. The
// Decision is exactly the one a pass over every node gives (Place's tests
// compare both on every case, and on random batches).

// kind is what a decision's outcome on every node depends on, for the
// requests whose decisions a Table keeps: those that ask only the status
// and capacity filters and do not Explain.
type kind struct {
	request state.Resources // as given: a zero says "the default" in reasons
	alg     Algorithm
	image   string
}

// outcomes are one kind's outcome on every node of a Table.
type outcomes struct {
	// seen is how many of the Table's changes are accounted for.
	seen int
	// keys are the feasible nodes' rank keys, sorted (best first).
	keys []uint64
	// keyOf is each row's rank key, or notFeasible.
	keyOf []uint64
	// rejected are the rejections in row order, and rejectedRows their
	// rows.
	rejected     []Rejection
	rejectedRows []int
}

// notFeasible marks a rejected row in outcomes.keyOf: no rank key has all
// its bits set, since no node's index is math.MaxUint32.
const notFeasible = math.MaxUint64

// outcomesFor returns the outcomes of p's kind on t, up to date, or nil
// when t does not keep them: for a request it does not keep outcomes for,
// for a Table read for one decision, and for the first decision of a kind
// (which scans every node anyway, and may be the only one).
func (t *Table) outcomesFor(p *placer) *outcomes {
	if !t.keepsOutcomes || p.req.Explain || !p.onlyStatusAndCapacity {
		return nil
	}
	k := kind{request: p.req.Spec.Request, alg: p.alg, image: p.req.Spec.Image}
	o, seen := t.outcomes[k]
	switch {
	case !seen:
		if t.outcomes == nil {
			t.outcomes = map[kind]*outcomes{}
		}
		t.outcomes[k] = nil
		return nil
	case o == nil:
		o = t.newOutcomes(p)
		t.outcomes[k] = o
	default:
		for _, i := range t.changed[o.seen:] {
			o.remove(i)
			o.add(p, t, i)
		}
	}
	o.seen = len(t.changed)
	return o
}

// newOutcomes evaluates every row of t for p.
func (t *Table) newOutcomes(p *placer) *outcomes {
	o := &outcomes{keyOf: make([]uint64, len(t.rows)), keys: make([]uint64, 0, len(t.rows))}
	for i := range t.rows {
		if key, r, ok := p.evaluate(t, i); ok {
			o.keys = append(o.keys, key)
			o.keyOf[i] = key
		} else {
			o.rejected = append(o.rejected, r)
			o.rejectedRows = append(o.rejectedRows, i)
			o.keyOf[i] = notFeasible
		}
	}
	slices.Sort(o.keys)
	return o
}

// remove takes row i out of o.
func (o *outcomes) remove(i int) {
	if key := o.keyOf[i]; key != notFeasible {
		at, _ := slices.BinarySearch(o.keys, key)
		o.keys = slices.Delete(o.keys, at, at+1)
		return
	}
	at, _ := slices.BinarySearch(o.rejectedRows, i)
	o.rejected = slices.Delete(o.rejected, at, at+1)
	o.rejectedRows = slices.Delete(o.rejectedRows, at, at+1)
}

// add evaluates row i of t for p and puts it in o.
func (o *outcomes) add(p *placer, t *Table, i int) {
	key, r, ok := p.evaluate(t, i)
	if ok {
		at, _ := slices.BinarySearch(o.keys, key)
		o.keys = slices.Insert(o.keys, at, key)
		o.keyOf[i] = key
		return
	}
	at, _ := slices.BinarySearch(o.rejectedRows, i)
	o.rejected = slices.Insert(o.rejected, at, r)
	o.rejectedRows = slices.Insert(o.rejectedRows, at, i)
	o.keyOf[i] = notFeasible
}

// rejections returns a copy of o's rejections for a Decision (nil for
// none, as a pass over every node gives).
func (o *outcomes) rejections() []Rejection {
	if len(o.rejected) == 0 {
		return nil
	}
	return slices.Clone(o.rejected)
}
