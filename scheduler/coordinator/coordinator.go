package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/godwit/godwit/migrate"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// settleEvery is how often the leader looks again at the open
// migrations no driver of its own runs (held, or committed without the
// destination's confirmation) and settles them, and at the destinations
// that owe an aborted migration's cleanup.
const settleEvery = 5 * time.Second

var (
	// ErrNotLeading: the coordinator drives nothing outside a leadership
	// term (Lead).
	ErrNotLeading = errors.New("this scheduler does not lead")
	// ErrInvalid: the request cannot be carried out as asked.
	ErrInvalid = errors.New("invalid migration request")
	// ErrNoDestination: no node can take the container.
	ErrNoDestination = errors.New("no destination")
)

// Applier commits a command through raft on the leader and returns the
// FSM's answer.
type Applier interface {
	Apply(ctx context.Context, cmd fsm.Command) (any, error)
}

// Sides reaches the agents' migration APIs; the connections it uses must
// carry Fence's interceptors, so that a call made after the leadership
// ended fails instead of acting.
type Sides interface {
	// Side is the agent at addr, as both migrate.Source and
	// migrate.Destination, for a move that started at the container's
	// generation: every call carries it, and the agent refuses it once the
	// cluster has moved the container past it.
	Side(addr string, generation uint64) (Side, error)
}

// Side is one agent in a migration.
type Side interface {
	migrate.Source
	migrate.Destination
}

// Config wires a Coordinator.
type Config struct {
	Store *state.Store
	Apply Applier
	Sides Sides
	Log   *slog.Logger
	// Drive tunes the engine (step and abort timeouts); its hooks are the
	// coordinator's.
	Drive migrate.DriveOptions
	// Unknown reports whether an apply error leaves it unknown whether the
	// command committed (the leadership was lost during it).
	Unknown func(error) bool
}

// Request asks for a move.
type Request struct {
	// Container is a container name, ID or unique ID prefix.
	Container string
	// To is the destination node; empty lets placement choose.
	To               string
	Strategy         migrate.Strategy
	MinimizeDowntime bool
	// Reason is why: "operator", "drain NODE", "balancer".
	Reason    string
	DrainNode string
	Requested state.Requester
	// WhyDestination explains To when the caller chose it (a drain's
	// plan); empty: "asked for (--to)".
	WhyDestination string
}

// Coordinator drives the leader's migrations.
type Coordinator struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// lead is the current leadership term's context; nil between terms.
	lead context.Context
	runs map[string]*run
	wg   sync.WaitGroup
}

// run is a migration this leader drives now.
type run struct {
	cancel context.CancelFunc
	feed   *feed
}

// New returns a coordinator that drives nothing until Lead.
func New(cfg Config) *Coordinator {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Unknown == nil {
		cfg.Unknown = func(error) bool { return false }
	}
	return &Coordinator{cfg: cfg, log: cfg.Log, runs: map[string]*run{}}
}

