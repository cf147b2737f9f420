package balance

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// Rule names, as in Rejection.Rule: why a container on a loaded node
// was not moved. The first five are the container's own; the others
// depend on the plan.
const (
	// RuleMigrating: the container has an open migration.
	RuleMigrating = "migrating"
	// RulePinned: run --pin, or the PinLabel label. run --node (Spec.Node)
	// only chooses where a container starts: the balancer may move it,
	// choosing its destination as if Spec.Node were not set (refuse), as
	// `godwit migrate` does.
	RulePinned = "pinned"
	// RuleCooldown: it moved less than Policy.Cooldown ago.
	RuleCooldown = "cooldown"
	// RuleNoLoad: no sample of its load within Policy.Window.
	RuleNoLoad = "no-load"
	// RuleNodeTaking: its node receives a move (planned or in flight), so
	// it gives none in this plan.
	RuleNodeTaking = "node-taking"
	// RuleNodeLimit: its node has Policy.MaxMovesPerNode moves open or
	// planned.
	RuleNodeLimit = "node-limit"
	// RuleBalanced: the planned moves took its node down to the mean.
	RuleBalanced = "balanced"
	// RuleNotWorth: no destination's weighted gain exceeds
	// Policy.CostMultiple times the move's cost.
	RuleNotWorth = "not-worth"
	// RuleNoDestination: moves that would pay exist, but every such
	// destination refuses it (capacity, headroom, labels, CPU, limits,
	// the ping-pong guard).
	RuleNoDestination = "no-destination"
	// RuleTargetReached: the plan reached the target before its turn.
	RuleTargetReached = "target-reached"
	// RuleClusterLimit: Policy.MaxMoves migrations are open or planned.
	RuleClusterLimit = "cluster-limit"
)

// Stop reasons, as in Decision.Stop: why the plan holds no more moves.
const (
	// StopTooFewNodes: fewer than two ready nodes, nothing to balance.
	StopTooFewNodes = "too-few-nodes"
	// StopBelowTrigger: the imbalance is not above the trigger (or, while
	// balancing, not above the target): nothing planned.
	StopBelowTrigger = "below-trigger"
	// StopTarget: the predicted imbalance reached the target (less a
	// margin for the estimates' error).
	StopTarget = "target"
	// StopNoMovePays: no further move pays for itself or fits anywhere.
	StopNoMovePays = "no-move-pays"
	// StopClusterLimit: Policy.MaxMoves migrations would be open.
	StopClusterLimit = "cluster-limit"
)

// PinLabel set to "true" on a container (run --label) keeps the balancer
// from moving it, as run --pin does.
const PinLabel = "godwit.io/pin"

const (
	// destinationShortlist is how many of the least loaded eligible nodes
	// each candidate is weighed against: the best destination for
	// evening out load is nearly always among them, and weighing every
	// node for every container would cost a thousand times more on a
	// large cluster. Only when every shortlisted destination that pays
	// refuses the container does Plan look further down the list.
	destinationShortlist = 32
	// minCost keeps a score finite when the policy weighs cost at zero.
	minCost = 1e-3
	// maxRefusals is how many refusing destinations a rejection names.
	maxRefusals = 3
	// targetMargin: balancing aims at this share of the target: a plan's
	// moves stop there, and a balancer that is balancing goes on until
	// the imbalance is there. The loads a plan predicts from are
	// estimates, a little off either way, and a plan may be cut short by
	// the limits; aiming at the target itself would leave the measured
	// imbalance on it, above as often as under, and a balancer that
	// never quite reaches its target.
	targetMargin = 0.9
)

// Decision is one plan: the imbalance, the moves to make in order, and
// why every other container on a loaded node stays.
type Decision struct {
	Now time.Time `json:"now"`
	// Measure is the imbalance now, from the measured loads.
	Measure
	// Predicted is the imbalance once the migrations in flight and the
	// planned moves are done.
	Predicted float64 `json:"predicted"`
	Target    float64 `json:"target"`
	Trigger   float64 `json:"trigger"`
	// Triggered: the plan balanced (the imbalance was above the trigger,
	// or, while balancing, above 90% of the target). Feed it back as
	// Input.Balancing.
	Triggered bool `json:"triggered"`
	// Stop is why the plan ends where it does (a Stop constant), Reason
	// the same in a sentence.
	Stop   string `json:"stop"`
	Reason string `json:"reason"`
	// InFlight is how many migrations were open.
	InFlight int `json:"in_flight"`
	// Moves are the planned moves, in the order they were chosen (and are
	// to be started).
	Moves []Move `json:"moves"`
	// Rejected holds every running container on a loaded node that is not
	// moved, with why, sorted by node then container name; empty unless
	// Triggered.
	Rejected []Rejection `json:"rejected"`
	// Nodes are the ready nodes the imbalance is measured over, by name;
	// Excluded the other nodes, with why.
	Nodes    []NodeUsage `json:"nodes"`
	Excluded []Exclusion `json:"excluded,omitempty"`
}

