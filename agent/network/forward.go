package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Forward routes ip/32 via gw, another node's address, in this node's
// network namespace: once a container has moved away, clients that still
// send to this node are forwarded to the node that runs it. It replaces
// any route this node had for ip/32. Setup of a container with ip here
// removes the forward again, since the container is back.
func (m *Manager) Forward(ctx context.Context, ip, gw net.IP) error {
	dst, ok := netip.AddrFromSlice(ip)
	if !ok {
		return fmt.Errorf("%w: %v is not an IP address", ErrOutOfRange, ip)
	}
	if gw.To4() == nil {
		return fmt.Errorf("forward %s: gateway %v is not an IPv4 address", ip, gw)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	host, err := m.hostHandle()
	if err != nil {
		return err
	}
	r := &netlink.Route{Dst: hostPrefix(dst.Unmap()), Gw: gw.To4()}
	if err := host.RouteReplace(r); err != nil {
		return fmt.Errorf("forward %s via %s: %w; this node must reach %s directly (same network)", r.Dst, gw, err, gw)
	}
	m.log.Info("container address forwarded to another node", "ip", dst, "via", gw)
	return nil
}

// dropForward deletes the forwarding route (one with a gateway) to ip, if
// any, so that Setup can route ip to a container on this node.
func dropForward(host *netlink.Handle, ip netip.Addr) error {
	filter := &netlink.Route{Dst: hostPrefix(ip)}
	routes, err := host.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_DST)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list routes to %s: %w", ip, err)
	}
	for _, r := range routes {
		if r.Gw == nil {
			continue
		}
		if err := host.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("remove the forward of %s via %s: %w", ip, r.Gw, err)
		}
	}
	return nil
}
