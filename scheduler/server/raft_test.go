package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestRaftReplicatesOverTLS(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	for i := range 5 {
		c.set(fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	for _, tn := range c.nodes {
		for i := range 5 {
			waitValue(t, tn, fmt.Sprintf("k%d", i), fmt.Sprint(i))
		}
	}

	ldr := c.leader()
	st := ldr.node.Status()
	if st.State != "Leader" || st.LeaderID != ldr.cfg.ID || st.Term == 0 || st.CommitIndex < 5 || st.AppliedIndex < 5 {
		t.Errorf("leader status = %+v: want state Leader, itself as leader, a term and at least 5 entries committed and applied", st)
	}
	var leaders int
	for _, p := range st.Servers {
		if p.Leader {
			leaders++
			if p.ID != ldr.cfg.ID || p.AppliedIndex != st.AppliedIndex {
				t.Errorf("peer marked leader = %+v, want %s with applied index %d", p, ldr.cfg.ID, st.AppliedIndex)
			}
		}
		if !p.Voter {
			t.Errorf("peer %s is not a voter", p.ID)
		}
	}
	if len(st.Servers) != 3 || leaders != 1 {
		t.Errorf("status lists %d peers with %d leaders, want 3 with 1: %+v", len(st.Servers), leaders, st.Servers)
	}
	// The JSON keys `godwit cluster status -o json` relies on.
	b, _ := json.Marshal(st)
	for _, key := range []string{`"peers":`, `"id":`, `"address":`, `"voter":`, `"leader":`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("status JSON %s lacks %s", b, key)
		}
	}
}

func TestRaftApplyOnAFollowerNamesTheLeader(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	ldr := c.leader()
	follower := c.others(ldr)[0]
	ctx, cancel := context.WithTimeout(context.Background(), applyWait)
	defer cancel()

	_, err := follower.node.Apply(ctx, setCmd("k", "v"))
	var nle *NotLeaderError
	if !errors.As(err, &nle) || !errors.Is(err, ErrNotLeader) || !errors.Is(err, raft.ErrNotLeader) {
		t.Fatalf("apply on a follower: %v, want a *NotLeaderError matching ErrNotLeader", err)
	}
	if nle.LeaderID != ldr.cfg.ID || nle.LeaderAddr != ldr.node.Addr() {
		t.Errorf("not-leader error names %s at %s, want %s at %s", nle.LeaderID, nle.LeaderAddr, ldr.cfg.ID, ldr.node.Addr())
	}
	if err := follower.node.VerifyLeader(ctx); !errors.Is(err, ErrNotLeader) {
		t.Errorf("VerifyLeader on a follower: %v, want ErrNotLeader", err)
	}
	if err := ldr.node.VerifyLeader(ctx); err != nil {
		t.Errorf("VerifyLeader on the leader: %v", err)
	}
	if err := follower.node.AddVoter(ctx, "x", "127.0.0.1:1"); !errors.Is(err, ErrNotLeader) {
		t.Errorf("AddVoter on a follower: %v, want ErrNotLeader", err)
	}

	// The FSM's error comes back as Apply's error, unwrapped.
	bad, _ := json.Marshal(kvCmd{Op: "explode"})
	if _, err := ldr.node.Apply(ctx, bad); !errors.Is(err, errUnknownOp) {
		t.Errorf("apply of an unknown command: %v, want the FSM's errUnknownOp", err)
	}
	prev, err := ldr.node.Apply(ctx, setCmd("k", "v2"))
	if err != nil || prev != "" {
		t.Errorf("apply = %v, %v; want the FSM's response (previous value \"\")", prev, err)
	}
	if prev, _ := ldr.node.Apply(ctx, setCmd("k", "v3")); prev != "v2" {
		t.Errorf("apply answered %v, want the FSM's response v2", prev)
	}
}

func TestRaftLeaderKilledNewLeaderKeepsAcknowledgedWrites(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	const acked = 20
	for i := range acked {
		c.set(fmt.Sprintf("k%d", i), fmt.Sprint(i))
	}
	old := c.leader()
	killed := time.Now()
	c.stop(old)

	ldr := c.leader()
	t.Logf("new leader %s after %s", ldr.cfg.ID, time.Since(killed).Round(time.Millisecond))
	if ldr == old {
		t.Fatal("the stopped node is still the leader")
	}
	ctx, cancel := context.WithTimeout(context.Background(), applyWait)
	defer cancel()
	if err := ldr.node.VerifyLeader(ctx); err != nil {
		t.Fatalf("new leader cannot verify its leadership: %v", err)
	}
	for i := range acked {
		if v, ok := ldr.fsm.get(fmt.Sprintf("k%d", i)); !ok || v != fmt.Sprint(i) {
			t.Errorf("acknowledged write k%d=%d is %q (present %v) on the new leader", i, i, v, ok)
		}
	}
	c.set("after", "kill")
	for _, tn := range c.others(old) {
		waitValue(t, tn, "after", "kill")
	}
}

func TestRaftPartitionedLeaderStepsDownAndCatchesUp(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	c.set("before", "1")
	old := c.leader()
	for _, tn := range c.nodes {
		waitValue(t, tn, "before", "1")
	}

	old.cut.setCut(true)
	// A write on the old leader after the cut cannot reach a quorum.
	unacked := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
		defer cancel()
		_, err := old.node.Apply(ctx, setCmd("lost", "x"))
		unacked <- err
	}()

	ldr := c.leader() // among the majority: old is cut off
	if ldr == old {
		t.Fatal("the partitioned node still leads the majority")
	}
	c.set("during", "2")
	waitFor(t, clusterWait, "the partitioned leader to step down", func() bool { return !old.node.IsLeader() })
	select {
	case err := <-unacked:
		if err == nil {
			t.Fatal("a write on the partitioned leader was acknowledged")
		}
		if !errors.Is(err, ErrLeadershipLost) && !errors.Is(err, ErrNotLeader) {
			t.Errorf("unacknowledged write failed with %v, want ErrLeadershipLost or ErrNotLeader", err)
		}
	case <-time.After(clusterWait):
		t.Fatal("the write on the partitioned leader never returned")
	}
	ctx, cancel := context.WithTimeout(context.Background(), applyWait)
	defer cancel()
	if err := old.node.VerifyLeader(ctx); !errors.Is(err, ErrNotLeader) {
		t.Errorf("VerifyLeader on the deposed leader: %v, want ErrNotLeader", err)
	}

	old.cut.setCut(false)
	waitValue(t, old, "during", "2")
	c.set("after", "3")
	for _, tn := range c.nodes {
		waitValue(t, tn, "after", "3")
		if v, ok := tn.fsm.get("lost"); ok {
			t.Errorf("%s applied the unacknowledged write lost=%s", tn.cfg.ID, v)
		}
	}
	if id, _ := old.node.Leader(); id != c.leader().cfg.ID {
		t.Errorf("healed node follows %q, want the cluster's leader", id)
	}
}