// Move is one planned migration.
type Move struct {
	Container string `json:"container"`
	Name      string `json:"name"`
	From      string `json:"from"`
	To        string `json:"to"`
	// Load is the container's measured load, what the move carries.
	Load state.Resources `json:"load"`
	// Gain is GainScale x nodes x the fall of the squared imbalance:
	// squaring makes a move's gain depend only on the load it carries
	// and the gap in utilisation it closes (about 2 x load moved x gap /
	// mean², per dimension), not on how balanced the rest of the cluster
	// is; multiplying by the nodes undoes the average's dilution, so that
	// one move on a thousand nodes weighs what it does on three. Moving
	// 3% of a node's CPU and memory across a 60-point gap in both, at 50%
	// mean use, gains about 14.
	Gain float64 `json:"gain"`
	// Stability is the weight in [0, 1] the gain gets from how long the
	// container's load has held its level (Policy.StableFor).
	Stability float64 `json:"stability"`
	// Cost is Policy.DowntimeWeight x downtime seconds + Policy.GiBWeight
	// x GiB transferred, from the predictions below.
	Cost     float64       `json:"cost"`
	Bytes    int64         `json:"bytes"`
	Downtime time.Duration `json:"downtime"`
	Duration time.Duration `json:"duration"`
	// Score is Gain x Stability / Cost: what the moves were chosen by.
	Score float64 `json:"score"`
	// ImbalanceBefore and ImbalanceAfter are the predicted imbalance
	// before and after this move (and every move before it).
	ImbalanceBefore float64 `json:"imbalance_before"`
	ImbalanceAfter  float64 `json:"imbalance_after"`
	// Reason says why, in words; CostBasis what the cost rests on.
	Reason    string `json:"reason"`
	CostBasis string `json:"cost_basis"`
}

// Rejection is a container on a loaded node that the plan does not
// move.
type Rejection struct {
	Container string `json:"container"`
	Name      string `json:"name"`
	Node      string `json:"node"`
	// Rule is a Rule constant; Reason the particulars, in words.
	Rule   string `json:"rule"`
	Reason string `json:"reason"`
}

// Exclusion is a node left out of the imbalance: it neither gives nor
// takes containers.
type Exclusion struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// NodeUsage is one ready node's load.
type NodeUsage struct {
	Node     string          `json:"node"`
	Capacity state.Resources `json:"capacity"`
	// Used is the sum of its running containers' loads now (measured, or
	// their requests where no sample says).
	Used state.Resources `json:"used"`
	// Base is Used once the migrations in flight land: what the plan
	// starts from. Predicted is Base with the planned moves made.
	Base      state.Resources `json:"base"`
	Predicted state.Resources `json:"predicted"`
	// Loaded: above the mean at the start of the plan; its running
	// containers are the candidates.
	Loaded bool `json:"loaded"`
}

// Plan decides which containers to move, and where, to even out the
// measured load of the ready nodes, and says why every other candidate
// stays. It reads s and in only; the same inputs give the same
// Decision, whatever the order of the nodes, containers, migrations or
// samples. Errors wrap ErrInvalidPolicy (in.Policy fails Validate) or
// ErrInvalidInput.
//
// The plan is greedy: while the predicted imbalance is above the target
// and the cluster limit allows, it takes the most loaded node that can
// give, and of its candidates' moves to the least loaded nodes the one
// with the best Score among those that pay; then it updates the
// predicted loads and goes again. It stops when the target is reached,
// no move pays, or the limit is hit.
func Plan(s State, in Input) (Decision, error) {
	if err := in.Policy.Validate(); err != nil {
		return Decision{}, err
	}
	if in.Now.IsZero() {
		return Decision{}, fmt.Errorf("%w: no time given (Input.Now): samples and cooldowns are measured from it", ErrInvalidInput)
	}
	p := newPlanner(s, in)
	return p.plan(), nil
}

// pnode is one node during a plan.
type pnode struct {
	n        *state.Node
	idx      int32
	inMetric bool
	// limit is the capacity less the headroom; scaled is n with limit as
	// its capacity, which placement's capacity filter checks requests
	// against.
	limit  state.Resources
	scaled *state.Node
	used   state.Resources
	base   state.Resources
	pred   state.Resources
	u      util // of pred
	// dev is the node's deviation when the nodes were last ranked.
	dev float64
	// moves counts open and planned migrations from or to the node.
	moves int
	// giving and taking: the node is the source or the destination of a
	// move, in flight or planned; a node is never both in one plan.
	giving, taking bool
	// inFlightTo names a migration in flight to the node, for words.
	inFlightTo string
	// cpuClass numbers the node's set of CPU flags: nodes of one class
	// have the same features.
	cpuClass int
	loaded   bool
	cands    []*cand
}

