package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// DefaultMaxPlaceBatch is how many containers a Placer commits in one
// raft entry at most. Past a few hundred a larger entry commits hardly
// more per second (docs/benchmarks.md), and every caller in it waits for
// all of its decisions and its commit.
const DefaultMaxPlaceBatch = 256

// PlaceBackend is the replica a Placer decides on and commits through:
// the scheduler's raft and state, or a benchmark's.
type PlaceBackend interface {
	// VerifyLeader returns nil when this replica leads and its state holds
	// everything committed before its term (RaftNode.LeaderCaughtUp: the
	// leader is the only writer, so that is everything, and a deposed
	// leader's batch never commits); an error otherwise.
	VerifyLeader(ctx context.Context) error
	// Snapshot is the state as of the last entry applied here.
	Snapshot() *state.Snapshot
	// Apply commits cmd through raft and returns its fsm.Result's value,
	// or the error of the commit or of the whole command.
	Apply(ctx context.Context, cmd fsm.Command) (any, error)
}

// PlacerConfig configures a Placer.
type PlacerConfig struct {
	Backend PlaceBackend
	// MaxBatch bounds the containers of one raft entry; 0 means
	// DefaultMaxPlaceBatch.
	MaxBatch int
	Logger   *slog.Logger
}

// PlaceRequest is one container to place, as Run asks for it.
type PlaceRequest struct {
	Spec state.ContainerSpec
	// Name is the container's name; "" names it "c-" and the first 8
	// digits of its ID.
	Name      string
	Algorithm placement.Algorithm
}

// Placed is a container placed and committed.
type Placed struct {
	// ID and Name are the container's. On an error they are set when the
	// container got that far (the commit failed), else empty.
	ID, Name string
	// Decision is placement's; its Node is the node chosen: the best
	// candidate that holds the image.
	Decision placement.Decision
}

// PlacerStats are what a Placer has done since it started.
type PlacerStats struct {
	// Batches is how many raft entries it proposed, Placed how many
	// containers they committed.
	Batches, Placed int64
	// Verifying is the time spent confirming leadership before each
	// batch (PlaceBackend.VerifyLeader), Deciding the time spent deciding
	// (placement and the snapshot's reads), Committing the time entries
	// took to commit, summed over entries (which commit while others are
	// decided, and with each other).
	Verifying, Deciding, Committing time.Duration
}

// Placer is the leader's placement queue. Placement decides on a snapshot
// and the FSM does not check capacity, so no decision may count on room
// that another, not committed yet, took. Rather than one Run at a time
// from the snapshot to the commit (a decision on 1,000 nodes, then a raft
// commit, each), the Placer takes every call waiting, up to MaxBatch,
// decides them in order on one snapshot, each decision reserved
// (placement.Reserve) before the next, proposes them as one
// fsm.PlaceContainers entry, and answers each caller with its own outcome
// once it commits. Decisions stay serialised, in one goroutine; commits
// overlap them: while a batch commits the next is decided, on a snapshot
// plus what the batches still committing reserved (placeInFlight of them
// at most).
type Placer struct {
	b        PlaceBackend
	maxBatch int
	log      *slog.Logger
	// wake has a value when calls may be waiting.
	wake chan struct{}

	mu sync.Mutex
	// queue are the calls not taken into a batch yet, oldest first.
	queue   []*placeCall
	stopped bool
	stats   PlacerStats
}

// placeCall is one Place waiting for its answer.
type placeCall struct {
	ctx  context.Context
	req  PlaceRequest
	done chan placeAnswer // buffered: the Placer never waits on a caller
}

type placeAnswer struct {
	placed Placed
	err    error
}

func (c *placeCall) answer(p Placed, err error) { c.done <- placeAnswer{p, err} }

// NewPlacer returns a Placer; Run must run for Place to answer.
func NewPlacer(cfg PlacerConfig) *Placer {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxPlaceBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Placer{b: cfg.Backend, maxBatch: cfg.MaxBatch, log: cfg.Logger, wake: make(chan struct{}, 1)}
}

// refusedEarly is an error that refused a call before placement decided
// anything (this replica does not lead, the name is taken, the caller
// left or the scheduler stops): Run does not record it in the audit log.
type refusedEarly struct{ err error }

func (e *refusedEarly) Error() string { return e.err.Error() }
func (e *refusedEarly) Unwrap() error { return e.err }

// GRPCStatus is the refusal's status, for callers that return it as is.
func (e *refusedEarly) GRPCStatus() *status.Status { return status.Convert(e.err) }

func early(err error) error { return &refusedEarly{err: err} }

