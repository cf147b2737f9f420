package state

import (
	"fmt"
	"net/netip"

	memdb "github.com/hashicorp/go-memdb"
)

// Table names. TableIndex takes them; the replicated tables are also the
// sections of a snapshot.
const (
	TableNodes      = "nodes"
	TableContainers = "containers"
	TableImages     = "images"
	TableAudit      = "audit"
	TableConfig     = "config"
	TableMigrations = "migrations"
	TableDrains     = "drains"
)

// Internal tables: usage is derived from containers (rebuilt, never
// persisted); indexes holds the raft index of each table's last change.
const (
	tableUsage   = "usage"
	tableIndexes = "indexes"
)

// Index names. memdb's primary index is always "id".
const (
	indexID     = "id"
	indexName   = "name"
	indexNode   = "node"
	indexIP     = "ip"
	indexNodeID = "node_image_id"
	// indexImageID: images by ID across nodes.
	indexImageID = "image_id"
	// indexCreated: migrations by the raft index that created them.
	indexCreated = "created"
	// indexContainer: migrations by container ID, open or ended.
	indexContainer = "container"
	// indexOpen: open migrations by container ID (see openIndexer).
	indexOpen = "open"
)

// configKey is the one row of the config table.
const configKey = "cluster"

// replicatedTables are the tables whose indexes Index reports, in the
// order a snapshot writes them.
var replicatedTables = []string{TableConfig, TableNodes, TableContainers, TableImages, TableAudit, TableMigrations, TableDrains,
	TableBalancePolicy, TableBalanceDecisions}

// configRecord is the config table's single row.
type configRecord struct {
	Key    string
	Config Config
}

// usageRecord is what the containers on one node add up to, kept with
// every container write so that placement reads it in O(log n) instead of
// walking the node's containers for every candidate node.
type usageRecord struct {
	Node string
	// Reserved sums the effective requests (Resources.Effective) of the
	// containers that hold a reservation (see Snapshot.Allocated).
	Reserved Resources
	// Count is the number of containers on the node, in any state.
	Count int
}

// indexRecord is the raft index of a table's last change.
type indexRecord struct {
	Table string
	Index uint64
}

func schema() *memdb.DBSchema {
	str := func(field string) *memdb.StringFieldIndex { return &memdb.StringFieldIndex{Field: field} }
	return &memdb.DBSchema{Tables: map[string]*memdb.TableSchema{
		TableNodes: {
			Name:    TableNodes,
			Indexes: map[string]*memdb.IndexSchema{indexID: {Name: indexID, Unique: true, Indexer: nodeName}},
		},
		TableContainers: {
			Name: TableContainers,
			Indexes: map[string]*memdb.IndexSchema{
				indexID: {Name: indexID, Unique: true, Indexer: containerID},
				// memdb does not enforce uniqueness of secondary indexes:
				// Txn.PutContainer checks names and addresses itself.
				indexName: {Name: indexName, Unique: true, Indexer: containerName},
				indexNode: {Name: indexNode, Indexer: containerNode},
				indexIP:   {Name: indexIP, Unique: true, AllowMissing: true, Indexer: addrIndexer{}},
			},
		},
		TableImages: {
			Name: TableImages,
			Indexes: map[string]*memdb.IndexSchema{
				indexID: {Name: indexID, Unique: true, Indexer: &memdb.CompoundIndex{
					Indexes: []memdb.Indexer{str("Node"), str("Name")},
				}},
				indexNode: {Name: indexNode, Indexer: str("Node")},
				indexName: {Name: indexName, Indexer: str("Name")},
				indexNodeID: {Name: indexNodeID, AllowMissing: true, Indexer: &memdb.CompoundIndex{
					Indexes: []memdb.Indexer{str("Node"), str("ID")},
				}},
				indexImageID: {Name: indexImageID, AllowMissing: true, Indexer: str("ID")},
			},
		},
		TableAudit: {
			Name:    TableAudit,
			Indexes: map[string]*memdb.IndexSchema{indexID: {Name: indexID, Unique: true, Indexer: &memdb.UintFieldIndex{Field: "Index"}}},
		},
		TableConfig: {
			Name:    TableConfig,
			Indexes: map[string]*memdb.IndexSchema{indexID: {Name: indexID, Unique: true, Indexer: str("Key")}},
		},
		TableMigrations: {
			Name: TableMigrations,
			Indexes: map[string]*memdb.IndexSchema{
				indexID:        {Name: indexID, Unique: true, Indexer: str("ID")},
				indexCreated:   {Name: indexCreated, Unique: true, Indexer: &memdb.UintFieldIndex{Field: "CreatedIndex"}},
				indexContainer: {Name: indexContainer, Indexer: str("Container")},
				// Unique but, as memdb does not enforce it, checked by
				// Txn.PutMigration: one open migration per container.
				indexOpen: {Name: indexOpen, Unique: true, AllowMissing: true, Indexer: openIndexer{inner: memdb.StringFieldIndex{Field: "Container"}}},
			},
		},
		TableDrains: {
			Name:    TableDrains,
			Indexes: map[string]*memdb.IndexSchema{indexID: {Name: indexID, Unique: true, Indexer: str("Node")}},
		},
		TableBalancePolicy: {
			Name:    TableBalancePolicy,
			Indexes: map[string]*memdb.IndexSchema{indexID: {Name: indexID, Unique: true, Indexer: str("Key")}},
		},
		TableBalanceDecisions: {
			Name:    TableBalanceDecisions,
			Indexes: map[string]*memdb.IndexSchema{indexID: {Name: indexID, Unique: true, Indexer: &memdb.UintFieldIndex{Field: "Index"}}},
		},
		tableUsage: {
			Name:    tableUsage,
			Indexes: map[string]*memdb.IndexSchema{indexID: {Name: indexID, Unique: true, Indexer: usageNode}},
		},
		tableIndexes: {
			Name:    tableIndexes,
			Indexes: map[string]*memdb.IndexSchema{indexID: {Name: indexID, Unique: true, Indexer: indexTable}},
		},
	}}
}