// Lead drives migrations for one leadership term, ctx's: it first settles
// every open migration from its record (a previous leader's), then keeps
// settling those no driver runs, until ctx ends; then it waits for its
// drivers, which stop acting at once.
func (c *Coordinator) Lead(ctx context.Context) {
	c.mu.Lock()
	c.lead = ctx
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.lead = nil
		c.mu.Unlock()
		c.wg.Wait()
	}()
	t := time.NewTicker(settleEvery)
	defer t.Stop()
	for {
		c.settleOpen(ctx)
		c.cleanDestinations(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Start checks the request, chooses the destination and the strategy,
// records the migration and starts driving it; it returns the record at
// once.
func (c *Coordinator) Start(ctx context.Context, req Request) (*state.Migration, error) {
	c.mu.Lock()
	lead := c.lead
	c.mu.Unlock()
	if lead == nil || lead.Err() != nil {
		return nil, ErrNotLeading
	}
	snap := c.cfg.Store.Snapshot()
	m, err := plan(snap, req)
	if err != nil {
		return nil, err
	}
	m.ID = newMigrationID()
	v, err := c.cfg.Apply.Apply(ctx, &fsm.CreateMigration{
		ID: m.ID, Container: m.Container, Source: m.Source, Dest: m.Dest, Strategy: m.Strategy,
		Requested: m.Requested, Reason: m.Reason, WhyDestination: m.WhyDestination, WhyStrategy: m.WhyStrategy,
		DrainNode: m.DrainNode, At: time.Now(),
	})
	if err != nil {
		return nil, err
	}
	if stored, ok := v.(*state.Migration); ok {
		m = stored
	}
	c.goDrive(lead, m)
	return m, nil
}

// plan chooses where and how to move the container: the record to
// create, without its ID.
func plan(snap *state.Snapshot, req Request) (*state.Migration, error) {
	ctr, err := snap.Container(req.Container)
	if err != nil {
		return nil, err
	}
	if other, ok := snap.OpenMigrationOf(ctr.ID); ok {
		return nil, fmt.Errorf("%w: container %s is already moving (migration %s, %s, from %s to %s): wait for it, or `godwit migration cancel %s`",
			ErrInvalid, ctr.Name, other.ID, other.Phase, other.Source, other.Dest, other.ID)
	}
	if ctr.Reported != state.ReportedRunning {
		return nil, fmt.Errorf("%w: container %s is %s, not running: live migration moves running containers", ErrInvalid, ctr.Name, ctr.Reported)
	}
	src, ok := snap.Node(ctr.Node)
	if !ok || src.Health != state.HealthAlive {
		return nil, fmt.Errorf("%w: container %s is on node %s, which is not alive: a migration needs its source", ErrInvalid, ctr.Name, ctr.Node)
	}
	dst, whyDest, err := destination(snap, ctr, src, req.To)
	if err != nil {
		return nil, err
	}
	if req.WhyDestination != "" {
		whyDest = req.WhyDestination
	}
	want := req.Strategy
	if want == "" {
		want = migrate.Auto
	}
	choice, err := migrate.Choose(want, capabilities(src), capabilities(dst), req.MinimizeDowntime)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot move %s from %s to %s: %w; nothing was stopped: pick another --strategy, or another --to",
			ErrInvalid, ctr.Name, src.Name, dst.Name, err)
	}
	return &state.Migration{
		Container:      ctr.ID,
		ContainerName:  ctr.Name,
		Source:         src.Name,
		Dest:           dst.Name,
		Strategy:       string(choice.Strategy),
		Generation:     ctr.Generation,
		Requested:      req.Requested,
		Reason:         req.Reason,
		DrainNode:      req.DrainNode,
		WhyDestination: whyDest,
		WhyStrategy:    choice.Reason,
	}, nil
}

// destination is the named node, checked, or placement's choice among the
// nodes whose CPU has every feature the source's has, counting the room
// other moves in flight promised.
func destination(snap *state.Snapshot, ctr *state.Container, src *state.Node, to string) (*state.Node, string, error) {
	spec := ctr.Spec
	spec.Node = "" // a move chooses anew; --to names the node outright
	if to != "" {
		if to == src.Name {
			return nil, "", fmt.Errorf("%w: container %s is on %s already: give another --to", ErrInvalid, ctr.Name, to)
		}
		spec.Node = to
	} else if ctr.Spec.Node != "" {
		return nil, "", fmt.Errorf("%w: container %s is pinned to node %s (run --node): give --to NODE to move it anyway", ErrInvalid, ctr.Name, ctr.Spec.Node)
	}
	cpu := src.CPU
	// Room promised to other moves in flight is not this one's.
	view := placement.Reserve(snap, placement.Incoming(snap))
	d, err := placement.Place(view, placement.Request{Spec: spec, Exclude: []string{src.Name}, RequireCPU: &cpu})
	if err != nil {
		return nil, "", fmt.Errorf("%w for %s: %w", ErrNoDestination, ctr.Name, err)
	}
	n, _ := snap.Node(d.Node)
	why := "asked for (--to)"
	if to == "" {
		why = fmt.Sprintf("placement: the best of %d feasible nodes", d.Feasible)
		if len(d.Candidates) > 0 {
			why += fmt.Sprintf(" (score %.3f)", d.Candidates[0].Score)
		}
	}
	return n, why, nil
}

// capabilities are the strategies a node reported it supports.
func capabilities(n *state.Node) migrate.Capabilities {
	caps := migrate.Capabilities{}
	for _, s := range []migrate.Strategy{migrate.StopCopy, migrate.Stream, migrate.PreCopy, migrate.PostCopy} {
		caps[s] = migrate.Support{Reason: fmt.Sprintf("node %s does not support it (`godwit doctor` there says why)", n.Name)}
	}
	for _, s := range n.Strategies {
		caps[migrate.Strategy(s)] = migrate.Support{Supported: true}
	}
	return caps
}

func newMigrationID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return "m-" + hex.EncodeToString(b)
}
