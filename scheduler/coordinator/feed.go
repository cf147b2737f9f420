package coordinator

import (
	"sync"

	"github.com/godwit/godwit/migrate"
)

// feedBuffer is how many progress events a slow watcher may lag behind
// before it misses some: a watcher only draws a progress bar, and the
// engine must never wait for it.
const feedBuffer = 64

// feed fans a migration's progress events out to its watchers.
type feed struct {
	mu     sync.Mutex
	subs   map[chan migrate.Event]struct{}
	closed bool
}

func newFeed() *feed { return &feed{subs: map[chan migrate.Event]struct{}{}} }

// publish sends e to every watcher that has room.
func (f *feed) publish(e migrate.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.subs {
		select {
		case ch <- e:
		default:
		}
	}
}

// subscribe returns a channel of the events from now on, closed when the
// drive ends, and a function that stops the subscription.
func (f *feed) subscribe() (<-chan migrate.Event, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan migrate.Event, feedBuffer)
	if f.closed {
		close(ch)
		return ch, func() {}
	}
	f.subs[ch] = struct{}{}
	return ch, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[ch]; ok {
			delete(f.subs, ch)
			close(ch)
		}
	}
}

// close ends every subscription.
func (f *feed) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for ch := range f.subs {
		delete(f.subs, ch)
		close(ch)
	}
}