// cand is a running container.
type cand struct {
	c      *state.Container
	node   *pnode
	est    estimate
	weight float64
	// rule and reason pre-reject the container for a reason of its own.
	rule, reason string
	moved        bool
	// verdict is why the last weighing found no move for it, and pass
	// the pass of that weighing.
	verdict verdict
	pass    int
}

// option is one candidate move, evaluated.
type option struct {
	cand  *cand
	dest  *pnode
	gain  float64
	cost  cost
	score float64
	pays  bool
}

type planner struct {
	in     Input
	p      Policy
	nodes  []*pnode // by name
	byName map[string]*pnode
	metric []*pnode // the ready nodes, by name
	m      metric
	sq     float64 // squared imbalance of pred
	model  *costModel
	res    placement.Reservations
	view   oneNode
	open   int
	// lastMove is each container's latest committed move; left is every
	// node each container left within ReturnAfter, with when.
	lastMove map[string]PastMove
	left     map[string][]PastMove
	moves    []Move
	// coolest is the metric nodes by deviation, least loaded first.
	coolest []*pnode
	// pass counts the passes over the sources.
	pass int
	// scratch is bestFor's list of options, reused.
	scratch []option
	// classFlags are each CPU class's flags; compat caches whether a
	// class has every flag of another (by source then destination
	// class: 1 yes, 2 no, 0 not known yet).
	classFlags [][]string
	compat     map[[2]int]uint8
}

// oneNode is a placement.State that lists one node: placement's filters
// judge that node alone, at the cost of one.
type oneNode struct {
	placement.State
	nodes [1]*state.Node
}

func (v *oneNode) Nodes() []*state.Node { return v.nodes[:] }

func newPlanner(s State, in Input) *planner {
	p := &planner{in: in, p: in.Policy, byName: map[string]*pnode{}}
	nodes := slices.Clone(s.Nodes())
	slices.SortFunc(nodes, func(a, b *state.Node) int { return strings.Compare(a.Name, b.Name) })
	index := make(map[string]int32, len(nodes))
	for i, n := range nodes {
		pn := &pnode{n: n, idx: int32(i)}
		pn.inMetric = n.Status() == state.NodeReady && n.Capacity.MilliCPU > 0 && n.Capacity.MemoryBytes > 0
		keep := 1 - p.p.Headroom
		pn.limit = state.Resources{
			MilliCPU:    int64(math.Floor(float64(n.Capacity.MilliCPU) * keep)),
			MemoryBytes: int64(math.Floor(float64(n.Capacity.MemoryBytes) * keep)),
		}
		scaled := *n
		scaled.Capacity = pn.limit
		pn.scaled = &scaled
		p.nodes = append(p.nodes, pn)
		p.byName[n.Name] = pn
		index[n.Name] = int32(i)
		if pn.inMetric {
			p.metric = append(p.metric, pn)
		}
	}
	p.model = newCostModel(p.p, in.History, in.Links, index)
	p.compat = map[[2]int]uint8{}
	classes := map[string]int{}
	for _, pn := range p.nodes {
		key := strings.Join(pn.n.CPU.Flags, " ")
		c, ok := classes[key]
		if !ok {
			c = len(p.classFlags)
			classes[key] = c
			p.classFlags = append(p.classFlags, pn.n.CPU.Flags)
		}
		pn.cpuClass = c
	}

	// The migrations in flight, by container: few, looked up for each.
	open := slices.Clone(s.Migrations(state.MigrationFilter{Open: true}))
	slices.SortFunc(open, func(a, b *state.Migration) int { return strings.Compare(a.ID, b.ID) })
	inFlight := make(map[string]*state.Migration, len(open))
	for _, m := range open {
		if m.Open() {
			inFlight[m.Container] = m
		}
	}

	// The containers' order does not matter: node loads are sums of
	// integers, every choice among candidates breaks ties by ID, and the
	// rejections are sorted. Sorting tens of thousands would cost more
	// than the rest of the reading.
	containers := s.Containers()
	// One allocation for every candidate: a plan on a large cluster
	// builds tens of thousands.
	slab := make([]cand, 0, len(containers))
	moving := make(map[string]*cand, len(inFlight))
	requests := make(map[string]state.Resources, len(inFlight))
	est := estimator{now: in.Now, window: p.p.Window, tolerance: p.p.StableTolerance}
	for _, c := range containers {
		if _, ok := inFlight[c.ID]; ok {
			requests[c.ID] = c.Spec.Request
		}
		pn, ok := p.byName[c.Node]
		if !ok || c.Desired != state.DesiredRunning ||
			(c.Reported != state.ReportedRunning && c.Reported != state.ReportedMigrating) {
			continue
		}
		e := est.estimate(in.Samples[c.ID], c.Spec.Request)
		slab = append(slab, cand{c: c, node: pn, est: e, weight: stability(e.stableFor, p.p.StableFor)})
		cd := &slab[len(slab)-1]
		pn.used = pn.used.Add(e.load)
		pn.cands = append(pn.cands, cd)
		if _, ok := inFlight[c.ID]; ok {
			moving[c.ID] = cd
		}
	}
	for _, pn := range p.nodes {
		pn.pred = pn.used
	}

	for _, m := range open {
		if !m.Open() {
			continue
		}
		p.open++
		src, dst := p.byName[m.Source], p.byName[m.Dest]
		if src != nil {
			src.moves++
			src.giving = true
		}
		if dst != nil {
			dst.moves++
			dst.taking = true
			dst.inFlightTo = m.ID
		}
		cd, running := moving[m.Container]
		if running {
			cd.rule = RuleMigrating
			cd.reason = fmt.Sprintf("migration %s is moving it from %s to %s (%s)", m.ID, m.Source, m.Dest, m.Phase)
		}
		if m.Committed() || dst == nil {
			continue
		}
		if r, ok := requests[m.Container]; ok {
			// Room the destination promised (state.Incoming): counted
			// against it until the move commits.
			p.res.Add(m.Dest, r)
		}
		if running && src != nil && cd.node == src {
			src.pred = src.pred.Sub(cd.est.load)
			dst.pred = dst.pred.Add(cd.est.load)
		}
	}

	p.lastMove = map[string]PastMove{}
	p.left = map[string][]PastMove{}
	recent := slices.Clone(in.Recent)
	slices.SortFunc(recent, comparePastMoves)
	for _, mv := range recent {
		if mv.At.After(in.Now) {
			mv.At = in.Now
		}
		if in.Now.Sub(mv.At) >= p.p.ReturnAfter {
			continue
		}
		p.lastMove[mv.Container] = mv // sorted by time: the last wins
		p.left[mv.Container] = append(p.left[mv.Container], mv)
	}
	p.view.State = placement.Reserve(s, &p.res)
	return p
}

