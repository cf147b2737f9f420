// Package agent is godwit's node agent: it owns one node's images,
// snapshots, containers and container networking, and serves them over the
// AgentService gRPC API (proto/godwit/v1).
//
// The agent composes the packages below it: image (content-addressed image
// store), snapshot (copy-on-write root filesystems), runtime (OCI bundles,
// runc and the per-container shim) and network (netns, veth, routes). It
// keeps one record per container on disk, so that a restarted agent
// re-adopts the containers its shims kept running.
//
// Every per-node path lives under the node's data dir or run dir (runc
// root, cgroup parent, netns mounts), so several agents can share one kernel
// in tests.
//
// In a cluster the agent reports itself to the scheduler through
// agent/clusterlink (RegisterFacts, HeartbeatReport: its containers and
// their load, sampled from cgroups) and checks the link's lease before it
// makes anything run (Config.Fence, fence.go). Commands carry their
// container's generation, and the agent refuses stale ones
// (generation.go).
package agent
