package coordinator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/migrate"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// A node drain, as the leader drives it:
//
//	Drainer.Start: plan every container of the node (placement with the
//	  source excluded and its CPU features required, the room shared among
//	  them) ── any cannot move ──▶ refused (DrainRefusedError), nothing changes
//	  └─ all can ──▶ fsm.StartDrain (the node: draining)
//	Drainer.Lead, for every running drain, on each change of the state
//	  and every DrainConfig.Every:
//	    node empty, no move in flight ──▶ EndDrain done
//	    deadline passed ──▶ no new move; stop: stop what is not moving;
//	                        once no move is in flight ──▶ EndDrain failed
//	    otherwise ──▶ start moves (coordinator, DrainNode set) while fewer
//	                  than MaxParallel are in flight; a container whose
//	                  moves failed Attempts times is blocked for good, and
//	                  the drain ends failed once only such are left
//	    UpdateDrain with the counts and the blocked containers
//
// Everything a pass decides on is read from the raft state: the drain's
// record, the containers on the node, and the migrations of the drain
// (open ones in flight, done ones moved, aborted ones its failed
// attempts). A new leader's pass therefore goes on with every running
// drain from its record alone, after the coordinator settled the moves
// the previous leader left open. The operator's uncordon (or cordon)
// ends a drain in the FSM; a pass looks at running drains only, so it
// starts no move for it again, and the moves in flight finish.

const (
	// DefaultDrainAttempts is how many moves of one container a drain
	// tries before it blocks the container for good: a move that failed
	// may have met a passing fault (a node busy, a connection reset), one
	// that failed three times will fail again.
	DefaultDrainAttempts = 3
	// DefaultDrainEvery is how often the leader looks at each running
	// drain even when the state did not change: for its deadline, and to
	// retry a container that found no room.
	DefaultDrainEvery = time.Second
)

var (
	// ErrDrainRefused is what every *DrainRefusedError matches: some
	// container of the node cannot move anywhere.
	ErrDrainRefused = errors.New("drain refused")
)

// Mover starts a container's move and returns its record once it is
// committed to raft; the Coordinator is one. It refuses with
// ErrNotLeading outside a leadership term.
type Mover interface {
	Start(ctx context.Context, req Request) (*state.Migration, error)
}

// Stopper stops a container at a drain's deadline (--on-deadline stop).
type Stopper interface {
	// Stop records in raft that c is desired stopped, then has its node
	// stop it, the call fenced by c's generation. An error once the
	// desired state is recorded leaves the stopping to the leader's
	// enforcement of the desired state; the drain asks again only for a
	// container still desired running.
	Stop(ctx context.Context, c *state.Container) error
}

// Checkpointer checkpoints a container away from a draining node at its
// deadline (--on-deadline checkpoint).
type Checkpointer interface {
	// CheckpointAway has c's node checkpoint it (stopping it) and push
	// the checkpoint to holder, then records the container there
	// (fsm.CheckpointAway), stopped, for `godwit start` to restore; it
	// returns the checkpoint's ID. Every call is fenced by c's
	// generation. Repeated after a failure, it goes on from the
	// checkpoint already taken.
	CheckpointAway(ctx context.Context, c *state.Container, holder *state.Node) (string, error)
}

// DrainConfig wires a Drainer.
type DrainConfig struct {
	Store      *state.Store
	Apply      Applier
	Moves      Mover
	Stop       Stopper
	Checkpoint Checkpointer
	Log        *slog.Logger
	// Attempts is how many moves of one container a drain tries;
	// DefaultDrainAttempts when 0.
	Attempts int
	// Every is how often each running drain is looked at without a
	// change of the state; DefaultDrainEvery when 0.
	Every time.Duration
	// Now is the leader's clock; time.Now when nil.
	Now func() time.Time
}

// DrainRequest asks to drain a node.
type DrainRequest struct {
	Node string
	// Deadline is how long the drain may take from its start; 0 for no
	// deadline.
	Deadline time.Duration
	// OnDeadline is what happens at the deadline; with a deadline, ""
	// means OnDeadlineFail.
	OnDeadline  state.DeadlinePolicy
	MaxParallel int
	Requested   state.Requester
}

