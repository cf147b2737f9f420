package clusterlink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// fakeScheduler is the cluster's side of NodeService as the leader keeps
// it: one registration epoch per node, heartbeats checked against it.
// Several listeners may serve it, like schedulers forwarding to one
// leader.
type fakeScheduler struct {
	pb.UnimplementedNodeServiceServer
	ttl, interval time.Duration
	generations   []*pb.ContainerGeneration

	mu         sync.Mutex
	epoch      uint64
	registers  []*pb.RegisterRequest
	heartbeats []*pb.HeartbeatRequest
	// silence is open while calls hang (a partition): each fails when
	// its caller gives up or the partition heals.
	silence chan struct{}
}

func (f *fakeScheduler) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	if err := f.hang(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch++
	f.registers = append(f.registers, req)
	return &pb.RegisterResponse{Epoch: f.epoch, LeaseTtlMs: f.ttl.Milliseconds(), HeartbeatIntervalMs: f.interval.Milliseconds(),
		Generations: f.generations}, nil
}

func (f *fakeScheduler) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	if err := f.hang(ctx); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats = append(f.heartbeats, req)
	return &pb.HeartbeatResponse{LeaseTtlMs: f.ttl.Milliseconds(), Reregister: req.GetEpoch() != f.epoch}, nil
}

func (f *fakeScheduler) hang(ctx context.Context) error {
	f.mu.Lock()
	silence := f.silence
	f.mu.Unlock()
	if silence == nil {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-silence:
		return status.Error(codes.Unavailable, "the partition dropped the call")
	}
}

func (f *fakeScheduler) setSilent(s bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case s && f.silence == nil:
		f.silence = make(chan struct{})
	case !s && f.silence != nil:
		close(f.silence)
		f.silence = nil
	}
}

// forget makes the leader lose the node's registration (its state was
// restored from a snapshot): the next heartbeat is told to reregister.
func (f *fakeScheduler) forget() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.epoch += 100
}

func (f *fakeScheduler) counts() (registers, heartbeats int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.registers), len(f.heartbeats)
}

func (f *fakeScheduler) lastHeartbeat() *pb.HeartbeatRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.heartbeats) == 0 {
		return nil
	}
	return f.heartbeats[len(f.heartbeats)-1]
}

// serve serves f on a new listener on 127.0.0.1 and returns its address
// and a function that stops it (also called when the test ends).
func (f *fakeScheduler) serve(t *testing.T, opts ...grpc.ServerOption) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterNodeServiceServer(srv, f)
	go srv.Serve(lis)
	var once sync.Once
	stop := func() { once.Do(srv.Stop) }
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// staticFinder knows a fixed list of schedulers.
type staticFinder []string

func (s staticFinder) Schedulers(context.Context) ([]string, error) {
	if len(s) == 0 {
		return nil, fmt.Errorf("%w: none configured", ErrNoScheduler)
	}
	return s, nil
}

// testFacts and testReport are what the fake agent sends.
func testFacts(context.Context) (*pb.RegisterRequest, error) {
	return &pb.RegisterRequest{Address: "10.0.0.1:7701", Capacity: &pb.Resources{MilliCpu: 2000, MemoryBytes: 1 << 30}}, nil
}

func testReport(context.Context) (*pb.HeartbeatRequest, error) {
	return &pb.HeartbeatRequest{
		Containers: []*pb.ContainerReport{{Id: "c1", Name: "web", State: pb.ContainerState_CONTAINER_STATE_RUNNING}},
		Load: &pb.NodeLoad{Sampled: timestamppb.Now(), CpuMillis: 250, MemoryBytes: 64 << 20,
			Containers: []*pb.ContainerLoad{{Id: "c1", CpuMillis: 200, MemoryBytes: 32 << 20}}},
	}, nil
}

func startLink(t *testing.T, cfg Config) *Link {
	t.Helper()
	cfg.Node = "n1"
	if cfg.Facts == nil {
		cfg.Facts = testFacts
	}
	if cfg.Heartbeat == nil {
		cfg.Heartbeat = testReport
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	l, err := Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Stop)
	return l
}

