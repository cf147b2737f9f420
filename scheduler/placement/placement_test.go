package placement_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/godwit/godwit/scheduler/placement"
	pt "github.com/godwit/godwit/scheduler/placement/placementtest"
	"github.com/godwit/godwit/scheduler/state"
)

// request is a placement of image asking for milliCPU and memoryBytes.
func request(milliCPU, memoryBytes int64) placement.Request {
	return placement.Request{Spec: state.ContainerSpec{
		Image:   "busybox:latest",
		Request: state.Resources{MilliCPU: milliCPU, MemoryBytes: memoryBytes},
	}}
}

func spread(r placement.Request) placement.Request {
	r.Algorithm = placement.Spread
	return r
}

func pinned(r placement.Request, node string) placement.Request {
	r.Spec.Node = node
	return r
}

func constrained(r placement.Request, kv ...string) placement.Request {
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		r.Spec.Constraints = append(r.Spec.Constraints, state.Constraint{Key: k, Value: v})
	}
	return r
}

func needsCPU(r placement.Request, flags ...string) placement.Request {
	r.RequireCPU = &state.CPU{Vendor: "GenuineIntel", Flags: flags}
	return r
}

func excluding(r placement.Request, nodes ...string) placement.Request {
	r.Exclude = nodes
	return r
}

