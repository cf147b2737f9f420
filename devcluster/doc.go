// Package devcluster builds a godwit cluster on one machine: test hosts
// that are network namespaces on a bridge, each with its own address, and
// real `godwit agent` and `godwit scheduler` processes inside them. Cluster
// tests, benchmarks and `godwit dev up` use it.
//
// # Topology
//
// New creates the bridge gwd-NAME in the caller's network namespace (the
// root namespace, where tests run) with the first address of the
// cluster's subnet. AddHost creates a host: a namespace pinned at
// /run/netns/gwd-NAME-HOST (so `ip -n gwd-NAME-HOST ...` inspects it),
// with lo up, ip_forward=1, and eth0 holding the host's address, the end
// of a veth whose root end (gwdHASH, aliased "godwit devcluster
// NAME/HOST") is a port of the bridge; its default route is via the
// bridge's address. The root namespace and every host reach every host
// over the bridge.
//
// A host shares every other namespace with the root: the mount namespace
// (so /sys and the cgroup mounts stay as runc needs them, which
// `ip netns exec` would break), cgroups and the process table. Commands
// run in a host through `nsenter --net` (Host.Exec, Host.Command), and a
// test can open a TCP connection from a host with Host.Dial.
//
// # Containers and their routes
//
// Every agent gets the same --container-cidr, the cluster's
// ContainerCIDR: a container keeps its IP when it moves, and an agent
// accepts only addresses in its own CIDR. Each agent's address
// management is per node, though, so two agents left to choose would give
// out the same address: tests give each container an address from
// Cluster.ContainerIP, as the scheduler will allocate them cluster-wide.
//
// Routing is host-gw, as in production (DESIGN.md section 7). The agent
// on the host running a container routes its /32 to the container's veth
// (metric 0). Every other host, and the root namespace, need a route
// CONTAINER/32 via that host's address: Route sets it (metric 100, so an
// agent's own route wins on its host and neither has to delete the
// other while a container moves), and a test calls Route again once a
// container has moved. The bridge needs no proxy ARP: hosts route to each
// other's addresses, which they find by ordinary ARP.
//
// Where the kernel passes bridged traffic through iptables
// (net.bridge.bridge-nf-call-iptables=1, with br_netfilter loaded), the
// root namespace's FORWARD chain sees traffic between hosts: a DROP
// policy there (Docker sets one) cuts the hosts off from each other.
//
// Fault tests cut the link between two hosts with Cluster.Cut (every
// packet between their addresses dropped, in their namespaces, so that
// connections hang as on a real partition) and restore it with Heal; the
// root namespace still reaches both.
//
// # TLS
//
// A cluster is mutual TLS by default, as a production one is. New creates
// a throwaway CA in WORKDIR/_tls (ca.pem, ca-key.pem) and an operator's
// client certificate (WORKDIR/_tls/operator); each host's agent gets a
// node certificate of that CA with its node name and its host's address
// (HOSTDIR/tls), issued at its first start and kept across restarts, and
// serves its API and data connections with it, sending migrations to the
// other agents with it too. Agent.Client talks TLS with the operator's
// certificate; TLSFiles and TLSEnv give the same files to the CLI.
// AgentOptions.Insecure starts an agent in plaintext instead, and
// AgentOptions.CA gives an agent a certificate of another CA, so that it
// and the cluster's agents refuse each other.
//
// # Schedulers
//
// Host.StartScheduler runs a `godwit scheduler` replica in a host, beside
// or instead of an agent: its API on HOSTADDR:7710, raft on 7711, gossip
// on 7712, its raft data in HOSTDIR/scheduler (kept across restarts), its
// name CLUSTER-HOST.sched (a dot, which no host name has, so that it never
// equals an agent's node name in the one gossip pool they share), with
// --test-timings, a scheduler certificate of the cluster's CA naming the
// host's address and the cluster's gossip key (GossipKeyFile, created
// with the cluster), or --insecure. AgentOptions.Join makes an agent join
// the schedulers' gossip pool and register with them. WaitLeader waits
// until the schedulers agree on a leader. Close stops the schedulers after
// the agents.
//
// # Detached clusters
//
// `godwit dev up` builds a cluster and exits, leaving it running: Detach
// marks the cluster's record detached and releases the lock without
// removing anything. New then refuses the name (ErrDetached) instead of
// sweeping it as an interrupted run's, and Remove (`godwit dev down`)
// removes it. SyncRoutes keeps the routes of a cluster from its name
// alone, for the process that follows a detached cluster's containers.
//
// # Names, leftovers and cleanup
//
// Everything a cluster creates carries its name: the bridge, the
// namespaces, the agents' node names CLUSTER-HOST (and so their cgroups
// /godwit/CLUSTER-HOST), its work dir. A cluster holds a lock,
// /run/godwit-devcluster/NAME.lock, and records its work dir and hosts in
// /run/godwit-devcluster/NAME.json before creating anything. The kernel
// drops the lock when the process dies, however it dies, so New knows
// that a record with a free lock is an interrupted run's, and removes
// everything it names before it creates anything: an interrupted run
// never poisons the next one. Close removes everything, through the
// agents where they run and without them where they do not; Remove does
// the same for a cluster whose process is gone.
package devcluster
