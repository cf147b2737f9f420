package agent

import (
	"context"
	"net"

	"github.com/godwit/godwit/agent/network"
)

// The source holds the packets sent to a migrating container from just
// before its freeze until it runs again, here after an abort or on the
// destination after the commit, and then sends them on (network.Hold): its
// TCP peers are answered as soon as it runs, instead of at their next
// retransmission, which backs off exponentially during the freeze. A
// hold is an optimisation: when it cannot start, the move goes on
// without it.

// holdPackets starts holding the packets to container ref's address for
// migration id.
func (a *Agent) holdPackets(ctx context.Context, id, ref string) {
	c, err := a.Inspect(ctx, ref)
	if err != nil || c.IP == "" {
		return
	}
	h, err := a.net.Hold(ctx, net.ParseIP(c.IP))
	if err != nil {
		a.log.Warn("not holding the container's packets during the freeze: its peers will wait for their retransmissions",
			"migration", id, "container", c.Name, "err", err)
		return
	}
	a.mig.mu.Lock()
	defer a.mig.mu.Unlock()
	if old := a.mig.holds[id]; old != nil {
		_ = old.Discard()
	}
	a.mig.holds[id] = h
}

// releasePackets sends on what migration id's hold caught, through the
// node's routes as they are now: call it once the container runs again,
// here or on the destination with this node forwarding its address there.
func (a *Agent) releasePackets(ctx context.Context, id string) {
	a.mig.mu.Lock()
	h := a.mig.holds[id]
	delete(a.mig.holds, id)
	a.mig.mu.Unlock()
	if h == nil {
		return
	}
	sent, dropped, err := h.Release(ctx)
	if err != nil {
		a.log.Warn("send on the packets held during the freeze", "migration", id, "sent", sent, "dropped", dropped, "err", err)
		return
	}
	a.log.Debug("packets held during the freeze sent on", "migration", id, "sent", sent, "dropped", dropped)
}

// newHolds returns the empty table of holds, having removed the rules of
// an agent that died holding packets.
func (a *Agent) newHolds() map[string]*network.Hold {
	if err := a.net.RemoveStaleHolds(); err != nil {
		a.log.Warn("remove packet holds left by a previous agent", "err", err)
	}
	return map[string]*network.Hold{}
}