func TestPlace(t *testing.T) {
	tests := []struct {
		name  string
		nodes []*pt.NodeSpec
		req   placement.Request
		want  pt.Want
	}{
		// Algorithms.
		{
			name: "binpack prefers the fullest node that fits",
			nodes: []*pt.NodeSpec{
				pt.Node("empty", 4000, 8*pt.GiB),
				pt.Node("half", 4000, 8*pt.GiB).Running(2, 1000, 2*pt.GiB),
				pt.Node("most", 4000, 8*pt.GiB).Running(3, 1000, 2*pt.GiB),
			},
			req:  request(500, pt.GiB),
			want: pt.Want{Node: "most", Candidates: []string{"most", "half", "empty"}},
		},
		{
			name: "binpack is the default and skips a node too full for the request",
			nodes: []*pt.NodeSpec{
				pt.Node("half", 4000, 8*pt.GiB).Running(2, 1000, 2*pt.GiB),
				pt.Node("full", 4000, 8*pt.GiB).Running(1, 3800, 7*pt.GiB),
			},
			req:  request(500, pt.GiB),
			want: pt.Want{Node: "half", Candidates: []string{"half"}, Rejected: map[string]string{"full": placement.FilterCapacity}},
		},
		{
			name: "binpack prefers a node full in both dimensions to one full in one",
			nodes: []*pt.NodeSpec{
				// Both end 75% used in CPU and memory.
				pt.Node("balanced", 4000, 8*pt.GiB).Running(1, 2500, 5*pt.GiB),
				// Memory ends full, CPU 50%: the same sum of free fractions.
				pt.Node("lopsided", 4000, 8*pt.GiB).Running(1, 1500, 7*pt.GiB),
			},
			req:  request(500, pt.GiB),
			want: pt.Want{Node: "balanced", Candidates: []string{"balanced", "lopsided"}},
		},
		{
			name: "spread prefers the emptiest node",
			nodes: []*pt.NodeSpec{
				pt.Node("most", 4000, 8*pt.GiB).Running(3, 1000, 2*pt.GiB),
				pt.Node("empty", 4000, 8*pt.GiB),
				pt.Node("half", 4000, 8*pt.GiB).Running(2, 1000, 2*pt.GiB),
			},
			req:  spread(request(500, pt.GiB)),
			want: pt.Want{Node: "empty", Candidates: []string{"empty", "half", "most"}},
		},
		{
			name: "spread among equally loaded nodes prefers fewer containers",
			nodes: []*pt.NodeSpec{
				pt.Node("many", 4000, 8*pt.GiB).Running(4, 500, pt.GiB),
				pt.Node("few", 4000, 8*pt.GiB).Running(1, 2000, 4*pt.GiB),
			},
			req:  spread(request(500, pt.GiB)),
			want: pt.Want{Node: "few", Candidates: []string{"few", "many"}},
		},
		{
			name: "spread measures load as a fraction of each node's capacity",
			nodes: []*pt.NodeSpec{
				pt.Node("small-half-used", 2000, 4*pt.GiB).Running(1, 1000, 2*pt.GiB),
				pt.Node("big-more-used", 16000, 32*pt.GiB).Running(1, 4000, 8*pt.GiB),
			},
			req:  spread(request(500, pt.GiB)),
			want: pt.Want{Node: "big-more-used", Candidates: []string{"big-more-used", "small-half-used"}},
		},

		// Ties and the image bonus.
		{
			name:  "binpack tie goes to the first name",
			nodes: []*pt.NodeSpec{pt.Node("c", 4000, 8*pt.GiB), pt.Node("a", 4000, 8*pt.GiB), pt.Node("b", 4000, 8*pt.GiB)},
			req:   request(500, pt.GiB),
			want:  pt.Want{Node: "a", Candidates: []string{"a", "b", "c"}},
		},
		{
			name: "spread tie goes to the first name, also across sizes",
			nodes: []*pt.NodeSpec{
				pt.Node("n2", 8000, 16*pt.GiB).Running(1, 3000, 6*pt.GiB),
				pt.Node("n1", 4000, 8*pt.GiB).Running(1, 1000, 2*pt.GiB),
			},
			req:  spread(request(1000, 2*pt.GiB)),
			want: pt.Want{Node: "n1", Candidates: []string{"n1", "n2"}},
		},
		{
			name: "a node holding the image wins a tie",
			nodes: []*pt.NodeSpec{
				pt.Node("a", 4000, 8*pt.GiB),
				pt.Node("b", 4000, 8*pt.GiB).Images("busybox:latest"),
				pt.Node("c", 4000, 8*pt.GiB).Images("nginx:latest"),
			},
			req:  request(500, pt.GiB),
			want: pt.Want{Node: "b", Candidates: []string{"b", "a", "c"}},
		},
		{
			name: "the image bonus does not override a much better fit",
			nodes: []*pt.NodeSpec{
				pt.Node("empty-with-image", 4000, 8*pt.GiB).Images("busybox:latest"),
				pt.Node("busy", 4000, 8*pt.GiB).Running(1, 3000, 6*pt.GiB),
			},
			req:  request(500, pt.GiB),
			want: pt.Want{Node: "busy", Candidates: []string{"busy", "empty-with-image"}},
		},
		{
			name: "the image bonus counts under spread too",
			nodes: []*pt.NodeSpec{
				pt.Node("a", 4000, 8*pt.GiB),
				pt.Node("b", 4000, 8*pt.GiB).Images("busybox:latest"),
			},
			req:  spread(request(500, pt.GiB)),
			want: pt.Want{Node: "b", Candidates: []string{"b", "a"}},
		},

		{
			name: "all feasible nodes are ranked, a lean decision keeps the best five",
			nodes: []*pt.NodeSpec{
				pt.Node("n3", 4000, 8*pt.GiB).Running(2, 250, 512*pt.MiB),
				pt.Node("n8", 4000, 8*pt.GiB).Running(7, 250, 512*pt.MiB),
				pt.Node("n1", 4000, 8*pt.GiB),
				pt.Node("n6", 4000, 8*pt.GiB).Running(5, 250, 512*pt.MiB),
				pt.Node("n2", 4000, 8*pt.GiB).Running(1, 250, 512*pt.MiB),
				pt.Node("n7", 4000, 8*pt.GiB).Running(6, 250, 512*pt.MiB),
				pt.Node("n5", 4000, 8*pt.GiB).Running(4, 250, 512*pt.MiB),
				pt.Node("n4", 4000, 8*pt.GiB).Running(3, 250, 512*pt.MiB),
			},
			req:  request(500, pt.GiB),
			want: pt.Want{Node: "n8", Candidates: []string{"n8", "n7", "n6", "n5", "n4", "n3", "n2", "n1"}},
		},
		{
			name: "ties among more nodes than a lean decision keeps go by name",
			nodes: []*pt.NodeSpec{
				pt.Node("g", 4000, 8*pt.GiB), pt.Node("c", 4000, 8*pt.GiB), pt.Node("e", 4000, 8*pt.GiB),
				pt.Node("a", 4000, 8*pt.GiB), pt.Node("f", 4000, 8*pt.GiB), pt.Node("b", 4000, 8*pt.GiB),
				pt.Node("d", 4000, 8*pt.GiB).Images("busybox:latest"),
			},
			req:  spread(request(500, pt.GiB)),
			want: pt.Want{Node: "d", Candidates: []string{"d", "a", "b", "c", "e", "f", "g"}},
		},

		// Filters, in their order.
		{
			name: "status admits only ready nodes",
			nodes: []*pt.NodeSpec{
				pt.Node("ready", 4000, 8*pt.GiB),
				pt.Node("cordoned", 4000, 8*pt.GiB).Status(state.NodeCordoned),
				pt.Node("draining", 4000, 8*pt.GiB).Status(state.NodeDraining),
				pt.Node("suspect", 4000, 8*pt.GiB).Status(state.NodeSuspect),
				pt.Node("down", 4000, 8*pt.GiB).Status(state.NodeDown),
			},
			req: request(500, pt.GiB),
			want: pt.Want{Node: "ready", Candidates: []string{"ready"}, Rejected: map[string]string{
				"cordoned": placement.FilterStatus, "draining": placement.FilterStatus,
				"suspect": placement.FilterStatus, "down": placement.FilterStatus,
			}, Reasons: map[string]string{"cordoned": "node is cordoned", "draining": "node is draining"}},
		},
		{
			name:  "pinned chooses the pinned node over a better fit",
			nodes: []*pt.NodeSpec{pt.Node("a", 4000, 8*pt.GiB).Running(3, 1000, 2*pt.GiB), pt.Node("b", 4000, 8*pt.GiB)},
			req:   pinned(request(500, pt.GiB), "b"),
			want: pt.Want{Node: "b", Candidates: []string{"b"}, Rejected: map[string]string{"a": placement.FilterPinned},
				Reasons: map[string]string{"a": "container is pinned to node b"}},
		},
		{
			name:  "pinned to a cordoned node is refused",
			nodes: []*pt.NodeSpec{pt.Node("a", 4000, 8*pt.GiB), pt.Node("b", 4000, 8*pt.GiB).Status(state.NodeCordoned)},
			req:   pinned(request(500, pt.GiB), "b"),
			want:  pt.Want{Rejected: map[string]string{"a": placement.FilterPinned, "b": placement.FilterStatus}},
		},
		{
			name:  "pinned to a node that is not registered is refused",
			nodes: []*pt.NodeSpec{pt.Node("a", 4000, 8*pt.GiB)},
			req:   pinned(request(500, pt.GiB), "ghost"),
			want:  pt.Want{Rejected: map[string]string{"a": placement.FilterPinned}},
		},
		{
			name:  "excluded nodes are never chosen",
			nodes: []*pt.NodeSpec{pt.Node("source", 4000, 8*pt.GiB).Running(3, 1000, 2*pt.GiB), pt.Node("other", 4000, 8*pt.GiB)},
			req:   excluding(request(500, pt.GiB), "source"),
			want:  pt.Want{Node: "other", Candidates: []string{"other"}, Rejected: map[string]string{"source": placement.FilterExcluded}},
		},
		{
			name:  "excluding every node leaves none",
			nodes: []*pt.NodeSpec{pt.Node("a", 4000, 8*pt.GiB), pt.Node("b", 4000, 8*pt.GiB)},
			req:   excluding(request(500, pt.GiB), "a", "b"),
			want:  pt.Want{Rejected: map[string]string{"a": placement.FilterExcluded, "b": placement.FilterExcluded}},
		},
		{
			name: "constraints need every label with its value",
			nodes: []*pt.NodeSpec{
				pt.Node("eu-ssd", 4000, 8*pt.GiB).Labels("zone=eu", "disk=ssd"),
				pt.Node("eu-hdd", 4000, 8*pt.GiB).Labels("zone=eu", "disk=hdd"),
				pt.Node("us-ssd", 4000, 8*pt.GiB).Labels("zone=us", "disk=ssd"),
				pt.Node("bare", 4000, 8*pt.GiB),
			},
			req: constrained(request(500, pt.GiB), "zone=eu", "disk=ssd"),
			want: pt.Want{Node: "eu-ssd", Candidates: []string{"eu-ssd"}, Rejected: map[string]string{
				"eu-hdd": placement.FilterConstraint, "us-ssd": placement.FilterConstraint, "bare": placement.FilterConstraint,
			}, Reasons: map[string]string{
				"eu-hdd": "needs label disk=ssd, node has disk=hdd",
				"bare":   "needs label zone=eu, node has no zone label and needs label disk=ssd, node has no disk label",
			}},
		},
		{
			name: "cpu requires every feature the checkpoint was taken with",
			nodes: []*pt.NodeSpec{
				pt.Node("old", 4000, 8*pt.GiB).Flags("sse4_2", "fpu"),
				pt.Node("new", 4000, 8*pt.GiB).Flags("fpu", "avx2", "sse4_2", "avx512f"),
				pt.Node("same", 4000, 8*pt.GiB).Flags("sse4_2", "fpu", "avx2"),
			},
			req: needsCPU(request(500, pt.GiB), "fpu", "sse4_2", "avx2"),
			want: pt.Want{Node: "new", Candidates: []string{"new", "same"}, Rejected: map[string]string{"old": placement.FilterCPU},
				Reasons: map[string]string{"old": "CPU lacks 1 required feature: avx2"}},
		},
		{
			name: "cpu lists at most five missing features",
			nodes: []*pt.NodeSpec{
				pt.Node("bare", 4000, 8*pt.GiB),
				pt.Node("full", 4000, 8*pt.GiB).Flags("a", "b", "c", "d", "e", "f", "g"),
			},
			req: needsCPU(request(500, pt.GiB), "g", "f", "e", "d", "c", "b", "a", "a"),
			want: pt.Want{Node: "full", Candidates: []string{"full"}, Rejected: map[string]string{"bare": placement.FilterCPU},
				Reasons: map[string]string{"bare": "CPU lacks 7 required features: a, b, c, d, e and 2 more"}},
		},
		{
			name:  "without RequireCPU, CPU features do not matter",
			nodes: []*pt.NodeSpec{pt.Node("bare", 4000, 8*pt.GiB), pt.Node("rich", 4000, 8*pt.GiB).Flags("avx2")},
			req:   request(500, pt.GiB),
			want:  pt.Want{Node: "bare", Candidates: []string{"bare", "rich"}},
		},
		{
			name: "capacity says what memory is missing",
			nodes: []*pt.NodeSpec{
				pt.Node("small", 4000, 2*pt.GiB).Running(1, 100, 1920*pt.MiB),
				pt.Node("roomy", 4000, 8*pt.GiB),
			},
			req: request(500, 512*pt.MiB),
			want: pt.Want{Node: "roomy", Candidates: []string{"roomy"}, Rejected: map[string]string{"small": placement.FilterCapacity},
				Reasons: map[string]string{"small": "needs 512 MiB memory, has 128 MiB free of 2 GiB"}},
		},
		{
			name:  "capacity says what CPU and memory are missing",
			nodes: []*pt.NodeSpec{pt.Node("tiny", 1000, pt.GiB).Running(1, 800, 512*pt.MiB)},
			req:   request(1500, 1536*pt.MiB),
			want: pt.Want{Rejected: map[string]string{"tiny": placement.FilterCapacity},
				Reasons: map[string]string{"tiny": "needs 1.5 GiB memory, has 512 MiB free of 1 GiB and needs 1.5 CPUs, has 0.2 CPU free of 1 CPU"}},
		},
		{
			name:  "a request exactly the free capacity fits",
			nodes: []*pt.NodeSpec{pt.Node("exact", 4000, 8*pt.GiB).Running(1, 3000, 6*pt.GiB)},
			req:   request(1000, 2*pt.GiB),
			want:  pt.Want{Node: "exact", Candidates: []string{"exact"}},
		},
		{
			name: "a zero request does not land on a full node",
			nodes: []*pt.NodeSpec{
				pt.Node("full", 4000, 8*pt.GiB).Running(1, 4000, 8*pt.GiB),
				pt.Node("free", 4000, 8*pt.GiB),
			},
			req: request(0, 0),
			want: pt.Want{Node: "free", Candidates: []string{"free"}, Rejected: map[string]string{"full": placement.FilterCapacity},
				Reasons: map[string]string{"full": "needs 16 MiB memory (the default for a container that requests none), has none free (8 GiB reserved of 8 GiB)" +
					" and needs 0.01 CPU (the default for a container that requests none), has none free (4 CPUs reserved of 4 CPUs)"}},
		},
		{
			name:  "a node with no reported capacity takes nothing",
			nodes: []*pt.NodeSpec{pt.Node("unknown", 0, 0)},
			req:   request(0, 0),
			want:  pt.Want{Rejected: map[string]string{"unknown": placement.FilterCapacity}},
		},
		{
			name: "an overcommitted node is refused, not scored",
			nodes: []*pt.NodeSpec{
				pt.Node("over", 4000, 8*pt.GiB).Running(1, 5000, 10*pt.GiB),
				pt.Node("ok", 4000, 8*pt.GiB),
			},
			req: request(100, pt.MiB),
			want: pt.Want{Node: "ok", Candidates: []string{"ok"}, Rejected: map[string]string{"over": placement.FilterCapacity},
				Reasons: map[string]string{"over": "needs 1 MiB memory, has none free (10 GiB reserved of 8 GiB) and needs 0.1 CPU, has none free (5 CPUs reserved of 4 CPUs)"}},
		},
		{
			name: "the first filter that refuses a node names its rejection",
			nodes: []*pt.NodeSpec{
				// Fails status, constraint and capacity: status wins.
				pt.Node("cordoned-full", 1000, pt.GiB).Status(state.NodeCordoned).Running(1, 1000, pt.GiB),
				// Fails constraint, cpu and capacity: constraint wins.
				pt.Node("unlabelled-full", 1000, pt.GiB).Running(1, 1000, pt.GiB),
				// Fails cpu and capacity: cpu wins.
				pt.Node("old-full", 1000, pt.GiB).Labels("zone=eu").Running(1, 1000, pt.GiB),
				// Fails only capacity.
				pt.Node("full", 1000, pt.GiB).Labels("zone=eu").Flags("avx2").Running(1, 1000, pt.GiB),
				pt.Node("fits", 1000, pt.GiB).Labels("zone=eu").Flags("avx2"),
			},
			req: needsCPU(constrained(request(500, 512*pt.MiB), "zone=eu"), "avx2"),
			want: pt.Want{Node: "fits", Candidates: []string{"fits"}, Rejected: map[string]string{
				"cordoned-full":   placement.FilterStatus,
				"unlabelled-full": placement.FilterConstraint,
				"old-full":        placement.FilterCPU,
				"full":            placement.FilterCapacity,
			}},
		},
		{
			name:  "pinned and excluded: excluded wins over the pin",
			nodes: []*pt.NodeSpec{pt.Node("a", 4000, 8*pt.GiB), pt.Node("b", 4000, 8*pt.GiB)},
			req:   excluding(pinned(request(500, pt.GiB), "a"), "a"),
			want:  pt.Want{Rejected: map[string]string{"a": placement.FilterExcluded, "b": placement.FilterPinned}},
		},
		{
			name: "no node at all",
			req:  request(500, pt.GiB),
			want: pt.Want{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt.Check(t, pt.NewState(tc.nodes...), tc.req, tc.want)
		})
	}
}