// eventually polls cond every few milliseconds until it holds or within
// passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLinkRegistersAndHeartbeats(t *testing.T) {
	sched := &fakeScheduler{ttl: time.Second, interval: 50 * time.Millisecond,
		generations: []*pb.ContainerGeneration{{Id: "c1", Generation: 7, Desired: "running"}}}
	addr, _ := sched.serve(t)
	l := startLink(t, Config{Finder: staticFinder{addr}})

	eventually(t, 5*time.Second, "three heartbeats", func() bool { _, hb := sched.counts(); return hb >= 3 })
	if err := l.Check(); err != nil {
		t.Fatalf("Check after registering: %v", err)
	}
	if got := l.Epoch(); got != 1 {
		t.Fatalf("Epoch = %d, want 1", got)
	}
	if g, ok := l.Generation("c1"); !ok || g != 7 {
		t.Fatalf("Generation(c1) = %d, %v; want 7 from the registration", g, ok)
	}
	if _, ok := l.Generation("c2"); ok {
		t.Fatal("Generation knows a container the scheduler never placed here")
	}
	sched.mu.Lock()
	reg := sched.registers[0]
	sched.mu.Unlock()
	if reg.GetName() != "n1" || reg.GetAddress() != "10.0.0.1:7701" || reg.GetCapacity().GetMilliCpu() != 2000 {
		t.Fatalf("registration = %v, want the agent's facts under the node's name", reg)
	}
	hb := sched.lastHeartbeat()
	if hb.GetName() != "n1" || hb.GetEpoch() != 1 {
		t.Fatalf("heartbeat from %q epoch %d, want n1 epoch 1", hb.GetName(), hb.GetEpoch())
	}
	if cs := hb.GetContainers(); len(cs) != 1 || cs[0].GetId() != "c1" || cs[0].GetState() != pb.ContainerState_CONTAINER_STATE_RUNNING {
		t.Fatalf("heartbeat containers = %v, want c1 running", cs)
	}
	if load := hb.GetLoad(); load.GetCpuMillis() != 250 || len(load.GetContainers()) != 1 || load.GetContainers()[0].GetMemoryBytes() != 32<<20 {
		t.Fatalf("heartbeat load = %v, want the agent's sample", load)
	}
	if regs, _ := sched.counts(); regs != 1 {
		t.Fatalf("%d registrations, want 1: heartbeats hold the lease", regs)
	}
}

func TestLinkLeaseLapsesWhenTheSchedulerStopsAnswering(t *testing.T) {
	const ttl = time.Second
	sched := &fakeScheduler{ttl: ttl, interval: 50 * time.Millisecond}
	addr, _ := sched.serve(t)
	l := startLink(t, Config{Finder: staticFinder{addr}})
	eventually(t, 5*time.Second, "a heartbeat", func() bool { _, hb := sched.counts(); return hb >= 1 })

	sched.setSilent(true)
	silenced := time.Now()
	// Heartbeats were answered up to now: the lease holds for most of a
	// TTL yet.
	if err := l.Check(); err != nil {
		t.Fatalf("Check right after the scheduler went silent: %v", err)
	}
	var refusal error
	eventually(t, ttl+2*time.Second, "the lease lapses", func() bool { refusal = l.Check(); return refusal != nil })
	if lapsed := time.Since(silenced); lapsed > ttl+time.Second {
		t.Fatalf("the lease lapsed %v after the last heartbeat could have been answered, want about the TTL (%v)", lapsed, ttl)
	}
	if !errors.Is(refusal, ErrLeaseExpired) || !strings.Contains(refusal.Error(), "node n1 has no valid lease with the scheduler since ") ||
		!strings.HasSuffix(refusal.Error(), "it starts, resumes and commits nothing until it has registered again") {
		t.Fatalf("Check = %v, want the lapsed-lease refusal", refusal)
	}

	// The scheduler answers again: the node registers anew, a heartbeat
	// alone would not restore the lease.
	sched.setSilent(false)
	eventually(t, 5*time.Second, "the lease is back", func() bool { return l.Check() == nil })
	if regs, _ := sched.counts(); regs != 2 {
		t.Fatalf("%d registrations, want 2: the lapsed lease needs a new one", regs)
	}
	if got := l.Epoch(); got != 2 {
		t.Fatalf("Epoch = %d, want 2", got)
	}
}

func TestLinkRegistersAgainWhenTold(t *testing.T) {
	sched := &fakeScheduler{ttl: 2 * time.Second, interval: 50 * time.Millisecond}
	addr, _ := sched.serve(t)
	l := startLink(t, Config{Finder: staticFinder{addr}})
	eventually(t, 5*time.Second, "a heartbeat", func() bool { _, hb := sched.counts(); return hb >= 1 })

	sched.forget()
	eventually(t, 5*time.Second, "a new registration", func() bool { regs, _ := sched.counts(); return regs == 2 })
	eventually(t, 5*time.Second, "the new epoch", func() bool { return l.Epoch() == 102 })
	if err := l.Check(); err != nil {
		t.Fatalf("Check after registering again: %v", err)
	}
	eventually(t, 5*time.Second, "a heartbeat with the new epoch", func() bool { return sched.lastHeartbeat().GetEpoch() == 102 })
}

func TestLinkFailsOverToAnotherScheduler(t *testing.T) {
	const ttl = time.Second
	sched := &fakeScheduler{ttl: ttl, interval: 50 * time.Millisecond}
	first, stopFirst := sched.serve(t)
	second, _ := sched.serve(t)
	l := startLink(t, Config{Finder: staticFinder{first, second}})
	eventually(t, 5*time.Second, "a heartbeat", func() bool { _, hb := sched.counts(); return hb >= 1 })

	stopFirst()
	_, before := sched.counts()
	// For two TTLs the lease never lapses: the other scheduler answers.
	for end := time.Now().Add(2 * ttl); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		if err := l.Check(); err != nil {
			t.Fatalf("the lease lapsed although another scheduler was up: %v", err)
		}
	}
	if _, after := sched.counts(); after < before+5 {
		t.Fatalf("%d heartbeats in two TTLs after the first scheduler stopped, want them to go on", after-before)
	}
	if regs, _ := sched.counts(); regs != 1 {
		t.Fatalf("%d registrations, want 1: the other scheduler takes the heartbeats as they are", regs)
	}
}

