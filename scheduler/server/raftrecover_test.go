package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestRecoverClusterBringsASurvivorBack loses two of three schedulers for
// good: the survivor alone cannot elect itself, RecoverCluster makes it
// the only voter, and it serves with every write it had.
func TestRecoverClusterBringsASurvivorBack(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	const writes = 10
	for i := range writes {
		c.set(fmt.Sprintf("k%d", i), "v")
	}
	survivor := c.nodes[0]
	waitValue(t, survivor, fmt.Sprintf("k%d", writes-1), "v")
	for _, tn := range c.nodes {
		c.stop(tn)
	}

	// Without recovery the survivor waits for a quorum that never comes.
	c.start(survivor)
	time.Sleep(10 * FastRaftTiming().ElectionTimeout)
	if survivor.node.IsLeader() {
		t.Fatal("a lone survivor of three elected itself without recovery")
	}
	c.stop(survivor)

	peers := filepath.Join(t.TempDir(), "peers.json")
	content := fmt.Sprintf(`[{"id": %q, "address": %q}]`, survivor.cfg.ID, survivor.cfg.BindAddr)
	if err := os.WriteFile(peers, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	servers, err := ReadPeersFile(peers)
	if err != nil {
		t.Fatal(err)
	}
	cfg := survivor.cfg
	cfg.FSM = newKV()
	if err := RecoverCluster(cfg, servers); err != nil {
		t.Fatalf("recover: %v", err)
	}

	c.nodes = []*testNode{survivor}
	c.start(survivor)
	if n := survivor.fsm.len(); n != writes {
		t.Errorf("recovered node holds %d keys, want %d", n, writes)
	}
	c.set("after", "recovery")
	got, _ := survivor.node.Servers()
	if len(got) != 1 || string(got[0].ID) != survivor.cfg.ID {
		t.Errorf("configuration after recovery = %v, want only %s", got, survivor.cfg.ID)
	}
}

func TestRecoverClusterRefusals(t *testing.T) {
	c := newCluster(t, 1, FastRaftTiming())
	tn := c.nodes[0]
	self := []raft.Server{{ID: raft.ServerID(tn.cfg.ID), Address: raft.ServerAddress(tn.cfg.BindAddr), Suffrage: raft.Voter}}

	cfg := tn.cfg
	cfg.FSM = newKV()
	if err := RecoverCluster(cfg, self); !errors.Is(err, ErrDataDirInUse) {
		t.Errorf("recover while the scheduler runs: %v, want ErrDataDirInUse", err)
	}
	c.stop(tn)

	others := []raft.Server{{ID: "other", Address: "127.0.0.1:1", Suffrage: raft.Voter}}
	if err := RecoverCluster(cfg, others); !errors.Is(err, ErrRaftConfig) || !strings.Contains(err.Error(), tn.cfg.ID) {
		t.Errorf("recover without this node among the peers: %v, want ErrRaftConfig naming %s", err, tn.cfg.ID)
	}
	empty := cfg
	empty.DataDir = t.TempDir()
	if err := RecoverCluster(empty, self); !errors.Is(err, ErrRaftConfig) || !strings.Contains(err.Error(), "no raft state") {
		t.Errorf("recover an empty data dir: %v, want ErrRaftConfig saying there is no state", err)
	}
}

func TestParsePeers(t *testing.T) {
	tests := []struct {
		name string
		json string
		want []raft.Server
		says string
	}{
		{
			name: "voter by default",
			json: `[{"id":"s1","address":"10.0.0.1:7000"},{"id":"s2","address":"10.0.0.2:7000","voter":false}]`,
			want: []raft.Server{
				{ID: "s1", Address: "10.0.0.1:7000", Suffrage: raft.Voter},
				{ID: "s2", Address: "10.0.0.2:7000", Suffrage: raft.Nonvoter},
			},
		},
		{name: "not JSON", json: `s1 10.0.0.1:7000`, says: "JSON list"},
		{name: "empty list", json: `[]`, says: "no peers"},
		{name: "missing id", json: `[{"address":"10.0.0.1:7000"}]`, says: "has no id"},
		{name: "duplicate id", json: `[{"id":"s1","address":"10.0.0.1:7000"},{"id":"s1","address":"10.0.0.2:7000"}]`, says: "appears twice"},
		{name: "address without port", json: `[{"id":"s1","address":"10.0.0.1"}]`, says: "not host:port"},
		{name: "no voter", json: `[{"id":"s1","address":"10.0.0.1:7000","voter":false}]`, says: "no peer is a voter"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePeers([]byte(tt.json))
			if tt.says != "" {
				if !errors.Is(err, ErrRaftConfig) || !strings.Contains(err.Error(), tt.says) {
					t.Fatalf("error %v, want ErrRaftConfig saying %q", err, tt.says)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("peers = %v, want %v", got, tt.want)
			}
		})
	}
}
