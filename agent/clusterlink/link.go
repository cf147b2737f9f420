package clusterlink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/membership"
)

// Config is what a link needs.
type Config struct {
	// Node is the node's name: its certificate's common name, and its
	// member name in the gossip pool.
	Node string
	// Join are the gossip addresses (host:port) of any members of the
	// pool, schedulers or agents.
	Join []string
	// GossipBind is the IP:port the agent gossips on; GossipAdvertise,
	// when set, is the address the others reach it at instead.
	GossipBind, GossipAdvertise string
	// GossipKey is the cluster's gossip key (16, 24 or 32 bytes);
	// required unless Insecure.
	GossipKey []byte
	// Insecure gossips in plaintext, without a key: one host or tests.
	Insecure bool
	// GossipProfile is the pool's failure-detection timing; empty is
	// membership.ProfileLAN.
	GossipProfile membership.Profile
	// RPCAddr is the agent's API address, gossiped in its tags.
	RPCAddr string
	// ClientTLS is the agent's identity as a client of the schedulers
	// (its node certificate): a scheduler must present a certificate the
	// CA signed for the address dialled. nil: plaintext.
	ClientTLS *tls.Config
	// Facts is what the node registers with: its address, capacity,
	// versions, containers and images. The link sets the name.
	Facts func(ctx context.Context) (*pb.RegisterRequest, error)
	// Heartbeat is what each heartbeat carries: containers and load. The
	// link sets the name and the epoch.
	Heartbeat func(ctx context.Context) (*pb.HeartbeatRequest, error)
	// Finder, when set, finds the schedulers instead of the gossip pool,
	// which the link then does not join: for tests, or schedulers at
	// fixed addresses.
	Finder Finder
	// Logger receives the link's logs; nil: slog.Default.
	Logger *slog.Logger
	// Clock is the time the lease is counted in; nil: time.Now. Only the
	// lease follows it; heartbeats are paced by real timers.
	Clock func() time.Time
}

const (
	// factsTimeout bounds gathering what a registration carries: the
	// first one probes the host for migration strategies (about a
	// second) and waits for the tool versions.
	factsTimeout = 30 * time.Second
	// reportTimeout bounds building one heartbeat (a listing and a load
	// sample: file reads).
	reportTimeout = 10 * time.Second
	// registerTimeout bounds one registration call to one scheduler,
	// which forwards it to the leader to be committed in raft.
	registerTimeout = 15 * time.Second
	// findTimeout bounds finding the schedulers, which may join the
	// gossip pool again.
	findTimeout = 15 * time.Second
	// retryMin and retryMax bound the wait between failed registrations,
	// doubling from one to the other, with jitter so that agents started
	// together do not retry together.
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
	// leaveTimeout bounds Stop's wait for the pool to hear it leave.
	leaveTimeout = 5 * time.Second
	// heartbeatTimeoutsPerTTL sizes a heartbeat's wait for one scheduler
	// (at least the interval): a scheduler that hangs costs a quarter of
	// the lease, so that the lease survives two of them before the link
	// reaches one that answers.
	heartbeatTimeoutsPerTTL = 4
	// heartbeatsPerTTL is how many heartbeats fit in one lease at least:
	// a scheduler that gives an interval longer than TTL/heartbeatsPerTTL
	// would let the lease lapse after one lost heartbeat, so the link
	// beats faster.
	heartbeatsPerTTL = 2
)

// Link is the node's registration and lease with the cluster. Its
// methods are safe for concurrent use.
type Link struct {
	cfg    Config
	log    *slog.Logger
	now    func() time.Time
	pool   *membership.Pool // nil with Config.Finder
	finder Finder
	creds  credentials.TransportCredentials

	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once

	mu          sync.Mutex
	lease       lease
	epoch       uint64
	ttl         time.Duration
	interval    time.Duration
	generations map[string]uint64
	current     string // the scheduler that answered last
	lapse       string // why the registration must be renewed, for the log

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn
}

