package state

import (
	"fmt"
	"slices"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// MigrationPhase is where a migration stands in the cluster's record. The
// words are those of migrate.Phase (the engine's phases): state does not
// import migrate, which pulls in the data channel and gRPC, so the words
// are repeated here, and a test pins them and their order to migrate's.
type MigrationPhase string

// The phases in order; MigrationAborted is outside the order. A strategy
// may skip phases, never go back. Until MigrationCommitted the move can be
// aborted (the source keeps the container); from MigrationCommitted on
// the destination's copy is the container and the move can only finish.
const (
	MigrationPrepare   MigrationPhase = "prepare"
	MigrationSync      MigrationPhase = "sync"
	MigrationDump      MigrationPhase = "dump"
	MigrationTransfer  MigrationPhase = "transfer"
	MigrationRestore   MigrationPhase = "restore"
	MigrationReady     MigrationPhase = "ready"
	MigrationCommitted MigrationPhase = "committed"
	MigrationDone      MigrationPhase = "done"
	MigrationAborted   MigrationPhase = "aborted"
)

// migrationPhases lists every phase: the forward ones in order, then
// aborted.
var migrationPhases = []MigrationPhase{
	MigrationPrepare, MigrationSync, MigrationDump, MigrationTransfer, MigrationRestore,
	MigrationReady, MigrationCommitted, MigrationDone, MigrationAborted,
}

// MigrationPhases returns every phase: the forward ones in order, then
// MigrationAborted.
func MigrationPhases() []MigrationPhase { return slices.Clone(migrationPhases) }

// Order is p's rank among the forward phases: 1 for prepare up to 8 for
// done; 0 for aborted and for words that are not phases.
func (p MigrationPhase) Order() int {
	if p == MigrationAborted {
		return 0
	}
	return slices.Index(migrationPhases, p) + 1
}

// Known reports whether p is one of the phases.
func (p MigrationPhase) Known() bool { return slices.Contains(migrationPhases, p) }

// Requester is who asked for a migration or a drain: the caller's
// certificate name and role (the leader itself for a balancer's move).
type Requester struct {
	Who  string `json:"who"`
	Role string `json:"role,omitempty"`
}

// MigrationStats are a migration's figures as its driver measured them.
type MigrationStats struct {
	// Downtime is how long the container was frozen: from the dump to the
	// destination (or, after an abort, the source) running it.
	Downtime time.Duration `json:"downtime,omitempty"`
	// Total is the whole move, from prepare to done or aborted.
	Total time.Duration `json:"total,omitempty"`
	// Bytes is what was sent between the nodes in all: memory, images and
	// the root filesystem's changes.
	Bytes int64 `json:"bytes,omitempty"`
	// Phases is how long each phase lasted.
	Phases map[MigrationPhase]time.Duration `json:"phases,omitempty"`
}

// Clone returns a deep copy of s.
func (s MigrationStats) Clone() MigrationStats {
	s.Phases = cloneMap(s.Phases)
	return s
}

// Migration is the cluster's record of one move of a container from one
// node to another: the leader drives it phase by phase and every step is
// a raft entry, so that a new leader resumes or aborts it from this
// record alone.
type Migration struct {
	// ID is the migration's cluster-wide ID; agents record it too.
	ID string `json:"id"`
	// CreatedIndex is the raft index of the entry that created the
	// migration: unique, it orders migrations from oldest to newest.
	CreatedIndex uint64 `json:"created_index"`
	// Container is the moving container's ID; ContainerName its name when
	// the move began (names may be reused after a delete, IDs not).
	Container     string `json:"container"`
	ContainerName string `json:"container_name"`
	// Source and Dest are the nodes it moves from and to.
	Source string `json:"source"`
	Dest   string `json:"dest"`
	// Strategy is the strategy chosen (a migrate.Strategy word).
	Strategy string         `json:"strategy"`
	Phase    MigrationPhase `json:"phase"`
	// Generation is the container's generation when the move began. The
	// move commits only if the container still has it; the commit bumps
	// the container's generation to Generation+1.
	Generation uint64    `json:"generation"`
	Requested  Requester `json:"requested"`
	// Reason is why the move was made: "operator", "drain NODE",
	// "balancer" ...
	Reason string `json:"reason"`
	// DrainNode is the node whose drain the move is part of, if any.
	DrainNode string `json:"drain_node,omitempty"`
	// WhyDestination and WhyStrategy explain the choices, for migration
	// inspect: placement's reasons and the strategy choice's.
	WhyDestination string `json:"why_destination,omitempty"`
	WhyStrategy    string `json:"why_strategy,omitempty"`
	// Started is when each phase reached was recorded (leader's time).
	Started map[MigrationPhase]time.Time `json:"started"`
	Stats   MigrationStats               `json:"stats"`
	// Aborting is set once the leader decided to abort the move without
	// the destination's acknowledgement: from then on the move cannot
	// commit, so the source may run the container again whatever the
	// destination holds.
	Aborting bool `json:"aborting,omitempty"`
	// DestinationCleanup is set on a migration aborted without the
	// destination's acknowledgement: the destination may still hold what
	// it prepared (a stopped copy it can never run: the move did not
	// commit), and the leader asks it to drop it once it answers.
	DestinationCleanup bool `json:"destination_cleanup,omitempty"`
	// Error is why the migration was aborted; before that, the last error
	// its driver met and got past (a retried step), if any.
	Error   string    `json:"error,omitempty"`
	Created time.Time `json:"created"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
}

// Open reports whether the migration has not ended: neither done nor
// aborted. A container has at most one open migration.
func (m *Migration) Open() bool { return m.Phase != MigrationDone && m.Phase != MigrationAborted }

// Committed reports whether the move has committed: the container is on
// Dest with generation Generation+1, and the move can only finish.
func (m *Migration) Committed() bool {
	return m.Phase == MigrationCommitted || m.Phase == MigrationDone
}

// Clone returns a deep copy of m.
func (m *Migration) Clone() *Migration {
	d := *m
	d.Started = cloneMap(m.Started)
	d.Stats = m.Stats.Clone()
	return &d
}

// openIndexer indexes a migration by its container's ID while it is open,
// and not at all once it has ended: the open index lists the open
// migrations and finds a container's open one.
type openIndexer struct {
	inner memdb.StringFieldIndex
}

func (o openIndexer) FromObject(obj any) (bool, []byte, error) {
	m, ok := obj.(*Migration)
	if !ok {
		return false, nil, fmt.Errorf("open index: object is %T, not *Migration", obj)
	}
	if !m.Open() {
		return false, nil, nil
	}
	return o.inner.FromObject(m)
}

func (o openIndexer) FromArgs(args ...any) ([]byte, error) { return o.inner.FromArgs(args...) }

// MigrationHistory is how many ended (done or aborted) migrations the
// state keeps: PruneMigrations drops the oldest beyond it, so that a
// cluster whose balancer moves containers all day keeps a bounded state
// (the events and the audit trail keep the story of the older ones).
const MigrationHistory = 1000

// PutMigration inserts or replaces the migration with m's ID. It refuses
// (ErrMigrationOpen) an open migration of a container that has another
// open one.
func (t *Txn) PutMigration(m *Migration) error {
	if m.Open() {
		if other, ok := t.OpenMigrationOf(m.Container); ok && other.ID != m.ID {
			return fmt.Errorf("container %s %w: %s (%s, from %s to %s); wait for it or cancel it with 'godwit migration cancel %s'",
				m.Container, ErrMigrationOpen, other.ID, other.Phase, other.Source, other.Dest, other.ID)
		}
	}
	if err := t.tx.Insert(TableMigrations, m.Clone()); err != nil {
		return fmt.Errorf("store migration %s: %w", m.ID, err)
	}
	t.touch(TableMigrations)
	return nil
}

// PruneMigrations deletes the oldest ended migrations until at most keep
// remain, and returns how many it deleted. Open migrations are never
// deleted.
func (t *Txn) PruneMigrations(keep int) (int, error) {
	var ended []*Migration
	for _, m := range all[*Migration](t.reader, TableMigrations, indexCreated) {
		if !m.Open() {
			ended = append(ended, m)
		}
	}
	drop := len(ended) - max(keep, 0)
	for _, m := range ended[:max(drop, 0)] {
		if err := t.tx.Delete(TableMigrations, m); err != nil {
			return 0, fmt.Errorf("delete migration %s: %w", m.ID, err)
		}
		t.touch(TableMigrations)
	}
	return max(drop, 0), nil
}

// Migration returns the migration with the ID.
func (r reader) Migration(id string) (*Migration, bool) {
	m, ok := r.first(TableMigrations, indexID, id).(*Migration)
	return m, ok
}

// OpenMigrationOf returns the container's open migration, if it has one.
func (r reader) OpenMigrationOf(containerID string) (*Migration, bool) {
	if containerID == "" {
		return nil, false
	}
	m, ok := r.first(TableMigrations, indexOpen, containerID).(*Migration)
	return m, ok
}

// MigrationFilter selects migrations. Zero fields select everything.
type MigrationFilter struct {
	// Open keeps only the migrations that have not ended.
	Open bool
	// Container keeps only the migrations of the container with this ID.
	Container string
	// DrainNode keeps only the migrations of that node's drains.
	DrainNode string
	// Limit is how many to return at most (0 or less: all).
	Limit int
}

// Migrations returns the migrations f selects, newest first.
func (r reader) Migrations(f MigrationFilter) []*Migration {
	var ms []*Migration
	switch {
	case f.Open:
		ms = all[*Migration](r, TableMigrations, indexOpen)
	case f.Container != "":
		ms = all[*Migration](r, TableMigrations, indexContainer, f.Container)
	default:
		ms = all[*Migration](r, TableMigrations, indexCreated)
	}
	ms = slices.DeleteFunc(ms, func(m *Migration) bool {
		return f.Container != "" && m.Container != f.Container || f.DrainNode != "" && m.DrainNode != f.DrainNode
	})
	slices.SortFunc(ms, func(a, b *Migration) int {
		switch {
		case a.CreatedIndex > b.CreatedIndex:
			return -1
		case a.CreatedIndex < b.CreatedIndex:
			return 1
		}
		return 0
	})
	if f.Limit > 0 && len(ms) > f.Limit {
		ms = ms[:f.Limit]
	}
	return ms
}

// Incoming returns the sum of the requests of the containers that open,
// uncommitted migrations are moving to the node: room the node has
// promised but that Allocated does not count yet (a container is on its
// source until its move commits). Whoever chooses a destination adds it
// to Allocated, so that moves running in parallel (a drain's) do not
// overfill one node.
func (r reader) Incoming(node string) Resources {
	var sum Resources
	for _, m := range all[*Migration](r, TableMigrations, indexOpen) {
		if m.Dest != node || m.Committed() {
			continue
		}
		if c, ok := r.ContainerByID(m.Container); ok && reserves(c) {
			sum = sum.Add(c.Spec.Request.Effective())
		}
	}
	return sum
}
