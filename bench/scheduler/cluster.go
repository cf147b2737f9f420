package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/server"
	"github.com/godwit/godwit/scheduler/state"
)

// path is what commits a placement batch.
type path string

const (
	// pathRaftBolt: three raft voters with the scheduler's own stores
	// (server.OpenRaft: bolt, fsync on every append) and TLS transport.
	pathRaftBolt path = "raft-bolt"
	// pathRaftMemory: three raft voters with raft's in-memory stores over
	// the same kind of TLS transport: raft without durability.
	pathRaftMemory path = "raft-memory"
	// pathFSM: the FSM alone, applying each entry as raft's FSM goroutine
	// would, one at a time: the ceiling.
	pathFSM path = "fsm"
)

// title is how the report names a path.
func (p path) title() string {
	switch p {
	case pathRaftBolt:
		return "raft, 3 voters, bolt (fsync)"
	case pathRaftMemory:
		return "raft, 3 voters, in-memory stores"
	case pathFSM:
		return "FSM alone, no raft"
	}
	return string(p)
}

const (
	// voters is how many schedulers commit a placement.
	voters = 3
	// leaderWait bounds the first election: several of production's
	// election timeouts on a loaded machine.
	leaderWait = 30 * time.Second
	// catchUpWait bounds the wait for every replica to apply what the
	// leader committed.
	catchUpWait = 30 * time.Second
	// commitTimeout bounds one commit.
	commitTimeout = 30 * time.Second
	// pollInterval is how often waits look again.
	pollInterval = 10 * time.Millisecond
	// raftMaxPool is the transport's idle connections per peer, as
	// server.OpenRaft sets it, for the in-memory cluster.
	raftMaxPool = 3
)

// errLeaderChanged: leadership moved during a measurement, which would
// mix an election into the numbers.
var errLeaderChanged = errors.New("the raft leader changed during the measurement: rerun it on a less loaded machine")

// committer commits encoded fsm commands as a scheduler's leader does.
type committer interface {
	// commit commits one encoded command and returns the FSM's result.
	commit(ctx context.Context, data []byte) (fsm.Result, error)
	// verifyLeader returns nil while the committing replica leads and
	// its state holds everything committed (server.RaftNode.VerifyLeader).
	verifyLeader(ctx context.Context) error
	// store is the state the leader's FSM writes, which placement reads.
	store() *state.Store
	// settle waits until every replica has applied what was committed,
	// and checks that they hold the same state.
	settle(ctx context.Context) error
	close() error
}

// startCommitter starts a fresh cluster of the path's kind with its data
// dirs under dir.
func startCommitter(ctx context.Context, p path, dir string, timing server.RaftTiming, log *slog.Logger) (committer, error) {
	log = quiet(log)
	switch p {
	case pathRaftBolt:
		return startBoltCluster(ctx, dir, voters, timing, log)
	case pathRaftMemory:
		return startMemoryCluster(ctx, dir, timing, log)
	case pathFSM:
		return newDirect(log), nil
	}
	return nil, fmt.Errorf("unknown path %q", p)
}

// direct applies entries to an FSM without raft, one at a time, at
// increasing indexes: what a leader's FSM does once raft has committed.
type direct struct {
	mu    sync.Mutex
	f     *fsm.FSM
	index uint64
}

func newDirect(log *slog.Logger) *direct {
	return &direct{f: fsm.New(state.NewStore(), log)}
}

func (d *direct) commit(_ context.Context, data []byte) (fsm.Result, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.index++
	return resultOf(d.f.Apply(&raft.Log{Index: d.index, Term: 1, Type: raft.LogCommand, Data: data}))
}

func (d *direct) verifyLeader(context.Context) error { return nil }
func (d *direct) store() *state.Store                { return d.f.Store() }
func (d *direct) settle(context.Context) error       { return nil }
func (d *direct) close() error                       { return nil }

