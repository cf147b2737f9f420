package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/godwit/godwit/internal/authz"
	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/rpc"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/coordinator"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/membership"
	"github.com/godwit/godwit/scheduler/state"
)

// leaveTimeout bounds how long Leave waits for the gossip pool to hear
// it: the leader removes a scheduler that left.
const leaveTimeout = 5 * time.Second

// DefaultClusterCIDR is where container addresses come from when the
// first leader is given none.
var DefaultClusterCIDR = netip.MustParsePrefix("10.88.0.0/16")

// Config configures one scheduler replica.
type Config struct {
	// Name is the scheduler's unique name: its raft ID and gossip name,
	// the common name of its certificate.
	Name    string
	DataDir string
	// Listen is the gRPC API's address; Advertise is where others reach
	// it (default Listen).
	Listen, Advertise string
	// RaftListen and RaftAdvertise are raft's transport addresses.
	RaftListen, RaftAdvertise string
	// GossipListen and GossipAdvertise are memberlist's addresses.
	GossipListen, GossipAdvertise string
	// BootstrapExpect is how many schedulers form the first
	// configuration: once that many have found each other in the gossip
	// pool, they bootstrap raft together.
	BootstrapExpect int
	// Join are gossip addresses of members to join.
	Join []string
	// Identity is the scheduler's TLS identity; nil serves plaintext
	// (--insecure).
	Identity *pki.Identity
	// GossipKey encrypts the gossip pool; empty only with Identity nil.
	GossipKey []byte
	// ClusterCIDR is where container addresses come from; the first leader
	// records it, later ones keep the recorded one.
	ClusterCIDR netip.Prefix
	Timing      Timing
	Logger      *slog.Logger
	// Metrics counts API calls and leadership changes; nil counts
	// nothing.
	Metrics *metrics.Scheduler
}

// Scheduler is one running replica: raft, the state it replicates, the
// gossip pool and the gRPC API.
type Scheduler struct {
	cfg   Config
	log   *slog.Logger
	store *state.Store
	fsm   *fsm.FSM
	raft  *RaftNode
	pool  *membership.Pool
	conns *connPool
	grpc  *grpc.Server
	lis   net.Listener
	addr  string

	leases  *leases
	loads   *loads
	unknown *unknownSeen
	// enforcing: containers whose desired state is being enforced
	// (desired.go).
	enforcing enforcing
	// placer serialises placements from the snapshot to the commit, in
	// batches (placer.go).
	placer *Placer
	// coord drives the leader's migrations, over migrationConns.
	coord          *coordinator.Coordinator
	migrationConns *connPool
	// drains drives the leader's node drains, through coord (drains.go).
	drains *coordinator.Drainer
	// balancer plans and starts the leader's balancing moves, through
	// coord, from the load samples heartbeats bring (balancer.go).
	balancer *balancer

	closedc  chan struct{}
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	closeErr error
	once     sync.Once
}

// Start opens the scheduler's raft state under DataDir, joins the gossip
// pool, and serves the API. It returns once serving; Close stops it.
func Start(ctx context.Context, cfg Config) (_ *Scheduler, err error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	s := &Scheduler{cfg: cfg, log: cfg.Logger.With("scheduler", cfg.Name), leases: newLeases(), loads: newLoads(), unknown: newUnknownSeen(), closedc: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	var serverTLS, clientTLS *tls.Config
	if cfg.Identity != nil {
		if serverTLS, err = cfg.Identity.ServerConfig(); err != nil {
			return nil, err
		}
		clientTLS = cfg.Identity.ClientConfig()
	}
	s.conns = newConnPool(clientTLS)
	// The coordinator's calls to agents carry its leadership fence.
	s.migrationConns = newConnPool(clientTLS,
		grpc.WithChainUnaryInterceptor(coordinator.FenceUnary), grpc.WithChainStreamInterceptor(coordinator.FenceStream))

	s.store = state.NewStore()
	s.fsm = fsm.New(s.store, s.log)
	s.coord = coordinator.New(coordinator.Config{
		Store: s.store, Apply: applier{s}, Sides: migrationSides{s.migrationConns}, Log: s.log, Unknown: outcomeUnknown,
		Drive: migrate.DriveOptions{StepTimeout: cfg.Timing.MigrationStep, Logger: s.log},
	})
	s.drains = coordinator.NewDrainer(coordinator.DrainConfig{Store: s.store, Apply: applier{s}, Moves: s.coord, Stop: drainStopper{s},
		Checkpoint: drainCheckpointer{s}, Log: s.log})
	s.balancer = newBalancer(balancerConfig{Store: s.store, Apply: applier{s}, Moves: s.coord, Log: s.log})
	if s.raft, err = OpenRaft(RaftConfig{
		ID:         cfg.Name,
		DataDir:    cfg.DataDir,
		BindAddr:   cfg.RaftListen,
		Advertise:  cfg.RaftAdvertise,
		ServerTLS:  serverTLS,
		ClientTLS:  clientTLS,
		VerifyPeer: verifyRole(pki.RoleScheduler),
		Insecure:   cfg.Identity == nil,
		FSM:        s.fsm,
		Logger:     s.log,
		Timing:     raftTiming(cfg.Timing),
	}); err != nil {
		return nil, err
	}

	if s.lis, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("scheduler %s: listen on %s: %w: is another process using the port? Choose another --listen", cfg.Name, cfg.Listen, err)
	}
	s.addr = cfg.Advertise
	if s.addr == "" {
		s.addr = s.lis.Addr().String()
	}

	if s.pool, err = membership.Start(membership.Config{
		Name:          cfg.Name,
		Role:          membership.RoleScheduler,
		BindAddr:      cfg.GossipListen,
		AdvertiseAddr: cfg.GossipAdvertise,
		Key:           cfg.GossipKey,
		Insecure:      cfg.Identity == nil,
		Tags:          membership.Tags{RPCAddr: s.addr, RaftAddr: s.raft.Addr(), Expect: cfg.BootstrapExpect},
		Profile:       gossipProfile(cfg.Timing),
		Logger:        s.log,
	}); err != nil {
		return nil, err
	}

	// Counted first, so that refused calls count too.
	opts := append(rpc.ServerOptions(), cfg.Metrics.ServerOptions()...)
	if serverTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(serverTLS)))
	}
	codec := newFrameCodec()
	policy, authzOpts := authz.SchedulerPolicy(), authz.Options{Insecure: cfg.Identity == nil, Log: s.log}
	opts = append(opts,
		grpc.ForceServerCodecV2(codec),
		// Authorize first: a replica forwards only what the caller may do.
		grpc.ChainUnaryInterceptor(authz.UnaryServerInterceptor(policy, authzOpts), forwardUnary(s.route, codec)),
		grpc.ChainStreamInterceptor(authz.StreamServerInterceptor(policy, authzOpts), forwardStream(s.route, codec)),
	)
	s.grpc = grpc.NewServer(opts...)
	pb.RegisterClusterServiceServer(s.grpc, &clusterAPI{s: s})
	pb.RegisterNodeServiceServer(s.grpc, &nodeAPI{s: s})

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	// Before serving: Run queues its placements there.
	s.placer = NewPlacer(PlacerConfig{Backend: schedulerBackend{s}, Logger: s.log})
	s.goRun(func() { s.placer.Run(runCtx) })
	s.goRun(func() {
		if err := s.grpc.Serve(s.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.log.Error("API server stopped", "err", err)
		}
	})
	s.goRun(func() { s.bootstrapLoop(runCtx) })
	s.goRun(func() { s.leaderLoop(runCtx) })

	if len(cfg.Join) > 0 {
		if _, err := s.pool.Join(ctx, cfg.Join); err != nil {
			// The others may start later: they join us then.
			s.log.Warn("join the gossip pool: none of the addresses answered yet", "join", cfg.Join, "err", err)
		}
	}
	s.log.Info("scheduler ready", "listen", s.lis.Addr().String(), "raft", s.raft.Addr(), "gossip", s.pool.LocalMember().Addr,
		"bootstrap_expect", cfg.BootstrapExpect)
	return s, nil
}