// Place queues req and waits for the batch that takes it to commit. The
// error is a gRPC status error: ResourceExhausted when no node can take
// the container, FailedPrecondition when no node that can holds its
// image, AlreadyExists for a name taken (by a committed container, one
// committing, or an earlier call of the same batch), Unavailable when this replica does
// not lead or stops, or the commit's error (stateError). A caller whose
// ctx ends while queued leaves the queue with ctx's error; once its batch
// has taken it, Place waits for the commit, bounded by the apply timeout,
// so that the caller knows whether its container exists.
func (p *Placer) Place(ctx context.Context, req PlaceRequest) (Placed, error) {
	c := &placeCall{ctx: ctx, req: req, done: make(chan placeAnswer, 1)}
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return Placed{}, early(errPlacerStopped)
	}
	p.queue = append(p.queue, c)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default: // already signalled
	}

	select {
	case a := <-c.done:
		return a.placed, a.err
	case <-ctx.Done():
	}
	p.mu.Lock()
	if i := slices.Index(p.queue, c); i >= 0 {
		p.queue = slices.Delete(p.queue, i, i+1)
		p.mu.Unlock()
		return Placed{}, early(status.FromContextError(ctx.Err()).Err())
	}
	p.mu.Unlock()
	a := <-c.done
	return a.placed, a.err
}

// errPlacerStopped answers the calls of a scheduler that stops.
var errPlacerStopped = status.Error(codes.Unavailable, "this scheduler is stopping: retry, another scheduler takes over as leader")

// placeInFlight is how many batches may be committing at once. With two,
// the next batch is decided, and proposed, while the last one commits:
// deciding and committing overlap instead of taking turns, and raft
// appends both in one write when they meet.
const placeInFlight = 2

// Run places the queued calls, batch after batch, until ctx ends; then
// it waits for the batches committing, and refuses the calls still
// queued and every later one. One goroutine runs it, for the Placer's
// life.
func (p *Placer) Run(ctx context.Context) {
	done := make(chan *flight, placeInFlight)
	var flying []*flight
	defer func() {
		for ; len(flying) > 0; flying = flying[1:] {
			p.finish(<-done)
		}
		p.stop()
	}()
	for {
		// With every slot taken, a wake-up waits in its channel until a
		// batch has committed.
		wake := p.wake
		if len(flying) == placeInFlight {
			wake = nil
		}
		select {
		case <-ctx.Done():
			return
		case f := <-done:
			p.finish(f)
			flying = slices.DeleteFunc(flying, func(g *flight) bool { return g == f })
		case <-wake:
		}
		for len(flying) < placeInFlight && ctx.Err() == nil {
			calls := p.take()
			if len(calls) == 0 {
				break
			}
			if f := p.decideBatch(ctx, calls, flying); f != nil {
				flying = append(flying, f)
				go p.commit(ctx, f, done)
			}
		}
	}
}

// take removes the oldest calls, up to maxBatch, from the queue.
func (p *Placer) take() []*placeCall {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := min(len(p.queue), p.maxBatch)
	batch := slices.Clone(p.queue[:n])
	// Shift rather than reslice, so that the queue's array does not keep
	// answered calls reachable.
	p.queue = slices.Delete(p.queue, 0, n)
	return batch
}

// stop refuses the queued calls and every later one.
func (p *Placer) stop() {
	p.mu.Lock()
	queued := p.queue
	p.queue, p.stopped = nil, true
	p.mu.Unlock()
	for _, c := range queued {
		c.answer(Placed{}, early(errPlacerStopped))
	}
}

// Stats returns what the Placer has done so far.
func (p *Placer) Stats() PlacerStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// decided is a call whose container is in a batch's entry.
type decided struct {
	call   *placeCall
	placed Placed
}

// flight is a batch proposed and not answered yet.
type flight struct {
	batch []decided
	cmd   *fsm.PlaceContainers
	// Set by commit: the entry's result and how long it took.
	v    any
	err  error
	took time.Duration
}

// committedIn reports whether snap holds f's entry: the FSM applies an
// entry whole, so one of its containers is enough to tell. (An entry
// that refused every container cannot be told from one not applied yet:
// its reservations count until it is answered, which may refuse room for
// a moment, never overcommit.)
func (f *flight) committedIn(snap *state.Snapshot) bool {
	for _, d := range f.batch {
		if _, ok := snap.ContainerByID(d.placed.ID); ok {
			return true
		}
	}
	return false
}