// resultOf turns an FSM's response into its Result.
func resultOf(resp any) (fsm.Result, error) {
	r, ok := resp.(fsm.Result)
	if !ok {
		return fsm.Result{}, fmt.Errorf("the FSM answered %T, not an fsm.Result", resp)
	}
	return r, nil
}

// replica is one raft member: its raft, its FSM's store, and how to stop
// it.
type replica struct {
	id    string
	addr  string
	store *state.Store
	// apply commits on this replica (it must lead).
	apply func(ctx context.Context, data []byte) (any, error)
	// verify is what the scheduler's Placer checks before each batch:
	// that this replica leads and has applied its term's barrier
	// (server.RaftNode.LeaderCaughtUp).
	verify   func(ctx context.Context) error
	isLeader func() bool
	// snapshot takes a raft snapshot and returns the FSM state's size in
	// bytes; nil where the replica cannot.
	snapshot func(ctx context.Context) (int64, error)
	shutdown func() error
}

// raftCluster is voters raft replicas in this process, the leader of
// which commits.
type raftCluster struct {
	replicas []*replica
	leader   *replica
}

func (c *raftCluster) commit(ctx context.Context, data []byte) (fsm.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	if !c.leader.isLeader() {
		return fsm.Result{}, errLeaderChanged
	}
	resp, err := c.leader.apply(ctx, data)
	if err != nil {
		if errors.Is(err, server.ErrNotLeader) || errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fsm.Result{}, fmt.Errorf("%w: %w", errLeaderChanged, err)
		}
		return fsm.Result{}, err
	}
	return resultOf(resp)
}

func (c *raftCluster) verifyLeader(ctx context.Context) error { return c.leader.verify(ctx) }

func (c *raftCluster) store() *state.Store { return c.leader.store }

// settle waits for every replica's state to reach the leader's last
// write, and compares what they hold. It reads the stores' own index:
// raft's applied index moves when entries are handed to the FSM, before
// it has applied them.
func (c *raftCluster) settle(ctx context.Context) error {
	lead := c.leader.store.Snapshot()
	deadline := time.Now().Add(catchUpWait)
	for _, r := range c.replicas {
		for r.store.Snapshot().Index() < lead.Index() {
			if time.Now().After(deadline) {
				return fmt.Errorf("replica %s reached index %d of %d within %s: it fell behind", r.id, r.store.Snapshot().Index(), lead.Index(), catchUpWait)
			}
			if err := benchutil.Sleep(ctx, pollInterval); err != nil {
				return err
			}
		}
		snap := r.store.Snapshot()
		if len(snap.Containers()) != len(lead.Containers()) || len(snap.Nodes()) != len(lead.Nodes()) {
			return fmt.Errorf("replica %s holds %d nodes and %d containers, the leader %d and %d",
				r.id, len(snap.Nodes()), len(snap.Containers()), len(lead.Nodes()), len(lead.Containers()))
		}
	}
	return nil
}

func (c *raftCluster) close() error {
	var errs []error
	for _, r := range c.replicas {
		errs = append(errs, r.shutdown())
	}
	return errors.Join(errs...)
}

// waitLeader waits until one replica leads.
func (c *raftCluster) waitLeader(ctx context.Context) error {
	deadline := time.Now().Add(leaderWait)
	for time.Now().Before(deadline) {
		for _, r := range c.replicas {
			if r.isLeader() {
				c.leader = r
				return nil
			}
		}
		if err := benchutil.Sleep(ctx, pollInterval); err != nil {
			return err
		}
	}
	return fmt.Errorf("no raft leader within %s: the machine may be too loaded for the election timeouts", leaderWait)
}

// clusterTLS is a throwaway CA that issues each replica a scheduler
// certificate for 127.0.0.1, as production's raft transport requires.
type clusterTLS struct {
	ca  *pki.CA
	dir string
}

