package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Where a scheduler keeps its raft state, under its data dir.
const (
	// raftDirName holds the bolt file and the snapshots directory.
	raftDirName = "raft"
	// raftDBFile is the bolt file holding raft's log and stable store.
	raftDBFile = "raft.db"
	// raftDirMode keeps the cluster state readable by root only: it holds
	// every container spec.
	raftDirMode = 0o700
	// snapshotsRetained is how many FSM snapshots stay on disk: the newest
	// is what a restart loads; one older survives a snapshot that turns
	// out damaged.
	snapshotsRetained = 2
	// boltOpenTimeout is how long opening the bolt file waits for another
	// process's lock: long enough to ride out a predecessor that is just
	// exiting, short enough that a second scheduler on the same data dir
	// fails at once with a message rather than hanging.
	boltOpenTimeout = time.Second
	// raftMaxPool is how many idle connections the transport keeps per
	// peer.
	raftMaxPool = 3
)

// Errors of the raft node. Callers match them with errors.Is.
var (
	// ErrNotLeader: this node is not the leader, so it cannot apply,
	// change membership or restore. A *NotLeaderError says who is.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrLeadershipLost: the node lost leadership while a write was in
	// flight; the write may or may not have committed (a new leader may
	// still commit it). Callers must not blindly retry writes that are not
	// idempotent.
	ErrLeadershipLost = errors.New("raft leadership lost while committing: the write may or may not have been applied")
	// ErrDataDirInUse: another process holds the bolt file.
	ErrDataDirInUse = errors.New("raft data dir in use")
	// ErrDataDir: the data dir cannot be created or written.
	ErrDataDir = errors.New("raft data dir unusable")
	// ErrRaftTLS: the TLS configuration cannot secure raft.
	ErrRaftTLS = errors.New("raft TLS configuration")
	// ErrRaftConfig: a required setting is missing or wrong.
	ErrRaftConfig = errors.New("raft configuration")
)