// Blocked is a container that cannot move, and why.
type Blocked struct {
	ID     string
	Name   string
	Reason string
}

// DrainRefusedError is Drainer.Start's refusal when some container of
// the node cannot move: nothing was cordoned.
type DrainRefusedError struct {
	Node string
	// Containers is how many containers are on the node.
	Containers int
	// Blocked are the containers that cannot move, by name.
	Blocked []Blocked
}

// Is makes errors.Is(err, ErrDrainRefused) true.
func (e *DrainRefusedError) Is(target error) bool { return target == ErrDrainRefused }

// Error lists each container that cannot move and why, one per line.
func (e *DrainRefusedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %d of the %d containers on node %s cannot move, so nothing was cordoned; make room or remove them, then drain again:",
		ErrDrainRefused, len(e.Blocked), e.Containers, e.Node)
	for _, c := range e.Blocked {
		fmt.Fprintf(&b, "\n  %s: %s", c.Name, c.Reason)
	}
	return b.String()
}

// Drainer drives the leader's node drains.
type Drainer struct {
	cfg DrainConfig
	log *slog.Logger

	mu sync.Mutex
	// lead is the current leadership term's context; nil between terms.
	lead context.Context
	// kick asks the running Lead for a pass now.
	kick chan struct{}
}

// NewDrainer returns a drainer that drives nothing until Lead.
func NewDrainer(cfg DrainConfig) *Drainer {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Attempts <= 0 {
		cfg.Attempts = DefaultDrainAttempts
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultDrainEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Drainer{cfg: cfg, log: cfg.Log, kick: make(chan struct{}, 1)}
}

// Start checks that every container of the node can move somewhere and,
// if so, records the drain (the node becomes draining) and has Lead start
// moving them at once; it returns the stored record. When some cannot
// move, it refuses with a *DrainRefusedError and changes nothing. Other
// refusals: ErrNotLeading outside a term, ErrInvalid for a request that
// makes no sense, state.ErrNotFound
// for an unknown node, and the FSM's (fsm.ErrDrainRunning,
// fsm.ErrNodeDown).
func (d *Drainer) Start(ctx context.Context, req DrainRequest) (*state.Drain, error) {
	d.mu.Lock()
	lead := d.lead
	d.mu.Unlock()
	if lead == nil || lead.Err() != nil {
		return nil, ErrNotLeading
	}
	if err := req.check(); err != nil {
		return nil, err
	}
	snap := d.cfg.Store.Snapshot()
	if _, ok := snap.Node(req.Node); !ok {
		return nil, fmt.Errorf("node %q: %w: see `godwit node ls`", req.Node, state.ErrNotFound)
	}
	if dr, ok := snap.Drain(req.Node); ok && dr.Running() {
		return nil, fmt.Errorf("drain node %q: %w since %s: follow it with `godwit node drain %s --watch`, end it with `godwit node uncordon %s`",
			req.Node, fsm.ErrDrainRunning, dr.Started.Format(time.RFC3339), req.Node, req.Node)
	}
	p := planDrain(snap, req.Node, nil)
	if len(p.blocked) > 0 {
		return nil, &DrainRefusedError{Node: req.Node, Containers: p.containers, Blocked: p.blockedList()}
	}
	now := d.cfg.Now()
	cmd := &fsm.StartDrain{Node: req.Node, OnDeadline: req.OnDeadline, MaxParallel: req.MaxParallel, Requested: req.Requested, At: now}
	if req.Deadline > 0 {
		cmd.Deadline = now.Add(req.Deadline)
		if cmd.OnDeadline == "" {
			cmd.OnDeadline = state.OnDeadlineFail
		}
	}
	v, err := d.cfg.Apply.Apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	d.log.Info("drain started", "node", req.Node, "containers", p.containers, "max_parallel", req.MaxParallel,
		"deadline", cmd.Deadline, "on_deadline", cmd.OnDeadline)
	select {
	case d.kick <- struct{}{}:
	default:
	}
	stored, _ := v.(*state.Drain)
	if stored == nil {
		stored, _ = d.cfg.Store.Snapshot().Drain(req.Node)
	}
	return stored, nil
}

func (r DrainRequest) check() error {
	switch {
	case r.Node == "":
		return fmt.Errorf("%w: name the node to drain", ErrInvalid)
	case r.MaxParallel < 1:
		return fmt.Errorf("%w: --max-parallel %d: move at least one container at a time", ErrInvalid, r.MaxParallel)
	case r.Deadline < 0:
		return fmt.Errorf("%w: --deadline %s is negative", ErrInvalid, r.Deadline)
	case r.Deadline == 0 && r.OnDeadline != "":
		return fmt.Errorf("%w: --on-deadline %s without a --deadline: give both, or neither", ErrInvalid, r.OnDeadline)
	case r.OnDeadline != "" && !r.OnDeadline.Known():
		return fmt.Errorf("%w: --on-deadline %q: want %s, %s or %s", ErrInvalid, r.OnDeadline,
			state.OnDeadlineCheckpoint, state.OnDeadlineStop, state.OnDeadlineFail)
	}
	return nil
}

// Lead drives every running drain for one leadership term, ctx's: a
// pass over them at once (a previous leader's drains go on from their
// records), then after every change of the state, every Every, and
// after Start, until ctx ends.
func (d *Drainer) Lead(ctx context.Context) {
	d.mu.Lock()
	d.lead = ctx
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.lead = nil
		d.mu.Unlock()
	}()
	t := time.NewTicker(d.cfg.Every)
	defer t.Stop()
	for {
		// Taken before the pass: a write during it wakes the next.
		_, changed, _ := d.cfg.Store.EventsSince(math.MaxUint64)
		d.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-d.kick:
		case <-t.C:
		}
	}
}

