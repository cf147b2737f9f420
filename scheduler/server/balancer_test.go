package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/coordinator"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// fakeMoves is the coordinator as the balancer sees it: it records each
// request and, unless told to refuse it, creates the migration's record
// as the coordinator does (without driving it).
type fakeMoves struct {
	b *fakeBackend
	// refuse, when set, is asked of each request: an error refuses it.
	refuse func(n int, req coordinator.Request) error

	mu   sync.Mutex
	reqs []coordinator.Request
}

func (f *fakeMoves) Start(ctx context.Context, req coordinator.Request) (*state.Migration, error) {
	f.mu.Lock()
	n := len(f.reqs)
	f.reqs = append(f.reqs, req)
	f.mu.Unlock()
	if f.refuse != nil {
		if err := f.refuse(n, req); err != nil {
			return nil, err
		}
	}
	c, ok := f.b.Snapshot().ContainerByID(req.Container)
	if !ok {
		return nil, fmt.Errorf("%w: no container %s", coordinator.ErrInvalid, req.Container)
	}
	v, err := f.b.Apply(ctx, &fsm.CreateMigration{ID: "m-" + c.Name, Container: c.ID, Source: c.Node, Dest: req.To, Strategy: "stream",
		Requested: req.Requested, Reason: req.Reason, WhyDestination: req.WhyDestination, At: time.Now()})
	if err != nil {
		return nil, err
	}
	return v.(*state.Migration), nil
}

func (f *fakeMoves) requests() []coordinator.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]coordinator.Request(nil), f.reqs...)
}

// hotNode is a cluster of three 4-CPU, 8 GiB nodes: n1 runs w1 to w4,
// each burning 0.8 CPU, n2 runs x1 (0.4 CPU) and n3 y1 (0.6 CPU), all
// using 512 MiB, steadily for the last three minutes before now as the
// balancer's samples say. The balancer's clock is now.
type hotNode struct {
	b     *fakeBackend
	moves *fakeMoves
	bal   *balancer
	now   time.Time
}

var hotLoads = map[string]struct {
	node     string
	milliCPU int64
}{
	"w1": {"n1", 800}, "w2": {"n1", 800}, "w3": {"n1", 800}, "w4": {"n1", 800},
	"x1": {"n2", 400}, "y1": {"n3", 600},
}

func newHotNode(t *testing.T, now time.Time) *hotNode {
	t.Helper()
	b := newFakeBackend(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		b.node(n, 4000)
	}
	var place []fsm.NewContainer
	for name, l := range hotLoads {
		place = append(place, fsm.NewContainer{ID: "id-" + name, Name: name, Node: l.node,
			Spec: state.ContainerSpec{Image: "busybox", Request: state.Resources{MilliCPU: 500, MemoryBytes: 512 << 20}}})
	}
	b.commit(&fsm.PlaceContainers{Containers: place, At: now})
	for _, n := range []string{"n1", "n2", "n3"} {
		var reports []fsm.Report
		for name, l := range hotLoads {
			if l.node == n {
				reports = append(reports, fsm.Report{ID: "id-" + name, State: state.ReportedRunning})
			}
		}
		node, _ := b.Snapshot().Node(n)
		b.commit(&fsm.ReportContainers{Node: n, Epoch: node.Epoch, Reports: reports, At: now})
	}
	h := &hotNode{b: b, moves: &fakeMoves{b: b}, now: now}
	h.bal = newBalancer(balancerConfig{Store: b.store, Apply: b, Moves: h.moves, Log: testLogger(),
		Now: func() time.Time { return h.now }, Poll: 5 * time.Millisecond})
	for at := now.Add(-3 * time.Minute); !at.After(now); at = at.Add(5 * time.Second) {
		for _, n := range []string{"n1", "n2", "n3"} {
			load := &pb.NodeLoad{Sampled: timestamppb.New(at)}
			for name, l := range hotLoads {
				if l.node == n {
					load.Containers = append(load.Containers, &pb.ContainerLoad{Id: "id-" + name, CpuMillis: l.milliCPU, MemoryBytes: 512 << 20})
				}
			}
			h.bal.observe(load, at)
		}
	}
	return h
}

// setPolicy commits the default policy with edit applied.
func (h *hotNode) setPolicy(edit func(*balance.Policy)) balance.Policy {
	p := balance.Default()
	if edit != nil {
		edit(&p)
	}
	h.b.commit(&fsm.SetBalancePolicy{Policy: p, At: h.now})
	return p
}

func (h *hotNode) round(t *testing.T) balance.Decision {
	t.Helper()
	snap := h.b.Snapshot()
	pol := h.bal.policy(snap)
	want, err := h.bal.decide(snap, pol, h.now)
	if err != nil {
		t.Fatal(err)
	}
	h.bal.round(context.Background(), snap, pol, h.now)
	return want
}

