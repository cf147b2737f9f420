package server

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/internal/pki"
)

// TestTLSStreamLayerRefusesStrangers dials a node's raft listener as
// different peers: only a peer with a certificate from the cluster CA that
// VerifyPeer accepts gets a byte through, and the dialling side refuses a
// server that fails the same checks.
func TestTLSStreamLayerRefusesStrangers(t *testing.T) {
	ca := newTestCA(t, "stream-ca")
	foreign := newTestCA(t, "foreign-ca")
	requireScheduler := func(c *x509.Certificate) error {
		if role, err := pki.RoleOf(c); err != nil || role != pki.RoleScheduler {
			return fmt.Errorf("role %q (%v), want scheduler", role, err)
		}
		return nil
	}
	serverTLS, clientTLS := testTLS(t, ca, "server")
	server, err := newTLSStreamLayer("127.0.0.1:0", "", serverTLS, clientTLS, requireScheduler, false)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	addr := raft.ServerAddress(server.Addr().String())

	// The server echoes one byte on every connection it accepts; a refused
	// peer makes the read fail.
	accepted := make(chan error, 10)
	go func() {
		for {
			c, err := server.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(raftHandshakeTimeout))
				var b [1]byte
				if _, err := io.ReadFull(c, b[:]); err != nil {
					accepted <- err
					return
				}
				_, err := c.Write(b[:])
				accepted <- err
			}()
		}
	}()

	tests := []struct {
		name string
		ca   string // which CA signs the client: "cluster" or "foreign"
		role pki.Role
	}{
		{"scheduler certificate", "cluster", pki.RoleScheduler},
		{"certificate from another CA", "foreign", pki.RoleScheduler},
		{"agent certificate, refused by VerifyPeer", "cluster", pki.RoleAgent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer := ca
			if tt.ca == "foreign" {
				signer = foreign
			}
			st, ct := testTLSRole(t, signer, "peer", tt.role)
			// The client trusts the cluster CA, so only the server's
			// verdict on the client is tested here.
			ct.RootCAs = clientTLS.RootCAs
			client, err := newTLSStreamLayer("127.0.0.1:0", "", st, ct, nil, false)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			want := tt.ca == "cluster" && tt.role == pki.RoleScheduler
			err = echo(client, addr)
			serverErr := <-accepted
			if want && (err != nil || serverErr != nil) {
				t.Fatalf("a cluster peer was refused: dial %v, server %v", err, serverErr)
			}
			if !want && (err == nil || serverErr == nil) {
				t.Fatalf("peer got through: dial %v, server %v", err, serverErr)
			}
		})
	}

	t.Run("plaintext client", func(t *testing.T) {
		c, err := net.Dial("tcp", string(addr))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// raft's AppendEntries type byte, then noise: a whole TLS record
		// header's worth, so the server judges it at once.
		c.Write([]byte{0, 1, 2, 3, 4, 5, 6, 7})
		c.SetReadDeadline(time.Now().Add(raftHandshakeTimeout))
		if n, err := c.Read(make([]byte, 16)); err == nil && n > 0 {
			// The server answers a TLS alert at most, never raft.
			t.Logf("server answered %d bytes of alert", n)
		}
		if err := <-accepted; err == nil {
			t.Fatal("the server read a plaintext byte as raft data")
		}
	})

	t.Run("server with a foreign certificate", func(t *testing.T) {
		st, ct := testTLS(t, foreign, "impostor")
		impostor, err := newTLSStreamLayer("127.0.0.1:0", "", st, ct, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		defer impostor.Close()
		go func() {
			if c, err := impostor.Accept(); err == nil {
				io.Copy(io.Discard, c)
				c.Close()
			}
		}()
		if err := echo(server, raft.ServerAddress(impostor.Addr().String())); err == nil {
			t.Fatal("dialled a server whose certificate another CA signed")
		}
	})
}

// echo dials addr through s, sends a byte and reads it back.
func echo(s *tlsStreamLayer, addr raft.ServerAddress) error {
	c, err := s.Dial(addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(raftHandshakeTimeout))
	if _, err := c.Write([]byte{42}); err != nil {
		return err
	}
	var b [1]byte
	_, err = io.ReadFull(c, b[:])
	return err
}

// TestRaftNodeWithForeignCertificateCannotJoin adds a node whose
// certificate another CA signed: the configuration lists it, but the
// leader cannot replicate to it, and it cannot send raft RPCs in.
func TestRaftNodeWithForeignCertificateCannotJoin(t *testing.T) {
	c := newCluster(t, 3, FastRaftTiming())
	c.set("k", "v")
	ldr := c.leader()

	rogue := &testNode{cfg: nodeConfig(t, newTestCA(t, "rogue-ca"), "rogue", FastRaftTiming())}
	c.start(rogue)
	ctx, cancel := context.WithTimeout(context.Background(), clusterWait)
	defer cancel()
	if err := ldr.node.AddVoter(ctx, rogue.cfg.ID, rogue.node.Addr()); err != nil {
		t.Fatalf("add voter: %v", err) // a configuration change commits on the old quorum
	}
	c.set("k2", "v2") // three of four voters still commit

	var resp raft.RequestVoteResponse
	err := rogue.node.transport.RequestVote(raft.ServerID(ldr.cfg.ID), raft.ServerAddress(ldr.node.Addr()),
		&raft.RequestVoteRequest{RPCHeader: raft.RPCHeader{ID: []byte("rogue"), Addr: []byte(rogue.node.Addr())}, Term: 1000}, &resp)
	if err == nil {
		t.Error("the rogue node's RequestVote reached the leader")
	}
	// Give the leader time to try replicating to the rogue node.
	time.Sleep(10 * FastRaftTiming().HeartbeatTimeout)
	if n := rogue.fsm.len(); n != 0 {
		t.Errorf("the rogue node received %d keys", n)
	}
	// Had the vote request got through, its term would have deposed the
	// leader and lifted every term past it.
	for _, tn := range c.others(rogue) {
		if st := tn.node.Status(); st.Term >= 1000 {
			t.Errorf("%s took the rogue node's term: %+v", tn.cfg.ID, st)
		}
	}
	c.set("k3", "v3")
	if _, ok := rogue.fsm.get("k3"); ok {
		t.Error("the rogue node received a write")
	}
}