// pass takes every running drain one step further.
func (d *Drainer) pass(ctx context.Context) {
	for _, dr := range d.cfg.Store.Snapshot().Drains() {
		if ctx.Err() != nil {
			return
		}
		if dr.Running() {
			d.step(ctx, dr)
		}
	}
}

// drainFacts is what the raft state says of a running drain now.
type drainFacts struct {
	dr *state.Drain
	// left are the containers on the node.
	left []*state.Container
	// inFlight are the drain's open migrations.
	inFlight int
	// moved counts the drain's done moves; failures its aborted ones by
	// container, lastError the latest abort's error by container.
	moved     int
	failures  map[string]int
	lastError map[string]string
}

func (f *drainFacts) failed() int {
	n := 0
	for _, v := range f.failures {
		n += v
	}
	return n
}

// factsOf reads dr's progress from snap. A migration counts for the
// drain when it names the node as DrainNode and, once ended, was created
// since the drain started (an earlier drain's moves are not this one's);
// an open one counts whatever its age, as fsm.CreateMigration counts it
// against MaxParallel.
func factsOf(snap *state.Snapshot, dr *state.Drain) *drainFacts {
	f := &drainFacts{dr: dr, left: snap.ContainersOn(dr.Node), failures: map[string]int{}, lastError: map[string]string{}}
	for _, m := range snap.Migrations(state.MigrationFilter{DrainNode: dr.Node}) { // newest first
		switch {
		case m.Open():
			f.inFlight++
		case m.Created.Before(dr.Started):
		case m.Phase == state.MigrationDone:
			f.moved++
		case m.Phase == state.MigrationAborted:
			f.failures[m.Container]++
			if _, ok := f.lastError[m.Container]; !ok {
				f.lastError[m.Container] = m.Error
			}
		}
	}
	return f
}

