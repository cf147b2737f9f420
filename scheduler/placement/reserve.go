package placement

import "github.com/godwit/godwit/scheduler/state"

// Reservations are what containers placed but not committed yet hold on
// their nodes. The FSM does not check capacity, so a leader that decides
// a placement before the previous ones are in its state (several
// decisions on one snapshot, for one raft entry; or a batch decided while
// the last one commits) adds each decision here and decides the next on
// Reserve(snapshot, r): no two decisions count on the same room.
//
// The zero value holds nothing. Reservations are not safe for concurrent
// use: the leader serialises its decisions anyway.
type Reservations struct {
	nodes map[string]reservation
}

// reservation is what one node holds for containers not committed yet.
type reservation struct {
	resources state.Resources
	count     int
}

// Add reserves a container's request on node, as the state counts it
// once the container is committed: its effective request
// (EffectiveRequest), and one container.
func (r *Reservations) Add(node string, request state.Resources) {
	if r.nodes == nil {
		r.nodes = map[string]reservation{}
	}
	res := r.nodes[node]
	res.resources = res.resources.Add(EffectiveRequest(request))
	res.count++
	r.nodes[node] = res
}

// Remove takes back what Add reserved for a container on node: its
// entry committed (the state holds it now) or failed. Removing what was
// not added is a programming mistake; Remove ignores a node that holds
// nothing.
func (r *Reservations) Remove(node string, request state.Resources) {
	res, ok := r.nodes[node]
	if !ok {
		return
	}
	if res.count--; res.count <= 0 {
		delete(r.nodes, node)
		return
	}
	res.resources = res.resources.Sub(EffectiveRequest(request))
	r.nodes[node] = res
}

// Len returns how many containers are reserved.
func (r *Reservations) Len() int {
	n := 0
	for _, res := range r.nodes {
		n += res.count
	}
	return n
}

// Incoming returns reservations holding, on each node, the room that
// the open moves to it promised: a moving container counts on its
// source until its move commits, and its destination must not give that
// room to anything else meanwhile. Deciders that may run beside moves
// (placing new containers, choosing a move's destination, planning a
// drain) decide on Reserve(snapshot, Incoming(snapshot)).
func Incoming(s *state.Snapshot) *Reservations {
	r := &Reservations{}
	for _, m := range s.Migrations(state.MigrationFilter{Open: true}) {
		if m.Committed() {
			continue // the container is on its destination already
		}
		if c, ok := s.ContainerByID(m.Container); ok {
			r.Add(m.Dest, c.Spec.Request)
		}
	}
	return r
}

// Reserve returns s with r's reservations added: Allocated and
// ContainerCount count them on top of s's; Nodes and HasImage are s's.
// It reads r at every call, so the next decision sees what was just
// added; a nil r reserves nothing.
//
// A caller removes a container's reservation once a state that holds the
// container is what it decides on (the entry committed), or the entry
// failed; never before. Until then a committed container counts twice on
// a later snapshot, which may refuse room that exists for a moment, but
// never overcommits a node.
func Reserve(s State, r *Reservations) State {
	if r == nil {
		r = &Reservations{}
	}
	return reserved{State: s, r: r}
}

// reserved is Reserve's State.
type reserved struct {
	State
	r *Reservations
}

func (v reserved) Allocated(node string) state.Resources {
	a := v.State.Allocated(node)
	if res, ok := v.r.nodes[node]; ok {
		a = a.Add(res.resources)
	}
	return a
}

func (v reserved) ContainerCount(node string) int {
	return v.State.ContainerCount(node) + v.r.nodes[node].count
}
