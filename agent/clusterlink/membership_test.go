package clusterlink

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/membership"
)

// startPool starts a gossip member on 127.0.0.1 with the test profile.
func startPool(t *testing.T, name string, role membership.Role, tags membership.Tags) *membership.Pool {
	t.Helper()
	p, err := membership.Start(membership.Config{Name: name, Role: role, BindAddr: "127.0.0.1:0", Insecure: true,
		Tags: tags, Profile: membership.ProfileTest, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Shutdown() })
	return p
}

func member(p *membership.Pool, name string) (membership.Member, bool) {
	for _, m := range p.Members() {
		if m.Name == name {
			return m, true
		}
	}
	return membership.Member{}, false
}

func TestLinkFindsTheSchedulerByGossip(t *testing.T) {
	// The agent joins through another agent before any scheduler is up.
	seed := startPool(t, "seed", membership.RoleAgent, membership.Tags{RPCAddr: "127.0.0.1:1"})
	l := startLink(t, Config{
		Join:          []string{seed.LocalMember().Addr},
		GossipBind:    "127.0.0.1:0",
		Insecure:      true,
		GossipProfile: membership.ProfileTest,
		RPCAddr:       "127.0.0.1:7701",
	})
	time.Sleep(200 * time.Millisecond)
	if err := l.Check(); err == nil {
		t.Fatal("the node holds a lease with no scheduler in the pool")
	}

	sched := &fakeScheduler{ttl: 2 * time.Second, interval: 50 * time.Millisecond}
	rpcAddr, _ := sched.serve(t)
	pool := startPool(t, "s1", membership.RoleScheduler, membership.Tags{RPCAddr: rpcAddr})
	if _, err := pool.Join(context.Background(), []string{seed.LocalMember().Addr}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "the node registers with the scheduler it learned of by gossip", func() bool { return l.Check() == nil })

	m, ok := member(pool, "n1")
	if !ok || m.Role != membership.RoleAgent || m.Tags.RPCAddr != "127.0.0.1:7701" || m.State != membership.MemberAlive {
		t.Fatalf("the scheduler sees the agent as %+v (listed %v), want an alive agent with its RPC address", m, ok)
	}

	// Stop leaves the pool: the scheduler hears the node left, not failed.
	l.Stop()
	eventually(t, 5*time.Second, "the scheduler sees the node leave", func() bool {
		m, _ := member(pool, "n1")
		return m.State == membership.MemberLeft
	})
}
