package metrics

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

var sampleNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func leaderSample() SchedulerSample {
	return SchedulerSample{
		Raft: &RaftSample{State: "Leader", Term: 4, CommitIndex: 120, AppliedIndex: 119, LastLogIndex: 121, Voters: 3},
		Nodes: map[string]int{
			"ready": 2, "cordoned": 0, "draining": 0, "suspect": 0, "down": 1,
		},
		Containers:  map[string]int{"running": 5, "lost": 1},
		GossipAlive: map[string]int{"agent": 2, "scheduler": 3},
	}
}

func TestSchedulerSampleAtScrape(t *testing.T) {
	follower := leaderSample()
	follower.Raft = &RaftSample{State: "Follower", Term: 4, CommitIndex: 120, AppliedIndex: 100, LastLogIndex: 120,
		LastContact: sampleNow.Add(-1500 * time.Millisecond), Voters: 3, NonVoters: 1}
	noRaft := leaderSample()
	noRaft.Raft, noRaft.GossipAlive = nil, nil

	tests := []struct {
		name   string
		sample SchedulerSample
		ok     bool
		want   string
	}{
		{
			name: "leader", sample: leaderSample(), ok: true,
			want: `
godwit_scheduler_raft_state{state="Candidate"} 0
godwit_scheduler_raft_state{state="Follower"} 0
godwit_scheduler_raft_state{state="Leader"} 1
godwit_scheduler_raft_state{state="Shutdown"} 0
godwit_scheduler_raft_term 4
godwit_scheduler_raft_commit_index 120
godwit_scheduler_raft_applied_index 119
godwit_scheduler_raft_last_log_index 121
godwit_scheduler_raft_peers{suffrage="nonvoter"} 0
godwit_scheduler_raft_peers{suffrage="voter"} 3
godwit_scheduler_nodes{status="cordoned"} 0
godwit_scheduler_nodes{status="down"} 1
godwit_scheduler_nodes{status="draining"} 0
godwit_scheduler_nodes{status="ready"} 2
godwit_scheduler_nodes{status="suspect"} 0
godwit_scheduler_containers{state="lost"} 1
godwit_scheduler_containers{state="running"} 5
godwit_scheduler_gossip_members_alive{role="agent"} 2
godwit_scheduler_gossip_members_alive{role="scheduler"} 3
`,
		},
		{
			name: "follower reports its last contact", sample: follower, ok: true,
			want: `
godwit_scheduler_raft_state{state="Candidate"} 0
godwit_scheduler_raft_state{state="Follower"} 1
godwit_scheduler_raft_state{state="Leader"} 0
godwit_scheduler_raft_state{state="Shutdown"} 0
godwit_scheduler_raft_term 4
godwit_scheduler_raft_commit_index 120
godwit_scheduler_raft_applied_index 100
godwit_scheduler_raft_last_log_index 120
godwit_scheduler_raft_last_contact_seconds 1.5
godwit_scheduler_raft_peers{suffrage="nonvoter"} 1
godwit_scheduler_raft_peers{suffrage="voter"} 3
godwit_scheduler_nodes{status="cordoned"} 0
godwit_scheduler_nodes{status="down"} 1
godwit_scheduler_nodes{status="draining"} 0
godwit_scheduler_nodes{status="ready"} 2
godwit_scheduler_nodes{status="suspect"} 0
godwit_scheduler_containers{state="lost"} 1
godwit_scheduler_containers{state="running"} 5
godwit_scheduler_gossip_members_alive{role="agent"} 2
godwit_scheduler_gossip_members_alive{role="scheduler"} 3
`,
		},
		{
			name: "no raft or gossip view", sample: noRaft, ok: true,
			want: `
godwit_scheduler_nodes{status="cordoned"} 0
godwit_scheduler_nodes{status="down"} 1
godwit_scheduler_nodes{status="draining"} 0
godwit_scheduler_nodes{status="ready"} 2
godwit_scheduler_nodes{status="suspect"} 0
godwit_scheduler_containers{state="lost"} 1
godwit_scheduler_containers{state="running"} 5
`,
		},
		{name: "starting: nothing to report", sample: leaderSample(), ok: false, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newSchedulerCollector(func() (SchedulerSample, bool) { return tt.sample, tt.ok }, func() time.Time { return sampleNow })
			if gotLines, wantLines := samples(exposition(t, c)), samples(tt.want); strings.Join(gotLines, "\n") != strings.Join(wantLines, "\n") {
				t.Errorf("collected:\n%s\nwant:\n%s", strings.Join(gotLines, "\n"), strings.Join(wantLines, "\n"))
			}
		})
	}
}

// exposition is what c exposes, in the text format.
func exposition(t *testing.T, c prometheus.Collector) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// samples are the exposition's sample lines, without HELP and TYPE,
// sorted.
func samples(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	slices.Sort(out)
	return out
}

func TestSchedulerCountsLeadershipAndCalls(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewScheduler(reg, func() (SchedulerSample, bool) { return SchedulerSample{}, false })
	m.LeadershipChanged(true)
	m.LeadershipChanged(false)
	m.LeadershipChanged(true)
	if got := testutil.ToFloat64(m.leadership.WithLabelValues("leader")); got != 2 {
		t.Errorf("became leader: %v, want 2", got)
	}
	if got := testutil.ToFloat64(m.leadership.WithLabelValues("follower")); got != 1 {
		t.Errorf("stopped leading: %v, want 1", got)
	}
	if len(m.ServerOptions()) != 2 {
		t.Errorf("ServerOptions: want the unary and the stream interceptor")
	}
	m.count("/godwit.v1.ClusterService/Run", nil)
	if n, err := testutil.GatherAndCount(reg, "godwit_scheduler_api_requests_total"); err != nil || n != 1 {
		t.Errorf("godwit_scheduler_api_requests_total: %d series (%v), want 1", n, err)
	}
}
