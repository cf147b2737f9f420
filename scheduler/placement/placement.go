package placement

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/godwit/godwit/scheduler/state"
)

// State is the read-only view of the cluster that placement decides on:
// the scheduler leader passes a consistent snapshot, so that every method
// answers about the same moment. Implementations must not block.
type State interface {
	// Nodes returns every registered node, whatever its status, none nil.
	// Any order is accepted; sorted by name is fastest. The nodes are read,
	// never modified.
	Nodes() []*state.Node
	// Allocated returns the resources reserved on the node by the
	// containers placed there (zero for an unknown node).
	Allocated(node string) state.Resources
	// ContainerCount returns how many containers are placed on the node
	// (zero for an unknown node).
	ContainerCount(node string) int
	// HasImage reports whether the node holds the image (name:tag)
	// already.
	HasImage(node, image string) bool
}

// Algorithm is how feasible nodes are ranked.
type Algorithm string

const (
	// BinPack prefers the fullest node that fits; the zero Algorithm means
	// BinPack.
	BinPack Algorithm = "binpack"
	// Spread prefers the emptiest node.
	Spread Algorithm = "spread"
)

// ParseAlgorithm returns the Algorithm named s ("" is BinPack), or an error
// wrapping ErrUnknownAlgorithm.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(s); a {
	case "", BinPack:
		return BinPack, nil
	case Spread:
		return Spread, nil
	default:
		return "", fmt.Errorf("placement algorithm %q: %w (use %q or %q)", s, ErrUnknownAlgorithm, BinPack, Spread)
	}
}

var (
	// ErrNoNode is what every *NoNodeError matches with errors.Is.
	ErrNoNode = errors.New("no node can run the container")
	// ErrUnknownAlgorithm: the request names an algorithm placement does
	// not have.
	ErrUnknownAlgorithm = errors.New("unknown placement algorithm")
	// ErrInvalidRequest: the request cannot be placed anywhere as asked
	// (a negative resource, a constraint without a key).
	ErrInvalidRequest = errors.New("invalid placement request")
)

// Request is what to place and the rules for choosing its node.
type Request struct {
	// Spec is the container to place: its Request, Constraints, Node (a
	// pin) and Image are read.
	Spec state.ContainerSpec
	// Exclude are nodes never to choose, such as a migration's source.
	Exclude []string
	// RequireCPU, when set, are CPU features the chosen node must have
	// every one of: the dumping CPU's, for a move.
	RequireCPU *state.CPU
	// Algorithm ranks the feasible nodes; "" means BinPack.
	Algorithm Algorithm
	// Explain asks for the whole story, for `run --dry-run`: every
	// feasible node among the Candidates, and each ScorePart's Detail.
	// Without it Place keeps the best RetainedCandidates and writes no
	// Details, which makes it several times faster on a large cluster;
	// the chosen node, the scores and the rejections are the same.
	Explain bool
}

// RetainedCandidates is how many Candidates a Decision keeps when the
// request does not ask to Explain: the winner and enough runners-up for a
// caller that falls back to the next best node when its first choice
// fails. (nomad keeps the same number of node scores per allocation.)
const RetainedCandidates = 5

// Decision is the outcome of one placement.
type Decision struct {
	// Node is the chosen node: the first Candidate. Empty when no node
	// fits.
	Node string
	// Candidates are nodes that passed every filter, best first: all of
	// them when the request asked to Explain, else the best
	// RetainedCandidates.
	Candidates []Candidate
	// Feasible is how many nodes passed every filter, Candidates kept or
	// not.
	Feasible int
	// Rejected are all other nodes, sorted by name, each with the first
	// filter that refused it.
	Rejected []Rejection
}

// Candidate is a node that passed every filter, with its score.
type Candidate struct {
	Node string
	// Score is the sum of Weight × Value over Parts, rounded to
	// ScorePrecision; higher is better.
	Score float64
	Parts []ScorePart
}

