package placementtest

import (
	"errors"
	"maps"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/godwit/godwit/scheduler/placement"
)

// Want is the expected outcome of one placement.
type Want struct {
	// Node is the chosen node; "" expects a *placement.NoNodeError.
	Node string
	// Candidates are all the feasible nodes, best first, exactly. A
	// request that does not Explain must return the first
	// placement.RetainedCandidates of them.
	Candidates []string
	// Rejected maps every rejected node to the filter that refused it,
	// exactly: a node missing here must be a candidate.
	Rejected map[string]string
	// Reasons maps some rejected nodes to their exact Reason.
	Reasons map[string]string
}

// Check places req on s, fails t unless the Decision matches want, and
// returns the Decision for further checks. Whatever want says, it also
// fails t when the Decision breaks an invariant of placement.Place: each
// node of s is feasible or rejected, never both; rejections carry a reason
// and are sorted by node; candidates are sorted by score then name and
// each score is the rounded weighted sum of its parts; the error is a
// *NoNodeError with the Decision's rejections exactly when nothing fits;
// the same request on the nodes in reverse order, and on a placement.Table
// read from s, decides the same; and
// flipping Request.Explain changes nothing but how many candidates are
// kept and whether their parts carry Details.
func Check(t testing.TB, s *State, req placement.Request, want Want) placement.Decision {
	t.Helper()
	d, err := placement.Place(s, req)
	if want.Node == "" {
		var nn *placement.NoNodeError
		if !errors.As(err, &nn) || !errors.Is(err, placement.ErrNoNode) {
			t.Fatalf("Place: want a *NoNodeError, got %v (decision %+v)", err, d)
		}
		if !reflect.DeepEqual(nn.Rejected, d.Rejected) {
			t.Errorf("NoNodeError.Rejected = %+v, want the decision's %+v", nn.Rejected, d.Rejected)
		}
		if nn.Pinned != req.Spec.Node {
			t.Errorf("NoNodeError.Pinned = %q, want %q", nn.Pinned, req.Spec.Node)
		}
	} else if err != nil {
		t.Fatalf("Place: %v", err)
	}

	if d.Node != want.Node {
		t.Errorf("chosen node = %q, want %q", d.Node, want.Node)
	}
	wantCandidates := want.Candidates
	if !req.Explain {
		wantCandidates = wantCandidates[:min(len(wantCandidates), placement.RetainedCandidates)]
	}
	if got := candidateNames(d); !slices.Equal(got, wantCandidates) {
		t.Errorf("candidates = %q, want %q", got, wantCandidates)
	}
	if d.Feasible != len(want.Candidates) {
		t.Errorf("feasible = %d, want %d", d.Feasible, len(want.Candidates))
	}
	gotRejected := make(map[string]string, len(d.Rejected))
	for _, r := range d.Rejected {
		gotRejected[r.Node] = r.Filter
	}
	if !maps.Equal(gotRejected, want.Rejected) && (len(gotRejected) > 0 || len(want.Rejected) > 0) {
		t.Errorf("rejected (node: filter) = %v, want %v\nrejections: %+v", gotRejected, want.Rejected, d.Rejected)
	}
	for node, reason := range want.Reasons {
		if got := reasonOf(d, node); got != reason {
			t.Errorf("reason for rejecting %s = %q, want %q", node, got, reason)
		}
	}

	checkInvariants(t, s, req, d)
	onTable, onTableErr := placement.Place(placement.NewTable(s), req)
	if !reflect.DeepEqual(onTable, d) || (onTableErr == nil) != (err == nil) {
		t.Errorf("on a placement.Table of the same state, Place decided %+v (err %v), not %+v (err %v)", onTable, onTableErr, d, err)
	}
	again, againErr := placement.Place(reversed{s}, req)
	if !reflect.DeepEqual(again, d) || (againErr == nil) != (err == nil) {
		t.Errorf("with the nodes in reverse order, Place decided %+v (err %v), not %+v (err %v)", again, againErr, d, err)
	}
	flipped := req
	flipped.Explain = !req.Explain
	other, otherErr := placement.Place(s, flipped)
	checkInvariants(t, s, flipped, other)
	if !reflect.DeepEqual(lean(other), lean(d)) || (otherErr == nil) != (err == nil) {
		t.Errorf("with Explain %v, Place decided %+v (err %v), not %+v (err %v)", flipped.Explain, other, otherErr, d, err)
	}
	return d
}

