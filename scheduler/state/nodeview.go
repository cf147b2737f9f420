package state

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	memdb "github.com/hashicorp/go-memdb"
)

// latestTag is the tag a reference without one means.
const latestTag = ":latest"

// nodeView is what a Snapshot answers Allocated, ContainerCount and
// HasImage from: the usage and images tables copied into Go maps.
// Placement asks all three of every node for every decision, and through
// memdb each ask is a read transaction, an index key and a radix walk
// (HasImage up to three): on 1,000 nodes that was 95% of a decision. A
// snapshot never changes, so its view is built once, on first use, in one
// pass over each table, and every later ask is a map lookup. (The node
// list, which placement reads once per decision, is kept the same way:
// see lazyNodeView.)
type nodeView struct {
	// usage is the usage table by node, by value: a lookup reads no
	// record elsewhere in the heap.
	usage map[string]nodeUsage
	// images holds, by node, every image reference HasImage answers true
	// to: each image's name and ID, and for a name tagged :latest also
	// the name without its tag (a reference without a tag means :latest).
	// A node without images has no entry.
	images map[string]map[string]struct{}
}

// nodeUsage is a usage record without its node's name.
type nodeUsage struct {
	reserved Resources
	count    int
}

// viewHint is the size of the last view built from a store's snapshots:
// the next one sizes its maps and list from it rather than growing them
// (which, on 1,000 nodes, was a third of the build and its garbage). It
// is only a capacity: a stale hint costs a regrowth, never a wrong
// answer.
type viewHint struct {
	nodes, usage, images atomic.Int64
}

// lazyNodeView builds a snapshot's views on first use, once, whatever the
// number of goroutines reading the snapshot: the node list apart from the
// rest, since many callers list the nodes and ask nothing else.
type lazyNodeView struct {
	// hint is the store's; nil for a snapshot of no store.
	hint *viewHint

	once sync.Once
	view *nodeView

	nodesOnce sync.Once
	nodes     []*Node
}

func (l *lazyNodeView) get(r reader) *nodeView {
	l.once.Do(func() { l.view = newNodeView(r, l.hint) })
	return l.view
}

func (l *lazyNodeView) nodeList(r reader) []*Node {
	l.nodesOnce.Do(func() {
		var nodes []*Node
		if l.hint != nil {
			nodes = make([]*Node, 0, l.hint.nodes.Load())
		}
		each(r.txn(), TableNodes, func(n *Node) { nodes = append(nodes, n) })
		if l.hint != nil {
			l.hint.nodes.Store(int64(len(nodes)))
		}
		l.nodes = nodes
	})
	return l.nodes
}

// newNodeView reads the usage and images tables of r in one pass each.
func newNodeView(r reader, hint *viewHint) *nodeView {
	var usage, images int64
	if hint != nil {
		usage, images = hint.usage.Load(), hint.images.Load()
	}
	v := &nodeView{usage: make(map[string]nodeUsage, usage), images: make(map[string]map[string]struct{}, images)}
	tx := r.txn()
	each(tx, tableUsage, func(u *usageRecord) { v.usage[u.Node] = nodeUsage{u.Reserved, u.Count} })
	each(tx, TableImages, func(img *Image) {
		m := v.images[img.Node]
		if m == nil {
			m = map[string]struct{}{}
			v.images[img.Node] = m
		}
		m[img.Name] = struct{}{}
		if img.ID != "" {
			m[img.ID] = struct{}{}
		}
		// The reference that HasImage completes with :latest to this
		// name, if there is one: withDefaultTag(bare) == img.Name.
		if bare, ok := strings.CutSuffix(img.Name, latestTag); ok && withDefaultTag(bare) == img.Name {
			m[bare] = struct{}{}
		}
	})
	if hint != nil {
		hint.usage.Store(int64(len(v.usage)))
		hint.images.Store(int64(len(v.images)))
	}
	return v
}

// each calls fn with every record of table, in primary index order.
func each[T any](tx *memdb.Txn, table string, fn func(T)) {
	it, err := tx.Get(table, indexID)
	if err != nil {
		panic(fmt.Sprintf("state: scan %s: %v", table, err))
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		fn(obj.(T))
	}
}

// Nodes returns every registered node, sorted by name, in a slice of the
// caller's own (the nodes are shared: do not modify them). The snapshot
// reads the table once; later calls copy the list.
func (s *Snapshot) Nodes() []*Node {
	return slices.Clone(s.view.nodeList(s.reader))
}

// Allocated returns the sum of the requests of the containers placed on
// the node that hold a reservation (zero for an unknown node): see
// reader.Allocated, which a Txn reads through. The first call of
// Allocated, ContainerCount or HasImage on a snapshot reads every node's
// usage and images at once; later calls cost a map lookup.
func (s *Snapshot) Allocated(node string) Resources {
	return s.view.get(s.reader).usage[node].reserved
}

// ContainerCount returns how many containers are placed on the node, in
// any state (zero for an unknown node), as reader.ContainerCount does.
func (s *Snapshot) ContainerCount(node string) int {
	return s.view.get(s.reader).usage[node].count
}

// HasImage reports whether the node holds the image, named as the agent
// names images: by reference (a reference without a tag means :latest)
// or by ID (digest). It answers as reader.HasImage does.
func (s *Snapshot) HasImage(node, image string) bool {
	if node == "" || image == "" {
		return false
	}
	_, ok := s.view.get(s.reader).images[node][image]
	return ok
}