// TestPlaceScoreParts checks the parts a dry-run prints: their names,
// weights and details, and that the image part is absent without an image.
// (Check also places without Explain and finds the same parts, without
// details.)
func TestPlaceScoreParts(t *testing.T) {
	s := pt.NewState(
		pt.Node("a", 4000, 8*pt.GiB).Running(2, 1000, 2*pt.GiB).Images("busybox:latest"),
	)
	tests := []struct {
		name string
		req  placement.Request
		want []placement.ScorePart
	}{
		{
			name: "binpack",
			req:  request(1000, 2*pt.GiB),
			want: []placement.ScorePart{
				{Name: placement.ScoreBinPack, Value: 0.75, Weight: placement.LoadWeight, Detail: "after placing: CPU 75% used, memory 75% used"},
				{Name: placement.ScoreImage, Value: 1, Weight: placement.ImageWeight, Detail: "image already on the node"},
			},
		},
		{
			name: "spread",
			req:  spread(request(1000, 2*pt.GiB)),
			want: []placement.ScorePart{
				{Name: placement.ScoreSpread, Value: 0.25, Weight: placement.LoadWeight, Detail: "after placing: CPU 75% used, memory 75% used"},
				{Name: placement.ScoreContainers, Value: 1.0 / 3, Weight: placement.ContainersWeight, Detail: "2 containers on the node"},
				{Name: placement.ScoreImage, Value: 1, Weight: placement.ImageWeight, Detail: "image already on the node"},
			},
		},
		{
			name: "no image, no image part",
			req: func() placement.Request {
				r := request(1000, 2*pt.GiB)
				r.Spec.Image = ""
				return r
			}(),
			want: []placement.ScorePart{
				{Name: placement.ScoreBinPack, Value: 0.75, Weight: placement.LoadWeight, Detail: "after placing: CPU 75% used, memory 75% used"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Explain = true
			d := pt.Check(t, s, tc.req, pt.Want{Node: "a", Candidates: []string{"a"}})
			got := d.Candidates[0].Parts
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("parts:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestPlaceInvalidRequest(t *testing.T) {
	s := pt.NewState(pt.Node("a", 4000, 8*pt.GiB))
	tests := []struct {
		name string
		req  placement.Request
		want error
	}{
		{"negative memory", request(0, -1), placement.ErrInvalidRequest},
		{"negative CPU", request(-1, 0), placement.ErrInvalidRequest},
		{"constraint without a key", constrained(request(0, 0), "=eu"), placement.ErrInvalidRequest},
		{"unknown algorithm", placement.Request{Algorithm: "random"}, placement.ErrUnknownAlgorithm},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := placement.Place(s, tc.req)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Place: err = %v, want %v", err, tc.want)
			}
			if d.Node != "" || len(d.Candidates) != 0 || len(d.Rejected) != 0 {
				t.Errorf("Place returned a decision with its error: %+v", d)
			}
		})
	}
}

// TestNoNodeErrorMessage checks what the operator reads when nothing fits.
func TestNoNodeErrorMessage(t *testing.T) {
	var many []*pt.NodeSpec
	for i := range 12 {
		many = append(many, pt.Node(fmt.Sprintf("n%02d", i), 1000, pt.GiB).Running(1, 1000, pt.GiB))
	}
	many = append(many, pt.Node("n99", 4000, 8*pt.GiB).Status(state.NodeDown))

	tests := []struct {
		name  string
		nodes []*pt.NodeSpec
		req   placement.Request
		// want are substrings of the message, in order.
		want []string
		// absent must not appear.
		absent []string
	}{
		{
			name: "no nodes",
			req:  request(500, pt.GiB),
			want: []string{"no node can run the container: the cluster has no nodes; start an agent with --join"},
		},
		{
			name:  "pinned to a cordoned node",
			nodes: []*pt.NodeSpec{pt.Node("a", 4000, 8*pt.GiB), pt.Node("b", 4000, 8*pt.GiB).Status(state.NodeCordoned)},
			req:   pinned(request(500, pt.GiB), "b"),
			want: []string{"no node can run the container: it is pinned to node b, which is refused by the status filter: node is cordoned",
				"uncordon it: godwit node uncordon b", "or run it without --node"},
			absent: []string{"a:"},
		},
		{
			name:  "pinned to a full node",
			nodes: []*pt.NodeSpec{pt.Node("a", 4000, 2*pt.GiB).Running(1, 0, 2*pt.GiB)},
			req:   pinned(request(500, pt.GiB), "a"),
			want:  []string{"pinned to node a, which is refused by the capacity filter: needs 1 GiB memory, has none free", "lower the container's request, or add a node"},
		},
		{
			name:  "pinned to a node not in the cluster",
			nodes: []*pt.NodeSpec{pt.Node("a", 4000, 8*pt.GiB)},
			req:   pinned(request(500, pt.GiB), "ghost"),
			want:  []string{"it is pinned to node ghost, which is not in the cluster; check the name with `godwit node ls`, or run it without --node"},
		},
		{
			name: "each node with its reason and remedy",
			nodes: []*pt.NodeSpec{
				pt.Node("a", 4000, 8*pt.GiB).Status(state.NodeDraining),
				pt.Node("b", 4000, 8*pt.GiB),
				pt.Node("c", 1000, pt.GiB).Labels("zone=eu"),
			},
			req: constrained(request(2000, pt.GiB), "zone=eu"),
			want: []string{
				"no node can run the container: 3 nodes refused it (status 1, constraint 1, capacity 1):",
				"\n  a: status: node is draining; it is being drained; uncordon it once the drain ends: godwit node uncordon a",
				"\n  b: constraint: needs label zone=eu, node has no zone label; relax --constraint, or label a node to match",
				"\n  c: capacity: needs 2 CPUs, has 1 CPU free of 1 CPU; free capacity on it",
			},
		},
		{
			name:  "a long list is cut short",
			nodes: many,
			req:   request(500, 512*pt.MiB),
			want: []string{"13 nodes refused it (status 1, capacity 12):", "\n  n00: capacity:", "\n  n09: capacity:",
				"\n  ... and 3 more (`godwit run --dry-run` lists every node)"},
			absent: []string{"n10:", "n99:"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := placement.Place(pt.NewState(tc.nodes...), tc.req)
			if !errors.Is(err, placement.ErrNoNode) {
				t.Fatalf("Place: err = %v, want ErrNoNode", err)
			}
			msg := err.Error()
			rest := msg
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("message lacks %q (in order):\n%s", w, msg)
				}
				rest = rest[i+len(w):]
			}
			for _, a := range tc.absent {
				if strings.Contains(msg, a) {
					t.Errorf("message has %q:\n%s", a, msg)
				}
			}
		})
	}
}