// Start joins the gossip pool (unless cfg.Finder is set) and starts
// registering and heartbeating in the background; it returns at once,
// and fails only on a configuration it cannot use. Schedulers that are
// not up yet are waited for: the link retries with a backoff and logs
// why. The node holds no lease (Check fails) until it has registered.
// ctx bounds the link's life; Stop ends it too, and leaves the pool.
func Start(ctx context.Context, cfg Config) (*Link, error) {
	switch {
	case cfg.Node == "":
		return nil, fmt.Errorf("%w: no node name", ErrInvalidConfig)
	case cfg.Facts == nil || cfg.Heartbeat == nil:
		return nil, fmt.Errorf("%w: the agent gives no facts or heartbeat contents", ErrInvalidConfig)
	case cfg.Finder == nil && len(cfg.Join) == 0:
		return nil, fmt.Errorf("%w: no gossip address to join: give --join with the address of a scheduler or agent of the cluster", ErrInvalidConfig)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	l := &Link{
		cfg:         cfg,
		log:         log.With("node", cfg.Node),
		now:         cfg.Clock,
		finder:      cfg.Finder,
		creds:       insecure.NewCredentials(),
		done:        make(chan struct{}),
		lease:       lease{node: cfg.Node},
		generations: map[string]uint64{},
		conns:       map[string]*grpc.ClientConn{},
	}
	if l.now == nil {
		l.now = time.Now
	}
	if cfg.ClientTLS != nil {
		l.creds = credentials.NewTLS(cfg.ClientTLS)
	}
	if l.finder == nil {
		pool, err := membership.Start(membership.Config{
			Name:          cfg.Node,
			Role:          membership.RoleAgent,
			BindAddr:      cfg.GossipBind,
			AdvertiseAddr: cfg.GossipAdvertise,
			Key:           cfg.GossipKey,
			Insecure:      cfg.Insecure,
			Tags:          membership.Tags{RPCAddr: cfg.RPCAddr},
			Profile:       cfg.GossipProfile,
			Logger:        l.log,
		})
		if err != nil {
			return nil, err
		}
		l.pool = pool
		l.finder = &gossipFinder{pool: pool, join: cfg.Join}
	}
	ctx, l.cancel = context.WithCancel(ctx)
	go l.run(ctx)
	return l, nil
}

// Stop stops heartbeating, leaves the gossip pool so that the others
// report this node left rather than failed, and closes the connections.
// The lease is left to lapse. Calling it again does nothing.
func (l *Link) Stop() {
	l.stopOnce.Do(func() {
		l.cancel()
		<-l.done
		if l.pool != nil {
			if err := l.pool.Leave(leaveTimeout); err != nil {
				l.log.Warn("leave the gossip pool", "err", err)
			}
			if err := l.pool.Shutdown(); err != nil {
				l.log.Warn("stop gossiping", "err", err)
			}
		}
		l.connMu.Lock()
		defer l.connMu.Unlock()
		for addr, cc := range l.conns {
			cc.Close()
			delete(l.conns, addr)
		}
	})
}

// Check is the lease gate (agent.Fence): nil while the node holds a
// valid lease, else an error wrapping ErrLeaseExpired that names the
// node and since when it has none.
func (l *Link) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease.check(l.now())
}

// Generation is the generation the scheduler gave container id in the
// node's last registration; false when it placed no such container
// here.
func (l *Link) Generation(id string) (uint64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.generations[id]
	return g, ok
}

// Placement is what the node's last registration, number epoch (0
// before the first), said of container id: whether the cluster placed
// it on this node, and at which generation (agent.Fence). The three are
// read together, so that they come from the same registration: a
// container missing from it is elsewhere only if it was on this node
// before that registration.
func (l *Link) Placement(id string) (generation uint64, placed bool, epoch uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	generation, placed = l.generations[id]
	return generation, placed, l.epoch
}

