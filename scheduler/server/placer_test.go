package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// placerTestWait bounds every wait of the placer tests.
const placerTestWait = 10 * time.Second

// fakeBackend is a Placer's backend without raft: an FSM that applies
// each command at once, as a leader's FSM does once raft has committed
// it. Its function fields, when set, stand in for leadership checks and
// delay or refuse commits.
type fakeBackend struct {
	t     *testing.T
	store *state.Store
	fsm   *fsm.FSM

	mu    sync.Mutex
	index uint64
	// batches are the containers of each PlaceContainers applied.
	batches [][]fsm.NewContainer

	verify func(ctx context.Context) error
	// beforeApply runs before a command is applied; its error is
	// returned instead. afterApply runs once it is applied, before Apply
	// returns.
	beforeApply func(cmd fsm.Command) error
	afterApply  func(cmd fsm.Command)
}

func newFakeBackend(t *testing.T) *fakeBackend {
	b := &fakeBackend{t: t, store: state.NewStore()}
	b.fsm = fsm.New(b.store, testLogger())
	b.commit(fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix("10.99.0.0/16"), At: time.Now()})
	return b
}

// commit applies cmd and fails the test if the FSM refuses it.
func (b *fakeBackend) commit(cmd fsm.Command) any {
	b.t.Helper()
	v, err := b.Apply(context.Background(), cmd)
	if err != nil {
		b.t.Fatalf("apply %s: %v", cmd.Type(), err)
	}
	return v
}

// node registers a ready node with milliCPU and 8 GiB, holding images.
func (b *fakeBackend) node(name string, milliCPU int64, images ...string) {
	b.t.Helper()
	b.commit(fsm.RegisterNode{Node: state.Node{Name: name, Address: name + ":7001",
		Capacity: state.Resources{MilliCPU: milliCPU, MemoryBytes: 8 << 30}}, At: time.Now()})
	var imgs []state.Image
	for i, img := range images {
		imgs = append(imgs, state.Image{Name: img, ID: fmt.Sprintf("sha256:%d", i)})
	}
	if len(imgs) > 0 {
		b.commit(fsm.SetImages{Node: name, Images: imgs, At: time.Now()})
	}
}

func (b *fakeBackend) VerifyLeader(ctx context.Context) error {
	if b.verify != nil {
		return b.verify(ctx)
	}
	return nil
}

func (b *fakeBackend) Snapshot() *state.Snapshot { return b.store.Snapshot() }

func (b *fakeBackend) Apply(ctx context.Context, cmd fsm.Command) (any, error) {
	if b.beforeApply != nil {
		if err := b.beforeApply(cmd); err != nil {
			return nil, err
		}
	}
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.index++
	if pc, ok := cmd.(*fsm.PlaceContainers); ok {
		b.batches = append(b.batches, pc.Containers)
	}
	r := b.fsm.Apply(&raft.Log{Index: b.index, Term: 1, Type: raft.LogCommand, Data: data}).(fsm.Result)
	b.mu.Unlock()
	if b.afterApply != nil {
		b.afterApply(cmd)
	}
	return r.Value, r.Err
}

func (b *fakeBackend) placeBatches() [][]fsm.NewContainer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.batches)
}

// gate holds placements in Apply until it opens: before the FSM applies
// them (not committed yet), or after (committed, not answered yet).
type gate struct {
	open    chan struct{}
	once    sync.Once
	waiting atomic.Int32
}

