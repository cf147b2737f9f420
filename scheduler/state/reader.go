package state

import (
	"fmt"
	"slices"
	"strings"

	memdb "github.com/hashicorp/go-memdb"
)

// maxAmbiguousListed is how many matching IDs an ErrAmbiguous message
// names.
const maxAmbiguousListed = 5

// reader holds the read methods shared by Snapshot and Txn. A snapshot
// opens a read transaction per call on its frozen database (a memdb Txn
// is not safe for concurrent use; the database snapshot is); a write
// transaction reads through itself, so it sees its own changes.
type reader struct {
	db *memdb.MemDB
	tx *memdb.Txn
	// p is a write transaction's buffer of writes not yet in tx
	// (pending.go); nil for a snapshot.
	p *pending
}

func (r reader) txn() *memdb.Txn {
	if r.tx != nil {
		return r.tx
	}
	return r.db.Txn(false)
}

// first returns the one object of table the index maps args to, or nil.
func (r reader) first(table, index string, args ...any) any {
	if r.p != nil {
		if obj, ok := r.p.lookup(r.tx, table, index, args); ok {
			return obj
		}
	}
	obj, err := r.txn().First(table, index, args...)
	if err != nil {
		// The tables and indexes are constants of this package: an error
		// here is a programming mistake, not a condition to handle.
		panic(fmt.Sprintf("state: lookup %s.%s: %v", table, index, err))
	}
	if r.p != nil {
		r.p.found(table, index, args, obj)
	}
	return obj
}

// all returns every object of table the index maps args to, in index
// order.
func all[T any](r reader, table, index string, args ...any) []T {
	if r.p != nil {
		r.p.scanning(r.tx, table)
	}
	it, err := r.txn().Get(table, index, args...)
	if err != nil {
		panic(fmt.Sprintf("state: scan %s.%s: %v", table, index, err))
	}
	var out []T
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(T))
	}
	return out
}

// Index returns the raft index of the last write that changed the state
// (0 for an empty store).
func (r reader) Index() uint64 {
	var index uint64
	for _, table := range replicatedTables {
		index = max(index, r.TableIndex(table))
	}
	return index
}

// TableIndex returns the raft index of the last write that changed table
// (one of the Table constants), 0 if none did.
func (r reader) TableIndex(table string) uint64 {
	if rec, ok := r.first(tableIndexes, indexID, table).(*indexRecord); ok {
		return rec.Index
	}
	return 0
}

// Config returns the cluster's settings (the zero Config before the
// cluster is initialised).
func (r reader) Config() Config {
	if rec, ok := r.first(TableConfig, indexID, configKey).(*configRecord); ok {
		return rec.Config
	}
	return Config{}
}

// Nodes returns every registered node, sorted by name.
func (r reader) Nodes() []*Node {
	return all[*Node](r, TableNodes, indexID)
}

// Node returns the node with the name.
func (r reader) Node(name string) (*Node, bool) {
	n, ok := r.first(TableNodes, indexID, name).(*Node)
	return n, ok
}

// Containers returns every container, sorted by name.
func (r reader) Containers() []*Container {
	return all[*Container](r, TableContainers, indexName)
}

// ContainerByID returns the container with exactly this ID.
func (r reader) ContainerByID(id string) (*Container, bool) {
	c, ok := r.first(TableContainers, indexID, id).(*Container)
	return c, ok
}

// ContainerByName returns the container with exactly this name.
func (r reader) ContainerByName(name string) (*Container, bool) {
	c, ok := r.first(TableContainers, indexName, name).(*Container)
	return c, ok
}

// Container finds the container an operator named: by exact ID, else by
// exact name, else by a prefix of its ID that no other container's ID
// shares. The error wraps ErrNotFound or ErrAmbiguous.
func (r reader) Container(ref string) (*Container, error) {
	if ref == "" {
		return nil, fmt.Errorf("container name or ID is empty: %w", ErrNotFound)
	}
	if c, ok := r.ContainerByID(ref); ok {
		return c, nil
	}
	if c, ok := r.ContainerByName(ref); ok {
		return c, nil
	}
	matches := all[*Container](r, TableContainers, indexID+"_prefix", ref)
	switch len(matches) {
	case 0:
		return nil, fmt.Errorf("container %q %w: no container has that name or ID (list them with 'godwit ps')", ref, ErrNotFound)
	case 1:
		return matches[0], nil
	}
	ids := make([]string, 0, maxAmbiguousListed)
	for _, c := range matches[:min(len(matches), maxAmbiguousListed)] {
		ids = append(ids, c.ID)
	}
	more := ""
	if len(matches) > maxAmbiguousListed {
		more = ", ..."
	}
	return nil, fmt.Errorf("container ID prefix %q %w: it matches %d containers (%s%s); give more of the ID or the name",
		ref, ErrAmbiguous, len(matches), strings.Join(ids, ", "), more)
}