func TestParseAlgorithm(t *testing.T) {
	tests := []struct {
		in      string
		want    placement.Algorithm
		wantErr error
	}{
		{"", placement.BinPack, nil},
		{"binpack", placement.BinPack, nil},
		{"spread", placement.Spread, nil},
		{"Spread", "", placement.ErrUnknownAlgorithm},
		{"random", "", placement.ErrUnknownAlgorithm},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.in), func(t *testing.T) {
			got, err := placement.ParseAlgorithm(tc.in)
			if got != tc.want || !errors.Is(err, tc.wantErr) {
				t.Errorf("ParseAlgorithm(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestEffectiveRequest(t *testing.T) {
	tests := []struct {
		name string
		in   state.Resources
		want state.Resources
	}{
		{"zero gets both defaults", state.Resources{}, state.Resources{MilliCPU: placement.DefaultMilliCPU, MemoryBytes: placement.DefaultMemoryBytes}},
		{"zero CPU only", state.Resources{MemoryBytes: pt.GiB}, state.Resources{MilliCPU: placement.DefaultMilliCPU, MemoryBytes: pt.GiB}},
		{"zero memory only", state.Resources{MilliCPU: 1}, state.Resources{MilliCPU: 1, MemoryBytes: placement.DefaultMemoryBytes}},
		{"set stays", state.Resources{MilliCPU: 1, MemoryBytes: 1}, state.Resources{MilliCPU: 1, MemoryBytes: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := placement.EffectiveRequest(tc.in); got != tc.want {
				t.Errorf("EffectiveRequest(%+v) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

// TestBinPackFillsBeforeSpilling places zero-request containers one after
// the other, as the scheduler would, and checks that bin-pack fills one
// node before the next, while spread alternates.
func TestBinPackFillsBeforeSpilling(t *testing.T) {
	const perNode = 4 // 64 pt.MiB nodes hold four 16 pt.MiB default requests.
	tests := []struct {
		alg  placement.Algorithm
		want []string
	}{
		{placement.BinPack, []string{"a", "a", "a", "a", "b", "b", "b", "b"}},
		{placement.Spread, []string{"a", "b", "a", "b", "a", "b", "a", "b"}},
	}
	for _, tc := range tests {
		t.Run(string(tc.alg), func(t *testing.T) {
			running := map[string]int{}
			var got []string
			for range 2 * perNode {
				s := pt.NewState(
					pt.Node("a", 4000, perNode*placement.DefaultMemoryBytes).Running(running["a"], 0, 0),
					pt.Node("b", 4000, perNode*placement.DefaultMemoryBytes).Running(running["b"], 0, 0),
				)
				d, err := placement.Place(s, placement.Request{Algorithm: tc.alg})
				if err != nil {
					t.Fatalf("placement %d: %v", len(got)+1, err)
				}
				running[d.Node]++
				got = append(got, d.Node)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("nodes chosen in turn = %v, want %v", got, tc.want)
			}
			s := pt.NewState(
				pt.Node("a", 4000, perNode*placement.DefaultMemoryBytes).Running(running["a"], 0, 0),
				pt.Node("b", 4000, perNode*placement.DefaultMemoryBytes).Running(running["b"], 0, 0),
			)
			if _, err := placement.Place(s, placement.Request{Algorithm: tc.alg}); !errors.Is(err, placement.ErrNoNode) {
				t.Errorf("placing on two full nodes: err = %v, want ErrNoNode", err)
			}
		})
	}
}
