package devcluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/netnsutil"
)

// SyncRoutes makes the cluster routes (those Route sets: a container's
// /32 via the address of the host that runs it, metric routeMetric) of
// the cluster named name be exactly want, which maps each container
// address to its host's address: in rootNS, the namespace that holds the
// cluster's bridge, and in every host, except that a host keeps no
// cluster route to its own containers (its agent routes them). Routes of
// addresses not in want are removed, others are left alone. It works
// from the name alone, so it serves a detached cluster from another
// process (`godwit dev routes`, which follows the scheduler), and goes on
// past errors, returning them all.
func SyncRoutes(ctx context.Context, name string, rootNS netns.NsHandle, want map[netip.Addr]netip.Addr) error {
	if err := validateClusterName(name); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	root, err := netnsutil.NetlinkHandle(rootNS)
	if err != nil {
		return err
	}
	defer root.Close()
	br, err := root.LinkByName(bridgeName(name))
	if err != nil {
		return fmt.Errorf("cluster %s: find its bridge %s: %w: is the cluster up?", name, bridgeName(name), err)
	}
	var errs []error
	if err := syncTable(root, br.Attrs().Index, netip.Addr{}, want); err != nil {
		errs = append(errs, fmt.Errorf("root namespace: %w", err))
	}
	rec, err := readRecord(name)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, host := range leftoverHosts(name, rec) {
		if err := syncHost(name, host, want); err != nil {
			errs = append(errs, fmt.Errorf("host %s: %w", host, err))
		}
	}
	return errors.Join(errs...)
}

// syncHost syncs the cluster routes of one host of the cluster named
// name, through its pinned namespace.
func syncHost(name, host string, want map[netip.Addr]netip.Addr) error {
	ns, err := netns.GetFromPath(netnsPath(name, host))
	if err != nil {
		return fmt.Errorf("open its network namespace: %w", err)
	}
	defer ns.Close()
	h, err := netnsutil.NetlinkHandle(ns)
	if err != nil {
		return err
	}
	defer h.Close()
	eth0, err := h.LinkByName(hostInterface)
	if err != nil {
		return fmt.Errorf("find %s: %w", hostInterface, err)
	}
	addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("find its address on %s: %v", hostInterface, err)
	}
	self, _ := netip.AddrFromSlice(addrs[0].IP)
	return syncTable(h, eth0.Attrs().Index, self.Unmap(), want)
}

// syncTable makes the cluster routes out of the link linkIndex be want's,
// leaving out those via self (the namespace's own address).
func syncTable(h *netlink.Handle, linkIndex int, self netip.Addr, want map[netip.Addr]netip.Addr) error {
	routes, err := retryDump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: linkIndex}, netlink.RT_FILTER_OIF)
	})
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	have := map[netip.Addr]netip.Addr{}
	for _, r := range routes {
		if r.Dst == nil || r.Priority != routeMetric {
			continue // not a route that Route or SyncRoutes set
		}
		dst, ok := prefixOf(r.Dst)
		gw, gwOK := netip.AddrFromSlice(r.Gw)
		if !ok || !gwOK || dst.Bits() != dst.Addr().BitLen() {
			continue
		}
		have[dst.Addr()] = gw.Unmap()
	}
	var errs []error
	for ip, via := range want {
		if via == self || have[ip] == via {
			continue
		}
		r := &netlink.Route{Dst: ipNet(netip.PrefixFrom(ip, ip.BitLen())), Gw: via.AsSlice(), LinkIndex: linkIndex, Priority: routeMetric}
		if err := h.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s: %w", ip, via, err))
		}
	}
	for ip := range have {
		if via, ok := want[ip]; ok && via != self {
			continue
		}
		r := &netlink.Route{Dst: ipNet(netip.PrefixFrom(ip, ip.BitLen())), LinkIndex: linkIndex, Priority: routeMetric}
		if err := h.RouteDel(r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s: %w", ip, err))
		}
	}
	return errors.Join(errs...)
}
