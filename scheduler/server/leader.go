package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/membership"
	"github.com/godwit/godwit/scheduler/state"
)

// bootstrapPoll is how often a scheduler that has not bootstrapped looks
// for its expected peers in the gossip pool.
const bootstrapPoll = 200 * time.Millisecond

func raftTiming(t Timing) RaftTiming {
	if t.Fast {
		return FastRaftTiming()
	}
	return DefaultRaftTiming()
}

func gossipProfile(t Timing) membership.Profile {
	if t.Fast {
		return membership.ProfileTest
	}
	return membership.ProfileLAN
}

// bootstrapLoop forms the first raft configuration: once BootstrapExpect
// schedulers that expect the same number have found each other in the
// gossip pool, each bootstraps raft with the same list of servers, which
// makes bootstrapping on all of them safe. A scheduler with existing
// state, or started without --bootstrap-expect (it joins a running
// cluster, whose leader adds it), never bootstraps.
func (s *Scheduler) bootstrapLoop(ctx context.Context) {
	expect := s.cfg.BootstrapExpect
	if expect <= 0 {
		return
	}
	t := time.NewTicker(bootstrapPoll)
	defer t.Stop()
	for {
		var servers []raft.Server
		for _, m := range s.pool.Members() {
			if m.Role != membership.RoleScheduler || m.State != membership.MemberAlive || m.Tags.Expect == 0 {
				continue
			}
			if m.Tags.Expect != expect {
				s.log.Warn("schedulers disagree on --bootstrap-expect: waiting; give every first scheduler the same number",
					"peer", m.Name, "peer_expect", m.Tags.Expect, "expect", expect)
				servers = nil
				break
			}
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.Tags.RaftAddr)})
		}
		if len(servers) >= expect {
			slices.SortFunc(servers, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
			if err := s.raft.BootstrapIfNew(servers); err != nil {
				s.log.Error("bootstrap raft", "err", err)
			} else {
				s.log.Info("raft bootstrapped (or already had state)", "servers", len(servers))
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leaderLoop runs the leader's duties while this replica leads: it
// reacts to leadership changes and to the gossip pool's events.
func (s *Scheduler) leaderLoop(ctx context.Context) {
	var term *leadership
	defer func() { term.end() }()
	reconcile := make(chan struct{}, 1)
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-s.raft.LeaderCh():
			s.cfg.Metrics.LeadershipChanged(leader)
			term.end()
			term = nil
			if leader {
				term = s.startLeading(ctx, reconcile)
			}
		case ev := <-s.pool.Events():
			s.onMemberEvent(ev)
			select {
			case reconcile <- struct{}{}:
			default:
			}
		}
	}
}

// leadership is one term of leading: lead runs until end.
type leadership struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *Scheduler) startLeading(ctx context.Context, reconcile <-chan struct{}) *leadership {
	ctx, cancel := context.WithCancel(ctx)
	l := &leadership{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		s.lead(ctx, reconcile)
	}()
	return l
}

// end stops leading and waits until lead has returned; nil does nothing.
func (l *leadership) end() {
	if l == nil {
		return
	}
	l.cancel()
	<-l.done
}

// onMemberEvent notes what gossip says of agents: a failed agent is
// suspect at once, without waiting for its lease to run out.
func (s *Scheduler) onMemberEvent(ev membership.Event) {
	if ev.Member.Role != membership.RoleAgent {
		return
	}
	if ev.Kind == membership.EventFail || ev.Kind == membership.EventLeave {
		s.leases.gossipFailed(ev.Member.Name)
	}
}