// snapshotTiming snapshots often and keeps few entries after a snapshot,
// so that a node that was away must be sent a snapshot.
func snapshotTiming() RaftTiming {
	t := FastRaftTiming()
	t.SnapshotInterval = 50 * time.Millisecond
	t.SnapshotThreshold = 8
	t.TrailingLogs = 4
	return t
}

func TestRaftRestartedNodeCatchesUpFromItsDataDir(t *testing.T) {
	c := newCluster(t, 3, snapshotTiming())
	const early, late = 20, 60
	for i := range early {
		c.set(fmt.Sprintf("k%d", i), "early")
	}
	ldr := c.leader()
	away := c.others(ldr)[0]
	waitValue(t, away, fmt.Sprintf("k%d", early-1), "early")
	if err := away.node.raft.Snapshot().Error(); err != nil && !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		t.Fatalf("snapshot %s: %v", away.cfg.ID, err)
	}
	staleIndex := away.node.raft.LastIndex()
	c.stop(away)

	for i := early; i < early+late; i++ {
		c.set(fmt.Sprintf("k%d", i), "late")
	}
	// The leader's log no longer reaches back to the stopped node's, so it
	// must catch up with a snapshot sent over TLS.
	waitFor(t, clusterWait, "the leader to compact its log past the stopped node's", func() bool {
		first, err := c.leader().node.stores.bolt.FirstIndex()
		return err == nil && first > staleIndex+1
	})

	c.start(away)
	// Raft restores the newest snapshot while it opens: the early writes
	// are there before the leader has said anything.
	if n := away.fsm.len(); n < early {
		t.Errorf("restarted node holds %d keys from its data dir, want at least %d", n, early)
	}
	waitValue(t, away, fmt.Sprintf("k%d", early+late-1), "late")
	if n := away.fsm.len(); n != early+late {
		t.Errorf("restarted node holds %d keys, want %d", n, early+late)
	}
	// Raft reaps old snapshots after writing a new one, and one being
	// written is a ".tmp" directory until it is complete: wait for the
	// reap rather than catch it half-way.
	var snaps []string
	waitFor(t, clusterWait, fmt.Sprintf("1 to %d complete snapshots on disk", snapshotsRetained), func() bool {
		snaps = snapshotDirs(t, filepath.Join(away.cfg.DataDir, raftDirName, "snapshots"))
		return len(snaps) > 0 && len(snaps) <= snapshotsRetained
	})

	// The whole cluster stopped and started again keeps every write.
	for _, tn := range c.nodes {
		c.stop(tn)
	}
	for _, tn := range c.nodes {
		c.start(tn)
	}
	c.set("restarted", "yes")
	for _, tn := range c.nodes {
		waitValue(t, tn, "restarted", "yes")
		if n := tn.fsm.len(); n != early+late+1 {
			t.Errorf("%s holds %d keys after a full restart, want %d", tn.cfg.ID, n, early+late+1)
		}
	}
}