// remeasure recomputes the metric from the predicted loads, in name
// order, so that rounding never depends on the moves' history.
func (p *planner) remeasure() {
	p.m.reset(len(p.metric), p.p)
	for _, pn := range p.metric {
		pn.u = utilisation(pn.pred, pn.n.Capacity)
		p.m.add(pn.u)
	}
	p.sq = p.m.squared()
}

func (p *planner) usages(f func(*pnode) state.Resources) Measure {
	var m metric
	m.reset(len(p.metric), p.p)
	for _, pn := range p.metric {
		m.add(utilisation(f(pn), pn.n.Capacity))
	}
	return m.measure()
}

func (p *planner) plan() (d Decision) {
	d = Decision{
		Now: p.in.Now, Target: p.p.Target, Trigger: p.p.Trigger, InFlight: p.open,
		Moves: []Move{}, Rejected: []Rejection{},
	}
	d.Measure = p.usages(func(pn *pnode) state.Resources { return pn.used })
	p.remeasure()
	defer func() {
		d.Predicted = math.Sqrt(p.sq)
		d.Nodes = make([]NodeUsage, 0, len(p.metric))
		for _, pn := range p.metric {
			d.Nodes = append(d.Nodes, NodeUsage{Node: pn.n.Name, Capacity: pn.n.Capacity, Used: pn.used,
				Base: pn.base, Predicted: pn.pred, Loaded: pn.loaded})
		}
		for _, pn := range p.nodes {
			if !pn.inMetric {
				d.Excluded = append(d.Excluded, Exclusion{Node: pn.n.Name, Reason: excludedBecause(pn.n)})
			}
		}
	}()
	for _, pn := range p.nodes {
		pn.base = pn.pred
	}

	now := d.Imbalance
	switch {
	case len(p.metric) < 2:
		d.Stop = StopTooFewNodes
		d.Reason = fmt.Sprintf("%d ready %s: nothing to balance", len(p.metric), plural(len(p.metric), "node", "nodes"))
		return d
	case p.in.Balancing && now <= p.goal():
		d.Stop = StopBelowTrigger
		d.Reason = fmt.Sprintf("imbalance %.3f reached %.3f (%.0f%% of the target %.3f): balancing stops until it rises above the trigger %.3f",
			now, p.goal(), 100*targetMargin, p.p.Target, p.p.Trigger)
		return d
	case !p.in.Balancing && now <= p.p.Trigger:
		d.Stop = StopBelowTrigger
		d.Reason = fmt.Sprintf("imbalance %.3f is not above the trigger %.3f", now, p.p.Trigger)
		return d
	}
	d.Triggered = true

	for _, pn := range p.metric {
		pn.loaded = p.m.deviation(pn.u) > 0
		if !pn.loaded {
			continue
		}
		for _, cd := range pn.cands {
			p.preReject(cd)
		}
	}

	d.Stop = p.greedy()
	d.Moves = append(d.Moves, p.moves...)
	d.Reason = p.stopReason(d.Stop)
	d.Rejected = p.explain(d.Stop)
	return d
}

