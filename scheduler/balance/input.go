package balance

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// State is the read-only view of the cluster that Plan decides on: the
// leader passes a consistent snapshot (*state.Snapshot satisfies it), so
// that every method answers about the same moment. Implementations must
// not block. Records are read, never modified.
type State interface {
	// placement.State gives the nodes (any order, none nil), what is
	// allocated on each (requests) and how many containers each holds:
	// Plan checks destinations with placement's filters through it.
	placement.State
	// Containers returns every container, whatever its state, none nil,
	// in any order.
	Containers() []*state.Container
	// Migrations returns the migrations f selects, in any order; Plan
	// asks only for the open ones (f.Open).
	Migrations(f state.MigrationFilter) []*state.Migration
}

var _ State = (*state.Snapshot)(nil)

// Sample is one measurement of a container's use, as its agent reports
// it (proto ContainerLoad, sampled at NodeLoad.sampled): soft state the
// leader keeps for a while, never in raft.
type Sample struct {
	Time time.Time `json:"time"`
	// MilliCPU is the CPU used, in thousandths of a CPU, averaged since
	// the previous sample.
	MilliCPU int64 `json:"milli_cpu"`
	// MemoryBytes is the memory the container needs to keep (its cgroup's
	// use less the inactive file cache).
	MemoryBytes int64 `json:"memory_bytes"`
	// DirtyBytesPerSecond is how fast the container dirties memory, where
	// soft-dirty tracking could measure it; 0 when unknown.
	DirtyBytesPerSecond int64 `json:"dirty_bytes_per_second,omitempty"`
}

// PastMigration is what one finished migration measured: the cost
// model's history.
type PastMigration struct {
	From     string        `json:"from"`
	To       string        `json:"to"`
	Strategy string        `json:"strategy"`
	Bytes    int64         `json:"bytes"`
	Downtime time.Duration `json:"downtime"`
	Total    time.Duration `json:"total"`
}

// PastMove is a container's move that committed: cooldown and the
// ping-pong guard read them, whoever made the move.
type PastMove struct {
	Container string    `json:"container"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	At        time.Time `json:"at"`
}

// Link is a measured bandwidth from one node to another.
type Link struct {
	From           string  `json:"from"`
	To             string  `json:"to"`
	BytesPerSecond float64 `json:"bytes_per_second"`
}

// Input is everything besides the State that a plan depends on. Plan
// reads no clock and draws no random numbers: the same State and Input
// give the same Decision, whatever the order of the slices in them.
type Input struct {
	// Now is the leader's time: samples, cooldowns and stability are
	// measured back from it.
	Now    time.Time
	Policy Policy
	// Samples are the recent load samples of each container, by
	// container ID, in any order; those older than Policy.Window are
	// ignored.
	Samples map[string][]Sample
	// History are finished migrations with their figures, any order.
	History []PastMigration
	// Links are measured bandwidths between node pairs, if any.
	Links []Link
	// Recent are the moves committed within Policy.ReturnAfter (older
	// ones are ignored): FromMigrations derives them from the state's
	// migration records.
	Recent []PastMove
	// Balancing is the previous Decision's Triggered: the hysteresis. A
	// balancer that was balancing goes on until the imbalance reaches
	// the target (less a margin: 90% of it); one that was not starts
	// only above the trigger.
	Balancing bool
}

// FromMigrations derives Input.Recent and Input.History from the
// state's migration records (snapshot.Migrations with a zero filter):
// every committed move, whoever asked for it, is a recent move at the
// time its commit was recorded; every finished one with figures is
// history. Both come out sorted.
func FromMigrations(ms []*state.Migration) (recent []PastMove, history []PastMigration) {
	for _, m := range ms {
		if !m.Committed() {
			continue
		}
		at, ok := m.Started[state.MigrationCommitted]
		if !ok {
			at = m.Updated
		}
		recent = append(recent, PastMove{Container: m.Container, From: m.Source, To: m.Dest, At: at})
		if m.Phase == state.MigrationDone && m.Stats.Bytes > 0 {
			history = append(history, PastMigration{
				From: m.Source, To: m.Dest, Strategy: m.Strategy,
				Bytes: m.Stats.Bytes, Downtime: m.Stats.Downtime, Total: m.Stats.Total,
			})
		}
	}
	slices.SortFunc(recent, comparePastMoves)
	slices.SortFunc(history, comparePastMigrations)
	return recent, history
}

func comparePastMoves(a, b PastMove) int {
	return cmp.Or(a.At.Compare(b.At), strings.Compare(a.Container, b.Container),
		strings.Compare(a.From, b.From), strings.Compare(a.To, b.To))
}

func comparePastMigrations(a, b PastMigration) int {
	return cmp.Or(strings.Compare(a.From, b.From), strings.Compare(a.To, b.To), strings.Compare(a.Strategy, b.Strategy),
		cmp.Compare(a.Bytes, b.Bytes), cmp.Compare(a.Downtime, b.Downtime), cmp.Compare(a.Total, b.Total))
}