// holdPlacements makes every PlaceContainers wait at the gate, before the
// FSM applies it or, with applied, after.
func (b *fakeBackend) holdPlacements(applied bool) *gate {
	g := &gate{open: make(chan struct{})}
	wait := func(cmd fsm.Command) {
		if _, ok := cmd.(*fsm.PlaceContainers); ok {
			g.waiting.Add(1)
			<-g.open
		}
	}
	if applied {
		b.afterApply = wait
	} else {
		b.beforeApply = func(cmd fsm.Command) error { wait(cmd); return nil }
	}
	return g
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// waitHeld waits until n placements wait at the gate.
func (g *gate) waitHeld(t *testing.T, n int) {
	t.Helper()
	waitFor(t, placerTestWait, fmt.Sprintf("%d entries to wait at the gate", n), func() bool { return int(g.waiting.Load()) == n })
}

// startPlacer runs a Placer on b until the test ends.
func startPlacer(t *testing.T, b PlaceBackend, maxBatch int) *Placer {
	p := NewPlacer(PlacerConfig{Backend: b, MaxBatch: maxBatch, Logger: testLogger()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return p
}

func busybox(milliCPU int64) PlaceRequest {
	return PlaceRequest{Spec: state.ContainerSpec{Image: "busybox", Request: state.Resources{MilliCPU: milliCPU, MemoryBytes: 64 << 20}}}
}

func named(r PlaceRequest, name string) PlaceRequest {
	r.Name = name
	return r
}

// outcome is one Place call's answer.
type outcome struct {
	placed Placed
	err    error
}

// placeAsync calls Place from a goroutine of its own.
func placeAsync(ctx context.Context, p *Placer, req PlaceRequest) <-chan outcome {
	out := make(chan outcome, 1)
	go func() {
		placed, err := p.Place(ctx, req)
		out <- outcome{placed, err}
	}()
	return out
}

// await returns a call's answer, failing the test if it takes too long.
func await(t *testing.T, what string, c <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-c:
		return o
	case <-time.After(placerTestWait):
		t.Fatalf("%s: no answer within %s", what, placerTestWait)
		return outcome{}
	}
}

// waitQueued waits until n calls wait in p's queue.
func waitQueued(t *testing.T, p *Placer, n int) {
	t.Helper()
	waitFor(t, placerTestWait, fmt.Sprintf("%d calls to queue", n), func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.queue) == n
	})
}

// fillSlots proposes one placement per slot, each of its own entry held
// at g, and returns their answers to come: later calls queue.
func fillSlots(t *testing.T, p *Placer, g *gate, reqs ...PlaceRequest) []<-chan outcome {
	t.Helper()
	var out []<-chan outcome
	already := int(g.waiting.Load())
	for i, r := range reqs {
		out = append(out, placeAsync(context.Background(), p, r))
		g.waitHeld(t, already+i+1)
	}
	return out
}

// TestPlacerNeverOvercommits decides placements while others commit:
// each counts what the entries still committing reserved, but an entry
// the snapshot already holds only once.
func TestPlacerNeverOvercommits(t *testing.T) {
	tests := []struct {
		name string
		// applied: the held entries are in the state, not answered yet.
		applied bool
		// second is what a call asks while the first (600 milli-CPU of the
		// node's 1000) is held.
		second int64
		want   codes.Code
	}{
		{"the committing entry's reservation counts", false, 600, codes.ResourceExhausted},
		{"the committing entry's reservation leaves room", false, 400, codes.OK},
		{"an entry the snapshot holds counts once", true, 400, codes.OK},
		{"an entry the snapshot holds counts", true, 600, codes.ResourceExhausted},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBackend(t)
			b.node("n1", 1000, "busybox:latest")
			g := b.holdPlacements(tc.applied)
			defer g.release()
			p := startPlacer(t, b, 0)
			first := fillSlots(t, p, g, named(busybox(600), "first"))
			second := placeAsync(context.Background(), p, named(busybox(tc.second), "second"))
			if tc.want != codes.OK {
				// Refused while the first still commits.
				if o := await(t, "second call", second); status.Code(o.err) != tc.want {
					t.Errorf("second call: %v, want %s", o.err, tc.want)
				}
				g.release()
			} else {
				g.waitHeld(t, 2)
				g.release()
				if o := await(t, "second call", second); o.err != nil {
					t.Errorf("second call: %v, want it placed", o.err)
				}
			}
			if o := await(t, "first call", first[0]); o.err != nil {
				t.Errorf("first call: %v", o.err)
			}
			if got := b.Snapshot().Allocated("n1").MilliCPU; got > 1000 {
				t.Errorf("n1 holds %d milli-CPU of its 1000", got)
			}
		})
	}
}