// addrIndexer indexes containers by IP address. Keys are the address's
// big-endian bytes split into 4-bit nibbles: the index iterates in
// address order (IP allocation walks it to find the lowest free address),
// and no radix node has more than 16 children, so the path an insert
// copies stays small (whole bytes make nodes of up to 256 edges, and
// copying them dominated the cost of a placement). A container without
// an address is not indexed.
type addrIndexer struct{}

func addrKey(a netip.Addr) []byte {
	b := a.AsSlice()
	key := make([]byte, 0, 2*len(b))
	for _, x := range b {
		key = append(key, x>>4, x&0x0f)
	}
	return key
}

func (addrIndexer) FromObject(obj any) (bool, []byte, error) {
	c, ok := obj.(*Container)
	if !ok {
		return false, nil, fmt.Errorf("ip index: object is %T, not *Container", obj)
	}
	if !c.IP.IsValid() {
		return false, nil, nil
	}
	return true, addrKey(c.IP), nil
}

func (addrIndexer) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("ip index: want one argument, got %d", len(args))
	}
	a, ok := args[0].(netip.Addr)
	if !ok || !a.IsValid() {
		return nil, fmt.Errorf("ip index: argument %v is not a valid netip.Addr", args[0])
	}
	return addrKey(a), nil
}

// The tables every write touches index their string fields with
// fieldIndexer rather than memdb.StringFieldIndex: the same keys, without
// reflection and with one allocation instead of two.
var (
	nodeName      = fieldIndexer[*Node]{field: "Name", get: func(n *Node) string { return n.Name }}
	containerID   = fieldIndexer[*Container]{field: "ID", get: func(c *Container) string { return c.ID }}
	containerName = fieldIndexer[*Container]{field: "Name", get: func(c *Container) string { return c.Name }}
	containerNode = fieldIndexer[*Container]{field: "Node", get: func(c *Container) string { return c.Node }}
	usageNode     = fieldIndexer[*usageRecord]{field: "Node", get: func(u *usageRecord) string { return u.Node }}
	indexTable    = fieldIndexer[*indexRecord]{field: "Table", get: func(r *indexRecord) string { return r.Table }}
)

// fieldIndexer indexes records of type T by a string field, with the keys
// memdb.StringFieldIndex makes: the string and a NUL terminator; an empty
// string is no key. It answers exact lookups and prefix scans.
type fieldIndexer[T any] struct {
	field string
	get   func(T) string
}

// stringKey is s and a NUL, in one allocation.
func stringKey(s string) []byte {
	key := make([]byte, len(s)+1)
	copy(key, s)
	return key
}

func (f fieldIndexer[T]) FromObject(obj any) (bool, []byte, error) {
	rec, ok := obj.(T)
	if !ok {
		return false, nil, fmt.Errorf("%s index: object is %T, not %T", f.field, obj, rec)
	}
	s := f.get(rec)
	if s == "" {
		return false, nil, nil
	}
	return true, stringKey(s), nil
}

func (f fieldIndexer[T]) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("%s index: want one argument, got %d", f.field, len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("%s index: argument %#v is not a string", f.field, args[0])
	}
	return stringKey(s), nil
}

func (f fieldIndexer[T]) PrefixFromArgs(args ...any) ([]byte, error) {
	key, err := f.FromArgs(args...)
	if err != nil {
		return nil, err
	}
	return key[:len(key)-1], nil
}
