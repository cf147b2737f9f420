package main

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/balance/balancetest"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// Policy names, as the report shows them.
const (
	policyGodwit   = "godwit"
	policyBaseline = "baseline"
)

const (
	// historyKept is how many finished migrations the planner is given,
	// as the state keeps (state.MigrationHistory).
	historyKept = state.MigrationHistory
	// simStrategy is the strategy every simulated move records.
	simStrategy = "stream"
)

// simStart is the simulated clock's start: any fixed time.
var simStart = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// phaseResult is what one phase (a new set of hot spots) measured.
type phaseResult struct {
	// reached is how long after the phase began the imbalance first was
	// at or below the target; -1 when it never was in the phase.
	reached time.Duration
	// toTarget are the balancer's migrations started in the phase before
	// it reached the target (all of the phase's when it never did);
	// migrations all it started in the phase.
	toTarget, migrations int
}

// result is one simulation: one policy on one cluster size.
type result struct {
	policy string
	// nodes are the nodes at the start, joined those that joined later.
	nodes, joined, containers int
	target                    float64
	interval                  time.Duration
	// series is the imbalance measured each round from the containers'
	// actual use.
	series     []float64
	migrations int
	bytes      int64
	// downtime is the containers' total freeze, seconds.
	downtime float64
	// pingPong counts moves back to a node the container left within
	// the cooldown.
	pingPong int
	// drainMoves are the moves that emptied drained nodes (the same
	// drain for both policies; not the balancer's).
	drainMoves int
	// undrained counts containers a drain found no node for.
	undrained int
	// planTimes are each round's planning, wall clock; planCPU the
	// process's CPU time meanwhile (the planner's, and the garbage
	// collector's working beside it), which other processes sharing the
	// machine do not inflate.
	planTimes []time.Duration
	planCPU   []time.Duration
	phases    []phaseResult
	// planned counts rounds on which the planner triggered (godwit) or
	// found over-utilised nodes (baseline).
	planned int
}

// flight is a move under way.
type flight struct {
	m        *state.Migration
	ends     time.Time
	bytes    int64
	downtime float64
	total    float64
	drain    bool
}

// departure is a container leaving a node.
type departure struct {
	node string
	at   time.Time
}

// sim runs one policy on one workload.
type sim struct {
	o       options
	w       *workload
	kind    string
	st      *balancetest.State
	nodes   map[string]*simNode
	byID    map[string]*simContainer
	samples map[string][]balance.Sample
	// keep is how many samples a container keeps: its window's worth.
	keep     int
	inflight []*flight
	history  []balance.PastMigration
	recent   []balance.PastMove
	left     map[string][]departure
	// use is each node's measured use this round (the samples' sum);
	// demand its use without the samples' noise, which the imbalance is
	// scored on: noise is short-lived, and no balancer should chase it.
	use       map[string]state.Resources
	demand    map[string]state.Resources
	balancing bool
	now       time.Time
	phase     int
	created   uint64
	noise     *rand.Rand
	res       result
	baseline  lowNodeUtilization
}

func newSim(o options, w *workload, kind string) *sim {
	s := &sim{
		o: o, w: w, kind: kind, st: balancetest.NewState(),
		nodes: map[string]*simNode{}, byID: map[string]*simContainer{}, samples: map[string][]balance.Sample{},
		left: map[string][]departure{}, use: map[string]state.Resources{}, demand: map[string]state.Resources{},
		keep:     int(o.policy.Window/o.interval) + 1,
		noise:    rand.New(rand.NewPCG(o.seed, 0x5a17)),
		baseline: o.baseline,
	}
	s.res = result{policy: kind, target: o.policy.Target, interval: o.interval, containers: len(w.containers)}
	for i := range w.nodes {
		n := &w.nodes[i]
		s.nodes[n.node.Name] = n
		if n.joins == 0 {
			s.st.PutNode(&n.node)
			s.res.nodes++
		}
	}
	for i := range w.containers {
		c := &w.containers[i]
		s.byID[c.id] = c
		s.st.PutContainer(&state.Container{
			ID: c.id, Name: c.id, Spec: c.spec, Node: c.first, Generation: 1,
			Desired: state.DesiredRunning, Reported: state.ReportedRunning, Created: simStart,
		})
	}
	return s
}

