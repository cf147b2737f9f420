package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The scheduler tests run real replicas in one process: raft with bolt
// stores in temporary dirs, memberlist on 127.0.0.1, mutual TLS with a
// throwaway CA, TestTiming. Agents are played by the test through
// NodeService with agent certificates.

// schedCluster is a CA and the replicas started from it.
type schedCluster struct {
	t          *testing.T
	ca         *pki.CA
	gossipKey  []byte
	schedulers []*Scheduler
}

func newSchedCluster(t *testing.T) *schedCluster {
	t.Helper()
	ca, err := pki.NewCA("scheduler test CA")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "gossip.key")
	if err := pki.CreateGossipKey(keyFile); err != nil {
		t.Fatal(err)
	}
	key, err := pki.LoadGossipKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &schedCluster{t: t, ca: ca, gossipKey: key}
}

// identity issues a certificate with role for name into a temporary dir.
func (c *schedCluster) identity(name string, role pki.Role) *pki.Identity {
	c.t.Helper()
	req := pki.CertRequest{Name: name, Role: role}
	if role.Serves() {
		req.Hosts = []string{"127.0.0.1"}
	}
	files, err := c.ca.IssueTo(c.t.TempDir(), req)
	if err != nil {
		c.t.Fatal(err)
	}
	id, err := pki.Load(files)
	if err != nil {
		c.t.Fatal(err)
	}
	return id
}

