package server

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/coordinator"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// The balancer's loop on the leader: every Policy.Interval, while the
// policy is enabled, it plans (scheduler/balance, a pure function of a
// snapshot and the soft state below) and starts the plan's moves through
// the migration coordinator, then records the decision in raft. What it
// plans from besides the snapshot is soft state, rebuilt by each leader:
// the containers' load samples the agents' heartbeats bring, and whether
// the previous round was balancing (the hysteresis).

const (
	// balanceReason is the Reason of the balancer's migrations: `migration
	// inspect` shows it, BalanceStatus counts the open ones by it.
	balanceReason = "balancer"
	// balancePoll bounds how long the loop sleeps before it reads the
	// policy again: an enable, a new interval, take effect within it.
	balancePoll = time.Second
	// samplesPerWindow is the most samples kept per container over the
	// policy's window: agents beat every second, and 300 samples of each
	// of 30,000 containers would cost gigabytes and most of a plan's time
	// for no better estimate. At the default 5 min window, one sample
	// every 5 s is kept.
	samplesPerWindow = 60
)

// balancerRequester is who asks for the balancer's moves.
var balancerRequester = state.Requester{Who: "balancer", Role: "scheduler"}

// moveStarter starts a migration: the coordinator's Start.
type moveStarter interface {
	Start(ctx context.Context, req coordinator.Request) (*state.Migration, error)
}

var _ moveStarter = (*coordinator.Coordinator)(nil)

// balancerConfig wires a balancer.
type balancerConfig struct {
	Store *state.Store
	Apply coordinator.Applier
	Moves moveStarter
	Log   *slog.Logger
	// Now is the leader's clock; nil: time.Now.
	Now func() time.Time
	// Poll is balancePoll; tests shorten it.
	Poll time.Duration
}

// balancer runs the leader's balancing rounds and serves the balance API
// from the same soft state.
type balancer struct {
	cfg     balancerConfig
	log     *slog.Logger
	samples *loadSamples

	mu sync.Mutex
	// balancing is the last round's Decision.Triggered.
	balancing bool
	// lastRound is when this leader last planned (zero: not yet).
	lastRound time.Time
	// retained is when the samples of containers gone were last dropped
	// (only tick touches it).
	retained time.Time
	// setMu serialises the policy's read-modify-write (SetBalance).
	setMu sync.Mutex
}

func newBalancer(cfg balancerConfig) *balancer {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Poll <= 0 {
		cfg.Poll = balancePoll
	}
	return &balancer{cfg: cfg, log: cfg.Log.With("component", "balancer"), samples: newLoadSamples(balance.DefaultWindow)}
}

// observe keeps the container samples of a node's heartbeat.
func (b *balancer) observe(load *pb.NodeLoad, received time.Time) { b.samples.add(load, received) }

// policy is the policy the state holds (balance.Default() for a cluster
// where nobody set one).
func (b *balancer) policy(snap *state.Snapshot) balance.Policy {
	rec, _ := snap.BalancePolicy()
	p, err := fsm.DecodeBalancePolicy(rec)
	if err != nil {
		b.log.Error("the stored balance policy does not decode: running the default (disabled) until an operator sets it: godwit balance set KEY=VALUE", "err", err)
	}
	return p
}

// state returns whether the last round balanced and when it ran.
func (b *balancer) state() (balancing bool, lastRound time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.balancing, b.lastRound
}

func (b *balancer) setState(balancing bool, lastRound time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.balancing, b.lastRound = balancing, lastRound
}

// lead runs rounds for one leadership term, ctx's. The first round comes
// one interval into the term, so that the agents' heartbeats have
// brought samples to plan from (a new leader has none, or only those of
// an earlier term); later ones every Policy.Interval while the policy is
// enabled.
func (b *balancer) lead(ctx context.Context) {
	b.setState(false, b.cfg.Now())
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(b.tick(ctx))
	}
}

// tick runs a round when one is due and returns how long to wait before
// looking again.
func (b *balancer) tick(ctx context.Context) time.Duration {
	snap := b.cfg.Store.Snapshot()
	pol := b.policy(snap)
	b.samples.setWindow(pol.Window)
	balancing, last := b.state()
	now := b.cfg.Now()
	if now.Sub(b.retained) >= pol.Window {
		// Plans ignore the samples of containers gone; this only bounds
		// the memory they take, enabled or not.
		b.samples.retain(snap)
		b.retained = now
	}
	if !pol.Enabled {
		if balancing {
			b.setState(false, last)
		}
		return b.cfg.Poll
	}
	if due := last.Add(pol.Interval); now.Before(due) {
		return min(b.cfg.Poll, due.Sub(now))
	}
	b.round(ctx, snap, pol, now)
	return min(b.cfg.Poll, pol.Interval)
}

// decide plans on snap with the soft state: what a round executes and
// what BalancePlan shows.
func (b *balancer) decide(snap *state.Snapshot, pol balance.Policy, now time.Time) (balance.Decision, error) {
	recent, history := balance.FromMigrations(snap.Migrations(state.MigrationFilter{}))
	balancing, _ := b.state()
	return balance.Plan(snap, balance.Input{
		Now: now, Policy: pol, Samples: b.samples.snapshot(), History: history, Recent: recent, Balancing: balancing,
	})
}

