// Package state is the scheduler's in-memory cluster state: nodes,
// containers, images per node, migrations, drains, the audit trail and
// the cluster's settings, with the raft index of each table's last change
// and a ring of recent events. It imports nothing of raft: scheduler/fsm applies raft
// log entries to it, and placement, balance and the API read it.
//
// The tables live in hashicorp/go-memdb, the MVCC in-memory database that
// nomad and consul keep their state in: immutable radix trees with
// secondary indexes, where a read snapshot is a pointer to a root and
// costs O(1), and a write builds a new root that replaces the old one
// atomically when it commits.
//
// Contract:
//
//   - One writer. Only the FSM calls Store.Write, once per raft log entry,
//     in log order, passing the entry's index and the leader's time that
//     the command carries. A write's function reads no clock, no
//     randomness and no map order, so every replica that applies the same
//     log holds the same state: the same records, the same container
//     addresses, the same events.
//   - Any number of readers. Store.Snapshot is a consistent view at one
//     index that later writes do not change; hold it as long as needed.
//   - Records are immutable once stored: they are shared by every snapshot
//     that sees them. Readers must not modify what they get; writers
//     clone, change the clone and put it (Txn's Put methods store a deep
//     copy of what they are given, except PutContainerOwned, which keeps
//     the caller's).
//   - A write transaction buffers the containers it creates and the usage
//     rows it changes, reads them from its buffer, and writes them to
//     memdb when it commits (pending.go): memdb keeps the radix nodes a
//     transaction copied writable only until that index is read, and a
//     placement reads before each write. The store's memdb tracks no
//     watch channels: nothing waits on them.
//   - Container addresses come from Config.ClusterCIDR: the lowest usable
//     address that no container holds (not the network address, not the
//     first host address, which is the gateway, and for IPv4 not the
//     broadcast address). A container keeps its address until it is
//     deleted.
//   - A container reserves its request on its node while it is desired
//     running and not lost (Snapshot.Allocated).
//   - A container has at most one open migration (not done, not
//     aborted): Txn.PutMigration refuses a second with ErrMigrationOpen.
//     A migration's phase words are migrate.Phase's, repeated here since
//     state imports nothing of the engine. Ended migrations are kept up to
//     MigrationHistory (Txn.PruneMigrations drops the oldest).
//   - A node has one drain record: the running drain, or the last that
//     ended.
//   - The balancer's policy is stored as JSON (balance.Policy's; fsm
//     converts and validates it); its executed decisions are kept up to
//     BalanceHistory (balance.go).
//   - Every write records Events; the store keeps the last EventRingSize
//     and wakes watchers (Store.EventsSince). Events are not replicated
//     state: a restored store starts with an empty ring.
//   - Store.Replace swaps in a store filled by a Restore, atomically.
package state
