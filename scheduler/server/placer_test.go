package server

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
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
	// beforeApply runs before each command is applied; refusing it
	// returns its error instead.
	beforeApply func(cmd fsm.Command) error
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
	defer b.mu.Unlock()
	b.index++
	if pc, ok := cmd.(*fsm.PlaceContainers); ok {
		b.batches = append(b.batches, pc.Containers)
	}
	r := b.fsm.Apply(&raft.Log{Index: b.index, Term: 1, Type: raft.LogCommand, Data: data}).(fsm.Result)
	return r.Value, r.Err
}

func (b *fakeBackend) placeBatches() [][]fsm.NewContainer {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.batches)
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

// holdFirstBatch makes b's first PlaceContainers wait until the returned
// release is called; held is closed once it waits. Meanwhile Place calls
// queue up for the next batch.
func holdFirstBatch(b *fakeBackend) (held <-chan struct{}, release func()) {
	h, r := make(chan struct{}), make(chan struct{})
	var once sync.Once
	b.beforeApply = func(cmd fsm.Command) error {
		if _, ok := cmd.(*fsm.PlaceContainers); ok {
			once.Do(func() {
				close(h)
				<-r
			})
		}
		return nil
	}
	var ro sync.Once
	return h, func() { ro.Do(func() { close(r) }) }
}

func busybox(milliCPU int64) PlaceRequest {
	return PlaceRequest{Spec: state.ContainerSpec{Image: "busybox", Request: state.Resources{MilliCPU: milliCPU, MemoryBytes: 64 << 20}}}
}

func named(r PlaceRequest, name string) PlaceRequest {
	r.Name = name
	return r
}

// placeAll calls Place for each request from its own goroutine, once the
// first batch holds, and returns the outcomes in order.
func placeAll(t *testing.T, p *Placer, held <-chan struct{}, release func(), first PlaceRequest, reqs []PlaceRequest) (Placed, error, []Placed, []error) {
	t.Helper()
	var firstPlaced Placed
	var firstErr error
	firstDone := make(chan struct{})
	go func() {
		defer close(firstDone)
		firstPlaced, firstErr = p.Place(context.Background(), first)
	}()
	select {
	case <-held:
	case <-time.After(placerTestWait):
		t.Fatal("the first batch never reached its commit")
	}
	placed, errs := make([]Placed, len(reqs)), make([]error, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		// One at a time, so that they queue in order.
		wg.Go(func() { placed[i], errs[i] = p.Place(context.Background(), r) })
		waitQueued(t, p, i+1)
	}
	release()
	wg.Wait()
	<-firstDone
	return firstPlaced, firstErr, placed, errs
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

// TestPlacerBatchesNeverOvercommit queues calls while a batch commits:
// they go as one entry, decided on one snapshot, and the node takes only
// what it has room for.
func TestPlacerBatchesNeverOvercommit(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 1000, "busybox:latest")
	held, release := holdFirstBatch(b)
	defer release()
	p := startPlacer(t, b, 0)

	// 0.3 CPU each on a 1-CPU node: the first takes 0.3, three more fit.
	reqs := make([]PlaceRequest, 9)
	for i := range reqs {
		reqs[i] = named(busybox(300), fmt.Sprintf("c%d", i))
	}
	firstPlaced, firstErr, placed, errs := placeAll(t, p, held, release, named(busybox(300), "first"), reqs)
	if firstErr != nil || firstPlaced.Decision.Node != "n1" {
		t.Fatalf("first call: %+v, %v; want it placed on n1", firstPlaced, firstErr)
	}
	var ok []string
	for i, err := range errs {
		switch status.Code(err) {
		case codes.OK:
			ok = append(ok, placed[i].Name)
			if placed[i].ID == "" || placed[i].Decision.Node != "n1" {
				t.Errorf("call %d placed as %+v", i, placed[i])
			}
		case codes.ResourceExhausted:
		default:
			t.Errorf("call %d: %v, want placed or ResourceExhausted", i, err)
		}
	}
	// Decided in queue order: the first two of the batch fit.
	if want := []string{"c0", "c1"}; !slices.Equal(ok, want) {
		t.Errorf("placed %v, want %v (0.3 CPU free for each of the first two)", ok, want)
	}
	if got := b.Snapshot().Allocated("n1").MilliCPU; got != 900 {
		t.Errorf("n1 holds %d milli-CPU, want 900 of its 1000", got)
	}
	batches := b.placeBatches()
	if len(batches) != 2 || len(batches[1]) != 2 {
		t.Errorf("entries of %v containers, want 1 then 2 (the queued calls in one entry)", batchSizes(batches))
	}
	if st := p.Stats(); st.Batches != 2 || st.Placed != 3 {
		t.Errorf("stats %+v, want 2 batches and 3 placed", st)
	}
}