// round plans once and executes the plan: each move is started through
// the coordinator (a refusal is logged and the rest go on), then the
// decision, with each move's migration or refusal, is recorded in raft
// when at least one move started.
func (b *balancer) round(ctx context.Context, snap *state.Snapshot, pol balance.Policy, now time.Time) {
	d, err := b.decide(snap, pol, now)
	if err != nil {
		b.log.Error("plan", "err", err)
		b.setState(false, now)
		return
	}
	was, _ := b.state()
	b.setState(d.Triggered, now)
	log := b.log.With("imbalance", round3(d.Imbalance), "cpu", round3(d.CPU), "memory", round3(d.Memory),
		"predicted", round3(d.Predicted), "target", d.Target, "moves", len(d.Moves), "in_flight", d.InFlight, "stop", d.Stop)
	// Every decision is logged; at info level those that move something
	// or start or end balancing, so that a cluster that stays above its
	// target with nothing worth moving does not log the same line every
	// interval.
	level := slog.LevelDebug
	if len(d.Moves) > 0 || d.Triggered != was {
		level = slog.LevelInfo
	}
	log.Log(ctx, level, "balance decision", "balancing", d.Triggered, "reason", d.Reason)
	if len(d.Moves) == 0 {
		return
	}
	rec := fsm.BalanceDecisionRecord(d)
	for i, mv := range d.Moves {
		if ctx.Err() != nil {
			rec.Moves[i].Refused = "not started: this scheduler stopped leading"
			continue
		}
		m, err := b.cfg.Moves.Start(ctx, coordinator.Request{
			Container: mv.Container, To: mv.To, Strategy: migrate.Strategy(pol.Strategy),
			Reason: balanceReason, WhyDestination: mv.Reason, Requested: balancerRequester,
		})
		if err != nil {
			rec.Moves[i].Refused = err.Error()
			b.log.Warn("the coordinator refused a balancer move; the others go on", "container", mv.Name, "from", mv.From, "to", mv.To, "err", err)
			continue
		}
		rec.Moves[i].Migration = m.ID
		b.log.Info("balancer move started", "container", mv.Name, "from", mv.From, "to", mv.To, "migration", m.ID,
			"gain", round3(mv.Gain), "cost", round3(mv.Cost), "downtime", mv.Downtime.Round(time.Millisecond))
	}
	if rec.Started() == 0 {
		b.log.Warn("no move of the decision started: nothing recorded")
		return
	}
	if _, err := b.cfg.Apply.Apply(ctx, &fsm.RecordBalanceDecision{Decision: rec, At: now}); err != nil {
		b.log.Error("record the balance decision (its moves run)", "err", err)
	}
}

// round3 keeps three decimals, for logs.
func round3(f float64) string { return fmt.Sprintf("%.3f", f) }

// loadSamples are the containers' recent load samples, as the agents'
// heartbeats bring them (pb.NodeLoad.containers, at the NodeLoad's
// sampled time): soft state on the leader, never in raft, rebuilt by
// each leader (a replica that led before keeps what it had: samples stay
// true, and those older than the window are never read). Each container keeps at most samplesPerWindow samples
// spread over the window; older ones and containers the state no longer
// has are dropped.
type loadSamples struct {
	mu     sync.Mutex
	window time.Duration
	byID   map[string][]balance.Sample
}

func newLoadSamples(window time.Duration) *loadSamples {
	return &loadSamples{window: window, byID: map[string][]balance.Sample{}}
}

// setWindow sets how far back samples are kept: the policy's window.
func (l *loadSamples) setWindow(w time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.window = w
}

// add keeps the container samples of load, stamped with its sampled
// time (received when the agent sent none). A sample closer than the
// spacing (window / samplesPerWindow) to the container's last one kept
// is skipped, as is one that is not newer.
func (l *loadSamples) add(load *pb.NodeLoad, received time.Time) {
	if load == nil || len(load.GetContainers()) == 0 {
		return
	}
	at := received
	if ts := load.GetSampled(); ts != nil && ts.IsValid() {
		at = ts.AsTime()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	spacing := l.window / samplesPerWindow
	oldest := at.Add(-l.window)
	for _, c := range load.GetContainers() {
		s := l.byID[c.GetId()]
		if n := len(s); n > 0 && at.Sub(s[n-1].Time) < max(spacing, 1) {
			continue
		}
		i := 0
		for i < len(s) && s[i].Time.Before(oldest) {
			i++
		}
		l.byID[c.GetId()] = append(s[i:], balance.Sample{Time: at, MilliCPU: c.GetCpuMillis(), MemoryBytes: c.GetMemoryBytes()})
	}
}

// retain drops the samples of containers snap no longer has.
func (l *loadSamples) retain(snap *state.Snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.byID {
		if _, ok := snap.ContainerByID(id); !ok {
			delete(l.byID, id)
		}
	}
}

// snapshot returns the samples by container ID for a plan. The slices
// are shared: add only appends past their length or reslices, never
// changes a sample handed out.
func (l *loadSamples) snapshot() map[string][]balance.Sample {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]balance.Sample, len(l.byID))
	for id, s := range l.byID {
		out[id] = s[:len(s):len(s)]
	}
	return out
}

// count is how many containers have samples.
func (l *loadSamples) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}