func TestRaftMembershipChanges(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	c.set("k", "v")
	ldr := c.leader()

	joiner := &testNode{cfg: nodeConfig(t, c.ca, "n4", FastRaftTiming())}
	c.start(joiner)
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	if err := ldr.node.AddVoter(ctx, joiner.cfg.ID, joiner.node.Addr()); err != nil {
		t.Fatalf("add voter: %v", err)
	}
	waitValue(t, joiner, "k", "v")
	c.nodes = append(c.nodes, joiner)

	servers, err := ldr.node.Servers()
	if err != nil || len(servers) != 4 {
		t.Fatalf("servers after adding n4: %v, %v", servers, err)
	}

	victim := c.others(ldr)[0]
	if err := ldr.node.RemoveServer(ctx, victim.cfg.ID); err != nil {
		t.Fatalf("remove server: %v", err)
	}
	inConfig := func(tn *testNode, id string) bool {
		servers, _ := tn.node.Servers()
		for _, s := range servers {
			if string(s.ID) == id {
				return true
			}
		}
		return false
	}
	if inConfig(ldr, victim.cfg.ID) {
		t.Errorf("%s is still in the leader's configuration", victim.cfg.ID)
	}
	waitFor(t, clusterWait, "the removed node to learn of its removal", func() bool { return !inConfig(victim, victim.cfg.ID) })
	c.stop(victim)
	c.set("after", "remove") // n4 and the two others

	// A leader removing itself steps down and stops; the rest elect.
	if err := ldr.node.RemoveServer(ctx, ldr.cfg.ID); err != nil {
		t.Fatalf("leader removes itself: %v", err)
	}
	waitFor(t, clusterWait, "the removed leader to stop its raft", func() bool {
		return ldr.node.Status().State == raft.Shutdown.String()
	})
	c.stop(ldr)
	c.set("after", "leader removed")
	if next := c.leader(); inConfig(next, ldr.cfg.ID) {
		t.Errorf("the new leader %s still lists the removed leader", next.cfg.ID)
	}
}

