package state

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// EventRingSize is how many events the store keeps for watchers (godwit
// events -f). A watcher that falls further behind than this gets
// ErrEventsLost.
const EventRingSize = 4096

// Event kinds: what changed. The FSM emits them; godwit events prints
// them.
const (
	EventClusterInitialized = "cluster-initialized"
	EventNodeRegistered     = "node-registered"
	EventNodeHealth         = "node-health"
	EventNodeCordoned       = "node-cordoned"
	EventNodeDraining       = "node-draining"
	EventNodeUncordoned     = "node-uncordoned"
	EventNodeRemoved        = "node-removed"
	EventContainerPlaced    = "container-placed"
	EventContainerDesired   = "container-desired"
	EventContainerState     = "container-state"
	EventContainerDeleted   = "container-deleted"
	// EventContainerCheckpointed: a drain's deadline checkpointed a
	// container and put it on the node that keeps its checkpoint.
	EventContainerCheckpointed = "container-checkpointed"
	// EventContainerUnknown: a node runs a container the cluster does not
	// know; it is reported, never killed silently.
	EventContainerUnknown = "container-unknown"
	EventImageAdded       = "image-added"
	EventImageRemoved     = "image-removed"
	EventAudit            = "audit"

	// Migrations: each carries the migration's ID, its container and a
	// node (the source until the commit, the destination from then on).
	EventMigrationCreated   = "migration-created"
	EventMigrationPhase     = "migration-phase"
	EventMigrationCommitted = "migration-committed"
	EventMigrationDone      = "migration-done"
	EventMigrationAborted   = "migration-aborted"
	// EventMigrationAborting: the leader aborts a move its destination
	// did not answer for; EventMigrationCleaned: that destination dropped
	// what it held, later.
	EventMigrationAborting = "migration-aborting"
	EventMigrationCleaned  = "migration-cleaned"

	// Drains: each carries the drained node; drain-updated also comes once
	// per container newly blocked, with the container and why.
	EventDrainStarted = "drain-started"
	EventDrainUpdated = "drain-updated"
	EventDrainEnded   = "drain-ended"

	// Balancer: balance-policy when an operator changes the policy (the
	// message says what changed); balance-decision once per executed
	// decision (the imbalance, the moves started and refused).
	EventBalancePolicy   = "balance-policy"
	EventBalanceDecision = "balance-decision"
)

// Event is one change to the state, recorded by the write that made it.
type Event struct {
	// Index is the raft index of the write; one write may record several
	// events with the same index.
	Index uint64 `json:"index"`
	// Time is the leader's time carried by the command.
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	// Node is the node concerned, if any.
	Node string `json:"node,omitempty"`
	// Container is the ID of the container concerned, if any (names can
	// be reused after a delete; IDs cannot).
	Container string `json:"container,omitempty"`
	// Migration is the ID of the migration concerned, if any.
	Migration string `json:"migration,omitempty"`
	// Message says what happened, for people.
	Message string `json:"message,omitempty"`
}

// eventLog is a fixed-size ring of the latest events and the channel
// that wakes their watchers.
type eventLog struct {
	mu   sync.Mutex
	buf  []Event
	head int // index in buf of the oldest event
	n    int // number of events held
	// lost is the highest write index whose events are not all in the
	// ring: dropped off its end, or skipped by a restore. A watcher
	// asking for events after an index below it missed some.
	lost uint64
	wake chan struct{}
}

func newEventLog(size int) *eventLog {
	return &eventLog{buf: make([]Event, size), wake: make(chan struct{})}
}

func (l *eventLog) publish(events []Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range events {
		if l.n == len(l.buf) {
			l.lost = max(l.lost, l.buf[l.head].Index)
			l.head = (l.head + 1) % len(l.buf)
			l.n--
		}
		l.buf[(l.head+l.n)%len(l.buf)] = e
		l.n++
	}
	close(l.wake)
	l.wake = make(chan struct{})
}

// reset drops every event and marks everything up to index as lost.
func (l *eventLog) reset(index uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.buf)
	l.head, l.n = 0, 0
	l.lost = index
	close(l.wake)
	l.wake = make(chan struct{})
}

func (l *eventLog) at(i int) Event { return l.buf[(l.head+i)%len(l.buf)] }

func (l *eventLog) since(index uint64) ([]Event, <-chan struct{}, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Events are in index order: find the first one after index.
	first := sort.Search(l.n, func(i int) bool { return l.at(i).Index > index })
	events := make([]Event, 0, l.n-first)
	for i := first; i < l.n; i++ {
		events = append(events, l.at(i))
	}
	var err error
	if index < l.lost {
		err = fmt.Errorf("events after index %d: %w (the watcher fell behind or the state was restored): re-read the state and watch from its index", index, ErrEventsLost)
	}
	return events, l.wake, err
}