// start starts a replica; join are gossip addresses.
func (c *schedCluster) start(name string, expect int, join ...string) *Scheduler {
	c.t.Helper()
	s, err := Start(context.Background(), Config{
		Name:            name,
		DataDir:         c.t.TempDir(),
		Listen:          "127.0.0.1:0",
		RaftListen:      "127.0.0.1:0",
		GossipListen:    "127.0.0.1:0",
		BootstrapExpect: expect,
		Join:            join,
		Identity:        c.identity(name, pki.RoleScheduler),
		GossipKey:       c.gossipKey,
		Timing:          TestTiming,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { s.Close() })
	c.schedulers = append(c.schedulers, s)
	return s
}

// three starts three replicas that bootstrap together and waits for a
// leader.
func (c *schedCluster) three() []*Scheduler {
	first := c.start("s1", 3)
	gossip := first.pool.LocalMember().Addr
	c.start("s2", 3, gossip)
	c.start("s3", 3, gossip)
	c.leader()
	return c.schedulers
}

// leader waits until one running replica leads, and returns it.
func (c *schedCluster) leader() *Scheduler {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, s := range c.schedulers {
			if s.closed() {
				continue
			}
			if s.IsLeader() && s.store.Snapshot().Config().ClusterCIDR.IsValid() {
				return s
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no scheduler became leader within 15s")
	return nil
}

func (c *schedCluster) follower() *Scheduler {
	for _, s := range c.schedulers {
		if !s.closed() && !s.IsLeader() {
			return s
		}
	}
	c.t.Fatal("no follower")
	return nil
}

// dial connects to s as name with role; role "" dials plaintext.
func (c *schedCluster) dial(s *Scheduler, name string, role pki.Role) *grpc.ClientConn {
	c.t.Helper()
	creds := insecure.NewCredentials()
	if role != "" {
		creds = credentials.NewTLS(c.identity(name, role).ClientConfig())
	}
	conn, err := grpc.NewClient(s.Addr(), append(rpc.DialOptions(), grpc.WithTransportCredentials(creds))...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

func (s *Scheduler) closed() bool {
	select {
	case <-s.Done():
		return true
	default:
		return false
	}
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// register registers node as an agent would, through s.
func register(t *testing.T, c *schedCluster, s *Scheduler, node string) (pb.NodeServiceClient, *pb.RegisterResponse) {
	t.Helper()
	client := pb.NewNodeServiceClient(c.dial(s, node, pki.RoleAgent))
	resp, err := client.Register(callCtx(t), &pb.RegisterRequest{
		Name: node, Address: "127.0.0.1:1", Capacity: &pb.Resources{MilliCpu: 2000, MemoryBytes: 1 << 30},
		Labels: map[string]string{"zone": "a"},
	})
	if err != nil {
		t.Fatalf("register %s: %v", node, err)
	}
	return client, resp
}

func nodeStatus(t *testing.T, client pb.ClusterServiceClient, node string) string {
	t.Helper()
	n, err := client.InspectNode(callCtx(t), &pb.NodeRef{Name: node})
	if err != nil {
		t.Fatalf("inspect node %s: %v", node, err)
	}
	return n.GetStatus()
}

func TestThreeSchedulersElectAndAnswerStatusFromAnyReplica(t *testing.T) {
	c := newSchedCluster(t)
	c.three()
	leader := c.leader()
	for _, s := range c.schedulers {
		client := pb.NewClusterServiceClient(c.dial(s, "op", pki.RoleViewer))
		// A follower applies its first entry only once the new leader's
		// first append reaches it, a moment after the election: wait for
		// that, but no longer than a settled cluster needs.
		var st *pb.ClusterStatusResponse
		deadline := time.Now().Add(10 * time.Second)
		for {
			var err error
			st, err = client.ClusterStatus(callCtx(t), &pb.ClusterStatusRequest{})
			if err != nil {
				t.Fatalf("status from %s: %v", s.Name(), err)
			}
			if allApplied(st) || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if st.GetLeader() != leader.Name() {
			t.Errorf("%s says the leader is %q, want %q", s.Name(), st.GetLeader(), leader.Name())
		}
		if len(st.GetPeers()) != 3 {
			t.Fatalf("%s lists %d peers, want 3: %v", s.Name(), len(st.GetPeers()), st.GetPeers())
		}
		for _, p := range st.GetPeers() {
			if !p.GetVoter() || p.GetError() != "" {
				t.Errorf("%s: peer %s voter=%v error=%q", s.Name(), p.GetId(), p.GetVoter(), p.GetError())
			}
			if p.GetAppliedIndex() == 0 {
				t.Errorf("%s: peer %s reports no applied index after 10s", s.Name(), p.GetId())
			}
		}
	}
}

func allApplied(st *pb.ClusterStatusResponse) bool {
	for _, p := range st.GetPeers() {
		if p.GetAppliedIndex() == 0 {
			return false
		}
	}
	return len(st.GetPeers()) > 0
}

func TestWritesThroughAFollowerReachTheLeaderAndAreAudited(t *testing.T) {
	c := newSchedCluster(t)
	c.three()
	follower := c.follower()
	register(t, c, follower, "n1")
	ops := pb.NewClusterServiceClient(c.dial(follower, "alice", pki.RoleOperator))
	if _, err := ops.CordonNode(callCtx(t), &pb.NodeRef{Name: "n1"}); err != nil {
		t.Fatalf("cordon through a follower: %v", err)
	}
	if got := nodeStatus(t, ops, "n1"); got != "cordoned" {
		t.Errorf("node status after cordon = %q, want cordoned", got)
	}
	audit, err := ops.Audit(callCtx(t), &pb.AuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range audit.GetRecords() {
		if r.GetAction() == "node cordon" && r.GetTarget() == "n1" {
			found = true
			if r.GetWho() != "alice" || r.GetRole() != "operator" || r.GetOutcome() != "ok" {
				t.Errorf("audit record names %s %s, outcome %q: want operator alice, ok (not the forwarding scheduler)", r.GetRole(), r.GetWho(), r.GetOutcome())
			}
		}
	}
	if !found {
		t.Errorf("no audit record of the cordon in %v", audit.GetRecords())
	}
}

func TestAViewerCannotWriteAndPlaintextIsRefused(t *testing.T) {
	c := newSchedCluster(t)
	s := c.start("solo", 1)
	c.leader()
	viewer := pb.NewClusterServiceClient(c.dial(s, "bob", pki.RoleViewer))
	if _, err := viewer.ListNodes(callCtx(t), &pb.ListNodesRequest{}); err != nil {
		t.Fatalf("a viewer may list nodes: %v", err)
	}
	_, err := viewer.CordonNode(callCtx(t), &pb.NodeRef{Name: "n1"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("viewer cordon: %v, want PermissionDenied", err)
	}
	agent := pb.NewClusterServiceClient(c.dial(s, "n1", pki.RoleAgent))
	if _, err := agent.Run(callCtx(t), &pb.RunRequest{Container: &pb.RunContainerRequest{Image: "busybox"}}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an agent certificate ran a container: %v, want PermissionDenied", err)
	}
	plain := pb.NewClusterServiceClient(c.dial(s, "", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := plain.ListNodes(ctx, &pb.ListNodesRequest{}); err == nil {
		t.Fatal("a plaintext client was answered by a TLS scheduler")
	}
}

func TestASilentNodeIsSuspectThenDownAndMustRegisterAgain(t *testing.T) {
	c := newSchedCluster(t)
	s := c.start("solo", 1)
	c.leader()
	agent, reg := register(t, c, s, "n1")
	ops := pb.NewClusterServiceClient(c.dial(s, "op", pki.RoleOperator))
	if got := nodeStatus(t, ops, "n1"); got != "ready" {
		t.Fatalf("registered node is %q, want ready", got)
	}
	// Heartbeats keep it ready past a lease.
	for end := time.Now().Add(TestTiming.LeaseTTL * 2); time.Now().Before(end); time.Sleep(TestTiming.Heartbeat) {
		if _, err := agent.Heartbeat(callCtx(t), &pb.HeartbeatRequest{Name: "n1", Epoch: reg.GetEpoch()}); err != nil {
			t.Fatal(err)
		}
	}
	if got := nodeStatus(t, ops, "n1"); got != "ready" {
		t.Fatalf("a beating node is %q, want ready", got)
	}
	// Silence: suspect after the lease, down after DownAfter more.
	waitStatus(t, ops, "n1", "suspect", TestTiming.LeaseTTL+time.Second)
	waitStatus(t, ops, "n1", "down", TestTiming.DownAfter+time.Second)
	resp, err := agent.Heartbeat(callCtx(t), &pb.HeartbeatRequest{Name: "n1", Epoch: reg.GetEpoch()})
	if err != nil {
		t.Fatal(err)
	}
	if !resp.GetReregister() {
		t.Fatal("a node marked down was not told to register again")
	}
	_, reg2 := register(t, c, s, "n1")
	if reg2.GetEpoch() <= reg.GetEpoch() {
		t.Errorf("epoch after re-registering = %d, want more than %d", reg2.GetEpoch(), reg.GetEpoch())
	}
	// Ready again, as long as it beats (a loaded machine may let a
	// one-second test lease run out between two calls).
	deadline := time.Now().Add(10 * time.Second)
	for got := nodeStatus(t, ops, "n1"); got != "ready"; got = nodeStatus(t, ops, "n1") {
		if time.Now().After(deadline) {
			t.Fatalf("re-registered and beating node is %q, want ready", got)
		}
		if _, err := agent.Heartbeat(callCtx(t), &pb.HeartbeatRequest{Name: "n1", Epoch: reg2.GetEpoch()}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(TestTiming.Heartbeat)
	}
}

// A node that registers again while the leader checks leases comes back
// ready: the check must not find the old, expired lease on the new
// registration and put the node down again (with its containers lost)
// while the agent, told it is registered, goes on acting.
func TestARegistrationRacingTheLeaseCheckStaysReady(t *testing.T) {
	c := newSchedCluster(t)
	s := c.start("solo", 1)
	c.leader()
	register(t, c, s, "n1")
	ops := pb.NewClusterServiceClient(c.dial(s, "op", pki.RoleOperator))

	ctx, cancel := context.WithCancel(context.Background())
	checking := make(chan struct{})
	go func() {
		defer close(checking)
		for ctx.Err() == nil {
			s.checkLeases(ctx)
			time.Sleep(time.Millisecond)
		}
	}()
	defer func() { cancel(); <-checking }()

	for round := range 5 {
		// The node went silent long ago: the leader puts it down.
		s.leases.renew("n1", time.Now().Add(-time.Hour))
		waitStatus(t, ops, "n1", "down", 5*time.Second)
		register(t, c, s, "n1")
		if got := nodeStatus(t, ops, "n1"); got != "ready" {
			t.Fatalf("round %d: the node is %q right after it registered again, want ready", round, got)
		}
	}
}

func waitStatus(t *testing.T, client pb.ClusterServiceClient, node, want string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	var got string
	for time.Now().Before(deadline) {
		if got = nodeStatus(t, client, node); got == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("node %s is %q after %s, want %q", node, got, within, want)
}

func TestAnAgentCannotRegisterAsAnotherNode(t *testing.T) {
	c := newSchedCluster(t)
	s := c.start("solo", 1)
	c.leader()
	client := pb.NewNodeServiceClient(c.dial(s, "n1", pki.RoleAgent))
	_, err := client.Register(callCtx(t), &pb.RegisterRequest{Name: "n2", Address: "127.0.0.1:1"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("n1 registering as n2: %v, want PermissionDenied", err)
	}
}

func TestAnInsecureSchedulerServesPlaintext(t *testing.T) {
	s, err := Start(context.Background(), Config{
		Name: "plain", DataDir: t.TempDir(),
		Listen: "127.0.0.1:0", RaftListen: "127.0.0.1:0", GossipListen: "127.0.0.1:0",
		BootstrapExpect: 1, Timing: TestTiming,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	conn, err := grpc.NewClient(s.Addr(), append(rpc.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	nodes := pb.NewNodeServiceClient(conn)
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := nodes.Register(callCtx(t), &pb.RegisterRequest{Name: "n1", Address: "127.0.0.1:1"})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("register with an insecure scheduler: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	list, err := pb.NewClusterServiceClient(conn).ListNodes(callCtx(t), &pb.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetNodes()) != 1 || list.GetNodes()[0].GetName() != "n1" {
		t.Fatalf("nodes = %v, want n1", list.GetNodes())
	}
}

// peers is the raft configuration s's status lists.
func peers(t *testing.T, c *schedCluster, s *Scheduler) []string {
	t.Helper()
	st, err := pb.NewClusterServiceClient(c.dial(s, "op", pki.RoleOperator)).ClusterStatus(callCtx(t), &pb.ClusterStatusRequest{Local: true})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range st.GetPeers() {
		ids = append(ids, p.GetId())
	}
	return ids
}

func waitPeers(t *testing.T, c *schedCluster, s *Scheduler, want int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := peers(t, c, s)
		if len(got) == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("raft peers %v, want %d", got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestALeavingSchedulerIsRemovedAndAKilledOneByRemovePeer(t *testing.T) {
	c := newSchedCluster(t)
	c.three()
	// One leaves on purpose: the leader takes it out of raft by itself.
	leaving := c.follower()
	if err := leaving.Leave(); err != nil {
		t.Fatal(err)
	}
	leader := c.leader()
	waitPeers(t, c, leader, 2)

	// A fourth joins through gossip without --bootstrap-expect: the
	// leader adds it as a voter.
	fourth := c.start("s4", 0, leader.pool.LocalMember().Addr)
	waitPeers(t, c, leader, 3)
	waitPeers(t, c, fourth, 3)

	// remove-peer refuses a scheduler that still gossips (the leader
	// would add it again), and removes one that is gone for good.
	ops := pb.NewClusterServiceClient(c.dial(leader, "op", pki.RoleOperator))
	if _, err := ops.RemovePeer(callCtx(t), &pb.RemovePeerRequest{Id: "nobody"}); status.Code(err) != codes.NotFound {
		t.Fatalf("remove an unknown peer: %v, want NotFound", err)
	}
	if _, err := ops.RemovePeer(callCtx(t), &pb.RemovePeerRequest{Id: "s4"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("remove-peer of a live scheduler: %v, want FailedPrecondition", err)
	}
	fourth.kill()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := ops.RemovePeer(callCtx(t), &pb.RemovePeerRequest{Id: "s4"})
		if err == nil {
			break
		}
		// Until gossip declares s4 dead it refuses; with s4 gone the
		// leader needs s3 for its quorum, and a slow machine may make it
		// step down for a moment: the operator retries, as the error says.
		if c := status.Code(err); c != codes.FailedPrecondition && c != codes.Unavailable || time.Now().After(deadline) {
			t.Fatalf("remove-peer of a dead scheduler: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitPeers(t, c, leader, 2)
}

func TestSnapshotSaveAndRestoreBringTheStateBack(t *testing.T) {
	c := newSchedCluster(t)
	s := c.start("solo", 1)
	c.leader()
	register(t, c, s, "n1")
	ops := pb.NewClusterServiceClient(c.dial(s, "op", pki.RoleOperator))

	save, err := ops.SnapshotSave(callCtx(t), &pb.SnapshotSaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var saved []byte
	for {
		chunk, err := save.Recv()
		if err != nil {
			if status.Code(err) != codes.OK && err.Error() != "EOF" {
				t.Fatalf("snapshot save: %v", err)
			}
			break
		}
		saved = append(saved, chunk.GetData()...)
	}
	if len(saved) == 0 {
		t.Fatal("empty snapshot")
	}

	// After the snapshot: n1 cordoned, n2 registered.
	if _, err := ops.CordonNode(callCtx(t), &pb.NodeRef{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	register(t, c, s, "n2")

	restore := func(data []byte) error {
		up, err := ops.SnapshotRestore(callCtx(t))
		if err != nil {
			return err
		}
		for len(data) > 0 {
			n := min(len(data), 1000)
			if err := up.Send(&pb.SnapshotChunk{Data: data[:n]}); err != nil {
				break
			}
			data = data[n:]
		}
		_, err = up.CloseAndRecv()
		return err
	}
	if err := restore(saved[:len(saved)/2]); err == nil {
		t.Fatal("a truncated snapshot was restored")
	}
	if got := nodeStatus(t, ops, "n1"); got != "cordoned" {
		t.Fatalf("a refused restore changed the state: n1 is %q", got)
	}
	if err := restore(saved); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if got := nodeStatus(t, ops, "n1"); got != "ready" {
		t.Errorf("after the restore n1 is %q, want ready as when saved", got)
	}
	if _, err := ops.InspectNode(callCtx(t), &pb.NodeRef{Name: "n2"}); status.Code(err) != codes.NotFound {
		t.Errorf("after the restore n2 (registered later) is there: %v", err)
	}
}

// kill stops s as a crash would: no leave, raft and the API just stop.
func (s *Scheduler) kill() { s.Close() }

// fakeAgent answers RunContainer as an agent that runs everything: the
// scheduler's side of a run is what the test is about.
type fakeAgent struct {
	pb.UnimplementedAgentServiceServer
	mu  sync.Mutex
	ran []string
}

func (f *fakeAgent) RunContainer(_ context.Context, req *pb.RunContainerRequest) (*pb.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ran = append(f.ran, req.GetName())
	return &pb.Container{Id: req.GetId(), Name: req.GetName(), State: pb.ContainerState_CONTAINER_STATE_RUNNING, Ip: req.GetIp()}, nil
}

// startFakeAgent serves a fakeAgent with node's agent certificate and
// returns its address.
func (c *schedCluster) startFakeAgent(node string) (string, *fakeAgent) {
	c.t.Helper()
	cfg, err := c.identity(node, pki.RoleAgent).ServerConfig()
	if err != nil {
		c.t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)))
	f := &fakeAgent{}
	pb.RegisterAgentServiceServer(srv, f)
	go srv.Serve(lis)
	c.t.Cleanup(srv.Stop)
	return lis.Addr().String(), f
}

func TestConcurrentRunsNeverOvercommitANode(t *testing.T) {
	c := newSchedCluster(t)
	s := c.start("solo", 1)
	c.leader()
	addr, agent := c.startFakeAgent("n1")
	nodes := pb.NewNodeServiceClient(c.dial(s, "n1", pki.RoleAgent))
	if _, err := nodes.Register(callCtx(t), &pb.RegisterRequest{
		Name: "n1", Address: addr, Capacity: &pb.Resources{MilliCpu: 1000, MemoryBytes: 1 << 30},
		Images: []*pb.Image{{Name: "busybox", Id: "sha256:1"}},
	}); err != nil {
		t.Fatal(err)
	}
	ops := pb.NewClusterServiceClient(c.dial(s, "op", pki.RoleOperator))
	// Ten runs at once of 0.3 CPU each on a 1-CPU node: three fit.
	const runs, fit = 10, 3
	var wg sync.WaitGroup
	errs := make([]error, runs)
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = ops.Run(callCtx(t), &pb.RunRequest{Container: &pb.RunContainerRequest{
				Name: fmt.Sprintf("c%d", i), Image: "busybox", Cpus: 0.3,
			}})
		}()
	}
	wg.Wait()
	placed := 0
	for i, err := range errs {
		switch status.Code(err) {
		case codes.OK:
			placed++
		case codes.ResourceExhausted:
		default:
			t.Errorf("run c%d: %v", i, err)
		}
	}
	if placed != fit || len(agent.ran) != fit {
		t.Errorf("%d runs placed, %d reached the agent; want %d: the node has room for %d", placed, len(agent.ran), fit, fit)
	}
	n, err := ops.InspectNode(callCtx(t), &pb.NodeRef{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := n.GetAllocated().GetMilliCpu(); got > 1000 {
		t.Errorf("node n1 allocated %d milli-CPU of 1000", got)
	}
}