func TestOpenRaftRefusals(t *testing.T) {
	ca := newTestCA(t, "refusals-ca")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	fileDir := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(fileDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		modify func(*RaftConfig)
		want   error
		says   string
	}{
		{"no TLS", func(c *RaftConfig) { c.ServerTLS, c.ClientTLS = nil, nil }, ErrRaftTLS, "--tls-ca"},
		{"server TLS without client CA", func(c *RaftConfig) { c.ServerTLS.ClientCAs = nil }, ErrRaftTLS, "cannot verify peers"},
		{"data dir is a file", func(c *RaftConfig) { c.DataDir = fileDir }, ErrDataDir, fileDir},
		{"address in use", func(c *RaftConfig) { c.BindAddr = busy.Addr().String() }, nil, "in use"},
		{"unspecified bind without advertise", func(c *RaftConfig) { c.BindAddr = "0.0.0.0:0" }, nil, "advertise address"},
		{"no ID", func(c *RaftConfig) { c.ID = "" }, ErrRaftConfig, "--name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := nodeConfig(t, ca, "r1", FastRaftTiming())
			cfg.FSM = newKV()
			tt.modify(&cfg)
			n, err := OpenRaft(cfg)
			if err == nil {
				n.Shutdown()
				t.Fatal("OpenRaft succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q does not mention %q", err, tt.says)
			}
		})
	}
}

func TestOpenRaftSecondProcessOnADataDirFailsFast(t *testing.T) {
	ca := newTestCA(t, "lock-ca")
	cfg := nodeConfig(t, ca, "l1", FastRaftTiming())
	cfg.FSM = newKV()
	first, err := OpenRaft(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Shutdown()

	// bolt's lock is flock(2) on an open file: a second open in this
	// process conflicts just as another process's would.
	cfg.FSM = newKV()
	start := time.Now()
	second, err := OpenRaft(cfg)
	if err == nil {
		second.Shutdown()
		t.Fatal("a second raft opened the same data dir")
	}
	if !errors.Is(err, ErrDataDirInUse) || !strings.Contains(err.Error(), cfg.DataDir) {
		t.Errorf("error %v, want ErrDataDirInUse naming %s", err, cfg.DataDir)
	}
	if took := time.Since(start); took > 3*boltOpenTimeout {
		t.Errorf("refusal took %s, want about %s", took, boltOpenTimeout)
	}
}

func TestBootstrapIfNewKeepsExistingState(t *testing.T) {
	c := newCluster(t, 1, FastRaftTiming())
	c.set("k", "v")
	tn := c.nodes[0]
	other := []raft.Server{
		{ID: raft.ServerID(tn.cfg.ID), Address: raft.ServerAddress(tn.node.Addr()), Suffrage: raft.Voter},
		{ID: "ghost", Address: "127.0.0.1:1", Suffrage: raft.Voter},
	}
	if err := tn.node.BootstrapIfNew(other); err != nil {
		t.Fatalf("bootstrap of a node with state: %v, want nil", err)
	}
	servers, _ := tn.node.Servers()
	if len(servers) != 1 {
		t.Errorf("a second bootstrap changed the configuration to %v", servers)
	}
	if err := tn.node.BootstrapIfNew([]raft.Server{other[1]}); !errors.Is(err, ErrRaftConfig) {
		t.Errorf("bootstrap without this node: %v, want ErrRaftConfig", err)
	}
}

// snapshotDirs lists the complete snapshots in dir, not those still
// being written.
func snapshotDirs(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".tmp") {
			out = append(out, e.Name())
		}
	}
	return out
}