func TestLinkWaitsForASchedulerToStart(t *testing.T) {
	finder := &lateFinder{}
	l := startLink(t, Config{Finder: finder})
	time.Sleep(100 * time.Millisecond)
	if err := l.Check(); !errors.Is(err, ErrLeaseExpired) || !strings.Contains(err.Error(), "n1 has not registered") {
		t.Fatalf("Check before any scheduler = %v, want the never-registered refusal", err)
	}
	sched := &fakeScheduler{ttl: time.Second, interval: 50 * time.Millisecond}
	addr, _ := sched.serve(t)
	finder.set(addr)
	eventually(t, 10*time.Second, "a registration once the scheduler is up", func() bool { return l.Check() == nil })
}

// lateFinder knows no scheduler until set.
type lateFinder struct {
	mu   sync.Mutex
	addr string
}

func (f *lateFinder) set(addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addr = addr
}

func (f *lateFinder) Schedulers(context.Context) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addr == "" {
		return nil, fmt.Errorf("%w: not up yet", ErrNoScheduler)
	}
	return []string{f.addr}, nil
}

// fakeClock is a clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestLinkCountsTheLeaseOnItsClock(t *testing.T) {
	clock := &fakeClock{now: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	// An hour's lease: the link beats every 20 minutes of real time, so
	// no heartbeat moves the lease during the test.
	sched := &fakeScheduler{ttl: time.Hour, interval: time.Hour}
	addr, _ := sched.serve(t)
	l := startLink(t, Config{Finder: staticFinder{addr}, Clock: clock.Now})
	eventually(t, 5*time.Second, "a registration", func() bool { return l.Epoch() == 1 })

	clock.advance(time.Hour - time.Nanosecond)
	if err := l.Check(); err != nil {
		t.Fatalf("Check just before the TTL: %v", err)
	}
	clock.advance(time.Nanosecond)
	err := l.Check()
	want := "node n1 has no valid lease with the scheduler since 2025-01-01T13:00:00Z: it starts, resumes and commits nothing until it has registered again"
	if !errors.Is(err, ErrLeaseExpired) || err.Error() != want {
		t.Fatalf("Check at the TTL = %v\nwant %s", err, want)
	}
}

func TestStartRefusesAnUnusableConfig(t *testing.T) {
	facts := func(context.Context) (*pb.RegisterRequest, error) { return &pb.RegisterRequest{}, nil }
	beat := func(context.Context) (*pb.HeartbeatRequest, error) { return &pb.HeartbeatRequest{}, nil }
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{Facts: facts, Heartbeat: beat, Join: []string{"127.0.0.1:7702"}}, "no node name"},
		{"no facts", Config{Node: "n1", Heartbeat: beat, Join: []string{"127.0.0.1:7702"}}, "no facts"},
		{"nothing to join", Config{Node: "n1", Facts: facts, Heartbeat: beat}, "give --join"},
		{"gossip without a key", Config{Node: "n1", Facts: facts, Heartbeat: beat, Join: []string{"127.0.0.1:7702"}, GossipBind: "127.0.0.1:0"}, "gossip key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := Start(context.Background(), tt.cfg)
			if err == nil {
				l.Stop()
				t.Fatal("Start accepted the configuration")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}

// TestLinkPlacementFollowsTheLastRegistration: Placement answers from
// the last registration alone: a container the cluster moved away
// between two registrations is no longer placed, with the new epoch.
func TestLinkPlacementFollowsTheLastRegistration(t *testing.T) {
	sched := &fakeScheduler{ttl: 2 * time.Second, interval: 50 * time.Millisecond,
		generations: []*pb.ContainerGeneration{{Id: "c1", Generation: 7, Desired: "running"}}}
	addr, _ := sched.serve(t)
	l := startLink(t, Config{Finder: staticFinder{addr}})
	eventually(t, 5*time.Second, "a registration", func() bool { return l.Epoch() == 1 })
	if g, placed, epoch := l.Placement("c1"); !placed || g != 7 || epoch != 1 {
		t.Fatalf("Placement(c1) = %d, %v, %d; want 7, placed, epoch 1", g, placed, epoch)
	}

	// c1 moves to another node and c2 comes here; the node registers
	// again.
	sched.mu.Lock()
	sched.generations = []*pb.ContainerGeneration{{Id: "c2", Generation: 3, Desired: "running"}}
	sched.mu.Unlock()
	sched.forget()
	eventually(t, 5*time.Second, "the new registration", func() bool { return l.Epoch() == 102 })
	if g, placed, epoch := l.Placement("c1"); placed || epoch != 102 {
		t.Fatalf("Placement(c1) after it moved = %d, %v, %d; want not placed, epoch 102", g, placed, epoch)
	}
	if g, placed, _ := l.Placement("c2"); !placed || g != 3 {
		t.Fatalf("Placement(c2) = %d, %v; want 3, placed", g, placed)
	}
}