// ContainersOn returns the containers placed on the node, in any state,
// sorted by name.
func (r reader) ContainersOn(node string) []*Container {
	cs := all[*Container](r, TableContainers, indexNode, node)
	slices.SortFunc(cs, func(a, b *Container) int { return strings.Compare(a.Name, b.Name) })
	return cs
}

// Allocated returns the sum of the requests of the containers placed on
// the node that hold a reservation (zero for an unknown node). A
// container holds its reservation while it is desired running and not
// lost: a stopped container gives its share back (starting it again
// goes through placement's capacity check), and a lost one is no longer
// on the node as far as anyone knows. A container that exited on its own
// but is still desired running keeps its reservation, since it will be
// restarted where it is.
func (r reader) Allocated(node string) Resources {
	if u, ok := r.first(tableUsage, indexID, node).(*usageRecord); ok {
		return u.Reserved
	}
	return Resources{}
}

// ContainerCount returns how many containers are placed on the node, in
// any state (zero for an unknown node): the number godwit node ls shows.
func (r reader) ContainerCount(node string) int {
	if u, ok := r.first(tableUsage, indexID, node).(*usageRecord); ok {
		return u.Count
	}
	return 0
}

// Images returns the images held by the node, sorted by name, or, for
// node "", every image of every node sorted by node then name.
func (r reader) Images(node string) []*Image {
	if node == "" {
		return all[*Image](r, TableImages, indexID)
	}
	return all[*Image](r, TableImages, indexNode, node)
}

// HasImage reports whether the node holds the image, named as the agent
// names images: by reference (a reference without a tag means :latest)
// or by ID (digest).
func (r reader) HasImage(node, image string) bool {
	if node == "" || image == "" {
		return false
	}
	if r.first(TableImages, indexID, node, image) != nil {
		return true
	}
	if tagged := withDefaultTag(image); tagged != "" && r.first(TableImages, indexID, node, tagged) != nil {
		return true
	}
	return r.first(TableImages, indexNodeID, node, image) != nil
}

// ImageHolders returns the images, one per node that holds it, that
// answer to image (a reference, with :latest implied, or an ID), sorted
// by node: where an image or its layers can be fetched from.
func (r reader) ImageHolders(image string) []*Image {
	if image == "" {
		return nil
	}
	byNode := map[string]*Image{}
	names := []string{image}
	if tagged := withDefaultTag(image); tagged != "" {
		names = append(names, tagged)
	}
	for _, name := range names {
		for _, img := range all[*Image](r, TableImages, indexName, name) {
			byNode[img.Node] = img
		}
	}
	for _, img := range all[*Image](r, TableImages, indexImageID, image) {
		byNode[img.Node] = img
	}
	out := make([]*Image, 0, len(byNode))
	for _, img := range byNode {
		out = append(out, img)
	}
	slices.SortFunc(out, func(a, b *Image) int { return strings.Compare(a.Node, b.Node) })
	return out
}

// Audit returns the last limit audit records (all of them when limit is
// 0 or less), oldest first.
func (r reader) Audit(limit int) []*AuditRecord {
	it, err := r.txn().GetReverse(TableAudit, indexID)
	if err != nil {
		panic(fmt.Sprintf("state: scan audit: %v", err))
	}
	var out []*AuditRecord
	for obj := it.Next(); obj != nil && (limit <= 0 || len(out) < limit); obj = it.Next() {
		out = append(out, obj.(*AuditRecord))
	}
	slices.Reverse(out)
	return out
}

// withDefaultTag returns ref with ":latest" appended when it names no tag
// and no digest, else "". The tag is a colon after the last slash (a
// colon before it belongs to a registry's port).
func withDefaultTag(ref string) string {
	if strings.Contains(ref, "@") {
		return ""
	}
	if strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		return ""
	}
	return ref + ":latest"
}
