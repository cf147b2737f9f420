// Package network owns the per-container network of one node: a network
// namespace created by the agent and pinned by a bind mount under the run
// dir (so runc can be given its path and it outlives agent restarts), a veth
// pair between that namespace and the node, the container's address, its
// default route, and the node's host route to it.
//
// The model is host-gw without a bridge: the container holds its IP as a /32
// on eth0 with `default dev eth0`; the node's end of the veth answers ARP by
// proxy (proxy_arp=1), the node forwards (ip_forward=1), and the node routes
// the container's /32 to the veth. Other nodes will route the /32 via this
// node's address, so an IP can move with its container. docs/networking.md
// explains the model.
//
// Addresses come from the agent's --container-cidr through a small IPAM that
// persists its reservations in <stateDir>/ipam.json, so a restarted agent
// never hands out an address still in use.
//
// A container that is checkpointed and stopped can be detached: its
// namespace, veth and host route go while its address stays reserved, so
// another agent sharing the node's namespace can route that address for a
// while, and a later Setup of the container re-creates them with the same
// address, which its restored TCP connections are bound to.
//
// Every kernel operation acts on the network namespace the Manager was
// created for (the node's), never on whatever namespace the calling thread
// happens to be in: several agents share one kernel in tests, each in its own
// namespace. Namespace switches happen on a locked OS thread that is thrown
// away if it cannot be switched back. The package uses netlink, never the
// `ip` command.
package network