// step looks at one running drain: ends it, applies its deadline, or
// starts what moves it may; then records its progress.
func (d *Drainer) step(ctx context.Context, dr *state.Drain) {
	log := d.log.With("drain", dr.Node)
	snap := d.cfg.Store.Snapshot()
	f := factsOf(snap, dr)
	if len(f.left) == 0 && f.inFlight == 0 {
		d.end(ctx, log, f, nil, state.DrainDone, "")
		return
	}
	// Containers whose moves failed Attempts times are not tried again.
	exhausted := map[string]string{}
	for _, c := range f.left {
		if _, moving := snap.OpenMigrationOf(c.ID); !moving && f.failures[c.ID] >= d.cfg.Attempts {
			exhausted[c.ID] = fmt.Sprintf("its move failed %d times, the last time: %s; the drain does not try it again: "+
				"`godwit migration ls -a` shows the attempts", f.failures[c.ID], f.lastError[c.ID])
		}
	}
	p := planDrain(snap, dr.Node, exhausted)
	now := d.cfg.Now()
	if !dr.Deadline.IsZero() && !now.Before(dr.Deadline) {
		if d.atDeadline(ctx, log, snap, f, p) {
			return
		}
		d.record(ctx, log, f, p)
		return
	}
	started := 0
	for _, mv := range p.moves {
		if f.inFlight+started >= dr.MaxParallel {
			break
		}
		m, err := d.cfg.Moves.Start(ctx, Request{Container: mv.ctr.ID, To: mv.dest, Reason: "drain " + dr.Node,
			DrainNode: dr.Node, Requested: dr.Requested,
			WhyDestination: "the drain's plan: placement over the nodes left, sharing their room among the node's containers"})
		if errors.Is(err, ErrNotLeading) || ctx.Err() != nil {
			return // the term ends: the next leader goes on
		}
		if err != nil {
			// Not an attempt (nothing was recorded); tried again next pass.
			p.block(mv.ctr, fmt.Sprintf("its move to %s could not start: %v", mv.dest, err))
			log.Warn("drain: start a move", "container", mv.ctr.Name, "destination", mv.dest, "err", err)
			continue
		}
		started++
		log.Info("drain: moving a container", "container", mv.ctr.Name, "destination", mv.dest, "migration", m.ID, "strategy", m.Strategy)
	}
	if f.inFlight == 0 && started == 0 && len(exhausted) > 0 &&
		(dr.Deadline.IsZero() || dr.OnDeadline != state.OnDeadlineStop) {
		// Nothing moves and never will: the blocked-for-good stay.
		var gaveUp []string
		for _, id := range slices.Sorted(maps.Keys(exhausted)) {
			gaveUp = append(gaveUp, fmt.Sprintf("%s (its move failed %d times, the last time: %s)", p.names[id], f.failures[id], f.lastError[id]))
		}
		d.end(ctx, log, f, p, state.DrainFailed, fmt.Sprintf("%d %s could not move: %s; %s",
			len(gaveUp), plural(len(gaveUp), "container", "containers"), strings.Join(gaveUp, ", "), leftRunning(f)))
		return
	}
	d.record(ctx, log, f, p)
}

// atDeadline applies the policy of a drain whose deadline passed, and
// reports whether it ended the drain. No move starts any more; the ones
// in flight finish (or abort) first, so that the record ends truthful.
func (d *Drainer) atDeadline(ctx context.Context, log *slog.Logger, snap *state.Snapshot, f *drainFacts, p *drainPlan) bool {
	dr := f.dr
	var still []*state.Container // not moving
	for _, c := range f.left {
		if _, moving := snap.OpenMigrationOf(c.ID); !moving {
			still = append(still, c)
		}
	}
	if dr.OnDeadline == state.OnDeadlineCheckpoint && d.checkpointAway(ctx, log, snap, dr.Node, still, p) {
		return false // the state changed: the next pass looks again
	}
	if dr.OnDeadline == state.OnDeadlineStop {
		for _, c := range still {
			if c.Desired != state.DesiredRunning || !runs(c) {
				continue
			}
			if err := d.cfg.Stop.Stop(ctx, c); err != nil {
				log.Warn("drain deadline: stop a container", "container", c.Name, "err", err)
				p.block(c, fmt.Sprintf("the deadline passed and stopping it failed: %v; tried again shortly", err))
				continue
			}
			log.Info("drain deadline: container stopped", "container", c.Name)
		}
	}
	if f.inFlight > 0 {
		return false
	}
	switch {
	case len(f.left) == 0:
		d.end(ctx, log, f, p, state.DrainDone, "")
	case dr.OnDeadline == state.OnDeadlineStop:
		for _, c := range snap.ContainersOn(dr.Node) {
			if c.Desired == state.DesiredRunning && runs(c) {
				return false // its stop is not recorded yet
			}
		}
		d.end(ctx, log, f, p, state.DrainStopped, fmt.Sprintf("the deadline passed with %d %s on the node (--on-deadline stop): %s stay there, stopped; "+
			"start them with `godwit start NAME` after the maintenance", len(f.left), plural(len(f.left), "container", "containers"), names(snap, ids(f.left))))
	default:
		d.end(ctx, log, f, p, state.DrainFailed, fmt.Sprintf("the deadline passed with %d %s on the node (--on-deadline %s): %s",
			len(f.left), plural(len(f.left), "container", "containers"), dr.OnDeadline, leftRunning(f)))
	}
	return true
}