// preReject gives a candidate its own reason to stay, if it has one.
func (p *planner) preReject(cd *cand) {
	if cd.rule != "" {
		return
	}
	c := cd.c
	switch {
	case c.Spec.Pinned:
		cd.rule, cd.reason = RulePinned, "pinned (run --pin): the balancer never moves it"
	case c.Spec.Labels[PinLabel] == "true":
		cd.rule, cd.reason = RulePinned, fmt.Sprintf("labelled %s=true: the balancer never moves it", PinLabel)
	}
	if cd.rule != "" {
		return
	}
	if last, ok := p.lastMove[c.ID]; ok && p.in.Now.Sub(last.At) < p.p.Cooldown {
		ago := p.in.Now.Sub(last.At)
		cd.rule, cd.reason = RuleCooldown, fmt.Sprintf("moved %s ago (%s to %s); the cooldown (%s) lets it move again in %s",
			ago.Round(time.Second), last.From, last.To, p.p.Cooldown, (p.p.Cooldown-ago).Round(time.Second))
		return
	}
	if !cd.est.measured {
		cd.rule, cd.reason = RuleNoLoad, fmt.Sprintf("no load sample in the last %s: its load is unknown (counted as its request, %s and %s)",
			p.p.Window, formatCPU(cd.est.load.MilliCPU), formatBytes(cd.est.load.MemoryBytes))
	}
}

// sortCoolest orders the metric nodes least loaded first.
func (p *planner) sortCoolest() {
	p.coolest = append(p.coolest[:0], p.metric...)
	for _, pn := range p.coolest {
		pn.dev = p.m.deviation(pn.u)
	}
	slices.SortFunc(p.coolest, func(a, b *pnode) int {
		return cmp.Or(cmp.Compare(a.dev, b.dev), strings.Compare(a.n.Name, b.n.Name))
	})
}

// canGive reports whether a node may be a source now.
func (p *planner) canGive(pn *pnode) bool {
	return pn.loaded && !pn.taking && pn.moves < p.p.MaxMovesPerNode && p.m.deviation(pn.u) > 0
}

// canTake reports whether a node may be a destination now, before the
// container-specific checks.
func (p *planner) canTake(pn *pnode) bool {
	return pn.inMetric && !pn.giving && pn.moves < p.p.MaxMovesPerNode
}

// goal is the imbalance a plan's moves aim at.
func (p *planner) goal() float64 { return p.p.Target * targetMargin }

// stopNow says why the plan must stop before another move, or "".
func (p *planner) stopNow() string {
	switch {
	case p.sq <= p.goal()*p.goal():
		return StopTarget
	case p.open+len(p.moves) >= p.p.MaxMoves:
		return StopClusterLimit
	}
	return ""
}

// greedy makes moves until the target, the cluster limit, or a pass in
// which no source has a move that pays and fits. Each pass visits the
// nodes that can give, most loaded first; each takes its best-scoring
// move in the state the moves before it left, and the nodes are ranked
// again after every move. A node gives at most MaxMovesPerNode times,
// so there are at most that many passes with moves, and one without:
// its weighing of every candidate is what explain reports.
func (p *planner) greedy() string {
	for {
		if stop := p.stopNow(); stop != "" {
			return stop
		}
		p.pass++
		p.sortCoolest()
		var sources []*pnode
		for i := len(p.coolest) - 1; i >= 0; i-- {
			if p.canGive(p.coolest[i]) {
				sources = append(sources, p.coolest[i])
			}
		}
		moved := false
		for _, src := range sources {
			if !p.canGive(src) {
				continue
			}
			if opt, ok := p.bestFrom(src); ok {
				p.apply(opt)
				moved = true
				if stop := p.stopNow(); stop != "" {
					return stop
				}
				p.sortCoolest()
			}
		}
		if !moved {
			return StopNoMovePays
		}
	}
}

// bestFrom returns the best-scoring move of src's candidates that pays
// and fits, noting on each candidate without one why.
func (p *planner) bestFrom(src *pnode) (option, bool) {
	var best option
	found := false
	for _, cd := range src.cands {
		if cd.rule != "" || cd.moved {
			continue
		}
		opt, ok, v := p.bestFor(cd)
		cd.verdict, cd.pass = v, p.pass
		if ok && (!found || better(opt, best)) {
			best, found = opt, true
		}
	}
	return best, found
}

// better orders options by score, then by container ID and destination
// name, so that ties never depend on evaluation order.
func better(a, b option) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	if a.cand.c.ID != b.cand.c.ID {
		return a.cand.c.ID < b.cand.c.ID
	}
	return a.dest.n.Name < b.dest.n.Name
}

