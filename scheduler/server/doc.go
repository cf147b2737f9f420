// Package server runs one scheduler replica: raft over a mutual-TLS
// transport with durable bolt storage (raft*.go), the gossip pool
// (scheduler/membership), and the gRPC APIs: ClusterService for
// operators and NodeService for agents.
//
// Who does what:
//
//   - Any replica accepts any call. The policy (internal/authz) is checked
//     where the call arrives; every call but ClusterStatus and Events is
//     then forwarded, as the bytes it arrived as, to the leader
//     (forward.go), naming the original caller in its metadata, which the
//     leader believes only from a scheduler's certificate. So every read
//     that decides anything sees the committed state, and every write is
//     proposed by the leader.
//   - The leader (leader.go) records the cluster CIDR once, adds the
//     schedulers that appear in the gossip pool to raft, removes the ones
//     that left it on purpose, and moves nodes whose lease ran out to
//     suspect, then down (Timing).
//   - Leases and load samples are soft state on the leader (leases.go):
//     a heartbeat costs no raft write unless it reports a change.
//   - Placement (scheduler/placement) is pure; the leader's Placer
//     (placer.go) decides the waiting runs in order on one snapshot,
//     reserving each decision before the next, commits them as one
//     PlaceContainers entry, then each run has its node start the
//     container under the cluster's ID and address.
//   - Migrations and drains are the coordinator's (scheduler/coordinator),
//     which runs for each leadership term beside the leader's duties.
//   - The balancer (balancer.go) plans every interval while its policy,
//     in raft, is enabled (scheduler/balance), from the containers' load
//     samples the heartbeats bring (soft state), and starts its moves
//     through the coordinator; balance_api.go serves its status, a dry
//     run, its policy and its history.
//
// The first --bootstrap-expect replicas bootstrap raft together once
// they have met in the gossip pool, with the same server list on each.
package server
