package history

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Outcome is how an acknowledged migration ended, as the test learned it.
type Outcome string

const (
	// Committed: the move committed; the container is the destination's
	// at the next generation.
	Committed Outcome = "committed"
	// RolledBack: the move was aborted; the container stays on its
	// source at its generation.
	RolledBack Outcome = "rolled back"
	// Open: not settled (yet); at Check, a violation.
	Open Outcome = "open"
)

var (
	// ErrViolation: the history breaks one of the guarantees (doc.go).
	ErrViolation = errors.New("the history breaks godwit's guarantees")
	// ErrInconclusive: the checker ran out of time before it could say.
	ErrInconclusive = errors.New("the history could not be checked in time")
)

// Recorder collects a history. Its methods are safe for concurrent use:
// a test's sampler and its main goroutine record side by side.
type Recorder struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
	// moves indexes each acknowledged migration's entry in ops by ID.
	moves map[string]int
}

// New returns an empty history whose clock starts now; every time given
// to it must be later.
func New() *Recorder {
	return &Recorder{start: time.Now(), moves: map[string]int{}}
}

// at is t on the history's clock: nanoseconds since New, monotonic.
func (r *Recorder) at(t time.Time) int64 { return t.Sub(r.start).Nanoseconds() }

func (r *Recorder) add(in input, out output, call time.Time) int {
	now := time.Now()
	if call.IsZero() || call.After(now) {
		call = now
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, opAt(r, in, out, call, now))
	return len(r.ops) - 1
}

// Placed records where the cluster placed container when the test began
// to follow it: its first entry, before any other of it.
func (r *Recorder) Placed(container, node string, generation uint64) {
	r.add(input{kind: kindPlaced, container: container, node: node, generation: generation}, output{}, time.Time{})
}

// ClusterSaid records that the cluster, asked at call, answered (by now)
// that container is on node at generation.
func (r *Recorder) ClusterSaid(container string, call time.Time, node string, generation uint64) {
	r.add(input{kind: kindClusterSaid, container: container}, output{node: node, generation: generation}, call)
}

// HostSaw records that runc on node, asked at call, showed by now whether
// container runs there (its processes not stopped).
func (r *Recorder) HostSaw(container, node string, call time.Time, running bool) {
	r.add(input{kind: kindHostSaw, container: container, node: node}, output{running: running}, call)
}

// MoveAcknowledged records migration id of container from node from to
// node to, starting at generation, that the cluster acknowledged to a
// request made at call. It stays open until MoveSettled.
func (r *Recorder) MoveAcknowledged(container, id, from, to string, generation uint64, call time.Time) {
	i := r.add(input{kind: kindMove, container: container, id: id, from: from, to: to, generation: generation}, output{outcome: Open}, call)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops[i].Return = math.MaxInt64
	r.moves[id] = i
}

// MoveSettled records that migration id ended, as the test learned now,
// with outcome. A migration settled twice must end alike.
func (r *Recorder) MoveSettled(id string, outcome Outcome) error {
	if outcome != Committed && outcome != RolledBack {
		return fmt.Errorf("migration %s: outcome %q: a settled migration committed or rolled back", id, outcome)
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.moves[id]
	if !ok {
		return fmt.Errorf("migration %s was never acknowledged (MoveAcknowledged)", id)
	}
	out := r.ops[i].Output.(output)
	switch out.outcome {
	case Open:
		r.ops[i].Output = output{outcome: outcome}
		r.ops[i].Return = r.at(now)
	case outcome:
	default:
		return fmt.Errorf("%w: migration %s %s, and later %s", ErrViolation, id, out.outcome, outcome)
	}
	return nil
}

// Len is the number of entries.
func (r *Recorder) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// snapshot copies the entries.
func (r *Recorder) snapshot() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.ops)
}

// Check checks the history (doc.go) within timeout. It returns an error
// wrapping ErrViolation that names the broken guarantee and the entries
// involved, or ErrInconclusive.
func (r *Recorder) Check(timeout time.Duration) error {
	ops := r.snapshot()
	var open []string
	for _, op := range ops {
		if in := op.Input.(input); in.kind == kindMove && op.Output.(output).outcome == Open {
			open = append(open, describe(in, op.Output.(output)))
		}
	}
	if len(open) > 0 {
		return fmt.Errorf("%w: every acknowledged migration commits or rolls back, and these did neither: %s",
			ErrViolation, strings.Join(open, "; "))
	}
	m := model()
	res, info := porcupine.CheckOperationsVerbose(m, ops, timeout)
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Unknown:
		return fmt.Errorf("%w (%s, %d entries)", ErrInconclusive, timeout, len(ops))
	}
	return fmt.Errorf("%w: at most one running copy per container at every generation, moved only by a committed move:\n%s",
		ErrViolation, explain(m, ops, info))
}

// explain describes, for each container whose entries admit no order,
// the longest order that replays and the entries left over.
func explain(m porcupine.Model, ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	parts := m.Partition(ops)
	partials := info.PartialLinearizationsOperations()
	var b strings.Builder
	for i, part := range parts {
		if i >= len(partials) {
			break
		}
		var longest []porcupine.Operation
		for _, p := range partials[i] {
			if len(p) > len(longest) {
				longest = p
			}
		}
		if len(longest) == len(part) {
			continue
		}
		fmt.Fprintf(&b, "container %s: no order of its %d entries replays; the longest that does (%d):\n",
			part[0].Input.(input).container, len(part), len(longest))
		state := placement{}
		for _, op := range longest {
			in, out := op.Input.(input), op.Output.(output)
			if next := step(state, in, out); len(next) > 0 {
				state = next[len(next)-1]
			}
			fmt.Fprintf(&b, "  %s  %s\n", span(op), describe(in, out))
		}
		fmt.Fprintf(&b, "  then none of these fits %s:\n", state)
		in := map[porcupine.Operation]bool{}
		for _, op := range longest {
			in[op] = true
		}
		rest := slices.Clone(part)
		slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		for _, op := range rest {
			if !in[op] {
				fmt.Fprintf(&b, "  %s  %s\n", span(op), describe(op.Input.(input), op.Output.(output)))
			}
		}
	}
	return b.String()
}

// span is an entry's interval on the history's clock, in milliseconds.
func span(op porcupine.Operation) string {
	if op.Return == math.MaxInt64 {
		return fmt.Sprintf("[%9.3fs, open    ]", float64(op.Call)/1e9)
	}
	return fmt.Sprintf("[%9.3fs, %9.3fs]", float64(op.Call)/1e9, float64(op.Return)/1e9)
}

// String lists the history in the order of its calls, for a failed
// test's log.
func (r *Recorder) String() string {
	ops := r.snapshot()
	slices.SortStableFunc(ops, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
	var b strings.Builder
	for _, op := range ops {
		fmt.Fprintf(&b, "%s  %s\n", span(op), describe(op.Input.(input), op.Output.(output)))
	}
	return b.String()
}

// Visualize writes porcupine's HTML view of the history and of the
// orders the checker tried, for a failed check.
func (r *Recorder) Visualize(w io.Writer, timeout time.Duration) error {
	m := model()
	_, info := porcupine.CheckOperationsVerbose(m, r.snapshot(), timeout)
	return porcupine.Visualize(m, info, w)
}

// opAt is an entry spanning [call, ret] on r's clock.
func opAt(r *Recorder, in input, out output, call, ret time.Time) porcupine.Operation {
	return porcupine.Operation{Input: in, Output: out, Call: r.at(call), Return: r.at(ret)}
}