// evaluate weighs moving cd to dest.
func (p *planner) evaluate(cd *cand, dest *pnode, c cost) option {
	src := cd.node
	load := cd.est.load
	a1 := utilisation(src.pred.Sub(load), src.n.Capacity)
	b1 := utilisation(dest.pred.Add(load), dest.n.Capacity)
	after := p.m.squaredAfter(src.u, a1, dest.u, b1)
	o := option{cand: cd, dest: dest, cost: c}
	o.gain = GainScale * float64(len(p.metric)) * (p.sq - after)
	weighted := o.gain * cd.weight
	o.score = weighted / max(c.value, minCost)
	o.pays = o.gain > 0 && weighted > p.p.CostMultiple*c.value
	return o
}

// verdict is what bestFor found for a candidate that has no move: the
// highest-scoring destination weighed (dest nil when no node could take
// a move at all) with its gain and cost, and the destinations whose
// move would pay but that refused the container.
type verdict struct {
	dest     *pnode
	score    float64
	gain     float64
	cost     cost
	refusals []string
	refused  int
}

// bestFor returns cd's best move that pays and that its destination
// accepts, or why there is none.
func (p *planner) bestFor(cd *cand) (option, bool, verdict) {
	src := cd.node
	var v verdict
	// A cost depends on the destination only through the pair's own
	// bandwidth, which few pairs have: predict once, and again only for
	// those.
	pairs := p.model.pairs[src.idx]
	fixed := p.model.predict(nil, -1, cd.est.load.MemoryBytes, cd.est.dirty)
	costTo := func(dest *pnode) cost {
		if _, ok := pairs[dest.idx]; ok {
			return p.model.predict(pairs, dest.idx, cd.est.load.MemoryBytes, cd.est.dirty)
		}
		return fixed
	}
	paying := p.scratch[:0]
	defer func() { p.scratch = paying[:0] }()
	weighed := 0
	rest := len(p.coolest)
	for i, dest := range p.coolest {
		if dest == src || !p.canTake(dest) {
			continue
		}
		if weighed == destinationShortlist {
			rest = i
			break
		}
		weighed++
		o := p.evaluate(cd, dest, costTo(dest))
		if v.dest == nil || o.score > v.score || o.score == v.score && dest.idx < v.dest.idx {
			v.dest, v.score, v.gain, v.cost = dest, o.score, o.gain, o.cost
		}
		if o.pays {
			paying = append(paying, o)
		}
	}
	if opt, ok := p.firstAccepted(paying, &v); ok {
		return opt, true, v
	}
	if len(paying) == 0 {
		return option{}, false, v
	}
	// Every shortlisted destination that pays refused it: look further,
	// past the nodes that surely refuse it.
	paying = paying[:0]
	for _, dest := range p.coolest[rest:] {
		if dest == src || !p.canTake(dest) || !p.mayTake(cd, dest) {
			continue
		}
		if o := p.evaluate(cd, dest, costTo(dest)); o.pays {
			paying = append(paying, o)
		}
	}
	opt, ok := p.firstAccepted(paying, &v)
	return opt, ok, v
}

// firstAccepted returns the best-scoring option whose destination
// accepts the container, noting the refusals in v.
//
// The options are one candidate's: best score first, ties by node name
// (the nodes' indexes are in name order). A destination that surely
// refuses (mayTake) is asked no further once the refusals to report are
// written.
func (p *planner) firstAccepted(opts []option, v *verdict) (option, bool) {
	// The best is nearly always accepted: pick the best left each time
	// rather than sort them all.
	for len(opts) > 0 {
		i := 0
		for j := 1; j < len(opts); j++ {
			if a, b := opts[j], opts[i]; a.score > b.score || a.score == b.score && a.dest.idx < b.dest.idx {
				i = j
			}
		}
		o := opts[i]
		opts[i] = opts[len(opts)-1]
		opts = opts[:len(opts)-1]
		if !p.mayTake(o.cand, o.dest) && len(v.refusals) == maxRefusals {
			v.refused++
			continue
		}
		why := p.refuse(o.cand, o.dest)
		if why == "" {
			return o, true
		}
		v.refused++
		if len(v.refusals) < maxRefusals {
			v.refusals = append(v.refusals, o.dest.n.Name+": "+why)
		}
	}
	return option{}, false
}

// mayTake is a quick check that dest is not sure to refuse cd: it has
// every CPU feature of cd's node and every label cd's constraints ask
// for. It only spares placement's filters work; they decide.
func (p *planner) mayTake(cd *cand, dest *pnode) bool {
	for _, c := range cd.c.Spec.Constraints {
		if v, ok := dest.n.Labels[c.Key]; !ok || v != c.Value {
			return false
		}
	}
	from, to := cd.node.cpuClass, dest.cpuClass
	if from == to {
		return true
	}
	k := [2]int{from, to}
	known := p.compat[k]
	if known == 0 {
		known = 2
		have := p.classFlags[to]
		if !slices.ContainsFunc(p.classFlags[from], func(f string) bool { return !slices.Contains(have, f) }) {
			known = 1
		}
		p.compat[k] = known
	}
	return known == 1
}