// run simulates every round and returns what it measured.
func (s *sim) run() (result, error) {
	rounds := s.o.phases * s.o.phaseRounds
	s.res.phases = make([]phaseResult, s.o.phases)
	for i := range s.res.phases {
		s.res.phases[i].reached = -1
	}
	for r := -s.o.warmup; r < rounds; r++ {
		s.now = simStart.Add(time.Duration(r) * s.o.interval)
		s.phase = max(0, r) / s.o.phaseRounds
		s.land()
		if r >= 0 && r%s.o.phaseRounds == 0 {
			s.events()
		}
		s.sample()
		if r < 0 {
			continue
		}
		imbalance := s.measure()
		s.res.series = append(s.res.series, imbalance)
		ph := &s.res.phases[s.phase]
		if ph.reached < 0 && imbalance <= s.o.policy.Target {
			ph.reached = time.Duration(r%s.o.phaseRounds) * s.o.interval
			ph.toTarget = ph.migrations
		}
		moves, err := s.decide()
		if err != nil {
			return result{}, err
		}
		for _, mv := range moves {
			s.start(mv.container, mv.from, mv.to, false)
		}
		ph.migrations += len(moves)
	}
	for i := range s.res.phases {
		if ph := &s.res.phases[i]; ph.reached < 0 {
			ph.toTarget = ph.migrations
		}
	}
	return s.res, nil
}

// move is a decision to move a container.
type move struct{ container, from, to string }

// decide runs the policy, timed.
func (s *sim) decide() ([]move, error) {
	var moves []move
	cpu0 := benchutil.ProcessCPU()
	begin := time.Now()
	switch s.kind {
	case policyGodwit:
		in := balance.Input{Now: s.now, Policy: s.o.policy, Samples: s.samples, History: s.history, Recent: s.recent, Balancing: s.balancing}
		d, err := balance.Plan(s.st, in)
		if err != nil {
			return nil, fmt.Errorf("plan at %s: %w", s.now.Sub(simStart), err)
		}
		s.balancing = d.Triggered
		if d.Triggered {
			s.res.planned++
		}
		for _, m := range d.Moves {
			moves = append(moves, move{m.Container, m.From, m.To})
		}
	default:
		moves = s.baseline.plan(s)
		if len(moves) > 0 {
			s.res.planned++
		}
	}
	s.res.planTimes = append(s.res.planTimes, time.Since(begin))
	s.res.planCPU = append(s.res.planCPU, benchutil.ProcessCPU()-cpu0)
	return moves, nil
}

// events starts a phase: its nodes join, its drains begin.
func (s *sim) events() {
	for i := range s.w.nodes {
		n := &s.w.nodes[i]
		if n.joins == s.phase && s.phase > 0 {
			s.st.PutNode(&n.node)
			s.res.joined++
		}
		if n.drains == s.phase {
			s.drain(n)
		}
	}
}

// drain marks a node draining and moves each of its containers to the
// node placement chooses (spread, with the source's CPU features), as a
// drain does; every move starts at once.
func (s *sim) drain(n *simNode) {
	cur, _ := s.st.Node(n.node.Name)
	drained := *cur
	drained.Schedulability = state.Draining
	s.st.PutNode(&drained)
	var res placement.Reservations
	view := placement.Reserve(s.st, &res)
	for _, c := range s.st.Containers() {
		if c.Node != n.node.Name || s.moving(c.ID) {
			continue
		}
		spec := c.Spec
		spec.Node = ""
		cpu := drained.CPU
		d, err := placement.Place(view, placement.Request{Spec: spec, Exclude: []string{n.node.Name}, RequireCPU: &cpu, Algorithm: placement.Spread})
		if err != nil {
			s.res.undrained++
			continue
		}
		res.Add(d.Node, c.Spec.Request)
		s.start(c.ID, n.node.Name, d.Node, true)
	}
}

func (s *sim) moving(id string) bool {
	return slices.ContainsFunc(s.inflight, func(f *flight) bool { return f.m.Container == id })
}

// start begins a move: an open migration until it lands.
func (s *sim) start(id, from, to string, drain bool) {
	c := s.byID[id]
	bytes, downtime, total := moveCost(s.currentMemory(id, c), s.nodes[from], s.nodes[to])
	s.created++
	m := &state.Migration{
		ID: fmt.Sprintf("m-%08d", s.created), CreatedIndex: s.created, Container: id, ContainerName: id,
		Source: from, Dest: to, Strategy: simStrategy, Phase: state.MigrationTransfer, Reason: s.kind,
		Created: s.now, Updated: s.now,
	}
	s.st.PutMigration(m)
	s.inflight = append(s.inflight, &flight{m: m, ends: s.now.Add(seconds(total)), bytes: bytes, downtime: downtime, total: total, drain: drain})
	if drain {
		s.res.drainMoves++
		return
	}
	s.res.migrations++
	s.res.bytes += bytes
	s.res.downtime += downtime
	for _, dep := range s.left[id] {
		if dep.node == to && s.now.Sub(dep.at) < s.o.policy.Cooldown {
			s.res.pingPong++
			break
		}
	}
}

