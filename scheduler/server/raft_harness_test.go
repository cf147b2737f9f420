package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/internal/pki"
)

// The raft tests run real nodes in one process: bolt stores in temporary
// data dirs, the TLS stream layer on 127.0.0.1 with certificates from a
// throwaway CA, and FastRaftTiming. A cutStream between the TLS layer and
// raft's transport partitions a node.

const (
	// clusterWait bounds waiting for an election or for replication: many
	// times FastRaftTiming's election, for a loaded 2-core machine.
	clusterWait = 10 * time.Second
	// applyWait bounds one write in the tests.
	applyWait = 3 * time.Second
	// pollEvery is how often waits look again.
	pollEvery = 10 * time.Millisecond
)

// errUnknownOp is the test FSM's answer to a command it does not know.
var errUnknownOp = errors.New("unknown kv operation")

// kvFSM is a small replicated map: commands are JSON {op, key, value};
// "set" answers the previous value.
type kvFSM struct {
	mu   sync.Mutex
	data map[string]string
}

type kvCmd struct {
	Op    string `json:"op"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

func newKV() *kvFSM { return &kvFSM{data: map[string]string{}} }

func setCmd(key, value string) []byte {
	b, _ := json.Marshal(kvCmd{Op: "set", Key: key, Value: value})
	return b
}

func (f *kvFSM) Apply(l *raft.Log) any {
	var c kvCmd
	if err := json.Unmarshal(l.Data, &c); err != nil {
		return fmt.Errorf("decode kv command: %w", err)
	}
	if c.Op != "set" {
		return fmt.Errorf("%w: %q", errUnknownOp, c.Op)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := f.data[c.Key]
	f.data[c.Key] = c.Value
	return prev
}

func (f *kvFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return kvSnapshot(maps.Clone(f.data)), nil
}

func (f *kvFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data := map[string]string{}
	if err := json.NewDecoder(rc).Decode(&data); err != nil {
		return fmt.Errorf("decode kv snapshot: %w", err)
	}
	f.mu.Lock()
	f.data = data
	f.mu.Unlock()
	return nil
}

func (f *kvFSM) get(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.data[key]
	return v, ok
}

func (f *kvFSM) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.data)
}

type kvSnapshot map[string]string

func (s kvSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(map[string]string(s)); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (kvSnapshot) Release() {}

// cutStream partitions a node on demand: while cut, it closes every
// connection it had, refuses to dial, and drops every connection it
// accepts, both ways, as a pulled cable would (but at once).
type cutStream struct {
	raft.StreamLayer
	mu    sync.Mutex
	cut   bool
	conns []net.Conn
}

var errCut = errors.New("test partition: node is cut off")

func (s *cutStream) keep(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		c.Close()
		return false
	}
	s.conns = append(s.conns, c)
	return true
}

func (s *cutStream) Accept() (net.Conn, error) {
	for {
		c, err := s.StreamLayer.Accept()
		if err != nil {
			return nil, err
		}
		if s.keep(c) {
			return c, nil
		}
	}
}

func (s *cutStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	s.mu.Lock()
	cut := s.cut
	s.mu.Unlock()
	if cut {
		return nil, errCut
	}
	c, err := s.StreamLayer.Dial(addr, timeout)
	if err != nil {
		return nil, err
	}
	if !s.keep(c) {
		return nil, errCut
	}
	return c, nil
}

func (s *cutStream) setCut(cut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cut = cut
	if cut {
		for _, c := range s.conns {
			c.Close()
		}
		s.conns = nil
	}
}

// testLogger discards raft's logs unless GODWIT_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("GODWIT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testTLS issues a scheduler certificate for name on 127.0.0.1 from ca
// and returns raft's server and client configurations.
func testTLS(t *testing.T, ca *pki.CA, name string) (server, client *tls.Config) {
	return testTLSRole(t, ca, name, pki.RoleScheduler)
}

func testTLSRole(t *testing.T, ca *pki.CA, name string, role pki.Role) (server, client *tls.Config) {
	t.Helper()
	kp, err := ca.Issue(pki.CertRequest{Name: name, Role: role, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool},
		&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool}
}

func newTestCA(t *testing.T, name string) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// testNode is one scheduler's raft in a testCluster.
type testNode struct {
	cfg  RaftConfig
	node *RaftNode // nil while stopped
	fsm  *kvFSM
	cut  *cutStream
}

type testCluster struct {
	t     *testing.T
	ca    *pki.CA
	nodes []*testNode
}

// nodeConfig is the configuration of node name with a certificate from
// ca and a data dir of its own.
func nodeConfig(t *testing.T, ca *pki.CA, name string, timing RaftTiming) RaftConfig {
	server, client := testTLS(t, ca, name)
	return RaftConfig{
		ID:        name,
		DataDir:   filepath.Join(t.TempDir(), name),
		BindAddr:  "127.0.0.1:0",
		ServerTLS: server,
		ClientTLS: client,
		Logger:    testLogger(),
		Timing:    timing,
	}
}

// newCluster starts n bootstrapped nodes, named n1..nN, and waits for a
// leader.
func newCluster(t *testing.T, n int, timing RaftTiming) *testCluster {
	t.Helper()
	c := &testCluster{t: t, ca: newTestCA(t, "raft-test-ca")}
	for i := range n {
		tn := &testNode{cfg: nodeConfig(t, c.ca, fmt.Sprintf("n%d", i+1), timing)}
		c.nodes = append(c.nodes, tn)
		c.start(tn)
	}
	c.bootstrap()
	c.leader()
	return c
}

// start opens tn's raft with a fresh FSM (state comes from its data dir)
// on the address it had before, if any.
func (c *testCluster) start(tn *testNode) {
	c.t.Helper()
	tn.fsm = newKV()
	tn.cut = nil
	cfg := tn.cfg
	cfg.FSM = tn.fsm
	cfg.wrapStream = func(s raft.StreamLayer) raft.StreamLayer {
		tn.cut = &cutStream{StreamLayer: s}
		return tn.cut
	}
	node, err := OpenRaft(cfg)
	if err != nil {
		c.t.Fatalf("open raft %s: %v", cfg.ID, err)
	}
	tn.node = node
	tn.cfg.BindAddr = node.Addr() // a restart keeps the address peers know
	c.t.Cleanup(func() { node.Shutdown() })
}

func (c *testCluster) stop(tn *testNode) {
	c.t.Helper()
	if err := tn.node.Shutdown(); err != nil {
		c.t.Fatalf("shut down %s: %v", tn.cfg.ID, err)
	}
	tn.node = nil
}

func (c *testCluster) servers() []raft.Server {
	var s []raft.Server
	for _, tn := range c.nodes {
		s = append(s, raft.Server{ID: raft.ServerID(tn.cfg.ID), Address: raft.ServerAddress(tn.cfg.BindAddr), Suffrage: raft.Voter})
	}
	return s
}

// bootstrap gives every node the same server list, as bootstrap-expect
// does.
func (c *testCluster) bootstrap() {
	c.t.Helper()
	for _, tn := range c.nodes {
		if err := tn.node.BootstrapIfNew(c.servers()); err != nil {
			c.t.Fatalf("bootstrap %s: %v", tn.cfg.ID, err)
		}
	}
}

// live are the running nodes that are not cut off.
func (c *testCluster) live() []*testNode {
	var l []*testNode
	for _, tn := range c.nodes {
		if tn.node != nil && !tn.cut.isCut() {
			l = append(l, tn)
		}
	}
	return l
}

func (s *cutStream) isCut() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cut
}

// leader waits until exactly one live node leads and every live node
// follows it, and returns it.
func (c *testCluster) leader() *testNode {
	c.t.Helper()
	var found *testNode
	waitFor(c.t, clusterWait, "one leader that every live node agrees on", func() bool {
		found = nil
		live := c.live()
		for _, tn := range live {
			if tn.node.IsLeader() {
				if found != nil {
					return false
				}
				found = tn
			}
		}
		if found == nil {
			return false
		}
		for _, tn := range live {
			if id, _ := tn.node.Leader(); id != found.cfg.ID {
				return false
			}
		}
		return true
	})
	return found
}

// set writes key=value through the leader, retrying while leadership
// moves (the FSM's set is idempotent, so a retry after an unknown outcome
// is safe here).
func (c *testCluster) set(key, value string) {
	c.t.Helper()
	deadline := time.Now().Add(clusterWait)
	for {
		ldr := c.leader()
		ctx, cancel := context.WithTimeout(context.Background(), applyWait)
		_, err := ldr.node.Apply(ctx, setCmd(key, value))
		cancel()
		if err == nil {
			return
		}
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrLeadershipLost) || time.Now().After(deadline) {
			c.t.Fatalf("set %s=%s on %s: %v", key, value, ldr.cfg.ID, err)
		}
	}
}

// waitValue waits until tn's FSM holds key=value.
func waitValue(t *testing.T, tn *testNode, key, value string) {
	t.Helper()
	waitFor(t, clusterWait, fmt.Sprintf("%s to hold %s=%s", tn.cfg.ID, key, value), func() bool {
		v, ok := tn.fsm.get(key)
		return ok && v == value
	})
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(pollEvery)
	}
}

func (c *testCluster) others(not *testNode) []*testNode {
	var o []*testNode
	for _, tn := range c.nodes {
		if tn != not {
			o = append(o, tn)
		}
	}
	return o
}
