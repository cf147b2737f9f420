package placement

import (
	"slices"
	"strings"
	"sync"

	"github.com/godwit/godwit/scheduler/state"
)

// Table is a State read once into a slice, for a caller that decides many
// placements on the same state: the scheduler leader deciding a batch of
// runs on one snapshot. Place walks a Table's rows directly; any other
// State it first reads into a Table of its own, which costs a lookup per
// node and per question (on 1,000 nodes that reading, and sorting the node
// list, was most of a decision). A Table also keeps, per node, the words
// of its last capacity rejection and whether it holds each image asked
// about, which the next decision of a batch asks again.
//
// A Table is a copy: later changes to the State it was read from are not
// in it. Add reserves a decision's room on the Table itself, so that the
// next decision counts it. A Table is not safe for concurrent use.
type Table struct {
	rows []row
	// byName indexes rows by node name; built on first use, since Place
	// needs none.
	byName map[string]int
	// src answers HasImage for images not asked about yet.
	src State
	// images holds, per image reference asked about, whether each row's
	// node holds it.
	images map[string][]bool

	// keepsOutcomes is set on a Table of NewTable's, which decides a
	// batch; outcomes are what it keeps of each kind of decision, and
	// changed the rows Add changed, in order (batch.go).
	keepsOutcomes bool
	outcomes      map[kind]*outcomes
	changed       []int
}

// row is what placement reads of one node.
type row struct {
	node   *state.Node
	status state.NodeStatus
	// allocated is what the node's containers, and the reservations of
	// the State it was read from and of Add, hold of its capacity.
	allocated state.Resources
	count     int
	// capacityMemo is the node's last capacity rejection, reused while the
	// request and the allocation it was written for are the same.
	capacityMemo capacityMemo
	// adviceFilter and advice are the advice for the node's last
	// rejection, which depends on nothing but the filter and the node.
	adviceFilter, advice string
}

// capacityMemo is a capacity filter's reason and what it was written for.
type capacityMemo struct {
	request   state.Resources // the request as given (zeros say "the default")
	allocated state.Resources
	reason    string
}

// NewTable reads every node of s, sorted by name, with its allocation and
// container count.
func NewTable(s State) *Table {
	t := &Table{keepsOutcomes: true}
	t.read(s, true)
	return t
}

// read makes t a copy of s, reusing t's rows; the container counts only
// when counts is set (only spread reads them).
func (t *Table) read(s State, counts bool) {
	nodes := byName(s.Nodes())
	t.rows = slices.Grow(t.rows[:0], len(nodes))[:len(nodes)]
	for i, n := range nodes {
		t.rows[i] = row{node: n, status: n.Status(), allocated: s.Allocated(n.Name)}
		if counts {
			t.rows[i].count = s.ContainerCount(n.Name)
		}
	}
	t.src, t.byName = s, nil
	clear(t.images)
	t.outcomes, t.changed = nil, t.changed[:0]
}

// scratchTables are the Tables Place reads a State that is not one into,
// kept between calls: a Table of 1,000 nodes is some 100 KiB.
var scratchTables = sync.Pool{New: func() any { return &Table{} }}

// tableOf returns s as a Table, reading it into a scratch Table unless it
// is one (with the container counts when counts is set), and the function
// to call once the Table is no longer used.
func tableOf(s State, counts bool) (*Table, func()) {
	if t, ok := s.(*Table); ok {
		return t, func() {}
	}
	t := scratchTables.Get().(*Table)
	t.read(s, counts)
	return t, func() {
		t.src = nil
		clear(t.rows) // drop the nodes for the collector
		scratchTables.Put(t)
	}
}

// index returns the row of node.
func (t *Table) index(node string) (int, bool) {
	if t.byName == nil {
		t.byName = make(map[string]int, len(t.rows))
		for i := range t.rows {
			t.byName[t.rows[i].node.Name] = i
		}
	}
	i, ok := t.byName[node]
	return i, ok
}

// Add reserves a container's request on node, as Reservations.Add does:
// its effective request and one container. A node the Table does not
// hold is ignored.
func (t *Table) Add(node string, request state.Resources) {
	i, ok := t.index(node)
	if !ok {
		return
	}
	r := &t.rows[i]
	r.allocated = r.allocated.Add(EffectiveRequest(request))
	r.count++
	t.changed = append(t.changed, i)
}

// Nodes returns the Table's nodes, sorted by name, in a slice of the
// caller's own.
func (t *Table) Nodes() []*state.Node {
	nodes := make([]*state.Node, len(t.rows))
	for i := range t.rows {
		nodes[i] = t.rows[i].node
	}
	return nodes
}

// Allocated returns what is allocated on node, Add's reservations
// included (zero for an unknown node).
func (t *Table) Allocated(node string) state.Resources {
	if i, ok := t.index(node); ok {
		return t.rows[i].allocated
	}
	return state.Resources{}
}

// ContainerCount returns how many containers are on node, Add's included
// (zero for an unknown node).
func (t *Table) ContainerCount(node string) int {
	if i, ok := t.index(node); ok {
		return t.rows[i].count
	}
	return 0
}

// HasImage reports whether node holds image, as the State the Table was
// read from answers.
func (t *Table) HasImage(node, image string) bool {
	i, ok := t.index(node)
	return ok && image != "" && t.holders(image)[i]
}

// holders returns whether each row's node holds image (nil for no image),
// asking the source State of every node the first time an image is asked
// about.
func (t *Table) holders(image string) []bool {
	if image == "" {
		return nil
	}
	held, ok := t.images[image]
	if !ok {
		held = make([]bool, len(t.rows))
		for i := range t.rows {
			held[i] = t.src.HasImage(t.rows[i].node.Name, image)
		}
		if t.images == nil {
			t.images = map[string][]bool{}
		}
		t.images[image] = held
	}
	return held
}

// byName returns nodes sorted by name: a State that lists them so (a
// table indexed by name does) costs one pass to check; any other order is
// sorted in a copy. In name order, the rejections come out sorted and a
// node's index breaks score ties by name.
func byName(nodes []*state.Node) []*state.Node {
	cmpName := func(a, b *state.Node) int { return strings.Compare(a.Name, b.Name) }
	if slices.IsSortedFunc(nodes, cmpName) {
		return nodes
	}
	sorted := slices.Clone(nodes)
	slices.SortFunc(sorted, cmpName)
	return sorted
}

// adviceFor returns advice(filter, r.node), written once for each run of
// rejections by the same filter.
func (r *row) adviceFor(filter string) string {
	if r.adviceFilter != filter {
		r.adviceFilter, r.advice = filter, advice(filter, r.node)
	}
	return r.advice
}
