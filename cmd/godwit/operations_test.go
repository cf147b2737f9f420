package main

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/internal/config"
	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/migrate"
	"github.com/godwit/godwit/scheduler/membership"
	"github.com/godwit/godwit/scheduler/server"
	"github.com/godwit/godwit/scheduler/state"
)

func TestSchedulerSample(t *testing.T) {
	store := state.NewStore()
	err := store.Write(1, time.Now(), func(tx *state.Txn) error {
		for _, n := range []*state.Node{
			{Name: "n1", Schedulability: state.Schedulable, Health: state.HealthAlive},
			{Name: "n2", Schedulability: state.Cordoned, Health: state.HealthAlive},
			{Name: "n3", Schedulability: state.Schedulable, Health: state.HealthDown},
		} {
			if err := tx.PutNode(n); err != nil {
				return err
			}
		}
		for i, r := range []state.ReportedState{state.ReportedRunning, state.ReportedRunning, state.ReportedLost} {
			c := &state.Container{ID: string(rune('a' + i)), Name: string(rune('a' + i)), Node: "n1", Reported: r,
				IP: netip.AddrFrom4([4]byte{10, 88, 0, byte(i + 2)})}
			if err := tx.PutContainer(c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	contact := time.Now().Add(-time.Second)
	st := &server.RaftStatus{State: "Follower", Term: 3, CommitIndex: 10, AppliedIndex: 9, LastLogIndex: 10, LastContact: contact,
		Servers: []server.RaftPeer{{ID: "s1", Voter: true}, {ID: "s2", Voter: true}, {ID: "s3"}}}
	members := []membership.Member{
		{Name: "s1", Role: membership.RoleScheduler, State: membership.MemberAlive},
		{Name: "n1", Role: membership.RoleAgent, State: membership.MemberAlive},
		{Name: "n3", Role: membership.RoleAgent, State: membership.MemberDead},
		{Name: "old", Role: "", State: membership.MemberAlive}, // metadata unreadable: no role to count it under
	}

	s := schedulerSample(store.Snapshot(), st, members)
	wantNodes := map[string]int{"ready": 1, "cordoned": 1, "draining": 0, "suspect": 0, "down": 1}
	wantContainers := map[string]int{"pending": 0, "created": 0, "running": 2, "stopped": 0, "exited": 0, "migrating": 0, "lost": 1}
	for _, c := range []struct {
		what      string
		got, want map[string]int
	}{
		{"nodes", s.Nodes, wantNodes},
		{"containers", s.Containers, wantContainers},
		{"gossip", s.GossipAlive, map[string]int{"agent": 1, "scheduler": 1}},
	} {
		if len(c.got) != len(c.want) {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
			continue
		}
		for k, n := range c.want {
			if c.got[k] != n {
				t.Errorf("%s %s: %d, want %d", c.what, k, c.got[k], n)
			}
		}
	}
	want := metrics.RaftSample{State: "Follower", Term: 3, CommitIndex: 10, AppliedIndex: 9, LastLogIndex: 10, LastContact: contact, Voters: 2, NonVoters: 1}
	if s.Raft == nil || *s.Raft != want {
		t.Errorf("raft %+v, want %+v", s.Raft, want)
	}

	// Without a raft status or members, their metrics are left out.
	if s := schedulerSample(store.Snapshot(), nil, nil); s.Raft != nil || s.GossipAlive != nil {
		t.Errorf("sample without raft or gossip: %+v, want both nil", s)
	}
}

func TestNoMetricsWithoutTheFlag(t *testing.T) {
	am, err := newAgentMetrics("", slog.New(slog.DiscardHandler))
	if err != nil || am != nil {
		t.Fatalf("newAgentMetrics without an address: %v, %v; want nil, nil", am, err)
	}
	// A nil agentMetrics gives the agent no observer (a nil interface,
	// not a typed nil it would call) and the server no interceptors.
	if obs := am.observer(); obs != nil {
		t.Errorf("observer without --metrics: %#v, want nil", obs)
	}
	if opts := am.serverOptions(); opts != nil {
		t.Errorf("server options without --metrics: %d, want none", len(opts))
	}
	sm, err := newSchedulerMetrics("", slog.New(slog.DiscardHandler))
	if err != nil || sm != nil {
		t.Fatalf("newSchedulerMetrics without an address: %v, %v; want nil, nil", sm, err)
	}
	if c := sm.counters(); c != nil {
		t.Errorf("scheduler counters without --metrics: %v, want nil", c)
	}
}

// The agent's observations reach its endpoint under the metrics' names.
func TestAgentMetricsEndpoint(t *testing.T) {
	am, err := newAgentMetrics("127.0.0.1:0", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	obs := am.observer()
	obs.MigrationStarted(migrate.RoleSource)
	obs.MigrationEnded(agent.MigrationEnd{Role: migrate.RoleSource, Strategy: migrate.StopCopy, Outcome: migrate.PhaseAborted,
		Phases: map[migrate.Phase]time.Duration{migrate.PhaseDump: time.Second}, Downtime: 2 * time.Second})
	obs.MigrationTransfer(agent.TransferCheckpoint, 1<<20)
	obs.CheckpointDone(errors.New("criu failed"))
	ctx := t.Context()
	am.serve(ctx, nil) // no agent: no container counts, the rest served

	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + am.srv.Addr().String() + metrics.MetricsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		`godwit_agent_migrations_started_total{role="source"} 1`,
		`godwit_agent_migrations_finished_total{outcome="aborted",role="source",strategy="stop-copy"} 1`,
		`godwit_agent_migration_downtime_seconds_sum{outcome="aborted",strategy="stop-copy"} 2`,
		`godwit_agent_migration_phase_seconds_count{phase="dump",role="source"} 1`,
		`godwit_agent_migration_transfer_bytes_sum{kind="checkpoint"} 1.048576e+06`,
		`godwit_agent_checkpoints_total{outcome="failed"} 1`,
	} {
		if !strings.Contains(string(body), line) {
			t.Errorf("no %q in the scrape:\n%s", line, body)
		}
	}
	if strings.Contains(string(body), "godwit_agent_containers{") {
		t.Errorf("container counts before the agent started:\n%s", body)
	}
}

// The daemons take --config: a key that is not one of their flags stops
// them before they start, naming it.
func TestDaemonsTakeAConfigFile(t *testing.T) {
	for _, daemon := range []string{"agent", "scheduler"} {
		t.Run(daemon, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), daemon+".yaml")
			if err := os.WriteFile(path, []byte("name: n1\ndata-dir: /var/lib/godwit\nmetrics: 127.0.0.1:0\nlisten-addr: 1.2.3.4:1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			root := newRootCommand()
			root.SetArgs([]string{daemon, "--config", path})
			root.SetOut(io.Discard)
			root.SetErr(io.Discard)
			err := root.Execute()
			if !errors.Is(err, config.ErrUnknownKey) || !strings.Contains(err.Error(), `"listen-addr"`) {
				t.Fatalf("%s with an unknown key: %v, want ErrUnknownKey naming listen-addr", daemon, err)
			}
			for _, key := range []string{"data-dir", "join", "metrics", "tls-ca"} {
				if !strings.Contains(err.Error(), key) {
					t.Errorf("the valid keys listed do not include %s: %v", key, err)
				}
			}
		})
	}
}

// The example files of deploy/ set only flags the daemons have, with
// values those flags take.
func TestDeployExamplesMatchTheFlags(t *testing.T) {
	for _, c := range []struct{ daemon, file, flag, want string }{
		{"agent", "../../deploy/agent.yaml", "listen", "10.0.0.21:7701"},
		{"scheduler", "../../deploy/scheduler.yaml", "bootstrap-expect", "3"},
	} {
		t.Run(c.daemon, func(t *testing.T) {
			root := newRootCommand()
			cmd, _, err := root.Find([]string{c.daemon})
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.ParseFlags(nil); err != nil {
				t.Fatal(err)
			}
			if err := config.Apply(cmd, c.file); err != nil {
				t.Fatalf("%s: %v", c.file, err)
			}
			if got := cmd.Flags().Lookup(c.flag).Value.String(); got != c.want {
				t.Errorf("--%s from %s: %q, want %q", c.flag, c.file, got, c.want)
			}
			if got := cmd.Flags().Lookup("join").Value.String(); !strings.Contains(got, ":7712") {
				t.Errorf("--join from %s: %q, want the schedulers' gossip addresses", c.file, got)
			}
		})
	}
}
