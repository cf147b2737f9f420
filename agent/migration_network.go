package agent

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/godwit/godwit/agent/network"
	"github.com/godwit/godwit/migrate"
)

// The destination's network for a migrating container: made in Prepare,
// before the freeze, so that the restore does not wait for it, and left
// unrouted (network.Manager.SetupUnrouted) until the commit, so that no
// packet reaches the held copy: its kernel would acknowledge data that the
// source's copy, which runs again after an abort, never saw.

// prepareNetwork creates container c's namespace and veth with its IP on
// this node, unrouted. A container that has its network here already is
// left as it is.
func (a *Agent) prepareNetwork(ctx context.Context, c migrate.Container) error {
	if ep, err := a.net.Lookup(c.ID); err == nil && ep.Attached {
		return nil
	}
	if _, err := a.net.SetupUnrouted(ctx, c.ID, net.ParseIP(c.IP)); err != nil {
		return fmt.Errorf("container %s: prepare its network with IP %s on node %s: %w", c.Name, c.IP, a.cfg.Name, err)
	}
	return nil
}

// restoreNetwork gives container id, restored new on this node, its
// network with ip: the one a migration prepared, or a new one; unrouted
// while the container is held for a migration's commit.
func (a *Agent) restoreNetwork(ctx context.Context, id string, ip net.IP, held bool) (*network.Endpoint, error) {
	ep, err := a.net.Lookup(id)
	if err != nil || !ep.Attached || ep.Routed {
		if held {
			return a.net.SetupUnrouted(ctx, id, ip)
		}
		return a.net.Setup(ctx, id, ip)
	}
	if ip != nil && !ep.IP.Equal(ip) {
		return nil, fmt.Errorf("its prepared network has IP %s, not %s", ep.IP, ip)
	}
	if !held {
		if err := a.net.Route(ctx, id); err != nil {
			return nil, err
		}
	}
	return ep, nil
}

// dropPreparedNetwork tears down the network a migration prepared for
// container id when no container of this node uses it (the migration
// aborted before its restore, or the restored copy is gone).
func (a *Agent) dropPreparedNetwork(ctx context.Context, migration, id string) {
	if id == "" || a.hasID(id) {
		return
	}
	if _, err := a.net.Lookup(id); errors.Is(err, network.ErrNotFound) {
		return
	}
	if err := a.net.Teardown(ctx, id); err != nil {
		a.log.Warn("remove the network prepared for the migration", "migration", migration, "container_id", id, "err", err)
	}
}