func TestBalancerRoundStartsAndRecordsTheMoves(t *testing.T) {
	h := newHotNode(t, time.Now())
	h.setPolicy(func(p *balance.Policy) { p.Enabled = true })
	d := h.round(t)
	if len(d.Moves) == 0 {
		t.Fatalf("no move planned on a hot n1: %s", d.Reason)
	}
	reqs := h.moves.requests()
	if len(reqs) != len(d.Moves) {
		t.Fatalf("%d moves started, want the plan's %d", len(reqs), len(d.Moves))
	}
	for i, r := range reqs {
		mv := d.Moves[i]
		if r.Container != mv.Container || r.To != mv.To || mv.From != "n1" {
			t.Errorf("move %d: started %s to %s, want the plan's %s from %s (n1) to %s", i, r.Container, r.To, mv.Container, mv.From, mv.To)
		}
		if r.Reason != "balancer" || r.Requested != (state.Requester{Who: "balancer", Role: "scheduler"}) || r.Strategy != "auto" {
			t.Errorf("move %d: reason %q, requested %+v, strategy %q; want balancer, by the balancer (scheduler), auto", i, r.Reason, r.Requested, r.Strategy)
		}
		if r.WhyDestination != mv.Reason || !strings.Contains(r.WhyDestination, "gain") || !strings.Contains(r.WhyDestination, "cost") {
			t.Errorf("move %d: why destination %q, want the plan's reason with its gain and cost", i, r.WhyDestination)
		}
		m, ok := h.b.Snapshot().Migration("m-" + mv.Name)
		if !ok || m.Reason != "balancer" || m.WhyDestination != mv.Reason {
			t.Errorf("move %d: migration %+v, want it recorded with reason balancer and the plan's why", i, m)
		}
	}
	recs := h.b.Snapshot().BalanceDecisions(0)
	if len(recs) != 1 {
		t.Fatalf("%d decisions recorded, want 1", len(recs))
	}
	rec := recs[0]
	if rec.Started() != len(d.Moves) || rec.Imbalance != d.Imbalance || rec.Predicted != d.Predicted || !rec.Time.Equal(h.now) {
		t.Errorf("recorded %+v, want the plan's figures and %d moves started", rec, len(d.Moves))
	}
	for i, mv := range rec.Moves {
		if mv.Migration != "m-"+mv.Name || mv.Gain != d.Moves[i].Gain || mv.Cost != d.Moves[i].Cost {
			t.Errorf("recorded move %+v: want its migration m-%s and the plan's gain and cost", mv, mv.Name)
		}
	}
	if balancing, last := h.bal.state(); !balancing || !last.Equal(h.now) {
		t.Errorf("after the round: balancing %v, last round %v; want true (the plan triggered) at %v", balancing, last, h.now)
	}
}

func TestBalancerRefusalDoesNotStopTheOthers(t *testing.T) {
	tests := []struct {
		name string
		// refuse says which requests (by order) the coordinator refuses.
		refuse      func(n int) bool
		wantRecords int
	}{
		{name: "the first refused, the rest started and recorded", refuse: func(n int) bool { return n == 0 }, wantRecords: 1},
		{name: "all refused: nothing recorded", refuse: func(int) bool { return true }, wantRecords: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHotNode(t, time.Now())
			h.setPolicy(func(p *balance.Policy) { p.Enabled = true })
			refusal := errors.New("container is already moving")
			h.moves.refuse = func(n int, _ coordinator.Request) error {
				if tc.refuse(n) {
					return refusal
				}
				return nil
			}
			d := h.round(t)
			if len(d.Moves) < 2 {
				t.Fatalf("the plan has %d moves, the test needs 2 or more", len(d.Moves))
			}
			if got := len(h.moves.requests()); got != len(d.Moves) {
				t.Fatalf("%d moves asked for, want all %d: a refusal stopped the others", got, len(d.Moves))
			}
			recs := h.b.Snapshot().BalanceDecisions(0)
			if len(recs) != tc.wantRecords {
				t.Fatalf("%d decisions recorded, want %d", len(recs), tc.wantRecords)
			}
			if tc.wantRecords == 0 {
				return
			}
			mvs := recs[0].Moves
			if mvs[0].Migration != "" || mvs[0].Refused != refusal.Error() {
				t.Errorf("refused move recorded as %+v, want its refusal", mvs[0])
			}
			for _, mv := range mvs[1:] {
				if mv.Migration == "" || mv.Refused != "" {
					t.Errorf("move %+v: want it started", mv)
				}
			}
		})
	}
}