// decideBatch decides calls in order on one snapshot, each decision
// reserved before the next on top of what the batches still committing
// hold, and returns the flight to commit for those that found a node;
// nil when none did. Every other call is answered.
func (p *Placer) decideBatch(ctx context.Context, calls []*placeCall, flying []*flight) *flight {
	var verifying time.Duration
	start := time.Now()
	defer func() {
		p.mu.Lock()
		p.stats.Verifying += verifying
		p.stats.Deciding += time.Since(start) - verifying
		p.mu.Unlock()
	}()
	live := calls[:0]
	for _, c := range calls {
		if err := c.ctx.Err(); err != nil {
			c.answer(Placed{}, early(status.FromContextError(err).Err()))
			continue
		}
		live = append(live, c)
	}
	if len(live) == 0 {
		return nil
	}
	verifyStart := time.Now()
	err := p.b.VerifyLeader(ctx)
	verifying = time.Since(verifyStart)
	if err != nil {
		for _, c := range live {
			c.answer(Placed{}, early(stateError(err)))
		}
		return nil
	}
	snap := p.b.Snapshot()
	// The room open moves promised their destinations is taken, as is
	// the room of the batches still in flight.
	held := placement.Incoming(snap)
	names := make(map[string]bool, len(live))
	for _, f := range flying {
		counted := f.committedIn(snap)
		for _, d := range f.batch {
			names[d.placed.Name] = true
			if !counted {
				held.Add(d.placed.Decision.Node, d.call.req.Spec.Request)
			}
		}
	}
	// Every call of the batch is decided on one table read from the
	// snapshot, each decision reserved on it before the next.
	table := placement.NewTable(placement.Reserve(snap, held))
	f := &flight{cmd: &fsm.PlaceContainers{Containers: make([]fsm.NewContainer, 0, len(live))}}
	for _, c := range live {
		placed, err := decide(snap, table, names, c.req)
		if err != nil {
			c.answer(placed, err)
			continue
		}
		table.Add(placed.Decision.Node, c.req.Spec.Request)
		names[placed.Name] = true
		f.cmd.Containers = append(f.cmd.Containers, fsm.NewContainer{ID: placed.ID, Name: placed.Name, Spec: c.req.Spec, Node: placed.Decision.Node})
		f.batch = append(f.batch, decided{call: c, placed: placed})
	}
	if len(f.batch) == 0 {
		return nil
	}
	f.cmd.At = time.Now()
	return f
}

// commit proposes f's entry, waits for it, and hands f back to Run.
func (p *Placer) commit(ctx context.Context, f *flight, done chan<- *flight) {
	start := time.Now()
	f.v, f.err = p.b.Apply(ctx, f.cmd)
	f.took = time.Since(start)
	done <- f
}

// finish answers the calls of a committed (or failed) flight.
func (p *Placer) finish(f *flight) {
	outcomes, ok := f.v.([]fsm.PlaceOutcome)
	err := f.err
	if err == nil && (!ok || len(outcomes) != len(f.batch)) {
		err = fmt.Errorf("placement of %d containers answered %T of %d", len(f.batch), f.v, len(outcomes))
	}
	var placed int64
	for i, d := range f.batch {
		switch {
		case err != nil:
			d.call.answer(d.placed, stateError(err))
		case outcomes[i].Err != nil:
			d.call.answer(d.placed, stateError(outcomes[i].Err))
		default:
			placed++
			d.call.answer(d.placed, nil)
		}
	}
	if err != nil {
		p.log.Warn("commit a batch of placements", "containers", len(f.batch), "err", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stats.Batches++
	p.stats.Placed += placed
	p.stats.Committing += f.took
}

// decide places one call's container on view (the batch's snapshot with
// the batch's earlier decisions reserved) and names it. names are the
// names the batch's earlier decisions took.
func decide(snap *state.Snapshot, view placement.State, names map[string]bool, req PlaceRequest) (Placed, error) {
	if req.Name != "" {
		if _, ok := snap.ContainerByName(req.Name); ok || names[req.Name] {
			return Placed{}, early(status.Errorf(codes.AlreadyExists, "container name %q is taken in the cluster: remove it or choose another --name", req.Name))
		}
	}
	preq := placement.Request{Spec: req.Spec, Algorithm: req.Algorithm}
	d, err := placement.Place(view, preq)
	if err != nil {
		return Placed{}, placementError(err)
	}
	node := preferImageHolder(snap, d, req.Spec.Image)
	if node == "" && d.Feasible > len(d.Candidates) {
		// The best few lack the image: look among every feasible node.
		preq.Explain = true
		all, _ := placement.Place(view, preq)
		node = preferImageHolder(snap, all, req.Spec.Image)
	}
	if node == "" {
		return Placed{}, status.Errorf(codes.FailedPrecondition,
			"image %s is on no node that can run the container: import it with `godwit image import FILE --node NODE`", req.Spec.Image)
	}
	d.Node = node
	id := newContainerID()
	return Placed{ID: id, Name: cmp.Or(req.Name, "c-"+id[:8]), Decision: d}, nil
}

// placeError is what Run returns when Place failed: recorded in the audit
// log under the container's name (the one it was given, else the one it
// got), unless the call was refused before placement decided anything,
// which Run never recorded.
func (a *clusterAPI) placeError(ctx context.Context, name string, placed Placed, err error) error {
	if re, ok := errors.AsType[*refusedEarly](err); ok {
		return re.err
	}
	return a.audited(ctx, "run", cmp.Or(placed.Name, name), err)
}

// schedulerBackend is a Scheduler as its Placer's backend.
type schedulerBackend struct{ s *Scheduler }

var _ PlaceBackend = schedulerBackend{}

func (b schedulerBackend) VerifyLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, b.s.cfg.Timing.ApplyTimeout)
	defer cancel()
	return b.s.raft.LeaderCaughtUp(ctx)
}

func (b schedulerBackend) Snapshot() *state.Snapshot { return b.s.store.Snapshot() }

func (b schedulerBackend) Apply(ctx context.Context, cmd fsm.Command) (any, error) {
	return b.s.apply(ctx, cmd)
}