// checkpointAway applies the checkpoint policy to the containers still on
// a drained node past its deadline: each that runs (or that an earlier
// try checkpointed and could not keep elsewhere) is checkpointed and
// kept on another node (Checkpointer). It reports whether it moved any;
// one that could not go is blocked with why, and tried again.
func (d *Drainer) checkpointAway(ctx context.Context, log *slog.Logger, snap *state.Snapshot, node string, still []*state.Container, p *drainPlan) bool {
	src, ok := snap.Node(node)
	if !ok {
		return false
	}
	moved := false
	for _, c := range still {
		if c.Desired != state.DesiredRunning || (c.Reported != state.ReportedRunning && c.Reported != state.ReportedCheckpointed) {
			continue
		}
		holder, why := checkpointHolder(snap, src, c)
		if holder == nil {
			p.block(c, "the deadline passed and no other node can keep its checkpoint: "+why)
			continue
		}
		id, err := d.cfg.Checkpoint.CheckpointAway(ctx, c, holder)
		if err != nil {
			log.Warn("drain deadline: checkpoint a container away", "container", c.Name, "holder", holder.Name, "err", err)
			p.block(c, fmt.Sprintf("the deadline passed and keeping its checkpoint on %s failed: %v; tried again shortly", holder.Name, err))
			continue
		}
		log.Info("drain deadline: container checkpointed away", "container", c.Name, "holder", holder.Name, "checkpoint", id)
		moved = true
	}
	return moved
}

// checkpointHolder is the node that keeps c's checkpoint, taken on src:
// placement's choice among the other alive, schedulable nodes that hold
// its image (a node restores a checkpoint only from the image it was
// taken from) and have every CPU feature src has; room is not needed
// until the container is started. Nil, and why, when none can.
func checkpointHolder(snap *state.Snapshot, src *state.Node, c *state.Container) (*state.Node, string) {
	spec := c.Spec
	spec.Node = ""
	spec.Request = state.Resources{} // stopped, it holds no room
	cpu := src.CPU
	var exclude []string
	for _, n := range snap.Nodes() {
		if n.Name != src.Name && !snap.HasImage(n.Name, spec.Image) {
			exclude = append(exclude, n.Name)
		}
	}
	d, err := placement.Place(snap, placement.Request{Spec: spec, Exclude: append(exclude, src.Name), RequireCPU: &cpu})
	if err != nil {
		var none *placement.NoNodeError
		if errors.As(err, &none) {
			return nil, fmt.Sprintf("none holds image %s, or: %s", spec.Image, rejections(none, src.Name))
		}
		return nil, err.Error()
	}
	n, _ := snap.Node(d.Node)
	return n, ""
}

// leftRunning says what the containers left do after a failed drain.
func leftRunning(f *drainFacts) string {
	return fmt.Sprintf("what is left keeps running on %s, which stays cordoned: `godwit node drain %s` again, or `godwit node uncordon %s`",
		f.dr.Node, f.dr.Node, f.dr.Node)
}