// refuse returns why dest cannot take cd, or "" when it can: the
// ping-pong guard, the measured headroom, then placement's filters
// (status, constraints, CPU features, requested capacity less the
// headroom) on dest alone.
func (p *planner) refuse(cd *cand, dest *pnode) string {
	src := cd.node
	for _, mv := range p.left[cd.c.ID] {
		if mv.From == dest.n.Name {
			ago := p.in.Now.Sub(mv.At)
			return fmt.Sprintf("it left %s %s ago; return_after (%s) keeps it from going back for %s more",
				dest.n.Name, ago.Round(time.Second), p.p.ReturnAfter, (p.p.ReturnAfter - ago).Round(time.Second))
		}
	}
	after := dest.pred.Add(cd.est.load)
	if after.MilliCPU > dest.limit.MilliCPU {
		return fmt.Sprintf("measured CPU would reach %s of %s, over the %.0f%% headroom allows",
			formatCPU(after.MilliCPU), formatCPU(dest.n.Capacity.MilliCPU), 100*(1-p.p.Headroom))
	}
	if after.MemoryBytes > dest.limit.MemoryBytes {
		return fmt.Sprintf("measured memory would reach %s of %s, over the %.0f%% headroom allows",
			formatBytes(after.MemoryBytes), formatBytes(dest.n.Capacity.MemoryBytes), 100*(1-p.p.Headroom))
	}
	spec := cd.c.Spec
	spec.Node = ""
	cpu := src.n.CPU
	p.view.nodes[0] = dest.scaled
	_, err := placement.Place(&p.view, placement.Request{Spec: spec, Exclude: []string{src.n.Name}, RequireCPU: &cpu})
	if err == nil {
		return ""
	}
	var nn *placement.NoNodeError
	if errors.As(err, &nn) && len(nn.Rejected) == 1 {
		r := nn.Rejected[0]
		why := "placement's " + r.Filter + " filter: " + r.Reason
		if r.Filter == placement.FilterCapacity {
			why += fmt.Sprintf(" (capacity less the %.0f%% headroom)", 100*p.p.Headroom)
		}
		return why
	}
	return "placement: " + err.Error()
}

// apply makes a move in the predicted state.
func (p *planner) apply(o option) {
	cd, src, dest := o.cand, o.cand.node, o.dest
	before := math.Sqrt(p.sq)
	srcU, destU := src.u, dest.u
	mean := p.m.means()
	src.pred = src.pred.Sub(cd.est.load)
	dest.pred = dest.pred.Add(cd.est.load)
	src.moves++
	dest.moves++
	src.giving, dest.taking = true, true
	cd.moved = true
	p.res.Add(dest.n.Name, cd.c.Spec.Request)
	p.remeasure()
	after := math.Sqrt(p.sq)
	mv := Move{
		Container: cd.c.ID, Name: cd.c.Name, From: src.n.Name, To: dest.n.Name, Load: cd.est.load,
		Gain: o.gain, Stability: cd.weight, Cost: o.cost.value, Bytes: o.cost.bytes,
		Downtime: o.cost.downtime, Duration: o.cost.duration, Score: o.score,
		ImbalanceBefore: before, ImbalanceAfter: after,
		CostBasis: p.model.basis(o.cost, src.n.Name, dest.n.Name),
	}
	mv.Reason = fmt.Sprintf("%s is the most loaded node that can give (CPU %.0f%%, memory %.0f%%; means %.0f%%, %.0f%%); "+
		"moving %s (%s, %s) to %s (CPU %.0f%%, memory %.0f%%) takes the imbalance from %.3f to %.3f: "+
		"gain %.2f x stability %.2f = %.2f > cost_multiple %g x cost %.2f",
		src.n.Name, 100*srcU.cpu, 100*srcU.mem, 100*mean.cpu, 100*mean.mem,
		cd.c.Name, formatCPU(cd.est.load.MilliCPU), formatBytes(cd.est.load.MemoryBytes),
		dest.n.Name, 100*destU.cpu, 100*destU.mem, before, after,
		o.gain, cd.weight, o.gain*cd.weight, p.p.CostMultiple, o.cost.value)
	p.moves = append(p.moves, mv)
}