func newClusterTLS(dir string) (*clusterTLS, error) {
	ca, err := pki.NewCA("godwit scheduler benchmark CA")
	if err != nil {
		return nil, err
	}
	return &clusterTLS{ca: ca, dir: dir}, nil
}

// configs issues name's certificate and returns its raft server and
// client TLS configurations.
func (c *clusterTLS) configs(name string) (serverTLS, clientTLS *tls.Config, err error) {
	files, err := c.ca.IssueTo(filepath.Join(c.dir, "tls", name), pki.CertRequest{Name: name, Role: pki.RoleScheduler, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		return nil, nil, err
	}
	id, err := pki.Load(files)
	if err != nil {
		return nil, nil, err
	}
	if serverTLS, err = id.ServerConfig(); err != nil {
		return nil, nil, err
	}
	return serverTLS, id.ClientConfig(), nil
}

// requireScheduler refuses a raft peer without the scheduler role, as a
// scheduler's raft does.
func requireScheduler(cert *x509.Certificate) error {
	role, err := pki.RoleOf(cert)
	if err != nil {
		return err
	}
	if role != pki.RoleScheduler {
		return fmt.Errorf("raft peer %q has the %s role, not %s", cert.Subject.CommonName, role, pki.RoleScheduler)
	}
	return nil
}

// startBoltCluster starts n scheduler raft nodes as a scheduler does
// (server.OpenRaft) with data dirs under dir, bootstraps them together
// and waits for a leader.
func startBoltCluster(ctx context.Context, dir string, n int, timing server.RaftTiming, log *slog.Logger) (_ *raftCluster, err error) {
	certs, err := newClusterTLS(dir)
	if err != nil {
		return nil, err
	}
	c := &raftCluster{}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	var servers []raft.Server
	var nodes []*server.RaftNode
	for i := range n {
		name := fmt.Sprintf("s%d", i+1)
		serverTLS, clientTLS, err := certs.configs(name)
		if err != nil {
			return nil, err
		}
		f := fsm.New(state.NewStore(), log)
		node, err := server.OpenRaft(server.RaftConfig{
			ID:         name,
			DataDir:    filepath.Join(dir, name),
			BindAddr:   "127.0.0.1:0",
			ServerTLS:  serverTLS,
			ClientTLS:  clientTLS,
			VerifyPeer: requireScheduler,
			FSM:        f,
			Logger:     log,
			Timing:     timing,
		})
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, node)
		c.replicas = append(c.replicas, &replica{
			id: name, addr: node.Addr(), store: f.Store(),
			apply:    node.Apply,
			verify:   node.LeaderCaughtUp,
			isLeader: node.IsLeader,
			snapshot: func(ctx context.Context) (int64, error) {
				info, err := node.SaveSnapshot(ctx, io.Discard)
				return info.Size, err
			},
			shutdown: node.Shutdown,
		})
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(name), Address: raft.ServerAddress(node.Addr())})
	}
	for _, node := range nodes {
		if err := node.BootstrapIfNew(servers); err != nil {
			return nil, err
		}
	}
	if err := c.waitLeader(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// tlsStream is a raft stream layer of mutual TLS over TCP, for the
// in-memory cluster: the same protocol as the scheduler's (TLS 1.3,
// client certificates, the scheduler role required), built here because
// server.OpenRaft always opens bolt stores.
type tlsStream struct {
	net.Listener
	client *tls.Config
}

func listenTLS(serverTLS, clientTLS *tls.Config) (*tlsStream, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return &tlsStream{
		Listener: tls.NewListener(l, pki.RequirePeerRole(serverTLS, pki.RoleScheduler)),
		client:   pki.RequirePeerRole(clientTLS, pki.RoleScheduler),
	}, nil
}

func (s *tlsStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), s.client)
}

// quiet passes on log's records at warnings and above: raft's and the
// FSM's informational lines would drown the benchmark's.
func quiet(log *slog.Logger) *slog.Logger {
	return slog.New(minLevel{Handler: log.Handler(), level: slog.LevelWarn})
}