// ScorePart is one named term of a Candidate's score.
type ScorePart struct {
	// Name is one of ScoreBinPack, ScoreSpread, ScoreContainers,
	// ScoreImage.
	Name string
	// Value is the term before weighting, in [0, 1].
	Value float64
	// Weight is what Value is multiplied by in the Score.
	Weight float64
	// Detail says in words what Value was computed from, for
	// `run --dry-run`; empty unless the Request asked to Explain.
	Detail string
}

// Rejection is a node that cannot run the container, and why.
type Rejection struct {
	Node string
	// Filter is the first filter that refused the node (FilterStatus ...
	// FilterCapacity).
	Filter string
	// Reason is what the filter found, in an operator's words, e.g.
	// "needs 512 MiB memory, has 128 MiB free of 2 GiB".
	Reason string
	// Advice is what an operator can do to make the node eligible, e.g.
	// "uncordon it: godwit node uncordon n1"; "" when nothing applies.
	Advice string
}

// Place chooses a node for req from s. Every node of s is either
// feasible (counted in Feasible, and among the Candidates if it ranks high
// enough or the request asks to Explain) or a Rejection. When no node
// passes the filters it returns the Decision (Rejected filled, Node empty)
// together with a *NoNodeError; an invalid request gives an error wrapping
// ErrInvalidRequest or ErrUnknownAlgorithm and an empty Decision.
//
// Place makes two passes. The first filters and scores every node and
// keeps only each feasible node's rank key; the second scores again the
// nodes kept, writing their parts (and Details) into the Decision. On a
// large cluster nearly all nodes are feasible, and building a Candidate
// for each would cost more than deciding.
func Place(s State, req Request) (Decision, error) {
	p, err := newPlacer(req)
	if err != nil {
		return Decision{}, err
	}
	t, release := tableOf(s, p.alg == Spread)
	defer release()
	p.held = t.holders(req.Spec.Image)
	var d Decision
	var keys []uint64
	if o := t.outcomesFor(p); o != nil {
		d.Feasible, d.Rejected = len(o.keys), o.rejections()
		keys = o.keys[:min(len(o.keys), RetainedCandidates)]
	} else {
		best := ranking{limit: RetainedCandidates}
		if req.Explain {
			best = ranking{all: true, keys: make([]uint64, 0, len(t.rows))}
		}
		for i := range t.rows {
			key, r, ok := p.evaluate(t, i)
			if !ok {
				d.Rejected = append(d.Rejected, r)
				continue
			}
			d.Feasible++
			best.add(key)
		}
		keys = best.ranked()
	}
	if d.Feasible == 0 {
		return d, &NoNodeError{Pinned: req.Spec.Node, Rejected: d.Rejected}
	}

	parts := make([]ScorePart, 0, len(keys)*maxParts)
	d.Candidates = make([]Candidate, 0, len(keys))
	for _, k := range keys {
		i := int(uint32(k))
		p.at(i, &t.rows[i])
		start := len(parts)
		parts = p.parts(parts, p.terms(), req.Explain)
		d.Candidates = append(d.Candidates, Candidate{
			Node:  p.cur.node.Name,
			Score: float64(maxScoreUnits-k>>32) * ScorePrecision,
			Parts: parts[start:len(parts):len(parts)],
		})
	}
	d.Node = d.Candidates[0].Node
	return d, nil
}

// maxScoreUnits bounds a score in ScorePrecision units: the weights sum to
// well under this, and rankKey needs the units to fit in 32 bits.
const maxScoreUnits = math.MaxUint32

// rankKey orders feasible nodes best first when sorted ascending: the
// score's units inverted in the high 32 bits, then the node's index in
// name order. Comparing integers, not Candidates, keeps ranking a thousand
// nodes cheaper than scoring them.
func rankKey(units int64, index int) uint64 {
	return uint64(maxScoreUnits-units)<<32 | uint64(index)
}

