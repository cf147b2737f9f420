package state

import (
	"fmt"
	"net/netip"

	memdb "github.com/hashicorp/go-memdb"
)

// pending is what a write transaction has put but not yet written to
// memdb: the containers it created and the current value of each usage
// row it changed. Store.Write and Restore.Commit write it (flush) before
// they commit.
//
// Why: memdb copies the radix nodes on an insert's path once per
// transaction and keeps the copies writable for the transaction's later
// inserts into the same index, but any read of an index that the
// transaction has changed drops that cache (memdb reads a changed index
// through a clone of its radix transaction, and cloning resets the
// original's writable nodes). Placing a container reads the id, name and
// ip indexes and its node's usage row, then writes them: applied one at a
// time, every placement of a batch copied every path again from the root,
// which was most of the cost of an apply. Buffered, a batch's inserts run
// back to back at the end and share their copies, and each node's usage
// row is written once per transaction, however many containers it gets.
//
// What keeps every read exact:
//   - a container is buffered only when it is new (no container, stored
//     or buffered, has its ID) and memdb accepts it (ID, name and node are
//     set), so writing it cannot fail;
//   - a lookup by ID, name or address (the containers table's unique
//     indexes) finds a buffered container first, else asks memdb: no
//     stored container has a buffered one's ID, and PutContainer refuses a
//     name or an address that another container holds;
//   - any other read of the containers table (a scan, an ID prefix,
//     containers by node) flushes first, and so does a put or delete of a
//     buffered container;
//   - a usage row the transaction changed is read from here (Count 0 means
//     no row); a scan of the usage table flushes first.
//
// The state a flush leaves is the one the writes would have left applied
// one by one: memdb's trees depend only on what they hold, not on the
// order it was inserted in.
type pending struct {
	// containers are the buffered containers, in put order.
	containers []*Container
	byID       map[string]*Container
	byName     map[string]*Container
	byIP       map[netip.Addr]*Container

	// usage holds the current row of each node whose usage the
	// transaction changed, by node; usageNodes lists them in the order
	// they were first changed.
	usage      map[string]*usageRecord
	usageNodes []string

	// noID is an ID that no container has, stored or buffered (the last
	// lookup by ID that found none), and freeIP an address that none
	// holds (the last one AllocateIP returned): until the next container
	// is stored, a lookup of either answers from here, so that placing a
	// container looks each up once. "" and the zero Addr: none.
	noID   string
	freeIP netip.Addr

	// config is the cluster's settings, read once per transaction
	// (configRead) or set by it: every allocation reads them.
	config     Config
	configRead bool
}

// reset empties p for a new transaction, keeping the room its maps and
// slices have grown.
func (p *pending) reset() {
	p.dropContainers()
	if len(p.usage) > 0 {
		clear(p.usage)
	}
	p.usageNodes = p.usageNodes[:0]
	p.noID, p.freeIP = "", netip.Addr{}
	p.config, p.configRead = Config{}, false
}

// keepRoom is the most containers (or events: see Store.Write) whose room
// a store's buffers keep from one write to the next: a placement batch's
// worth. Past it a write's buffers are dropped, so that one huge write
// does not hold its memory for good.
const keepRoom = 1024

// dropContainers empties the containers' buffer. (Clearing a map costs
// its room, not its length: skip the empty ones.)
func (p *pending) dropContainers() {
	if len(p.containers) == 0 {
		return
	}
	if len(p.containers) > keepRoom {
		p.containers, p.byID, p.byName, p.byIP = nil, nil, nil, nil
		return
	}
	clear(p.containers)
	p.containers = p.containers[:0]
	clear(p.byID)
	clear(p.byName)
	clear(p.byIP)
}

// bufferable reports whether c may be buffered rather than inserted:
// memdb requires its ID, name and node (non-unique, not AllowMissing).
func bufferable(c *Container) bool {
	return c.ID != "" && c.Name != "" && c.Node != ""
}

// add buffers c, which must be new and bufferable.
func (p *pending) add(c *Container) {
	if p.byID == nil {
		p.byID = map[string]*Container{}
		p.byName = map[string]*Container{}
		p.byIP = map[netip.Addr]*Container{}
	}
	p.containers = append(p.containers, c)
	p.byID[c.ID] = c
	p.byName[c.Name] = c
	if c.IP.IsValid() {
		p.byIP[c.IP] = c
	}
}

