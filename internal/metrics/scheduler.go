package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

const schedulerSubsystem = "scheduler"

// raftStates are the states raft reports (hashicorp/raft's
// RaftState.String), each a sample of godwit_scheduler_raft_state: 1 for
// the replica's state, 0 for the others.
var raftStates = []string{"Follower", "Candidate", "Leader", "Shutdown"}

// SchedulerSample is a scheduler replica's state as one scrape reads it.
type SchedulerSample struct {
	// Raft is raft's view from this replica; nil leaves the raft metrics
	// out.
	Raft *RaftSample
	// Nodes counts the registered nodes by status word (ready, cordoned,
	// draining, suspect, down), every status present, zero included.
	Nodes map[string]int
	// Containers counts the containers by the state their node last
	// reported (pending, running, ..., lost), every state present.
	Containers map[string]int
	// GossipAlive counts the gossip pool's alive members by role (agent,
	// scheduler) as this replica sees them; nil leaves the metric out.
	GossipAlive map[string]int
}

// RaftSample is raft's state on one replica.
type RaftSample struct {
	// State is Follower, Candidate, Leader or Shutdown.
	State                                         string
	Term, CommitIndex, AppliedIndex, LastLogIndex uint64
	// LastContact is when a follower last heard from the leader; zero on
	// the leader, or before any contact (the metric is then left out).
	LastContact time.Time
	// Voters and NonVoters count the servers of the configuration.
	Voters, NonVoters int
}

// Scheduler is a scheduler replica's metrics: its API calls (RPC), its
// leadership changes, and the sample read at each scrape. Its event
// methods do nothing on a nil *Scheduler.
type Scheduler struct {
	*RPC
	leadership *prometheus.CounterVec
}

// NewScheduler registers a replica's metrics in reg. sample is called at
// each scrape; it returns false while the replica has nothing to report
// (it is starting), and the sampled metrics are then left out. It must be
// quick: read the state's snapshot, never wait for raft or the network.
func NewScheduler(reg prometheus.Registerer, sample func() (SchedulerSample, bool)) *Scheduler {
	m := &Scheduler{
		RPC: NewRPC(reg, schedulerSubsystem),
		leadership: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: schedulerSubsystem,
			Name: "leadership_changes_total",
			Help: "Times this replica became leader (to=leader) or stopped leading (to=follower); summed over the replicas, to=leader counts the cluster's leader changes.",
		}, []string{"to"}),
	}
	reg.MustRegister(m.leadership, newSchedulerCollector(sample, time.Now))
	return m
}

// ServerOptions are the interceptors that count the API's calls (RPC);
// none on a nil Scheduler.
func (m *Scheduler) ServerOptions() []grpc.ServerOption {
	if m == nil {
		return nil
	}
	return m.RPC.ServerOptions()
}

// LeadershipChanged counts this replica becoming leader (leading true)
// or ceasing to lead.
func (m *Scheduler) LeadershipChanged(leading bool) {
	if m == nil {
		return
	}
	to := "follower"
	if leading {
		to = "leader"
	}
	m.leadership.WithLabelValues(to).Inc()
}

// schedulerCollector turns a SchedulerSample into metrics at each scrape.
type schedulerCollector struct {
	sample func() (SchedulerSample, bool)
	now    func() time.Time

	raftState, term, commitIndex, appliedIndex, lastLogIndex *prometheus.Desc
	lastContact, peers, nodes, containers, gossipAlive       *prometheus.Desc
}

func newSchedulerCollector(sample func() (SchedulerSample, bool), now func() time.Time) *schedulerCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, schedulerSubsystem, name), help, labels, nil)
	}
	return &schedulerCollector{
		sample:       sample,
		now:          now,
		raftState:    d("raft_state", "1 for the raft state this replica is in, 0 for the others.", "state"),
		term:         d("raft_term", "The raft term this replica is in."),
		commitIndex:  d("raft_commit_index", "The highest log index this replica knows to be committed."),
		appliedIndex: d("raft_applied_index", "The highest log index this replica applied to its state; the leader's commit index minus it is the replica's lag."),
		lastLogIndex: d("raft_last_log_index", "The last index in this replica's raft log."),
		lastContact:  d("raft_last_contact_seconds", "Seconds since this follower last heard from the leader (absent on the leader)."),
		peers:        d("raft_peers", "Servers of the raft configuration, by suffrage (voter, nonvoter).", "suffrage"),
		nodes:        d("nodes", "Registered nodes, by status (ready, cordoned, draining, suspect, down).", "status"),
		containers:   d("containers", "Containers of the cluster, by the state their node last reported.", "state"),
		gossipAlive:  d("gossip_members_alive", "Alive members of the gossip pool as this replica sees them, by role.", "role"),
	}
}

func (c *schedulerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.raftState, c.term, c.commitIndex, c.appliedIndex, c.lastLogIndex,
		c.lastContact, c.peers, c.nodes, c.containers, c.gossipAlive} {
		ch <- d
	}
}

func (c *schedulerCollector) Collect(ch chan<- prometheus.Metric) {
	s, ok := c.sample()
	if !ok {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	if r := s.Raft; r != nil {
		for _, st := range raftStates {
			v := 0.0
			if st == r.State {
				v = 1
			}
			gauge(c.raftState, v, st)
		}
		gauge(c.term, float64(r.Term))
		gauge(c.commitIndex, float64(r.CommitIndex))
		gauge(c.appliedIndex, float64(r.AppliedIndex))
		gauge(c.lastLogIndex, float64(r.LastLogIndex))
		if !r.LastContact.IsZero() {
			gauge(c.lastContact, c.now().Sub(r.LastContact).Seconds())
		}
		gauge(c.peers, float64(r.Voters), "voter")
		gauge(c.peers, float64(r.NonVoters), "nonvoter")
	}
	for status, n := range s.Nodes {
		gauge(c.nodes, float64(n), status)
	}
	for state, n := range s.Containers {
		gauge(c.containers, float64(n), state)
	}
	for role, n := range s.GossipAlive {
		gauge(c.gossipAlive, float64(n), role)
	}
}