// TestBalancerLoop runs the leader's loop on the real clock: disabled,
// it plans nothing; enabled, it starts the moves within an interval.
func TestBalancerLoop(t *testing.T) {
	h := newHotNode(t, time.Now())
	h.bal.cfg.Now = time.Now
	h.setPolicy(func(p *balance.Policy) { p.Interval = 20 * time.Millisecond })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.bal.lead(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	time.Sleep(100 * time.Millisecond) // five intervals
	if got := h.moves.requests(); len(got) != 0 {
		t.Fatalf("a disabled balancer started %d moves", len(got))
	}
	if n := len(h.b.Snapshot().BalanceDecisions(0)); n != 0 {
		t.Fatalf("a disabled balancer recorded %d decisions", n)
	}
	h.setPolicy(func(p *balance.Policy) { p.Interval, p.Enabled = 20*time.Millisecond, true })
	waitFor(t, 5*time.Second, "the enabled balancer to start its moves and record the decision", func() bool {
		return len(h.moves.requests()) > 0 && len(h.b.Snapshot().BalanceDecisions(0)) > 0
	})
	cancel()
	<-done
	if _, last := h.bal.state(); last.IsZero() {
		t.Error("no round is remembered")
	}
}

func TestLoadSamples(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	load := func(at time.Time, cpu int64, ids ...string) *pb.NodeLoad {
		l := &pb.NodeLoad{Sampled: timestamppb.New(at)}
		for _, id := range ids {
			l.Containers = append(l.Containers, &pb.ContainerLoad{Id: id, CpuMillis: cpu, MemoryBytes: 1 << 20})
		}
		return l
	}
	tests := []struct {
		name string
		feed func(l *loadSamples)
		// want is each container's samples' CPU, oldest first.
		want map[string][]int64
	}{
		{name: "one sample per spacing (window / 60): 1 s apart over a 60 s window",
			feed: func(l *loadSamples) {
				for i := range 5 {
					l.add(load(t0.Add(time.Duration(i)*500*time.Millisecond), int64(i), "a"), t0)
				}
			},
			want: map[string][]int64{"a": {0, 2, 4}}},
		{name: "older than the window are dropped",
			feed: func(l *loadSamples) {
				l.add(load(t0, 1, "a"), t0)
				l.add(load(t0.Add(30*time.Second), 2, "a"), t0)
				l.add(load(t0.Add(61*time.Second), 3, "a"), t0)
			},
			want: map[string][]int64{"a": {2, 3}}},
		{name: "a sample not newer than the last is skipped",
			feed: func(l *loadSamples) {
				l.add(load(t0.Add(10*time.Second), 1, "a"), t0)
				l.add(load(t0, 2, "a"), t0)
			},
			want: map[string][]int64{"a": {1}}},
		{name: "without a sampled time, the time received",
			feed: func(l *loadSamples) {
				l.add(&pb.NodeLoad{Containers: []*pb.ContainerLoad{{Id: "a", CpuMillis: 7}}}, t0)
				l.add(load(t0, 8, "a"), t0) // same time: skipped
			},
			want: map[string][]int64{"a": {7}}},
		{name: "each container on its own",
			feed: func(l *loadSamples) {
				l.add(load(t0, 1, "a", "b"), t0)
				l.add(load(t0.Add(2*time.Second), 2, "b"), t0)
			},
			want: map[string][]int64{"a": {1}, "b": {1, 2}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newLoadSamples(time.Minute)
			tc.feed(l)
			got := map[string][]int64{}
			for id, ss := range l.snapshot() {
				for _, s := range ss {
					got[id] = append(got[id], s.MilliCPU)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("samples %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("a container the state no longer has is dropped", func(t *testing.T) {
		h := newHotNode(t, time.Now())
		h.bal.observe(load(h.now.Add(time.Minute), 5, "gone"), h.now)
		if _, ok := h.bal.samples.snapshot()["gone"]; !ok {
			t.Fatal("the sample was not kept")
		}
		h.bal.samples.retain(h.b.Snapshot())
		s := h.bal.samples.snapshot()
		if _, ok := s["gone"]; ok || len(s) != len(hotLoads) {
			t.Errorf("after retain: %d containers with samples, gone among them: %v; want the %d the state has", len(s), ok, len(hotLoads))
		}
	})
	t.Run("a plan's copy does not change as samples come", func(t *testing.T) {
		l := newLoadSamples(time.Minute)
		l.add(load(t0, 1, "a"), t0)
		snap := l.snapshot()
		l.add(load(t0.Add(2*time.Second), 2, "a"), t0)
		if len(snap["a"]) != 1 || len(l.snapshot()["a"]) != 2 {
			t.Errorf("the copy has %d samples, the store %d; want 1 and 2", len(snap["a"]), len(l.snapshot()["a"]))
		}
	})
}
