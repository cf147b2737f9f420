// Package metrics owns what godwit's daemons tell Prometheus: the
// collectors of the agent (Agent) and of a scheduler replica (Scheduler),
// the count of gRPC API calls by method and status code (RPC), and the
// HTTP endpoint that serves them (Serve: /metrics, and /healthz for a
// liveness probe).
//
// Each daemon has its own registry (NewRegistry), never Prometheus's
// global default, so that two daemons in one process (godwit agent --dev,
// tests) never share or collide on a metric. Every metric is named
// godwit_<daemon>_<what>, in base units (seconds, bytes).
//
// State that the daemon already holds (containers by state, raft's
// indexes, nodes by status) is read when Prometheus scrapes, through a
// callback given at construction: no goroutine polls it, and a scrape
// shows the state as it is. Events (a migration ended, an API call
// returned) are counted as they happen, through methods that are safe on
// a nil receiver, so that a daemon started without --metrics calls them
// unchanged.
//
// The package imports neither the agent nor the scheduler: they hand it
// plain values (strings, durations, counts), and cmd/godwit converts.
// docs/operations.md lists every metric for the operator.
package metrics
