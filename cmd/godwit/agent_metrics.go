package main

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/internal/metrics"
	"github.com/godwit/godwit/migrate"
)

// agentMetrics is an agent's --metrics: its own registry, the migration
// and checkpoint counters the agent feeds through agent.Config.Observer,
// the API's call counts, and the HTTP endpoint. A nil *agentMetrics (no
// --metrics) does nothing.
type agentMetrics struct {
	m   *metrics.Agent
	rpc *metrics.RPC
	srv *metrics.Server
	// agent is the running agent, read at each scrape for its
	// containers; nil until it has started.
	agent atomic.Pointer[agent.Agent]
	log   *slog.Logger
}

// newAgentMetrics listens on addr for the agent's metrics; "" (no
// --metrics) returns nil. It fails when addr cannot be listened on, so
// that a wrong address stops the agent before it starts.
func newAgentMetrics(addr string, log *slog.Logger) (*agentMetrics, error) {
	if addr == "" {
		return nil, nil
	}
	am := &agentMetrics{log: log}
	reg := metrics.NewRegistry()
	am.m = metrics.NewAgent(reg, am.containers)
	am.rpc = metrics.NewRPC(reg, "agent")
	srv, err := metrics.Listen(addr, reg, log)
	if err != nil {
		return nil, err
	}
	am.srv = srv
	return am, nil
}

// observer is what the agent tells of its migrations and checkpoints;
// nil without --metrics.
func (am *agentMetrics) observer() agent.Observer {
	if am == nil {
		return nil
	}
	return agentObserver{am.m}
}

// serverOptions count the API's calls; none without --metrics.
func (am *agentMetrics) serverOptions() []grpc.ServerOption {
	if am == nil {
		return nil
	}
	return am.rpc.ServerOptions()
}

// serve serves the endpoint for agent a until ctx ends.
func (am *agentMetrics) serve(ctx context.Context, a *agent.Agent) {
	if am == nil {
		return
	}
	am.agent.Store(a)
	go func() {
		if err := am.srv.Serve(ctx); err != nil {
			am.log.Error("metrics endpoint stopped: Prometheus can no longer scrape this agent", "err", err)
		}
	}()
}

func (am *agentMetrics) containers() metrics.ContainerCounts {
	a := am.agent.Load()
	if a == nil {
		return nil
	}
	counts := a.ContainerCounts()
	out := make(metrics.ContainerCounts, len(counts))
	for state, n := range counts {
		out[string(state)] = n
	}
	return out
}

// agentObserver turns the agent's observations into its metrics.
type agentObserver struct{ m *metrics.Agent }

var _ agent.Observer = agentObserver{}

func (o agentObserver) MigrationStarted(role string) { o.m.MigrationStarted(role) }

func (o agentObserver) MigrationEnded(e agent.MigrationEnd) {
	outcome := metrics.OutcomeDone
	if e.Outcome != migrate.PhaseDone {
		outcome = metrics.OutcomeAborted
	}
	phases := make(map[string]time.Duration, len(e.Phases))
	for p, d := range e.Phases {
		phases[string(p)] = d
	}
	o.m.MigrationEnded(metrics.MigrationEnd{
		Role: e.Role, Strategy: string(e.Strategy), Outcome: outcome, Phases: phases, Downtime: e.Downtime,
	})
}

func (o agentObserver) MigrationTransfer(kind string, n int64) { o.m.MigrationTransfer(kind, n) }

func (o agentObserver) CheckpointDone(err error) {
	if err != nil {
		o.m.Checkpoint(metrics.OutcomeFailed)
		return
	}
	o.m.Checkpoint(metrics.OutcomeDone)
}