// record stores the drain's progress when it changed; p nil blocks
// nothing.
func (d *Drainer) record(ctx context.Context, log *slog.Logger, f *drainFacts, p *drainPlan) {
	dr := f.dr
	var blocked map[string]string
	if p != nil && len(p.blocked) > 0 {
		blocked = p.blocked
	}
	if dr.Left == len(f.left) && dr.Moved == f.moved && dr.Failed == f.failed() && maps.Equal(dr.Blocked, blocked) {
		return
	}
	if _, err := d.cfg.Apply.Apply(ctx, &fsm.UpdateDrain{Node: dr.Node, Blocked: blocked, Left: len(f.left), Moved: f.moved,
		Failed: f.failed(), At: d.cfg.Now()}); err != nil && ctx.Err() == nil {
		log.Warn("record a drain's progress", "err", err)
	}
}

// end records the drain's last progress, then ends it with status: the
// ended record keeps the final counts and what was blocked.
func (d *Drainer) end(ctx context.Context, log *slog.Logger, f *drainFacts, p *drainPlan, status state.DrainStatus, reason string) {
	dr := f.dr
	if status == state.DrainDone && dr.Checkpointed > 0 {
		reason = fmt.Sprintf("the deadline passed: %d %s checkpointed to other nodes (--on-deadline checkpoint), where `godwit start NAME` restores each",
			dr.Checkpointed, plural(dr.Checkpointed, "container was", "containers were"))
	}
	d.record(ctx, log, f, p)
	if _, err := d.cfg.Apply.Apply(ctx, &fsm.EndDrain{Node: dr.Node, Status: status, Reason: reason, At: d.cfg.Now()}); err != nil {
		if ctx.Err() == nil {
			log.Warn("end a drain", "status", status, "err", err)
		}
		return
	}
	log.Info("drain ended", "status", status, "reason", reason)
}

// drainPlan is where each container of a node would go now.
type drainPlan struct {
	// containers counts the containers on the node.
	containers int
	// moves are the containers that can move now, each with a
	// destination, in the order to start them: the largest first.
	moves []plannedMove
	// blocked maps the ID of each container that cannot move now to why;
	// names maps IDs to names.
	blocked map[string]string
	names   map[string]string
}

type plannedMove struct {
	ctr  *state.Container
	dest string
}

func (p *drainPlan) block(c *state.Container, why string) {
	p.blocked[c.ID] = why
	p.names[c.ID] = c.Name
}

// blockedList is blocked by container name.
func (p *drainPlan) blockedList() []Blocked {
	out := make([]Blocked, 0, len(p.blocked))
	for id, why := range p.blocked {
		out = append(out, Blocked{ID: id, Name: p.names[id], Reason: why})
	}
	slices.SortFunc(out, func(a, b Blocked) int { return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.ID, b.ID)) })
	return out
}

// planDrain chooses a destination for every container on node that can
// move now, as placement would with the node excluded and its CPU's
// features required, among the nodes that share a migration strategy
// with it. The room is shared: each container is placed on the state
// with what the open moves (any, not only the drain's) and the
// containers planned before it take (placement.Reserve), the largest
// first, so that two containers never count on the same room. A
// container with an open migration is moving already and is neither
// planned nor blocked; one in exhausted is blocked with that reason.
func planDrain(snap *state.Snapshot, node string, exhausted map[string]string) *drainPlan {
	ctrs := snap.ContainersOn(node)
	p := &drainPlan{containers: len(ctrs), blocked: map[string]string{}, names: map[string]string{}}
	src, ok := snap.Node(node)
	if !ok {
		return p
	}
	room := placement.Incoming(snap)
	var candidates []*state.Container
	for _, c := range ctrs {
		if _, moving := snap.OpenMigrationOf(c.ID); moving {
			continue
		}
		if why, ok := exhausted[c.ID]; ok {
			p.block(c, why)
			continue
		}
		if why := unmovable(c); why != "" {
			p.block(c, why)
			continue
		}
		candidates = append(candidates, c)
	}
	// First fit, largest first: a small container never takes the room
	// that only a large one could use.
	slices.SortStableFunc(candidates, func(a, b *state.Container) int {
		ra, rb := placement.EffectiveRequest(a.Spec.Request), placement.EffectiveRequest(b.Spec.Request)
		return cmp.Or(cmp.Compare(rb.MemoryBytes, ra.MemoryBytes), cmp.Compare(rb.MilliCPU, ra.MilliCPU), strings.Compare(a.Name, b.Name))
	})
	view := placement.Reserve(snap, room)
	for _, c := range candidates {
		dest, why := drainDestination(snap, view, src, c)
		if dest == "" {
			p.block(c, why)
			continue
		}
		room.Add(dest, c.Spec.Request)
		p.moves = append(p.moves, plannedMove{ctr: c, dest: dest})
	}
	return p
}

