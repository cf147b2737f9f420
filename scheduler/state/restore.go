package state

import (
	"fmt"
	"slices"
)

// Restore loads records into a fresh Store in one transaction: what the
// FSM does with a raft snapshot before it swaps the store in with
// Replace. Derived data (the per-node usage that Allocated reads) is
// rebuilt as containers load; events are not recorded. The store is
// locked against writes until Commit or Abort.
type Restore struct {
	s    *Store
	t    *Txn
	done bool
}

// Restore starts loading s, which should be new and not yet shared.
func (s *Store) Restore() *Restore {
	s.wmu.Lock()
	return &Restore{s: s, t: &Txn{reader: reader{tx: s.db.Load().Txn(true), p: &pending{}}}}
}

// Config sets the cluster's settings.
func (r *Restore) Config(c Config) error { return r.t.SetConfig(c) }

// Node loads a node.
func (r *Restore) Node(n *Node) error { return r.t.PutNode(n) }

// Container loads a container; names and addresses must be unique.
func (r *Restore) Container(c *Container) error { return r.t.PutContainer(c) }

// Image loads an image of the node it names.
func (r *Restore) Image(i *Image) error {
	if err := r.t.tx.Insert(TableImages, i.Clone()); err != nil {
		return fmt.Errorf("load image %q of node %q: %w", i.Name, i.Node, err)
	}
	return nil
}

// Audit loads an audit record.
func (r *Restore) Audit(a *AuditRecord) error { return r.t.AppendAudit(a) }

// Migration loads a migration; a container has at most one open one.
func (r *Restore) Migration(m *Migration) error { return r.t.PutMigration(m) }

// Drain loads the drain of the node it names.
func (r *Restore) Drain(d *Drain) error { return r.t.PutDrain(d) }

// TableIndex sets the raft index of the last change of table (one of the
// Table constants).
func (r *Restore) TableIndex(table string, index uint64) error {
	if !slices.Contains(replicatedTables, table) {
		return fmt.Errorf("load index of table %q: no such table", table)
	}
	if err := r.t.tx.Insert(tableIndexes, &indexRecord{Table: table, Index: index}); err != nil {
		return fmt.Errorf("load index of table %q: %w", table, err)
	}
	return nil
}

// Commit makes what was loaded the store's state.
func (r *Restore) Commit() {
	if r.done {
		return
	}
	r.done = true
	r.t.p.flush(r.t.tx)
	r.t.tx.Commit()
	r.s.events.reset(reader{db: r.s.db.Load()}.Index())
	r.s.wmu.Unlock()
}

// Abort drops what was loaded. It is safe to call after Commit, so that
// a deferred Abort covers every error path.
func (r *Restore) Abort() {
	if r.done {
		return
	}
	r.done = true
	r.t.tx.Abort()
	r.s.wmu.Unlock()
}

// Tables returns the names of the replicated tables in the order a
// snapshot holds them.
func Tables() []string { return slices.Clone(replicatedTables) }