// holds reports whether the container with the ID is buffered.
func (p *pending) holds(id string) bool {
	_, ok := p.byID[id]
	return ok
}

// lookup answers a read of one object (reader.first) from the buffer
// where it can: answered reports whether obj is the answer (nil for "no
// such object"); when it is false, the caller reads memdb, which this
// has flushed first if memdb alone would not answer right.
func (p *pending) lookup(tx *memdb.Txn, table, index string, args []any) (obj any, answered bool) {
	switch table {
	case TableContainers:
		if len(args) == 1 {
			var c *Container
			switch index {
			case indexID:
				id, _ := args[0].(string)
				if id != "" && id == p.noID {
					return nil, true
				}
				c = p.byID[id]
			case indexName:
				name, _ := args[0].(string)
				c = p.byName[name]
			case indexIP:
				ip, _ := args[0].(netip.Addr)
				if ip.IsValid() && ip == p.freeIP {
					return nil, true
				}
				c = p.byIP[ip]
			default:
				if len(p.containers) > 0 {
					p.flush(tx)
				}
				return nil, false
			}
			if c != nil {
				return c, true
			}
			return nil, false
		}
		if len(p.containers) > 0 {
			p.flush(tx)
		}
		return nil, false
	case tableUsage:
		if len(p.usage) == 0 {
			return nil, false
		}
		if index != indexID || len(args) != 1 {
			p.flush(tx)
			return nil, false
		}
		node, _ := args[0].(string)
		u, ok := p.usage[node]
		if !ok {
			return nil, false
		}
		if u.Count == 0 {
			return nil, true
		}
		return u, true
	}
	return nil, false
}

// found records what memdb answered a lookup that lookup left to it.
func (p *pending) found(table, index string, args []any, obj any) {
	if obj == nil && table == TableContainers && index == indexID && len(args) == 1 {
		p.noID, _ = args[0].(string)
	}
}

// stored forgets what a container stored may have made untrue.
func (p *pending) stored() {
	p.noID, p.freeIP = "", netip.Addr{}
}

// scanning flushes what a scan of table must see in memdb.
func (p *pending) scanning(tx *memdb.Txn, table string) {
	if table == TableContainers && len(p.containers) > 0 || table == tableUsage && len(p.usage) > 0 {
		p.flush(tx)
	}
}

// usageRow returns the node's current usage row for the transaction to
// change in place: the buffered one, or a copy of the stored one (a zero
// row if it has none), buffered from now on.
func (p *pending) usageRow(tx *memdb.Txn, node string) *usageRecord {
	if u, ok := p.usage[node]; ok {
		return u
	}
	u := &usageRecord{Node: node}
	cur, err := tx.First(tableUsage, indexID, node)
	if err != nil {
		panic(fmt.Sprintf("state: lookup %s.%s: %v", tableUsage, indexID, err))
	}
	if cur, ok := cur.(*usageRecord); ok {
		*u = *cur
	}
	if p.usage == nil {
		p.usage = map[string]*usageRecord{}
	}
	p.usage[node] = u
	p.usageNodes = append(p.usageNodes, node)
	return u
}

// flush writes what is buffered to memdb and empties the buffer. What is
// buffered was checked when it was put (see bufferable), so memdb's
// refusal here is a programming mistake, like a failed lookup.
func (p *pending) flush(tx *memdb.Txn) {
	for _, c := range p.containers {
		if err := tx.Insert(TableContainers, c); err != nil {
			panic(fmt.Sprintf("state: store buffered container %s: %v", c.ID, err))
		}
	}
	p.dropContainers()

	for _, node := range p.usageNodes {
		u := p.usage[node]
		var err error
		if u.Count == 0 {
			_, err = tx.DeleteAll(tableUsage, indexID, node)
		} else {
			// u is the stored record from now on: it is never changed
			// again (the next change of the row starts from a copy).
			err = tx.Insert(tableUsage, u)
		}
		if err != nil {
			panic(fmt.Sprintf("state: update usage of node %q: %v", node, err))
		}
	}
	if len(p.usage) > 0 {
		clear(p.usage)
	}
	p.usageNodes = p.usageNodes[:0]
}