// lead is the leader's work for one term: make sure every earlier entry
// is applied, record the cluster's settings once, then keep the raft
// configuration in line with the gossip pool and the nodes' health in
// line with their leases.
func (s *Scheduler) lead(ctx context.Context, reconcile <-chan struct{}) {
	log := s.log.With("term", s.raft.Status().Term)
	log.Info("leading")
	defer log.Info("no longer leading")
	if err := s.raft.VerifyLeader(ctx); err != nil {
		log.Warn("lost leadership while establishing it", "err", err)
		return
	}
	if !s.store.Snapshot().Config().ClusterCIDR.IsValid() {
		if _, err := s.apply(ctx, &fsm.InitCluster{ClusterCIDR: s.cfg.ClusterCIDR, At: time.Now()}); err != nil {
			log.Error("record the cluster CIDR", "err", err)
		}
	}
	// Leases are not in raft: a new leader gives every node one full
	// lease from now, so that no node is suspected for the failover.
	s.leases.reset(time.Now(), nodeNames(s.store.Snapshot().Nodes()))

	// The coordinator settles the open migrations first, then drives
	// new ones, for as long as this term lasts.
	coordDone := make(chan struct{})
	go func() {
		defer close(coordDone)
		s.coord.Lead(ctx)
	}()
	defer func() { <-coordDone }()
	// The drainer goes on with every running drain from its record.
	drainsDone := make(chan struct{})
	go func() {
		defer close(drainsDone)
		s.drains.Lead(ctx)
	}()
	defer func() { <-drainsDone }()
	// The balancer plans every interval while its policy is enabled.
	balanceDone := make(chan struct{})
	go func() {
		defer close(balanceDone)
		s.balancer.lead(ctx)
	}()
	defer func() { <-balanceDone }()

	leaseTick := time.NewTicker(s.cfg.Timing.LeaseCheck)
	defer leaseTick.Stop()
	reconcileTick := time.NewTicker(s.cfg.Timing.Reconcile)
	defer reconcileTick.Stop()
	s.reconcileMembers(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-leaseTick.C:
			s.checkLeases(ctx)
		case <-reconcile:
			s.reconcileMembers(ctx)
		case <-reconcileTick.C:
			s.reconcileMembers(ctx)
		}
	}
}

func nodeNames(nodes []*state.Node) []string {
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	return names
}

// reconcileMembers adds every alive scheduler of the gossip pool that is
// not a raft server yet, and removes the ones that left the pool on
// purpose. A scheduler that failed stays a voter: it may come back, and
// removing it is the operator's call (`godwit cluster remove-peer`).
func (s *Scheduler) reconcileMembers(ctx context.Context) {
	servers, err := s.raft.Servers()
	if err != nil {
		s.log.Warn("read the raft configuration", "err", err)
		return
	}
	known := map[string]bool{}
	for _, sv := range servers {
		known[string(sv.ID)] = true
	}
	for _, m := range s.pool.Members() {
		if m.Role != membership.RoleScheduler || m.Name == s.cfg.Name {
			continue
		}
		switch {
		case m.State == membership.MemberAlive && !known[m.Name]:
			if err := s.raft.AddVoter(ctx, m.Name, m.Tags.RaftAddr); err != nil {
				s.log.Warn("add a scheduler to raft", "peer", m.Name, "raft", m.Tags.RaftAddr, "err", err)
				continue
			}
			s.log.Info("scheduler added to raft", "peer", m.Name, "raft", m.Tags.RaftAddr)
		case m.State == membership.MemberLeft && known[m.Name]:
			if err := s.raft.RemoveServer(ctx, m.Name); err != nil {
				s.log.Warn("remove a scheduler that left from raft", "peer", m.Name, "err", err)
				continue
			}
			s.log.Info("scheduler that left removed from raft", "peer", m.Name)
		}
	}
}