// currentMemory is the container's latest measured memory.
func (s *sim) currentMemory(id string, c *simContainer) int64 {
	if ss := s.samples[id]; len(ss) > 0 {
		return ss[len(ss)-1].MemoryBytes
	}
	return c.memory
}

// land finishes the moves whose time is up: the container is on its
// destination, the move is history and a recent move.
func (s *sim) land() {
	var still []*flight
	for _, f := range s.inflight {
		if f.ends.After(s.now) {
			still = append(still, f)
			continue
		}
		m := f.m
		cur, _ := s.st.ContainerByID(m.Container)
		c := *cur
		c.Node, c.Generation = m.Dest, c.Generation+1
		s.st.PutContainer(&c)
		s.st.DeleteMigration(m.ID)
		s.history = append(s.history, balance.PastMigration{From: m.Source, To: m.Dest, Strategy: m.Strategy,
			Bytes: f.bytes, Downtime: seconds(f.downtime), Total: seconds(f.total)})
		s.recent = append(s.recent, balance.PastMove{Container: m.Container, From: m.Source, To: m.Dest, At: f.ends})
		s.left[m.Container] = append(s.left[m.Container], departure{node: m.Source, at: f.ends})
	}
	s.inflight = still
	if len(s.history) > historyKept {
		s.history = slices.Clone(s.history[len(s.history)-historyKept:])
	}
	horizon := s.now.Add(-max(s.o.policy.ReturnAfter, s.o.policy.Cooldown))
	s.recent = slices.DeleteFunc(s.recent, func(m balance.PastMove) bool { return m.At.Before(horizon) })
	for id, deps := range s.left {
		deps = slices.DeleteFunc(deps, func(d departure) bool { return d.at.Before(horizon) })
		if len(deps) == 0 {
			delete(s.left, id)
		} else {
			s.left[id] = deps
		}
	}
}

// sample measures every container: its demand this phase with noise,
// scaled down on a node whose demand passes its CPU capacity (the
// kernel shares the CPUs out); it records each node's measured use, and
// its use without the noise.
func (s *sim) sample() {
	containers := s.st.Containers()
	demand := make([]float64, len(containers))
	memory := make([]int64, len(containers))
	total := map[string]float64{}
	clear(s.demand)
	for i, c := range containers {
		sc := s.byID[c.ID]
		clean := s.w.demand(sc, s.phase)
		demand[i] = clean * math.Exp(cpuNoise*s.noise.NormFloat64())
		memory[i] = int64(float64(sc.memory) * (1 + memNoise*s.noise.NormFloat64()))
		total[c.Node] += demand[i]
		s.demand[c.Node] = s.demand[c.Node].Add(state.Resources{MilliCPU: int64(math.Round(clean)), MemoryBytes: sc.memory})
	}
	for node, d := range s.demand {
		d.MilliCPU = min(d.MilliCPU, s.nodes[node].node.Capacity.MilliCPU)
		s.demand[node] = d
	}
	clear(s.use)
	for i, c := range containers {
		n := s.nodes[c.Node]
		cpu := demand[i]
		if capacity := float64(n.node.Capacity.MilliCPU); total[c.Node] > capacity {
			cpu *= capacity / total[c.Node]
		}
		sm := balance.Sample{Time: s.now, MilliCPU: int64(math.Round(cpu)), MemoryBytes: memory[i]}
		ss := s.samples[c.ID]
		if len(ss) == s.keep {
			copy(ss, ss[1:])
			ss = ss[:len(ss)-1]
		}
		s.samples[c.ID] = append(ss, sm)
		s.use[c.Node] = s.use[c.Node].Add(state.Resources{MilliCPU: sm.MilliCPU, MemoryBytes: sm.MemoryBytes})
	}
}

// measure is the imbalance of the ready nodes' use now, without noise.
func (s *sim) measure() float64 {
	var us []balance.Usage
	for _, n := range s.st.Nodes() {
		if n.Status() == state.NodeReady {
			us = append(us, balance.Usage{Capacity: n.Capacity, Used: s.demand[n.Name]})
		}
	}
	return balance.Imbalance(us, s.o.policy).Imbalance
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// simulate runs both policies on one cluster size.
func simulate(o options, nodes int) ([]result, error) {
	w := newWorkload(nodes, o.perNode, o.phases, o.seed)
	var out []result
	for _, kind := range []string{policyGodwit, policyBaseline} {
		r, err := newSim(o, w, kind).run()
		if err != nil {
			return nil, fmt.Errorf("%s on %d nodes: %w", kind, nodes, err)
		}
		out = append(out, r)
	}
	if len(out) != 2 {
		return nil, errors.New("a policy did not run")
	}
	return out, nil
}