// minLevel is a handler that drops records below level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{Handler: h.Handler.WithAttrs(as), level: h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{Handler: h.Handler.WithGroup(name), level: h.level}
}

// raftLogger adapts raft's logger to log, at warnings and above: raft's
// informational lines would drown the benchmark's.
func raftLogger(log *slog.Logger, name string) hclog.Logger {
	return hclog.FromStandardLogger(slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		&hclog.LoggerOptions{Name: name, Level: hclog.Warn})
}

// startMemoryCluster starts three raft nodes with raft's in-memory log,
// stable and snapshot stores, the timing and transport settings of
// server.OpenRaft, over TLS on loopback, and waits for a leader.
func startMemoryCluster(ctx context.Context, dir string, timing server.RaftTiming, log *slog.Logger) (_ *raftCluster, err error) {
	certs, err := newClusterTLS(dir)
	if err != nil {
		return nil, err
	}
	c := &raftCluster{}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.close())
		}
	}()
	var servers []raft.Server
	var rafts []*raft.Raft
	for i := range voters {
		name := fmt.Sprintf("m%d", i+1)
		serverTLS, clientTLS, err := certs.configs(name)
		if err != nil {
			return nil, err
		}
		stream, err := listenTLS(serverTLS, clientTLS)
		if err != nil {
			return nil, err
		}
		transport := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  stream,
			MaxPool: raftMaxPool,
			Timeout: timing.TransportTimeout,
			Logger:  raftLogger(log, "raft-net"),
		})
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(name)
		conf.HeartbeatTimeout = timing.HeartbeatTimeout
		conf.ElectionTimeout = timing.ElectionTimeout
		conf.LeaderLeaseTimeout = timing.LeaderLeaseTimeout
		conf.CommitTimeout = timing.CommitTimeout
		conf.SnapshotInterval = timing.SnapshotInterval
		conf.SnapshotThreshold = timing.SnapshotThreshold
		conf.TrailingLogs = timing.TrailingLogs
		conf.Logger = raftLogger(log, "raft")
		f := fsm.New(state.NewStore(), log)
		logs := raft.NewInmemStore()
		r, err := raft.NewRaft(conf, f, logs, logs, raft.NewInmemSnapshotStore(), transport)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("start in-memory raft %s: %w", name, err), transport.Close())
		}
		rafts = append(rafts, r)
		c.replicas = append(c.replicas, &replica{
			id: name, addr: string(transport.LocalAddr()), store: f.Store(),
			apply: func(ctx context.Context, data []byte) (any, error) {
				fut := r.Apply(data, commitTimeout)
				if err := fut.Error(); err != nil {
					return nil, err
				}
				return fut.Response(), nil
			},
			verify:   leaderCaughtUp(r),
			isLeader: func() bool { return r.State() == raft.Leader },
			shutdown: func() error { return errors.Join(r.Shutdown().Error(), transport.Close()) },
		})
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: conf.LocalID, Address: transport.LocalAddr()})
	}
	for _, r := range rafts {
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			return nil, fmt.Errorf("bootstrap in-memory raft: %w", err)
		}
	}
	if err := c.waitLeader(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// dirSize is the bytes of the files under dir, for the raft log's size
// on disk.
func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// leaderCaughtUp returns RaftNode.LeaderCaughtUp for a bare raft: nil
// while r leads, once a barrier of the current term has applied.
func leaderCaughtUp(r *raft.Raft) func(context.Context) error {
	var barrierTerm atomic.Uint64
	return func(context.Context) error {
		if r.State() != raft.Leader {
			return raft.ErrNotLeader
		}
		if term := r.CurrentTerm(); barrierTerm.Load() != term {
			if err := r.Barrier(commitTimeout).Error(); err != nil {
				return err
			}
			barrierTerm.Store(term)
		}
		return nil
	}
}
