package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

const agentSubsystem = "agent"

// Histogram buckets of the agent's migration metrics, in base units.
var (
	// downtimeBuckets run from 50 ms (a post-copy switch) to about 100 s
	// (a stop-and-copy of many GiB), doubling.
	downtimeBuckets = prometheus.ExponentialBuckets(downtimeFirstBucket, 2, downtimeBucketCount)
	// phaseBuckets run from 10 ms to about 5 minutes, doubling: a
	// prepare takes milliseconds, a transfer of a large container
	// minutes.
	phaseBuckets = prometheus.ExponentialBuckets(phaseFirstBucket, 2, phaseBucketCount)
	// bytesBuckets run from 64 KiB (an idle container's checkpoint
	// without memory worth the name) to 64 GiB, by fours.
	bytesBuckets = prometheus.ExponentialBuckets(bytesFirstBucket, 4, bytesBucketCount)
)

const (
	downtimeFirstBucket = 0.05
	downtimeBucketCount = 12
	phaseFirstBucket    = 0.01
	phaseBucketCount    = 16
	bytesFirstBucket    = 64 << 10
	bytesBucketCount    = 11
)

// The outcomes of a migration and of a checkpoint, as label values.
const (
	OutcomeDone    = "done"
	OutcomeAborted = "aborted"
	OutcomeFailed  = "failed"
)

// Agent is a node agent's metrics. Its event methods are safe for
// concurrent use and do nothing on a nil *Agent.
type Agent struct {
	migrationsStarted  *prometheus.CounterVec
	migrationsFinished *prometheus.CounterVec
	phaseSeconds       *prometheus.HistogramVec
	downtimeSeconds    *prometheus.HistogramVec
	transferBytes      *prometheus.HistogramVec
	checkpoints        *prometheus.CounterVec
}

// ContainerCounts is how many containers the agent holds, by state
// (created, running, stopped, exited, checkpointed, migrating). The
// callback given to NewAgent returns every state it knows, zero counts
// included, so that a state that empties reads 0 rather than vanishing.
type ContainerCounts map[string]int

// NewAgent registers the agent's metrics in reg. containers is called at
// each scrape for godwit_agent_containers{state}; it must be quick and
// must not block on a container busy in a long operation (a checkpoint,
// a migration). A nil containers leaves that metric out.
func NewAgent(reg prometheus.Registerer, containers func() ContainerCounts) *Agent {
	m := &Agent{
		migrationsStarted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: agentSubsystem,
			Name: "migrations_started_total",
			Help: "Migrations this agent took part in, by its role (source or destination), counted at its first step.",
		}, []string{"role"}),
		migrationsFinished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: agentSubsystem,
			Name: "migrations_finished_total",
			Help: "Migrations whose record on this agent ended, by role, strategy and outcome (done or aborted).",
		}, []string{"role", "strategy", "outcome"}),
		phaseSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: agentSubsystem,
			Name:    "migration_phase_seconds",
			Help:    "How long each phase of a finished migration lasted in this agent's record, by role and phase.",
			Buckets: phaseBuckets,
		}, []string{"role", "phase"}),
		downtimeSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: agentSubsystem,
			Name:    "migration_downtime_seconds",
			Help:    "How long a migrated container ran nowhere, measured on its source: from the freeze to the destination running it (done) or the source running it again (aborted), by strategy and outcome.",
			Buckets: downtimeBuckets,
		}, []string{"strategy", "outcome"}),
		transferBytes: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: agentSubsystem,
			Name:    "migration_transfer_bytes",
			Help:    "Bytes of each completed transfer a migration's source sent, by kind: checkpoint (CRIU images and rootfs changes) or pages (memory streamed beside CRIU: stream and post-copy).",
			Buckets: bytesBuckets,
		}, []string{"kind"}),
		checkpoints: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: agentSubsystem,
			Name: "checkpoints_total",
			Help: "Checkpoints an operator asked this agent for (godwit checkpoint), by outcome (done or failed); a migration's dump is not one.",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.migrationsStarted, m.migrationsFinished, m.phaseSeconds, m.downtimeSeconds, m.transferBytes, m.checkpoints)
	if containers != nil {
		reg.MustRegister(&countsCollector{
			desc: prometheus.NewDesc(prometheus.BuildFQName(namespace, agentSubsystem, "containers"),
				"Containers on this node, by the state the agent holds them in.", []string{"state"}, nil),
			counts: func() map[string]int { return containers() },
		})
	}
	return m
}

// MigrationStarted counts a migration this agent records for the first
// time, as role.
func (m *Agent) MigrationStarted(role string) {
	if m == nil {
		return
	}
	m.migrationsStarted.WithLabelValues(role).Inc()
}

// MigrationEnd is one agent's account of a migration that ended.
type MigrationEnd struct {
	Role, Strategy string
	// Outcome is OutcomeDone or OutcomeAborted.
	Outcome string
	// Phases is how long each phase lasted, by phase name.
	Phases map[string]time.Duration
	// Downtime is how long the container ran nowhere; zero when this
	// agent did not see it (a destination, or a migration aborted before
	// the freeze), and then not observed.
	Downtime time.Duration
}

// MigrationEnded counts a migration whose record on this agent ended and
// observes its phases and downtime.
func (m *Agent) MigrationEnded(e MigrationEnd) {
	if m == nil {
		return
	}
	m.migrationsFinished.WithLabelValues(e.Role, e.Strategy, e.Outcome).Inc()
	for phase, d := range e.Phases {
		m.phaseSeconds.WithLabelValues(e.Role, phase).Observe(d.Seconds())
	}
	if e.Downtime > 0 {
		m.downtimeSeconds.WithLabelValues(e.Strategy, e.Outcome).Observe(e.Downtime.Seconds())
	}
}

// MigrationTransfer observes one completed transfer of a migration's
// source: n bytes of kind ("checkpoint" or "pages").
func (m *Agent) MigrationTransfer(kind string, n int64) {
	if m == nil {
		return
	}
	m.transferBytes.WithLabelValues(kind).Observe(float64(n))
}

// Checkpoint counts a checkpoint an operator asked for, by outcome
// (OutcomeDone or OutcomeFailed).
func (m *Agent) Checkpoint(outcome string) {
	if m == nil {
		return
	}
	m.checkpoints.WithLabelValues(outcome).Inc()
}

// countsCollector is a gauge vector read from a callback at each scrape:
// one sample per key.
type countsCollector struct {
	desc   *prometheus.Desc
	counts func() map[string]int
}

func (c *countsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *countsCollector) Collect(ch chan<- prometheus.Metric) {
	for label, n := range c.counts() {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), label)
	}
}