// NotLeaderError is returned when a leader-only operation reaches a
// follower. LeaderID and LeaderAddr name the current leader, empty when
// none is known (an election is running, or quorum is lost). It matches
// ErrNotLeader and raft.ErrNotLeader with errors.Is.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return "this scheduler is not the raft leader and no leader is known: an election is running or the cluster has lost its quorum; retry in a few seconds, and check `godwit cluster status` if it persists"
	}
	return fmt.Sprintf("this scheduler is not the raft leader: the leader is %s at %s; send the request there", e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

func (e *NotLeaderError) Unwrap() error { return raft.ErrNotLeader }

// RaftTiming sets how fast raft notices failures and how often it
// snapshots. Zero fields take DefaultRaftTiming's values.
type RaftTiming struct {
	// HeartbeatTimeout: a follower that hears nothing from the leader for
	// a random time between this and twice this starts an election.
	HeartbeatTimeout time.Duration
	// ElectionTimeout: a candidate without a result after about this long
	// starts another election.
	ElectionTimeout time.Duration
	// LeaderLeaseTimeout: a leader that cannot reach a quorum for this long
	// steps down. At most HeartbeatTimeout.
	LeaderLeaseTimeout time.Duration
	// CommitTimeout: the longest an idle leader waits before telling
	// followers the commit index.
	CommitTimeout time.Duration
	// TransportTimeout is the I/O deadline of one raft RPC (snapshots get
	// more, in proportion to their size).
	TransportTimeout time.Duration
	// SnapshotInterval is how often raft checks whether to snapshot.
	SnapshotInterval time.Duration
	// SnapshotThreshold is how many new log entries make a snapshot due.
	SnapshotThreshold uint64
	// TrailingLogs is how many entries stay in the log after a snapshot,
	// so that a briefly absent follower catches up from the log rather
	// than a whole snapshot.
	TrailingLogs uint64
}

// DefaultRaftTiming is for schedulers on one LAN: a leader's loss is
// noticed in 1 to 2 s and a new one usually serves within 3 s.
func DefaultRaftTiming() RaftTiming {
	return RaftTiming{
		HeartbeatTimeout:   1000 * time.Millisecond,
		ElectionTimeout:    1000 * time.Millisecond,
		LeaderLeaseTimeout: 500 * time.Millisecond,
		CommitTimeout:      50 * time.Millisecond,
		TransportTimeout:   10 * time.Second,
		SnapshotInterval:   120 * time.Second,
		SnapshotThreshold:  8192,
		TrailingLogs:       10240,
	}
}

// FastRaftTiming is for tests and single-machine clusters (network
// namespaces on one host): failures are noticed in a few hundred
// milliseconds, which a real network with GC pauses would turn into
// needless elections.
func FastRaftTiming() RaftTiming {
	return RaftTiming{
		HeartbeatTimeout:   150 * time.Millisecond,
		ElectionTimeout:    150 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		TransportTimeout:   2 * time.Second,
		SnapshotInterval:   time.Second,
		SnapshotThreshold:  1024,
		TrailingLogs:       1024,
	}
}

// withDefaults fills zero fields from DefaultRaftTiming.
func (t RaftTiming) withDefaults() RaftTiming {
	d := DefaultRaftTiming()
	pick := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	pick(&t.HeartbeatTimeout, d.HeartbeatTimeout)
	pick(&t.ElectionTimeout, d.ElectionTimeout)
	pick(&t.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	pick(&t.CommitTimeout, d.CommitTimeout)
	pick(&t.TransportTimeout, d.TransportTimeout)
	pick(&t.SnapshotInterval, d.SnapshotInterval)
	if t.SnapshotThreshold == 0 {
		t.SnapshotThreshold = d.SnapshotThreshold
	}
	if t.TrailingLogs == 0 {
		t.TrailingLogs = d.TrailingLogs
	}
	return t
}

// RaftConfig configures one scheduler's raft node.
type RaftConfig struct {
	// ID is the node's raft server ID, unique and stable for its life: the
	// scheduler's name.
	ID string
	// DataDir is the scheduler's data dir; raft keeps DataDir/raft/raft.db
	// and DataDir/raft/snapshots.
	DataDir string
	// BindAddr is the host:port raft listens on; port 0 picks a free one.
	BindAddr string
	// Advertise is the host:port peers dial; empty means BindAddr, which
	// must then be a specific IP. Port 0 means the port bound.
	Advertise string
	// ServerTLS accepts peers: it must hold this node's certificate and
	// the cluster CA as ClientCAs. Client certificates are always required.
	ServerTLS *tls.Config
	// ClientTLS dials peers: it must hold this node's certificate and the
	// cluster CA as RootCAs. A peer's certificate must name the host
	// dialled unless ServerName is set.
	ClientTLS *tls.Config
	// VerifyPeer, when set, is called on both ends of every connection
	// with the peer's certificate, already verified against the CA; an
	// error refuses the peer (e.g. a certificate without the scheduler
	// role). Nil accepts any certificate the CA signed.
	VerifyPeer func(*x509.Certificate) error
	// Insecure runs raft in plaintext, without authentication: only for
	// schedulers started with --insecure. ServerTLS and ClientTLS must
	// then be nil.
	Insecure bool
	// FSM is the replicated state machine.
	FSM raft.FSM
	// Logger receives raft's logs; nil means slog.Default().
	Logger *slog.Logger
	// Timing: zero fields take DefaultRaftTiming.
	Timing RaftTiming

	// wrapStream lets tests put a fault injector between the TLS stream
	// layer and raft's transport.
	wrapStream func(raft.StreamLayer) raft.StreamLayer
}

func (c *RaftConfig) validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("%w: the node ID is empty: give the scheduler a --name", ErrRaftConfig)
	case c.DataDir == "":
		return fmt.Errorf("%w: the data dir is empty: give the scheduler a --data-dir", ErrRaftConfig)
	case c.FSM == nil:
		return fmt.Errorf("%w: no FSM: give the scheduler's state machine (a fresh one; recovery replays the log into it)", ErrRaftConfig)
	}
	return nil
}

func (c *RaftConfig) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// raftLibConfig is hashicorp/raft's configuration for cfg.
func (c *RaftConfig) raftLibConfig(logger *slog.Logger) *raft.Config {
	t := c.Timing.withDefaults()
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(c.ID)
	rc.HeartbeatTimeout = t.HeartbeatTimeout
	rc.ElectionTimeout = t.ElectionTimeout
	rc.LeaderLeaseTimeout = t.LeaderLeaseTimeout
	rc.CommitTimeout = t.CommitTimeout
	rc.SnapshotInterval = t.SnapshotInterval
	rc.SnapshotThreshold = t.SnapshotThreshold
	rc.TrailingLogs = t.TrailingLogs
	// A leader that removes itself stops its raft rather than leading a
	// cluster of its own: its process must exit, and rejoin with a fresh
	// data dir.
	rc.ShutdownOnRemove = true
	rc.Logger = newHCLogger(logger, "raft")
	return rc
}