// TestPlacerBatchesQueuedCalls queues calls while every slot commits:
// they go as entries of at most MaxBatch, decided in queue order on one
// snapshot each, and a node takes only what it has room for.
func TestPlacerBatchesQueuedCalls(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 2000, "busybox:latest")
	g := b.holdPlacements(false)
	defer g.release()
	p := startPlacer(t, b, 4)
	held := fillSlots(t, p, g, named(busybox(100), "a"), named(busybox(100), "b"))

	// 1800 milli-CPU left: the first nine of ten calls of 200 fit.
	var queued []<-chan outcome
	for i := range 10 {
		queued = append(queued, placeAsync(context.Background(), p, named(busybox(200), fmt.Sprintf("c%d", i))))
		waitQueued(t, p, i+1) // one at a time, so that they queue in order
	}
	g.release()
	for i, c := range held {
		if o := await(t, "a slot's call", c); o.err != nil {
			t.Errorf("call %d: %v", i, o.err)
		}
	}
	var placed []string
	for i, c := range queued {
		o := await(t, fmt.Sprintf("call c%d", i), c)
		switch status.Code(o.err) {
		case codes.OK:
			placed = append(placed, o.placed.Name)
		case codes.ResourceExhausted:
		default:
			t.Errorf("call c%d: %v, want placed or ResourceExhausted", i, o.err)
		}
	}
	if want := []string{"c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"}; !slices.Equal(placed, want) {
		t.Errorf("placed %v, want %v: decided in queue order while there was room", placed, want)
	}
	if got := b.Snapshot().Allocated("n1").MilliCPU; got != 2000 {
		t.Errorf("n1 holds %d milli-CPU, want all its 2000", got)
	}
	// Entries: a and b, then the queue in batches of four (the last one
	// holding what fitted of c8 and c9).
	var sizes []int
	var names []string
	for _, bt := range b.placeBatches() {
		sizes = append(sizes, len(bt))
		for _, c := range bt {
			names = append(names, c.Name)
		}
	}
	slices.Sort(sizes)
	if want := []int{1, 1, 1, 4, 4}; !slices.Equal(sizes, want) {
		t.Errorf("entries of %v containers, want %v", sizes, want)
	}
	if st := p.Stats(); st.Batches != 5 || st.Placed != 11 {
		t.Errorf("stats %+v, want 5 entries and 11 placed", st)
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "c0 c1 c2 c3") || !strings.Contains(got, "c4 c5 c6 c7") {
		t.Errorf("entries %q: want c0-c3 and c4-c7 each in one, in order", got)
	}
}