// unmovable says why c cannot be moved live at all, or "".
func unmovable(c *state.Container) string {
	switch {
	case c.Spec.Node != "":
		return fmt.Sprintf("it is pinned to node %s (run --node): a drain does not move it; move it yourself with `godwit migrate %s --to NODE`, or remove it",
			c.Spec.Node, c.Name)
	case c.Reported == state.ReportedLost:
		return fmt.Sprintf("it is lost (its node no longer has it): there is nothing to move; `godwit rm -f %s` forgets it", c.Name)
	case !runs(c):
		return fmt.Sprintf("it is %s: a drain moves running containers live; start it or remove it (`godwit rm %s`) first", c.Reported, c.Name)
	}
	return ""
}

// runs reports whether c's node reports it running.
func runs(c *state.Container) bool { return c.Reported == state.ReportedRunning }

// drainDestination is the best node for c on view (the snapshot with the
// room already promised) that shares a migration strategy with src, or ""
// and why none is.
func drainDestination(snap *state.Snapshot, view placement.State, src *state.Node, c *state.Container) (string, string) {
	spec := c.Spec
	spec.Node = ""
	cpu := src.CPU
	req := placement.Request{Spec: spec, Exclude: []string{src.Name}, RequireCPU: &cpu}
	d, err := placement.Place(view, req)
	if err != nil {
		var none *placement.NoNodeError
		if !errors.As(err, &none) {
			return "", err.Error()
		}
		why := "no node can take it: " + rejections(none, src.Name)
		if _, alone := placement.Place(snap, req); alone == nil {
			why = "no room is left for it counting the moves in flight and the node's other containers: " + rejections(none, src.Name)
		}
		return "", why
	}
	var unsupported []string
	for _, cand := range d.Candidates {
		dst, _ := snap.Node(cand.Node)
		if _, err := migrate.Choose(migrate.Auto, capabilities(src), capabilities(dst), false); err != nil {
			unsupported = append(unsupported, cand.Node)
			continue
		}
		return cand.Node, ""
	}
	return "", fmt.Sprintf("the nodes with room for it (%s) share no migration strategy with node %s: `godwit node inspect` shows each node's strategies",
		strings.Join(unsupported, ", "), src.Name)
}

// maxReasonNodes is how many nodes' rejections a blocked container's
// reason lists: it is one line of an event.
const maxReasonNodes = 5

// rejections lists why each node refused, on one line, the source left
// out.
func rejections(e *placement.NoNodeError, source string) string {
	var parts []string
	others := 0
	for _, r := range e.Rejected {
		if r.Node == source {
			continue
		}
		if len(parts) == maxReasonNodes {
			others++
			continue
		}
		parts = append(parts, fmt.Sprintf("%s: %s: %s", r.Node, r.Filter, r.Reason))
	}
	if len(parts) == 0 {
		return "the cluster has no other node; add one with `godwit agent --join`"
	}
	if others > 0 {
		parts = append(parts, fmt.Sprintf("and %d more nodes", others))
	}
	return strings.Join(parts, "; ")
}

func ids(cs []*state.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.ID
	}
	return out
}

// names is the containers' names, comma-separated.
func names(snap *state.Snapshot, ids []string) string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if c, ok := snap.ContainerByID(id); ok {
			out = append(out, c.Name)
		} else {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
