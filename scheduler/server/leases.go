package server

import (
	"sync"
	"time"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// leases are the leader's record of when each node last renewed its
// lease. They are soft state: never in raft, rebuilt by each new leader
// (reset), so a heartbeat costs no raft write.
type leases struct {
	mu      sync.Mutex
	renewed map[string]time.Time
}

func newLeases() *leases { return &leases{renewed: map[string]time.Time{}} }

// reset gives every node a lease renewed at now.
func (l *leases) reset(now time.Time, nodes []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.renewed = make(map[string]time.Time, len(nodes))
	for _, n := range nodes {
		l.renewed[n] = now
	}
}

// renew records a heartbeat from node at now.
func (l *leases) renew(node string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.renewed[node] = now
}

// gossipFailed ends node's lease now: the gossip pool found it dead or
// gone, which is faster than waiting for the lease to run out.
func (l *leases) gossipFailed(node string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.renewed[node]; ok {
		l.renewed[node] = time.Time{}
	}
}

// expired reports whether node's lease has run out at now, and when it
// was last renewed (zero: ended by gossip, or never renewed under this
// leader: then it counts as renewed at the first check).
func (l *leases) expired(node string, now time.Time, ttl time.Duration) (bool, time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.renewed[node]
	if !ok {
		l.renewed[node] = now
		return false, now
	}
	if at.IsZero() {
		// Ended by gossip: expired now, down after the usual delay from
		// when its lease would have started.
		l.renewed[node] = now.Add(-ttl)
		return true, now.Add(-ttl)
	}
	return now.Sub(at) > ttl, at
}

// loads holds the latest load sample of each node: soft state for
// `node ls` and, later, the balancer.
type loads struct {
	mu     sync.Mutex
	byNode map[string]*pb.NodeLoad
}

func newLoads() *loads { return &loads{byNode: map[string]*pb.NodeLoad{}} }

func (l *loads) set(node string, load *pb.NodeLoad) {
	if load == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.byNode[node] = load
}

func (l *loads) get(node string) *pb.NodeLoad {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byNode[node]
}

// unknownSeen remembers the containers a node reported that the cluster
// does not know, so that each is recorded once per leader, not at every
// heartbeat.
type unknownSeen struct {
	mu   sync.Mutex
	seen map[string]bool
}

func newUnknownSeen() *unknownSeen { return &unknownSeen{seen: map[string]bool{}} }

// first reports whether node reports container for the first time.
func (u *unknownSeen) first(node, container string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := node + "/" + container
	if u.seen[k] {
		return false
	}
	u.seen[k] = true
	return true
}