// TestPlacerRefusals checks each way a call is refused, and which
// refusals Run records in the audit log.
func TestPlacerRefusals(t *testing.T) {
	notLeader := &NotLeaderError{}
	tests := []struct {
		name  string
		setup func(b *fakeBackend)
		req   PlaceRequest
		code  codes.Code
		// audited: Run records the refusal (it got past the checks that
		// come before placement).
		audited bool
		// committed: the container reached the commit, so the answer
		// names it for the audit log.
		committed bool
	}{
		{
			name: "a name taken by a committed container",
			setup: func(b *fakeBackend) {
				b.commit(&fsm.PlaceContainers{Containers: []fsm.NewContainer{{ID: "x", Name: "web", Spec: busybox(10).Spec, Node: "n1"}}, At: time.Now()})
			},
			req:  named(busybox(10), "web"),
			code: codes.AlreadyExists,
		},
		{
			name:  "not the leader",
			setup: func(b *fakeBackend) { b.verify = func(context.Context) error { return notLeader } },
			req:   busybox(10),
			code:  codes.Unavailable,
		},
		{
			name:    "no node has room",
			req:     busybox(5000),
			code:    codes.ResourceExhausted,
			audited: true,
		},
		{
			name:    "no node with room holds the image",
			req:     PlaceRequest{Spec: state.ContainerSpec{Image: "nginx", Request: state.Resources{MilliCPU: 10}}},
			code:    codes.FailedPrecondition,
			audited: true,
		},
		{
			name:    "an invalid request",
			req:     busybox(-1),
			code:    codes.InvalidArgument,
			audited: true,
		},
		{
			name: "the commit fails",
			setup: func(b *fakeBackend) {
				b.beforeApply = func(fsm.Command) error { return ErrLeadershipLost }
			},
			req:       busybox(10),
			code:      codes.Unavailable,
			audited:   true,
			committed: true,
		},
		{
			name: "the FSM refuses the container",
			// The node is down by the time the entry applies.
			setup: func(b *fakeBackend) {
				b.beforeApply = func(cmd fsm.Command) error {
					if _, ok := cmd.(*fsm.PlaceContainers); ok {
						b.beforeApply = nil
						b.commit(fsm.SetNodeHealth{Name: "n1", Health: state.HealthDown, At: time.Now()})
					}
					return nil
				}
			},
			req:       busybox(10),
			code:      codes.Internal,
			audited:   true,
			committed: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := newFakeBackend(t)
			b.node("n1", 1000, "busybox:latest")
			if tc.setup != nil {
				tc.setup(b)
			}
			p := startPlacer(t, b, 0)
			ctx, cancel := context.WithTimeout(context.Background(), placerTestWait)
			defer cancel()
			placed, err := p.Place(ctx, tc.req)
			if got := status.Code(err); got != tc.code {
				t.Fatalf("Place: %v (code %s), want code %s", err, got, tc.code)
			}
			var re *refusedEarly
			if audited := !errors.As(err, &re); audited != tc.audited {
				t.Errorf("audited %t, want %t", audited, tc.audited)
			}
			if named := placed.Name != "" && placed.ID != ""; named != tc.committed {
				t.Errorf("the answer names the container %q (ID %q); want a name only for a container that reached the commit", placed.Name, placed.ID)
			}
			if n := len(b.Snapshot().ContainersOn("n1")); n > 1 || n == 1 && tc.name != "a name taken by a committed container" {
				t.Errorf("n1 holds %d containers after a refusal", n)
			}
		})
	}
}

// TestPlacerSameName: a name taken by a call committing, or by an earlier
// call of the same batch, is refused as if that call had committed.
func TestPlacerSameName(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 1000, "busybox:latest")
	g := b.holdPlacements(false)
	defer g.release()
	p := startPlacer(t, b, 0)
	held := fillSlots(t, p, g, named(busybox(10), "web"))
	var re *refusedEarly
	if o := await(t, "web while web commits", placeAsync(context.Background(), p, named(busybox(10), "web"))); status.Code(o.err) != codes.AlreadyExists || !errors.As(o.err, &re) {
		t.Errorf("web while web commits: %v; want AlreadyExists, not audited", o.err)
	}
	held = append(held, fillSlots(t, p, g, named(busybox(10), "other"))...)
	api := placeAsync(context.Background(), p, named(busybox(10), "api"))
	waitQueued(t, p, 1)
	again := placeAsync(context.Background(), p, named(busybox(10), "api"))
	waitQueued(t, p, 2)
	g.release()
	if o := await(t, "first api", api); o.err != nil || o.placed.Name != "api" {
		t.Errorf("first api: %+v, %v; want it placed", o.placed, o.err)
	}
	if o := await(t, "second api", again); status.Code(o.err) != codes.AlreadyExists || !errors.As(o.err, &re) {
		t.Errorf("second api of the same batch: %v; want AlreadyExists, not audited", o.err)
	}
	for _, c := range held {
		if o := await(t, "held call", c); o.err != nil {
			t.Error(o.err)
		}
	}
}