// raftStores are the durable stores of one data dir.
type raftStores struct {
	bolt  *raftboltdb.BoltStore
	snaps *raft.FileSnapshotStore
}

// openRaftStores opens (creating them if new) the bolt file and the
// snapshot store under dataDir.
func openRaftStores(dataDir string, logger *slog.Logger) (*raftStores, error) {
	dir := filepath.Join(dataDir, raftDirName)
	if err := os.MkdirAll(dir, raftDirMode); err != nil {
		return nil, fmt.Errorf("%w: create %s: %w: give a data dir this user can write", ErrDataDir, dir, err)
	}
	path := filepath.Join(dir, raftDBFile)
	opts := *bbolt.DefaultOptions
	opts.Timeout = boltOpenTimeout
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &opts})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("%w: %s is locked by another process: is another scheduler running with --data-dir %s? Stop it, or give this one its own data dir", ErrDataDirInUse, path, dataDir)
		}
		return nil, fmt.Errorf("%w: open %s: %w: check that the data dir is writable and the file is a raft store", ErrDataDir, path, err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, snapshotsRetained, newHCLogger(logger, "raft-snapshots"))
	if err != nil {
		bolt.Close()
		return nil, fmt.Errorf("%w: snapshot store in %s: %w: give a data dir this user can write", ErrDataDir, dir, err)
	}
	return &raftStores{bolt: bolt, snaps: snaps}, nil
}

// RaftNode is one scheduler's member of the raft cluster: the replicated
// log over a TLS transport, durable bolt stores, and the FSM they drive.
// Its methods are safe for concurrent use.
type RaftNode struct {
	id        string
	raft      *raft.Raft
	transport *raft.NetworkTransport
	stores    *raftStores
	fsm       raft.FSM
	logger    *slog.Logger
	dataDir   string

	shutdownOnce sync.Once
	shutdownErr  error

	// barrierTerm is the last term in which a Barrier completed on this
	// node as leader: from then on its FSM holds every entry committed
	// before that term (see VerifyLeader).
	barrierTerm atomic.Uint64
}

// OpenRaft opens the stores under cfg.DataDir, listens on cfg.BindAddr
// with mutual TLS and starts raft. A node with no state stays a follower
// with no peers until BootstrapIfNew, or until a leader adds it with
// AddVoter. Errors name the data dir or address and say what to do.
func OpenRaft(cfg RaftConfig) (*RaftNode, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	logger := cfg.logger().With("raft_id", cfg.ID)
	stores, err := openRaftStores(cfg.DataDir, logger)
	if err != nil {
		return nil, err
	}
	stream, err := newTLSStreamLayer(cfg.BindAddr, cfg.Advertise, cfg.ServerTLS, cfg.ClientTLS, cfg.VerifyPeer, cfg.Insecure)
	if err != nil {
		stores.bolt.Close()
		return nil, err
	}
	var sl raft.StreamLayer = stream
	if cfg.wrapStream != nil {
		sl = cfg.wrapStream(sl)
	}
	transport := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  sl,
		MaxPool: raftMaxPool,
		Timeout: cfg.Timing.withDefaults().TransportTimeout,
		Logger:  newHCLogger(logger, "raft-net"),
	})
	r, err := raft.NewRaft(cfg.raftLibConfig(logger), cfg.FSM, stores.bolt, stores.bolt, stores.snaps, transport)
	if err != nil {
		return nil, errors.Join(
			fmt.Errorf("start raft in %s: %w", cfg.DataDir, err),
			transport.Close(), stores.bolt.Close())
	}
	logger.Info("raft started", "addr", transport.LocalAddr(), "data_dir", cfg.DataDir)
	return &RaftNode{
		id: cfg.ID, raft: r, transport: transport, stores: stores,
		fsm: cfg.FSM, logger: logger, dataDir: cfg.DataDir,
	}, nil
}

// ID is this node's raft server ID.
func (n *RaftNode) ID() string { return n.id }

// Addr is the address peers reach this node at (the advertised one).
func (n *RaftNode) Addr() string { return string(n.transport.LocalAddr()) }

