package state

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// Config is the cluster's settings: set once when the cluster is
// initialised, and read by every allocation.
type Config struct {
	// ClusterCIDR is the network container addresses are allocated from.
	// Invalid (the zero Prefix) until the first leader sets it.
	ClusterCIDR netip.Prefix `json:"cluster_cidr"`
}

// Store is the cluster state: the tables, the raft index of each table's
// last change, and a ring of the latest events.
//
// Reads go through Snapshot, which any goroutine may take at any time.
// Writes go through Write, and only the FSM calls it: one writer, in raft
// log order, so every replica holds the same state at the same index.
type Store struct {
	// db is swapped whole by Replace; Snapshot loads it without a lock.
	db atomic.Pointer[memdb.MemDB]

	// wmu serialises Write, Restore and Replace, and guards ipHint.
	wmu sync.Mutex
	// ipHint is a cache, never replicated: every usable address of the
	// cluster CIDR below it is held by a container (the zero Addr means
	// "start at the first"), so allocation walks the address index from
	// there instead of from the start. It never changes which address is
	// allocated, only how fast it is found, which keeps allocation
	// deterministic on a replica restored from a snapshot, whose hint
	// starts over.
	ipHint netip.Addr

	events *eventLog
	// viewHint sizes the next snapshot's node view (nodeview.go).
	viewHint viewHint

	// pend and emitted are every write's buffers, guarded by wmu: reset
	// and reused by each write, so that their maps and slices are grown
	// once rather than once per write.
	pend    pending
	emitted []Event
}

// NewStore returns an empty store at index 0.
func NewStore() *Store {
	return newStore(EventRingSize)
}

func newStore(ringSize int) *Store {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		// The schema is a constant: an error is a programming mistake
		// that every test would catch.
		panic(fmt.Sprintf("state: invalid memdb schema: %v", err))
	}
	s := &Store{events: newEventLog(ringSize)}
	// The store writes through a memdb "snapshot" of the database it made:
	// the same tables, but without mutation tracking. A primary memdb
	// records, for every radix node a write copies, the watch channel that
	// readers of the old node could wait on, and closes them all at commit
	// (a map insert and a close per node). godwit waits on none of them
	// (watchers wait on EventsSince), and on the FSM's write path that
	// bookkeeping cost more than a tenth of an apply.
	s.db.Store(db.Snapshot())
	return s
}

// Snapshot returns an immutable, consistent view of the state as of the
// last committed write. It costs O(1) and holds no lock: writes that
// commit later are not seen, and the snapshot may be read from any number
// of goroutines and kept as long as needed (it pins the records it sees).
func (s *Store) Snapshot() *Snapshot {
	return &Snapshot{reader: reader{db: s.db.Load().Snapshot()}, view: lazyNodeView{hint: &s.viewHint}}
}

// Snapshot is a read-only view of the state at one index. The records it
// returns are shared with the store and other snapshots: callers must
// not modify them (Clone first).
type Snapshot struct {
	reader
	// view answers Nodes, Allocated, ContainerCount and HasImage from
	// plain Go values, built on first use (nodeview.go).
	view lazyNodeView
}

// Write runs fn in a write transaction for raft log entry index, whose
// leader's time is at (events carry it; fn must not read the clock). If fn
// returns an error, nothing it did is kept and the error is returned;
// otherwise its changes commit atomically, the changed tables record index
// as their last change, its events join the ring and watchers wake.
// A transaction that changed nothing and emitted nothing commits nothing.
//
// Only the FSM calls Write. fn must not keep the Txn after it returns.
func (s *Store) Write(index uint64, at time.Time, fn func(*Txn) error) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()

	mt := s.db.Load().Txn(true)
	done := false
	// Abort on every path but the commit, panics included: memdb holds its
	// writer lock until then.
	defer func() {
		if !done {
			mt.Abort()
		}
	}()
	t := &Txn{reader: reader{tx: mt, p: &s.pend}, index: index, at: at, ipHint: s.ipHint, events: s.emitted[:0]}
	defer func() {
		// Keep the buffers' room, not what they hold: the committed
		// records are in memdb, the events in the ring, and a write that
		// failed leaves nothing.
		s.pend.reset()
		clear(t.events)
		s.emitted = t.events[:0]
		if cap(t.events) > keepRoom {
			s.emitted = nil
		}
	}()
	if err := fn(t); err != nil {
		return err
	}
	if len(t.touched) == 0 && len(t.events) == 0 {
		return nil
	}
	t.p.flush(mt)
	for _, table := range t.touched {
		if err := mt.Insert(tableIndexes, &indexRecord{Table: table, Index: index}); err != nil {
			return fmt.Errorf("record index of table %s: %w", table, err)
		}
	}
	mt.Commit()
	done = true
	s.ipHint = t.ipHint
	s.events.publish(t.events)
	return nil
}

// Replace makes from's state this store's state, atomically: snapshots
// taken before keep the old state, later ones see the new. It is how the
// FSM restores a raft snapshot: it fills a fresh Store, then swaps it in,
// so that readers never see a half-restored state. Events from before are
// dropped and watchers wake: one that asks for events older than from's
// index gets ErrEventsLost and must re-read the state. from must not be
// used afterwards.
func (s *Store) Replace(from *Store) {
	if from == s {
		return
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	from.wmu.Lock()
	db := from.db.Load()
	from.wmu.Unlock()

	s.db.Store(db)
	s.ipHint = netip.Addr{}
	s.events.reset(reader{db: db}.Index())
}

// EventsSince returns the events of the writes after index, oldest first,
// and a channel that is closed by the next write (or Replace): a watcher
// sends what it got, waits on the channel, and asks again from the index
// of the last event it sent (or the snapshot index it started from).
//
// When the ring no longer holds every event after index (the watcher fell
// more than EventRingSize events behind, or the state was restored from a
// snapshot), the error wraps ErrEventsLost; the events the ring still
// holds are returned with it so that a watcher may report the gap and go
// on.
func (s *Store) EventsSince(index uint64) ([]Event, <-chan struct{}, error) {
	return s.events.since(index)
}