// Epoch is the number of the node's last registration; 0 before the
// first.
func (l *Link) Epoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch
}

// run registers, then heartbeats at the scheduler's interval, and
// registers again when the lease lapses or the scheduler asks, until ctx
// ends.
func (l *Link) run(ctx context.Context) {
	defer close(l.done)
	retry := backoff{min: retryMin, max: retryMax}
	var last time.Time // when the last call was sent, on the wall clock
	failing := false   // heartbeats have failed since the last success
	for ctx.Err() == nil {
		if why := l.mustRegister(); why != "" {
			if why != reasonFirst && retry.attempts == 0 {
				l.log.Warn("registering with the scheduler again", "why", why)
			}
			last = time.Now()
			if err := l.register(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				wait := retry.next()
				l.log.Warn("cannot register with a scheduler; retrying", "in", wait.Round(time.Millisecond), "attempt", retry.attempts, "err", err)
				sleep(ctx, wait)
				continue
			}
			retry.reset()
			failing = false
		}
		if !sleep(ctx, time.Until(last.Add(l.heartbeatInterval()))) {
			return
		}
		if l.mustRegister() != "" {
			continue
		}
		last = time.Now()
		switch err := l.heartbeat(ctx); {
		case err == nil:
			if failing {
				l.log.Info("heartbeats reach the scheduler again")
			}
			failing = false
		case ctx.Err() != nil:
			return
		case !failing:
			l.log.Warn("heartbeat failed; the lease lapses unless one is answered in time", "err", err, "lease_expires", l.expires())
			failing = true
		default:
			l.log.Debug("heartbeat failed", "err", err)
		}
	}
}

// Reasons for a registration, for the log.
const (
	reasonFirst  = "first registration"
	reasonLapsed = "the lease lapsed: no heartbeat was answered in time"
	reasonAsked  = "the scheduler does not know this node's registration (it was declared down, or the cluster state was restored)"
)

// mustRegister says why the next call must be a registration; "" when
// a heartbeat will do.
func (l *Link) mustRegister() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.lease.needsRegistration(l.now()) {
		return ""
	}
	switch {
	case !l.lease.held:
		return reasonFirst
	case l.lapse != "":
		return l.lapse
	}
	return reasonLapsed
}

func (l *Link) heartbeatInterval() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.interval
}

func (l *Link) expires() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease.expires
}

// register sends the node's facts to a scheduler and takes the lease,
// epoch and generations it answers with.
func (l *Link) register(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, factsTimeout)
	req, err := l.cfg.Facts(fctx)
	cancel()
	if err != nil {
		return fmt.Errorf("gather the node's facts: %w", err)
	}
	req.Name = l.cfg.Node
	resp, addr, sent, err := call(ctx, l, registerTimeout, func(ctx context.Context, c pb.NodeServiceClient) (*pb.RegisterResponse, error) {
		return c.Register(ctx, req)
	})
	if err != nil {
		return err
	}
	ttl := time.Duration(resp.GetLeaseTtlMs()) * time.Millisecond
	if ttl <= 0 {
		return fmt.Errorf("scheduler %s answered the registration without a lease TTL: run the same godwit version on schedulers and agents", addr)
	}
	interval := time.Duration(resp.GetHeartbeatIntervalMs()) * time.Millisecond
	if interval <= 0 || interval > ttl/heartbeatsPerTTL {
		interval = ttl / (heartbeatsPerTTL + 1)
	}
	gens := make(map[string]uint64, len(resp.GetGenerations()))
	for _, g := range resp.GetGenerations() {
		gens[g.GetId()] = g.GetGeneration()
	}

	l.mu.Lock()
	l.lease.granted(sent, ttl)
	l.epoch, l.ttl, l.interval, l.generations, l.current, l.lapse = resp.GetEpoch(), ttl, interval, gens, addr, ""
	l.mu.Unlock()
	l.log.Info("registered with the scheduler", "scheduler", addr, "epoch", resp.GetEpoch(),
		"lease_ttl", ttl, "heartbeat_interval", interval, "containers", len(gens))
	return nil
}