// BootstrapIfNew starts a new cluster with servers as its voters, but
// only when this node has no raft state yet; a node with state (it has
// been bootstrapped or has joined before) returns nil and keeps it.
// Every node given the same servers may call it: they all write the same
// first configuration, which is what makes bootstrap-expect safe. servers
// must include this node.
func (n *RaftNode) BootstrapIfNew(servers []raft.Server) error {
	if !slices.ContainsFunc(servers, func(s raft.Server) bool { return string(s.ID) == n.id }) {
		return fmt.Errorf("%w: the bootstrap servers do not include this scheduler (%s): list every scheduler, this one included", ErrRaftConfig, n.id)
	}
	has, err := raft.HasExistingState(n.stores.bolt, n.stores.bolt, n.stores.snaps)
	if err != nil {
		return fmt.Errorf("check raft state in %s: %w", n.dataDir, err)
	}
	if has {
		n.logger.Info("raft has state, not bootstrapping")
		return nil
	}
	err = n.raft.BootstrapCluster(raft.Configuration{Servers: slices.Clone(servers)}).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil // state appeared in the meantime: a leader reached us first
	}
	if err != nil {
		return fmt.Errorf("bootstrap raft with %d servers: %w", len(servers), err)
	}
	n.logger.Info("raft bootstrapped", "servers", len(servers))
	return nil
}

// timeoutOf turns ctx's deadline into raft's timeout argument: zero (no
// limit) without a deadline. An expired deadline gives the shortest
// positive timeout, so raft gives up at once instead of waiting forever.
func timeoutOf(ctx context.Context) time.Duration {
	d, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	if t := time.Until(d); t > 0 {
		return t
	}
	return time.Nanosecond
}

// wait waits for f, or for ctx. Raft cannot cancel an operation it has
// accepted, so a ctx that ends first leaves it running: the error says so.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w (the operation may still complete)", ctx.Err())
	}
}

// leaderErr turns raft's errors into this package's: a *NotLeaderError
// naming the leader, ErrLeadershipLost, or a deadline.
func (n *RaftNode) leaderErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		addr, id := n.raft.LeaderWithID()
		if string(id) == n.id {
			// A transfer is under way from this node: nobody leads yet.
			addr, id = "", ""
		}
		return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%s: %w: %w", op, ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%s: %w: %w", op, context.DeadlineExceeded, err)
	default:
		return fmt.Errorf("%s: %w", op, err)
	}
}

// Apply commits data through the log and returns the FSM's response.
// When the FSM's response is an error, Apply returns it as its error
// (unwrapped, so that the FSM's sentinels match). On a follower it
// returns a *NotLeaderError at once. ctx's deadline bounds the wait;
// when ctx ends first the write may still commit. ErrLeadershipLost means
// the outcome is unknown.
func (n *RaftNode) Apply(ctx context.Context, data []byte) (any, error) {
	if n.raft.State() != raft.Leader {
		return nil, n.leaderErr("apply", raft.ErrNotLeader)
	}
	f := n.raft.Apply(data, timeoutOf(ctx))
	if err := wait(ctx, f); err != nil {
		return nil, n.leaderErr("apply", err)
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// VerifyLeader returns nil when this node is the leader and its FSM
// holds every write committed before the call, so that a read of the FSM
// after it is linearizable. It does not trust a time-based lease (clocks
// and pauses can make one lie): once per term it commits a Barrier, which
// waits for the FSM to apply everything earlier leaders committed; every
// call then confirms leadership with a quorum round-trip (raft's
// VerifyLeader, one heartbeat's latency). On a follower it returns a
// *NotLeaderError.
func (n *RaftNode) VerifyLeader(ctx context.Context) error {
	if err := n.LeaderCaughtUp(ctx); err != nil {
		return err
	}
	return n.leaderErr("verify leader", wait(ctx, n.raft.VerifyLeader()))
}

// LeaderCaughtUp returns nil when this node is the leader and its FSM
// holds everything earlier leaders committed (the once-per-term Barrier
// of VerifyLeader), without VerifyLeader's quorum round trip. It is
// enough for a decision the leader then commits itself: while it leads
// it is the only writer, so its FSM holds every entry of its term it has
// applied, and if it was deposed meanwhile its entry never commits.
func (n *RaftNode) LeaderCaughtUp(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return n.leaderErr("verify leader", raft.ErrNotLeader)
	}
	if term := n.raft.CurrentTerm(); n.barrierTerm.Load() != term {
		if err := wait(ctx, n.raft.Barrier(timeoutOf(ctx))); err != nil {
			return n.leaderErr("barrier", err)
		}
		n.barrierTerm.Store(term)
	}
	return nil
}

// AddVoter adds (or updates the address of) the voter id at addr. Only
// the leader can; the new node catches up from the log or a snapshot.
func (n *RaftNode) AddVoter(ctx context.Context, id, addr string) error {
	f := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeoutOf(ctx))
	return n.leaderErr("add voter "+id, wait(ctx, f))
}