// lean is what d would be had its request not asked to Explain: the best
// placement.RetainedCandidates candidates, with no Details.
func lean(d placement.Decision) placement.Decision {
	d.Candidates = slices.Clone(d.Candidates[:min(len(d.Candidates), placement.RetainedCandidates)])
	for i, c := range d.Candidates {
		c.Parts = slices.Clone(c.Parts)
		for j := range c.Parts {
			c.Parts[j].Detail = ""
		}
		d.Candidates[i] = c
	}
	return d
}

func checkInvariants(t testing.TB, s *State, req placement.Request, d placement.Decision) {
	t.Helper()
	if len(d.Candidates) > d.Feasible || !req.Explain && len(d.Candidates) > placement.RetainedCandidates ||
		req.Explain && len(d.Candidates) != d.Feasible {
		t.Errorf("%d candidates kept of %d feasible (explain %v)", len(d.Candidates), d.Feasible, req.Explain)
	}
	if d.Feasible+len(d.Rejected) != len(s.Nodes()) {
		t.Errorf("%d feasible and %d rejected nodes, the state has %d", d.Feasible, len(d.Rejected), len(s.Nodes()))
	}
	seen := make(map[string]int)
	for _, c := range d.Candidates {
		seen[c.Node]++
	}
	for _, r := range d.Rejected {
		seen[r.Node]++
		if r.Reason == "" {
			t.Errorf("node %s rejected by %q without a reason", r.Node, r.Filter)
		}
	}
	names := make(map[string]bool)
	for _, n := range s.Nodes() {
		names[n.Name] = true
	}
	for name, times := range seen {
		if times != 1 || !names[name] {
			t.Errorf("node %s appears %d times among candidates and rejections, want once and in the state", name, times)
		}
	}
	if !slices.IsSortedFunc(d.Rejected, func(a, b placement.Rejection) int { return strings.Compare(a.Node, b.Node) }) {
		t.Errorf("rejections not sorted by node: %+v", d.Rejected)
	}
	for i, c := range d.Candidates {
		var sum float64
		for _, p := range c.Parts {
			if p.Value < 0 || p.Value > 1 || p.Name == "" {
				t.Errorf("candidate %s: score part %+v: want a name and a value in [0, 1]", c.Node, p)
			}
			if (p.Detail != "") != req.Explain {
				t.Errorf("candidate %s: score part %+v: want a Detail exactly when the request asks to Explain (%v)", c.Node, p, req.Explain)
			}
			sum += p.Weight * p.Value
		}
		if math.Abs(sum-c.Score) > placement.ScorePrecision {
			t.Errorf("candidate %s: score %v, but its parts sum to %v", c.Node, c.Score, sum)
		}
		if i > 0 {
			prev := d.Candidates[i-1]
			if prev.Score < c.Score || prev.Score == c.Score && prev.Node > c.Node {
				t.Errorf("candidates out of order: %s (%v) before %s (%v)", prev.Node, prev.Score, c.Node, c.Score)
			}
		}
	}
}

func candidateNames(d placement.Decision) []string {
	var names []string
	for _, c := range d.Candidates {
		names = append(names, c.Node)
	}
	return names
}

func reasonOf(d placement.Decision, node string) string {
	for _, r := range d.Rejected {
		if r.Node == node {
			return r.Reason
		}
	}
	return "(not rejected)"
}