func batchSizes(bs [][]fsm.NewContainer) []int {
	var out []int
	for _, b := range bs {
		out = append(out, len(b))
	}
	return out
}

// TestPlacerMaxBatch checks that no entry holds more than MaxBatch
// containers, and that every queued call is served in order.
func TestPlacerMaxBatch(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 100000, "busybox:latest")
	held, release := holdFirstBatch(b)
	defer release()
	p := startPlacer(t, b, 4)
	reqs := make([]PlaceRequest, 10)
	for i := range reqs {
		reqs[i] = named(busybox(10), fmt.Sprintf("c%02d", i))
	}
	_, firstErr, _, errs := placeAll(t, p, held, release, named(busybox(10), "first"), reqs)
	if err := errors.Join(append(errs, firstErr)...); err != nil {
		t.Fatalf("placements failed: %v", err)
	}
	if got, want := batchSizes(b.placeBatches()), []int{1, 4, 4, 2}; !slices.Equal(got, want) {
		t.Errorf("entries of %v containers, want %v", got, want)
	}
	var order []string
	for _, batch := range b.placeBatches()[1:] {
		for _, c := range batch {
			order = append(order, c.Name)
		}
	}
	if !slices.IsSorted(order) {
		t.Errorf("committed in the order %v, want the order of the queue", order)
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
	}{
		{
			name:  "a name taken by a committed container",
			setup: func(b *fakeBackend) { b.commit(&fsm.PlaceContainers{Containers: []fsm.NewContainer{{ID: "x", Name: "web", Spec: busybox(10).Spec, Node: "n1"}}, At: time.Now()}) },
			req:   named(busybox(10), "web"),
			code:  codes.AlreadyExists,
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
			req:     busybox(10),
			code:    codes.Unavailable,
			audited: true,
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
			req:     busybox(10),
			code:    codes.Internal,
			audited: true,
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
			if tc.audited && tc.code != codes.ResourceExhausted && tc.code != codes.FailedPrecondition && tc.code != codes.InvalidArgument && placed.Name == "" {
				t.Errorf("a failed commit did not say the container's name")
			}
			if n := len(b.Snapshot().ContainersOn("n1")); n > 1 || n == 1 && tc.name != "a name taken by a committed container" {
				t.Errorf("n1 holds %d containers after a refusal", n)
			}
		})
	}
}

// TestPlacerSameNameInOneBatch: of two calls in one batch with the same
// name, the second is refused as if the first had committed.
func TestPlacerSameNameInOneBatch(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 1000, "busybox:latest")
	held, release := holdFirstBatch(b)
	defer release()
	p := startPlacer(t, b, 0)
	_, _, placed, errs := placeAll(t, p, held, release, busybox(10), []PlaceRequest{named(busybox(10), "web"), named(busybox(10), "web")})
	var re *refusedEarly
	if errs[0] != nil || placed[0].Name != "web" {
		t.Errorf("first call: %+v, %v; want web placed", placed[0], errs[0])
	}
	if status.Code(errs[1]) != codes.AlreadyExists || !errors.As(errs[1], &re) {
		t.Errorf("second call: %v; want AlreadyExists, not audited", errs[1])
	}
}

// TestPlacerCallerLeavesTheQueue: a caller whose context ends while it
// waits for a batch is answered at once and its container never placed.
func TestPlacerCallerLeavesTheQueue(t *testing.T) {
	b := newFakeBackend(t)
	b.node("n1", 1000, "busybox:latest")
	held, release := holdFirstBatch(b)
	defer release()
	p := startPlacer(t, b, 0)
	firstDone := make(chan error, 1)
	go func() {
		_, err := p.Place(context.Background(), busybox(10))
		firstDone <- err
	}()
	<-held
	ctx, cancel := context.WithCancel(context.Background())
	left := make(chan error, 1)
	go func() {
		_, err := p.Place(ctx, named(busybox(10), "gone"))
		left <- err
	}()
	waitQueued(t, p, 1)
	cancel()
	select {
	case err := <-left:
		if status.Code(err) != codes.Canceled {
			t.Errorf("cancelled call: %v, want Canceled", err)
		}
	case <-time.After(placerTestWait):
		t.Fatal("a cancelled call still waits for the batch ahead of it")
	}
	release()
	if err := <-firstDone; err != nil {
		t.Fatalf("first call: %v", err)
	}
	// A later call goes through; the one that left never does.
	if _, err := p.Place(context.Background(), named(busybox(10), "later")); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Snapshot().ContainerByName("gone"); ok {
		t.Error("the container of a call that left the queue was placed")
	}
	if n := len(b.placeBatches()); n != 2 {
		t.Errorf("%d entries, want 2: the first call's and the later one's", n)
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