// TestPlacerCallerLeavesTheQueue: a caller whose context ends while it
// waits for a slot is answered at once and its container never placed.
func TestPlacerCallerLeavesTheQueue(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 1000, "busybox:latest")
	g := b.holdPlacements(false)
	defer g.release()
	p := startPlacer(t, b, 0)
	held := fillSlots(t, p, g, busybox(10), busybox(10))
	ctx, cancel := context.WithCancel(context.Background())
	left := placeAsync(ctx, p, named(busybox(10), "gone"))
	waitQueued(t, p, 1)
	cancel()
	if o := await(t, "cancelled call", left); status.Code(o.err) != codes.Canceled {
		t.Errorf("cancelled call: %v, want Canceled", o.err)
	}
	g.release()
	for _, c := range held {
		if o := await(t, "held call", c); o.err != nil {
			t.Error(o.err)
		}
	}
	// A later call goes through; the one that left never does.
	if _, err := p.Place(context.Background(), named(busybox(10), "later")); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Snapshot().ContainerByName("gone"); ok {
		t.Error("the container of a call that left the queue was placed")
	}
	if n := len(b.placeBatches()); n != 3 {
		t.Errorf("%d entries, want 3: the two held and the later one", n)
	}
}

// TestPlacerStopRefusesQueuedAndLaterCalls: a stopping scheduler answers
// every waiting caller and every later one.
func TestPlacerStopRefusesQueuedAndLaterCalls(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 1000, "busybox:latest")
	p := NewPlacer(PlacerConfig{Backend: b, Logger: testLogger()})
	// Not running yet: the call queues.
	queued := make(chan error, 1)
	go func() {
		_, err := p.Place(context.Background(), busybox(10))
		queued <- err
	}()
	waitQueued(t, p, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p.Run(ctx) // returns at once: its context has ended
	if err := <-queued; status.Code(err) != codes.Unavailable {
		t.Errorf("queued call: %v, want Unavailable", err)
	}
	if _, err := p.Place(context.Background(), busybox(10)); status.Code(err) != codes.Unavailable {
		t.Errorf("later call: %v, want Unavailable", err)
	}
	if n := len(b.placeBatches()); n != 0 {
		t.Errorf("%d entries proposed by a stopped placer", n)
	}
}

// TestPlacerPrefersTheImageHolder: a less good node that holds the image
// wins over the best one, as Run did before batching.
func TestPlacerPrefersTheImageHolder(t *testing.T) {
	b := newFakeBackend(t)
	b.node("full", 1000, "alpine:latest") // binpack's choice once it holds something
	b.node("holder", 100000, "busybox:latest")
	b.commit(&fsm.PlaceContainers{Containers: []fsm.NewContainer{{ID: "x", Name: "x", Spec: busybox(500).Spec, Node: "full"}}, At: time.Now()})
	p := startPlacer(t, b, 0)
	placed, err := p.Place(context.Background(), busybox(100))
	if err != nil {
		t.Fatal(err)
	}
	if placed.Decision.Node != "holder" || placed.Decision.Candidates[0].Node != "full" {
		t.Errorf("placed on %s, best candidate %s; want holder (has busybox) over full (the best fit)",
			placed.Decision.Node, placed.Decision.Candidates[0].Node)
	}
}

// TestPlacerCountsTheRoomPromisedToMoves: a container moving to a node
// counts on its source until the move commits, yet the destination's
// room is promised: a run is not given it.
func TestPlacerCountsTheRoomPromisedToMoves(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 1000, "busybox:latest")
	b.node("n2", 1000, "busybox:latest")
	p := startPlacer(t, b, 0)
	moving, err := p.Place(context.Background(), PlaceRequest{Spec: state.ContainerSpec{Image: "busybox", Node: "n1",
		Request: state.Resources{MilliCPU: 800, MemoryBytes: 64 << 20}}, Name: "moving"})
	if err != nil {
		t.Fatal(err)
	}
	b.commit(fsm.ReportContainers{Node: "n1", Epoch: 1, Reports: []fsm.Report{{ID: moving.ID, State: state.ReportedRunning}}, At: time.Now()})
	b.commit(fsm.CreateMigration{ID: "m1", Container: moving.ID, Source: "n1", Dest: "n2", Strategy: "stop-copy", Reason: "operator", At: time.Now()})

	o := await(t, "a run with room only on n2, promised to the move", placeAsync(context.Background(), p, named(busybox(600), "late")))
	if status.Code(o.err) != codes.ResourceExhausted {
		t.Errorf("run: placed on %q (%v), want ResourceExhausted: n1 holds the moving container, n2 its promised room", o.placed.Decision.Node, o.err)
	}
}