// heartbeat sends the node's containers and load and renews the lease.
func (l *Link) heartbeat(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, reportTimeout)
	req, err := l.cfg.Heartbeat(rctx)
	cancel()
	if err != nil {
		return fmt.Errorf("build the heartbeat: %w", err)
	}
	l.mu.Lock()
	req.Name, req.Epoch = l.cfg.Node, l.epoch
	timeout := max(l.interval, l.ttl/heartbeatTimeoutsPerTTL)
	l.mu.Unlock()
	resp, addr, sent, err := call(ctx, l, timeout, func(ctx context.Context, c pb.NodeServiceClient) (*pb.HeartbeatResponse, error) {
		return c.Heartbeat(ctx, req)
	})
	if err != nil {
		return err
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	l.current = addr
	if resp.GetReregister() {
		l.lease.revoke(l.now())
		l.lapse = reasonAsked
		return nil
	}
	if ttl := time.Duration(resp.GetLeaseTtlMs()) * time.Millisecond; ttl > 0 {
		l.ttl = ttl
	}
	if !l.lease.renewed(sent, l.ttl) {
		l.lapse = reasonLapsed
	}
	return nil
}

// call sends one request to the schedulers in turn, the one that
// answered last first, until one answers; it returns the answer, who
// gave it and when the answered request was sent (on the lease's clock).
// Each attempt has timeout.
func call[T any](ctx context.Context, l *Link, timeout time.Duration, send func(context.Context, pb.NodeServiceClient) (T, error)) (resp T, addr string, sent time.Time, err error) {
	l.mu.Lock()
	current := l.current
	l.mu.Unlock()
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	found, findErr := l.finder.Schedulers(fctx)
	cancel()
	addrs := make([]string, 0, len(found)+1)
	if current != "" {
		addrs = append(addrs, current) // tried even when gossip lost sight of it
	}
	for _, a := range found {
		if a != current {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return resp, "", time.Time{}, findErr
	}
	var errs []error
	for _, a := range addrs {
		cc, err := l.conn(a)
		if err != nil {
			errs = append(errs, fmt.Errorf("scheduler %s: %w", a, err))
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		sent = l.now()
		resp, err = send(cctx, pb.NewNodeServiceClient(cc))
		cancel()
		if err == nil {
			return resp, a, sent, nil
		}
		if ctx.Err() != nil {
			return resp, "", time.Time{}, ctx.Err()
		}
		errs = append(errs, fmt.Errorf("scheduler %s: %w", a, err))
	}
	if findErr != nil {
		errs = append(errs, findErr)
	}
	return resp, "", time.Time{}, errors.Join(errs...)
}

// conn is the client connection to the scheduler at addr, made on first
// use; gRPC reconnects it as needed.
func (l *Link) conn(addr string) (*grpc.ClientConn, error) {
	l.connMu.Lock()
	defer l.connMu.Unlock()
	if cc, ok := l.conns[addr]; ok {
		return cc, nil
	}
	cc, err := grpc.NewClient(addr, append(rpc.DialOptions(), grpc.WithTransportCredentials(l.creds))...)
	if err != nil {
		return nil, err
	}
	l.conns[addr] = cc
	return cc, nil
}

// backoff is an exponential backoff with jitter.
type backoff struct {
	min, max time.Duration
	cur      time.Duration
	attempts int
}

// next is the wait before the next attempt: between half and all of a
// ceiling that doubles with each attempt from min to max.
func (b *backoff) next() time.Duration {
	b.attempts++
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

func (b *backoff) reset() { b.cur, b.attempts = 0, 0 }

// sleep waits d or until ctx ends; false when ctx ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