func (cfg *Config) check() error {
	switch {
	case cfg.Name == "":
		return errors.New("scheduler: --name is required: a name unique among the schedulers")
	case cfg.DataDir == "":
		return errors.New("scheduler: --data-dir is required: where raft keeps its log and snapshots")
	case cfg.Identity == nil && len(cfg.GossipKey) > 0:
		return errors.New("scheduler: --insecure gossips in plaintext: drop --gossip-key-file, or serve TLS")
	case cfg.Identity != nil && len(cfg.GossipKey) == 0:
		return errors.New("scheduler: the gossip pool is encrypted: give --gossip-key-file (create one with `godwit tls gossip-key create FILE`)")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Timing == (Timing{}) {
		cfg.Timing = LANTiming
	}
	if !cfg.ClusterCIDR.IsValid() {
		cfg.ClusterCIDR = DefaultClusterCIDR
	}
	return nil
}

// Addr is the address the API is reached at.
func (s *Scheduler) Addr() string { return s.addr }

// Name is the scheduler's name.
func (s *Scheduler) Name() string { return s.cfg.Name }

// IsLeader reports whether this replica leads now.
func (s *Scheduler) IsLeader() bool { return s.raft != nil && s.raft.IsLeader() }

// RaftStatus is this replica's view of raft (it waits on raft's run
// loop for the configuration).
func (s *Scheduler) RaftStatus() RaftStatus { return s.raft.Status() }

// GossipMembers are the members of the gossip pool as this replica sees
// them.
func (s *Scheduler) GossipMembers() []membership.Member { return s.pool.Members() }

// Store is the replica's copy of the cluster state (read it through
// Snapshot).
func (s *Scheduler) Store() *state.Store { return s.store }

// Done is closed once Close has finished.
func (s *Scheduler) Done() <-chan struct{} { return s.closedc }

func (s *Scheduler) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// Close stops the API, the gossip and raft, without leaving: the
// replica stays a raft voter and rejoins when started again on its data
// dir (a restart, an upgrade). Containers keep running: they belong to
// the agents.
func (s *Scheduler) Close() error { return s.stop(false) }

// Leave leaves the cluster for good, then stops: the gossip pool hears
// the replica leave, and the leader removes it from raft. To come back it
// starts with an empty data dir.
func (s *Scheduler) Leave() error { return s.stop(true) }

func (s *Scheduler) stop(leave bool) error {
	s.once.Do(func() {
		var errs []error
		if s.cancel != nil {
			s.cancel()
		}
		if s.pool != nil {
			if leave {
				errs = append(errs, s.pool.Leave(leaveTimeout))
			}
			errs = append(errs, s.pool.Shutdown())
		}
		if s.grpc != nil {
			s.grpc.Stop()
		} else if s.lis != nil {
			s.lis.Close()
		}
		s.wg.Wait()
		if s.raft != nil {
			errs = append(errs, s.raft.Shutdown())
		}
		for _, p := range []*connPool{s.conns, s.migrationConns} {
			if p != nil {
				p.close()
			}
		}
		s.closeErr = errors.Join(errs...)
		close(s.closedc)
	})
	return s.closeErr
}