// ranking collects rank keys, best first: all of them, or the best limit.
type ranking struct {
	// all keeps every key, sorted once at the end.
	all bool
	// limit, unless all, is how many of the best keys are kept, in order
	// as they come.
	limit int
	keys  []uint64
}

// add offers k. With a small limit, most keys cost one comparison and no
// allocation.
func (r *ranking) add(k uint64) {
	if r.all {
		r.keys = append(r.keys, k)
		return
	}
	if n := len(r.keys); n < r.limit {
		r.keys = append(r.keys, k)
	} else if k < r.keys[n-1] {
		r.keys[n-1] = k
	} else {
		return
	}
	// One insertion sort step moves the new key to its place.
	for i := len(r.keys) - 1; i > 0 && r.keys[i] < r.keys[i-1]; i-- {
		r.keys[i], r.keys[i-1] = r.keys[i-1], r.keys[i]
	}
}

// ranked returns the kept keys, best first.
func (r *ranking) ranked() []uint64 {
	if r.all {
		slices.Sort(r.keys)
	}
	return r.keys
}

// placer is one Place call's request, checked and prepared once, and the
// node being evaluated.
type placer struct {
	req Request
	alg Algorithm
	// need is the request with the defaults for a zero request applied.
	need state.Resources
	// cpuFlags are RequireCPU's flags, sorted.
	cpuFlags []string
	// pinnedReason is the pinned filter's reason, the same for every node
	// it refuses.
	pinnedReason string
	// onlyStatusAndCapacity is set when the request is not pinned and has
	// no exclusions, constraints or CPU features, so that only the status
	// and capacity filters can refuse a node.
	onlyStatusAndCapacity bool

	// held says whether each node holds the request's image (nil when it
	// names none).
	held []bool
	// index and cur are the node being evaluated: its index in the Table
	// and its row. free is its capacity less its allocation, which the
	// capacity filter checks and the scores use.
	index int
	cur   *row
	free  state.Resources
}

func newPlacer(req Request) (*placer, error) {
	alg, err := ParseAlgorithm(string(req.Algorithm))
	if err != nil {
		return nil, err
	}
	r := req.Spec.Request
	if r.MilliCPU < 0 || r.MemoryBytes < 0 {
		return nil, fmt.Errorf("request of %d milli-CPU and %d bytes: %w: resources cannot be negative", r.MilliCPU, r.MemoryBytes, ErrInvalidRequest)
	}
	for _, c := range req.Spec.Constraints {
		if c.Key == "" {
			return nil, fmt.Errorf("constraint %q=%q: %w: a constraint needs a label key (--constraint KEY=VALUE)", c.Key, c.Value, ErrInvalidRequest)
		}
	}
	p := &placer{req: req, alg: alg, need: EffectiveRequest(r)}
	p.onlyStatusAndCapacity = req.Spec.Node == "" && len(req.Exclude) == 0 && len(req.Spec.Constraints) == 0 && req.RequireCPU == nil
	if req.Spec.Node != "" {
		p.pinnedReason = "container is pinned to node " + req.Spec.Node
	}
	if req.RequireCPU != nil {
		p.cpuFlags = slices.Clone(req.RequireCPU.Flags)
		slices.Sort(p.cpuFlags)
		p.cpuFlags = slices.Compact(p.cpuFlags)
	}
	return p, nil
}

// evaluate runs the filters on row i of t: a feasible node's rank key and
// true, or the node's Rejection and false.
func (p *placer) evaluate(t *Table, i int) (uint64, Rejection, bool) {
	p.at(i, &t.rows[i])
	if f, reason := p.filter(); f != "" {
		return 0, Rejection{Node: p.cur.node.Name, Filter: f, Reason: reason, Advice: p.cur.adviceFor(f)}, false
	}
	return rankKey(p.units(p.terms()), i), Rejection{}, true
}

// at makes node index, whose row is r, the one being evaluated.
func (p *placer) at(index int, r *row) {
	p.index, p.cur = index, r
	p.free = r.node.Capacity.Sub(r.allocated)
}
