// Package clusterlink is a node agent's link to the cluster: it joins the
// gossip pool as an agent, finds the schedulers among its members,
// registers the node with one of them and then holds the node's lease
// with heartbeats that carry its containers and load.
//
// The lease is the agent's side of fencing. It runs from when the last
// successful registration or heartbeat was sent, not answered, plus the
// lease TTL the scheduler gave, so it always ends before the scheduler's
// view of it, which starts when the message arrives. While it is not
// valid (Check fails) the agent starts, resumes and commits nothing:
// the leader may have declared the node down and placed its containers
// elsewhere. Once it has lapsed only a new registration restores it,
// since the node must learn the current container generations first; a
// heartbeat answered with reregister (the leader does not know the
// node's epoch) ends it at once.
//
//	            register ok                     heartbeat ok (sent before expiry)
//	unregistered ──────────▶ leased ◀──────────────────────────┐
//	     ▲                    │  └─────────────────────────────┘
//	     │  lapsed, or        │ expiry passes, or
//	     └── reregister ◀─────┘ reregister answered
//
// Each registration also tells the node the generation of every
// container the cluster places on it; Placement answers from the last
// one, so that the agent refuses commands with an older generation and
// does not run again a copy the cluster moved away (agent/generation.go).
//
// Any scheduler accepts both calls (it forwards them to the raft
// leader), so the link keeps to the one that answered last and tries the
// others when it fails.
package clusterlink
