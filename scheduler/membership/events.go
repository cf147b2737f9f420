package membership

import (
	"container/list"
	"sync"
)

// EventKind is what happened to a member.
type EventKind string

const (
	// EventJoin: a member joined, or came back after it failed or left.
	EventJoin EventKind = "join"
	// EventUpdate: a member changed its tags.
	EventUpdate EventKind = "update"
	// EventLeave: a member left on purpose (Leave).
	EventLeave EventKind = "leave"
	// EventFail: a member stopped answering and the pool declared it
	// failed; see Timing for how long that takes.
	EventFail EventKind = "fail"
)

// Event is a change of a member, with the member as it is after the
// change.
type Event struct {
	Kind   EventKind
	Member Member
}

// eventBuffer is the capacity of the channel Events returns. The queue in
// front of it is what keeps memberlist from waiting; the buffer only lets
// a consumer take bursts without a wake-up per event.
const eventBuffer = 64

// eventQueue holds the events the consumer has not taken yet, at most one
// per member: memberlist calls its event delegate with its node lock
// held, so a push must never wait, and an unbounded list of every change
// would grow without end under a consumer that stopped reading. A newer
// event for a member with one pending replaces it and moves to the back:
// the consumer learns every member's latest state, in the order of the
// latest changes, and loses only superseded intermediate ones (a member
// that failed and came back before the consumer looked shows as a join).
// An update folds into a pending join, which stays a join.
type eventQueue struct {
	mu      sync.Mutex
	order   *list.List // of Event, oldest first
	pending map[string]*list.Element
	// ready holds a token while the queue may be non-empty.
	ready chan struct{}
}

func newEventQueue() *eventQueue {
	return &eventQueue{order: list.New(), pending: make(map[string]*list.Element), ready: make(chan struct{}, 1)}
}

// push queues ev; it never blocks.
func (q *eventQueue) push(ev Event) {
	q.mu.Lock()
	if el, ok := q.pending[ev.Member.Name]; ok {
		if old := el.Value.(Event); old.Kind == EventJoin && ev.Kind == EventUpdate {
			ev.Kind = EventJoin
		}
		q.order.Remove(el)
	}
	q.pending[ev.Member.Name] = q.order.PushBack(ev)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop takes the oldest pending event; false when there is none.
func (q *eventQueue) pop() (Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	el := q.order.Front()
	if el == nil {
		return Event{}, false
	}
	ev := q.order.Remove(el).(Event)
	delete(q.pending, ev.Member.Name)
	return ev, true
}

// pump moves events from q to out until done closes.
func (q *eventQueue) pump(out chan<- Event, done <-chan struct{}) {
	for {
		ev, ok := q.pop()
		if !ok {
			select {
			case <-q.ready:
				continue
			case <-done:
				return
			}
		}
		select {
		case out <- ev:
		case <-done:
			return
		}
	}
}
