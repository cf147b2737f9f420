package main

import (
	"context"
	"log/slog"
	"sync/atomic"

	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/scheduler/membership"
	"github.com/godwit/godwit/scheduler/server"
	"github.com/godwit/godwit/scheduler/state"
)

// schedulerMetrics is a scheduler's --metrics: its own registry, the
// sample read from the replica at each scrape, and the HTTP endpoint. A
// nil *schedulerMetrics (no --metrics) does nothing.
type schedulerMetrics struct {
	m   *metrics.Scheduler
	srv *metrics.Server
	// sched is the running replica, nil until it has started.
	sched atomic.Pointer[server.Scheduler]
	log   *slog.Logger
}

// newSchedulerMetrics listens on addr for the scheduler's metrics; ""
// (no --metrics) returns nil. It fails when addr cannot be listened on,
// so that a wrong address stops the scheduler before it starts.
func newSchedulerMetrics(addr string, log *slog.Logger) (*schedulerMetrics, error) {
	if addr == "" {
		return nil, nil
	}
	sm := &schedulerMetrics{log: log}
	reg := metrics.NewRegistry()
	sm.m = metrics.NewScheduler(reg, sm.sample)
	srv, err := metrics.Listen(addr, reg, log)
	if err != nil {
		return nil, err
	}
	sm.srv = srv
	return sm, nil
}

// counters are what the replica counts as it runs (API calls, leadership
// changes), for server.Config; nil without --metrics, which counts
// nothing.
func (sm *schedulerMetrics) counters() *metrics.Scheduler {
	if sm == nil {
		return nil
	}
	return sm.m
}

// serve serves the endpoint for replica s until ctx ends.
func (sm *schedulerMetrics) serve(ctx context.Context, s *server.Scheduler) {
	if sm == nil {
		return
	}
	sm.sched.Store(s)
	go func() {
		if err := sm.srv.Serve(ctx); err != nil {
			sm.log.Error("metrics endpoint stopped: Prometheus can no longer scrape this scheduler", "err", err)
		}
	}()
}

// sample is the replica's state for one scrape.
func (sm *schedulerMetrics) sample() (metrics.SchedulerSample, bool) {
	s := sm.sched.Load()
	if s == nil {
		return metrics.SchedulerSample{}, false
	}
	st := s.RaftStatus()
	return schedulerSample(s.Store().Snapshot(), &st, s.GossipMembers()), true
}

// nodeStatuses and reportedStates are every status and state, so that one
// that empties reads 0 rather than vanishing from the metrics.
var (
	nodeStatuses   = []state.NodeStatus{state.NodeReady, state.NodeCordoned, state.NodeDraining, state.NodeSuspect, state.NodeDown}
	reportedStates = []state.ReportedState{state.ReportedPending, state.ReportedCreated, state.ReportedRunning,
		state.ReportedStopped, state.ReportedExited, state.ReportedMigrating, state.ReportedLost}
)

// schedulerSample is what a replica's metrics report of snap, of raft's
// status st (nil: unknown, left out) and of the gossip members (nil:
// unknown, left out).
func schedulerSample(snap *state.Snapshot, st *server.RaftStatus, members []membership.Member) metrics.SchedulerSample {
	s := metrics.SchedulerSample{Nodes: map[string]int{}, Containers: map[string]int{}}
	for _, status := range nodeStatuses {
		s.Nodes[string(status)] = 0
	}
	for _, n := range snap.Nodes() {
		s.Nodes[string(n.Status())]++
	}
	for _, r := range reportedStates {
		s.Containers[string(r)] = 0
	}
	for _, c := range snap.Containers() {
		s.Containers[string(c.Reported)]++
	}
	if st != nil {
		r := &metrics.RaftSample{
			State: st.State, Term: st.Term, CommitIndex: st.CommitIndex, AppliedIndex: st.AppliedIndex,
			// Status leaves LastContact zero on the leader.
			LastLogIndex: st.LastLogIndex, LastContact: st.LastContact,
		}
		for _, p := range st.Servers {
			if p.Voter {
				r.Voters++
			} else {
				r.NonVoters++
			}
		}
		s.Raft = r
	}
	if members != nil {
		s.GossipAlive = map[string]int{string(membership.RoleAgent): 0, string(membership.RoleScheduler): 0}
		for _, m := range members {
			if m.State == membership.MemberAlive && m.Role != "" {
				s.GossipAlive[string(m.Role)]++
			}
		}
	}
	return s
}
