package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestAgentContainersAreReadAtEachScrape(t *testing.T) {
	reg := prometheus.NewRegistry()
	counts := ContainerCounts{"running": 3, "migrating": 0}
	NewAgent(reg, func() ContainerCounts { return counts })
	const header = `
# HELP godwit_agent_containers Containers on this node, by the state the agent holds them in.
# TYPE godwit_agent_containers gauge
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(header+`
godwit_agent_containers{state="migrating"} 0
godwit_agent_containers{state="running"} 3
`), "godwit_agent_containers"); err != nil {
		t.Fatal(err)
	}
	counts = ContainerCounts{"running": 2, "migrating": 1}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(header+`
godwit_agent_containers{state="migrating"} 1
godwit_agent_containers{state="running"} 2
`), "godwit_agent_containers"); err != nil {
		t.Fatalf("the second scrape: %v", err)
	}
}

func TestAgentMigrationEvents(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewAgent(reg, nil)
	m.MigrationStarted("source")
	m.MigrationStarted("source")
	m.MigrationStarted("destination")
	m.MigrationEnded(MigrationEnd{
		Role: "source", Strategy: "stream", Outcome: OutcomeDone,
		Phases:   map[string]time.Duration{"prepare": 20 * time.Millisecond, "dump": 300 * time.Millisecond},
		Downtime: 700 * time.Millisecond,
	})
	m.MigrationEnded(MigrationEnd{
		Role: "source", Strategy: "stop-copy", Outcome: OutcomeAborted,
		Phases: map[string]time.Duration{"prepare": 10 * time.Millisecond},
		// Aborted before the freeze: no downtime to observe.
	})
	m.MigrationEnded(MigrationEnd{Role: "destination", Strategy: "stream", Outcome: OutcomeDone,
		Phases: map[string]time.Duration{"restore": 400 * time.Millisecond}})
	m.MigrationTransfer("checkpoint", 3<<20)
	m.MigrationTransfer("pages", 256<<20)
	m.Checkpoint(OutcomeDone)
	m.Checkpoint(OutcomeFailed)
	m.Checkpoint(OutcomeDone)

	counters := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"started as source", m.migrationsStarted.WithLabelValues("source"), 2},
		{"started as destination", m.migrationsStarted.WithLabelValues("destination"), 1},
		{"stream done as source", m.migrationsFinished.WithLabelValues("source", "stream", OutcomeDone), 1},
		{"stop-copy aborted as source", m.migrationsFinished.WithLabelValues("source", "stop-copy", OutcomeAborted), 1},
		{"stream done as destination", m.migrationsFinished.WithLabelValues("destination", "stream", OutcomeDone), 1},
		{"checkpoints done", m.checkpoints.WithLabelValues(OutcomeDone), 2},
		{"checkpoints failed", m.checkpoints.WithLabelValues(OutcomeFailed), 1},
	}
	for _, c := range counters {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}

	// One downtime sample (the done stream move), none for the abort
	// before the freeze; it falls in the 0.8 s bucket, not the 0.4 s one.
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP godwit_agent_migration_downtime_seconds How long a migrated container ran nowhere, measured on its source: from the freeze to the destination running it (done) or the source running it again (aborted), by strategy and outcome.
# TYPE godwit_agent_migration_downtime_seconds histogram
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="0.05"} 0
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="0.1"} 0
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="0.2"} 0
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="0.4"} 0
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="0.8"} 1
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="1.6"} 1
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="3.2"} 1
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="6.4"} 1
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="12.8"} 1
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="25.6"} 1
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="51.2"} 1
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="102.4"} 1
godwit_agent_migration_downtime_seconds_bucket{outcome="done",strategy="stream",le="+Inf"} 1
godwit_agent_migration_downtime_seconds_sum{outcome="done",strategy="stream"} 0.7
godwit_agent_migration_downtime_seconds_count{outcome="done",strategy="stream"} 1
`), "godwit_agent_migration_downtime_seconds"); err != nil {
		t.Error(err)
	}

	// Phases: one series per role and phase seen.
	if n := testutil.CollectAndCount(m.phaseSeconds); n != 3 {
		t.Errorf("%d phase series, want 3: source prepare (the abort's too), source dump, destination restore", n)
	}
	if n := testutil.CollectAndCount(m.transferBytes); n != 2 {
		t.Errorf("%d transfer series, want 2 (checkpoint, pages)", n)
	}
}

// The names, types and help follow Prometheus's conventions
// (promlint): units in names, _total on counters.
func TestMetricsPassLint(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := NewAgent(reg, func() ContainerCounts { return ContainerCounts{"running": 1} })
	a.MigrationStarted("source")
	a.MigrationEnded(MigrationEnd{Role: "source", Strategy: "stop-copy", Outcome: OutcomeDone,
		Phases: map[string]time.Duration{"dump": time.Second}, Downtime: time.Second})
	a.MigrationTransfer("checkpoint", 1<<20)
	a.Checkpoint(OutcomeDone)
	NewRPC(reg, "agent").count("/godwit.v1.AgentService/NodeInfo", nil)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}

	sreg := prometheus.NewRegistry()
	s := NewScheduler(sreg, func() (SchedulerSample, bool) { return leaderSample(), true })
	s.LeadershipChanged(true)
	s.count("/godwit.v1.ClusterService/Run", nil)
	if problems, err = testutil.GatherAndLint(sreg); err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