func (p *planner) stopReason(stop string) string {
	moved := fmt.Sprintf("%d %s planned", len(p.moves), plural(len(p.moves), "move", "moves"))
	if p.open > 0 {
		moved += fmt.Sprintf(" and %d in flight", p.open)
	}
	now := math.Sqrt(p.sq)
	switch stop {
	case StopTarget:
		return fmt.Sprintf("%s bring the imbalance to %.3f, at or below %.3f (%.0f%% of the target %.3f, a margin for estimates)",
			moved, now, p.goal(), 100*targetMargin, p.p.Target)
	case StopClusterLimit:
		return fmt.Sprintf("%s reach max_moves (%d); the imbalance is predicted at %.3f (target %.3f)", moved, p.p.MaxMoves, now, p.p.Target)
	}
	return fmt.Sprintf("%s; no further move pays for itself (weighted gain over cost_multiple %g x cost) and fits a destination; the imbalance is predicted at %.3f (target %.3f)",
		moved, p.p.CostMultiple, now, p.p.Target)
}

// explain gives every unmoved running container on a loaded node its
// reason, in the plan's final predicted state.
func (p *planner) explain(stop string) []Rejection {
	var out []Rejection
	for _, pn := range p.metric {
		if !pn.loaded {
			continue
		}
		for _, cd := range pn.cands {
			if cd.moved {
				continue
			}
			rule, reason := cd.rule, cd.reason
			if rule == "" {
				rule, reason = p.explainOne(cd, stop)
			}
			out = append(out, Rejection{Container: cd.c.ID, Name: cd.c.Name, Node: pn.n.Name, Rule: rule, Reason: reason})
		}
	}
	slices.SortFunc(out, func(a, b Rejection) int {
		return cmp.Or(strings.Compare(a.Node, b.Node), strings.Compare(a.Name, b.Name), strings.Compare(a.Container, b.Container))
	})
	if out == nil {
		out = []Rejection{}
	}
	return out
}

func (p *planner) explainOne(cd *cand, stop string) (string, string) {
	pn := cd.node
	switch stop {
	case StopTarget:
		return RuleTargetReached, fmt.Sprintf("the moves before it bring the imbalance to %.3f, %.0f%% of the target %.3f", p.goal(), 100*targetMargin, p.p.Target)
	case StopClusterLimit:
		return RuleClusterLimit, fmt.Sprintf("%d migrations would be open, max_moves allows %d", p.open+len(p.moves), p.p.MaxMoves)
	}
	switch {
	case pn.taking:
		why := "a planned move lands on " + pn.n.Name
		if pn.inFlightTo != "" {
			why = "migration " + pn.inFlightTo + " is moving a container to " + pn.n.Name
		}
		return RuleNodeTaking, why + ": a node does not give and take in one plan"
	case pn.moves >= p.p.MaxMovesPerNode:
		return RuleNodeLimit, fmt.Sprintf("%s has %d moves open or planned, max_moves_per_node allows %d", pn.n.Name, pn.moves, p.p.MaxMovesPerNode)
	case p.m.deviation(pn.u) <= 0:
		return RuleBalanced, fmt.Sprintf("the planned moves bring %s down to the mean load", pn.n.Name)
	}
	// The last pass weighed every candidate of every node that can give,
	// in the final state, and found nothing.
	v := cd.verdict
	switch {
	case cd.pass != p.pass:
		return RuleNotWorth, "the last pass did not weigh it; report this"
	case v.refused > 0:
		more := ""
		if n := v.refused - len(v.refusals); n > 0 {
			more = fmt.Sprintf("; and %d more", n)
		}
		return RuleNoDestination, fmt.Sprintf("every destination where its move would pay refuses it: %s%s", strings.Join(v.refusals, "; "), more)
	case v.dest == nil:
		return RuleNoDestination, fmt.Sprintf("no other ready node can take a move now (each is giving containers in this plan or has max_moves_per_node %d moves)", p.p.MaxMovesPerNode)
	}
	if v.gain <= 0 {
		return RuleNotWorth, fmt.Sprintf("moving it would not lower the imbalance (best destination %s: gain %.2f)", v.dest.n.Name, v.gain)
	}
	return RuleNotWorth, fmt.Sprintf("best destination %s: gain %.2f x stability %.2f (load steady for %s of stable_for %s) = %.2f, not above cost_multiple %g x cost %.2f (%s downtime, %s)",
		v.dest.n.Name, v.gain, cd.weight, cd.est.stableFor.Round(time.Second), p.p.StableFor, v.gain*cd.weight,
		p.p.CostMultiple, v.cost.value, v.cost.downtime.Round(time.Millisecond), formatBytes(v.cost.bytes))
}

// excludedBecause says why a node is left out of the imbalance.
func excludedBecause(n *state.Node) string {
	switch n.Status() {
	case state.NodeCordoned:
		return "cordoned: what runs there stays, nothing new goes there"
	case state.NodeDraining:
		return "draining: its drain moves its containers away"
	case state.NodeSuspect:
		return "suspect: its agent missed its heartbeats"
	case state.NodeDown:
		return "down: its agent has been unreachable past the down threshold"
	}
	if n.Capacity.MilliCPU <= 0 || n.Capacity.MemoryBytes <= 0 {
		return "reports no CPU or no memory capacity"
	}
	return "not ready"
}