// RemoveServer removes id from the cluster. Only the leader can. A
// leader that removes itself steps down and stops its raft (Status then
// says Shutdown); a removed follower hears from no one again and, no
// longer a voter in its own configuration, never starts an election. Either
// way the removed scheduler's process should exit; it can come back only
// with a fresh data dir, added again with AddVoter.
func (n *RaftNode) RemoveServer(ctx context.Context, id string) error {
	f := n.raft.RemoveServer(raft.ServerID(id), 0, timeoutOf(ctx))
	return n.leaderErr("remove server "+id, wait(ctx, f))
}

// Servers is the latest cluster configuration this node knows (it may
// not be committed yet).
func (n *RaftNode) Servers() ([]raft.Server, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	return slices.Clone(f.Configuration().Servers), nil
}

// Leader is the current leader as this node knows it; empty when none is.
func (n *RaftNode) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// IsLeader reports whether this node believes it leads. Decisions need
// VerifyLeader: a partitioned leader believes it for up to
// LeaderLeaseTimeout.
func (n *RaftNode) IsLeader() bool { return n.raft.State() == raft.Leader }

// LeaderCh delivers true when this node becomes leader and false when it
// stops. It has one buffered slot and raft overwrites an unread value, so
// one consumer must read it, and may see only the latest change.
func (n *RaftNode) LeaderCh() <-chan bool { return n.raft.LeaderCh() }

// RaftStatus is a node's view of the cluster, for `godwit cluster status`.
type RaftStatus struct {
	ID           string     `json:"id"`
	Address      string     `json:"address"`
	State        string     `json:"state"` // Follower, Candidate, Leader or Shutdown
	Term         uint64     `json:"term"`
	CommitIndex  uint64     `json:"commit_index"`
	AppliedIndex uint64     `json:"applied_index"`
	LastLogIndex uint64     `json:"last_log_index"`
	LeaderID     string     `json:"leader_id"`
	LeaderAddr   string     `json:"leader_address"`
	LastContact  time.Time  `json:"last_contact,omitzero"` // a follower's last word from the leader
	Servers      []RaftPeer `json:"peers"`
}

// RaftPeer is one server of the configuration.
type RaftPeer struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
	Leader  bool   `json:"leader"`
	// AppliedIndex is the peer's applied index when known: Status fills
	// it for this node only; a caller that asks the other schedulers
	// fills theirs, and the lag is the leader's CommitIndex minus it.
	AppliedIndex uint64 `json:"applied_index,omitempty"`
}

// Status is this node's view of the cluster.
func (n *RaftNode) Status() RaftStatus {
	leaderAddr, leaderID := n.raft.LeaderWithID()
	st := RaftStatus{
		ID:           n.id,
		Address:      n.Addr(),
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LastLogIndex: n.raft.LastIndex(),
		LeaderID:     string(leaderID),
		LeaderAddr:   string(leaderAddr),
	}
	if st.State != raft.Leader.String() {
		st.LastContact = n.raft.LastContact()
	}
	servers, err := n.Servers()
	if err != nil {
		n.logger.Warn("raft status without servers", "err", err)
	}
	for _, s := range servers {
		p := RaftPeer{
			ID:      string(s.ID),
			Address: string(s.Address),
			Voter:   s.Suffrage == raft.Voter,
			Leader:  s.ID == leaderID,
		}
		if p.ID == n.id {
			p.AppliedIndex = st.AppliedIndex
		}
		st.Servers = append(st.Servers, p)
	}
	return st
}

// Shutdown stops raft, closes its transport and the bolt file. The node
// cannot be used afterwards; OpenRaft on the same data dir starts it
// again. Later calls return the first call's result.
func (n *RaftNode) Shutdown() error {
	n.shutdownOnce.Do(func() {
		err := n.raft.Shutdown().Error() // also closes the transport
		n.shutdownErr = errors.Join(err, n.transport.Close(), n.stores.bolt.Close())
	})
	return n.shutdownErr
}