// checkLeases moves nodes whose lease ran out to suspect, and suspect
// ones past DownAfter to down, with their containers lost. Each decision
// names the registration (epoch) it was taken on, so that a node that
// registers again meanwhile is not put down with its fresh lease
// (Register renews the lease before it commits the new epoch).
func (s *Scheduler) checkLeases(ctx context.Context) {
	now := time.Now()
	for _, n := range s.store.Snapshot().Nodes() {
		expired, since := s.leases.expired(n.Name, now, s.cfg.Timing.LeaseTTL)
		switch {
		case n.Health == state.HealthAlive && expired:
			s.setHealth(ctx, n, state.HealthSuspect, now, fmt.Sprintf("no heartbeat since %s", since.Format(time.RFC3339Nano)))
		case n.Health == state.HealthSuspect && expired && now.Sub(since) >= s.cfg.Timing.LeaseTTL+s.cfg.Timing.DownAfter:
			// One command: the node is never seen down with containers
			// that are not lost yet.
			lost, err := s.apply(ctx, &fsm.MarkNodeLost{Name: n.Name, Epoch: n.Epoch, At: now})
			switch {
			case errors.Is(err, fsm.ErrStaleEpoch):
				s.log.Info("node not put down: it registered again", "node", n.Name, "err", err)
			case err != nil:
				s.log.Error("mark a node down and its containers lost", "node", n.Name, "err", err)
			default:
				s.log.Warn("node down: suspect for longer than the down threshold; its containers are lost", "node", n.Name, "lost", lost)
			}
		}
	}
}

// setHealth records n's health, as decided on the registration n is.
func (s *Scheduler) setHealth(ctx context.Context, n *state.Node, h state.Health, at time.Time, why string) {
	_, err := s.apply(ctx, &fsm.SetNodeHealth{Name: n.Name, Health: h, Epoch: n.Epoch, At: at})
	switch {
	case errors.Is(err, fsm.ErrStaleEpoch):
		s.log.Info("node health left as is: it registered again", "node", n.Name, "health", h, "err", err)
	case err != nil:
		s.log.Error("set node health", "node", n.Name, "health", h, "err", err)
	default:
		s.log.Warn("node health changed", "node", n.Name, "health", h, "why", why)
	}
}

// apply commits cmd through raft on this replica, which must lead, and
// returns the FSM's answer.
func (s *Scheduler) apply(ctx context.Context, cmd fsm.Command) (any, error) {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timing.ApplyTimeout)
	defer cancel()
	resp, err := s.raft.Apply(ctx, data)
	if err != nil {
		return nil, err
	}
	if r, ok := resp.(fsm.Result); ok {
		return r.Value, r.Err
	}
	return resp, nil
}

// localMethods are served by any replica from its own state; every other
// call goes to the leader.
var localMethods = map[string]bool{
	"/godwit.v1.ClusterService/ClusterStatus": true,
	"/godwit.v1.ClusterService/Events":        true,
}

// route sends a call to the leader unless this replica leads or the call
// is local.
func (s *Scheduler) route(ctx context.Context, method string) (*grpc.ClientConn, error) {
	if localMethods[method] {
		return nil, nil
	}
	if s.raft.IsLeader() {
		// A new leader answers only once its state holds everything the
		// previous ones committed (one barrier per term).
		if err := s.raft.LeaderCaughtUp(ctx); err != nil {
			return nil, stateError(err)
		}
		return nil, nil
	}
	if forwardedCaller(ctx) != nil {
		// A forwarded call reached a replica that no longer leads: tell
		// the client rather than forward again.
		return nil, status.Error(codes.Unavailable, "the scheduler leader changed during the call: retry")
	}
	id, _ := s.raft.Leader()
	if id == "" {
		return nil, status.Error(codes.Unavailable,
			"no scheduler leader right now: an election may be under way, retry in a few seconds; if it lasts, a majority of the schedulers is down "+
				"or cut off from each other: see `godwit cluster status`, and docs/raft.md to recover")
	}
	for _, m := range s.pool.Members() {
		if m.Name == id && m.Role == membership.RoleScheduler && m.Tags.RPCAddr != "" {
			return s.conns.conn(m.Tags.RPCAddr)
		}
	}
	return nil, status.Errorf(codes.Unavailable, "the scheduler leader %s is not in the gossip pool yet: retry", id)
}
