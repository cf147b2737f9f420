package state

import (
	"fmt"
	"net/netip"
)

// UsableRange returns the first and last address of p that containers
// may get: not the network address, not the first host address (the
// gateway, by convention), and for IPv4 not the broadcast address. ok is
// false when p leaves none (an IPv4 /31 or /32, an IPv6 /127 or /128).
func UsableRange(p netip.Prefix) (first, last netip.Addr, ok bool) {
	if !p.IsValid() {
		return netip.Addr{}, netip.Addr{}, false
	}
	p = p.Masked()
	first = p.Addr().Next().Next()
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	last, _ = netip.AddrFromSlice(b)
	if p.Addr().Is4() {
		last = last.Prev()
	}
	if !first.IsValid() || !last.IsValid() || !p.Contains(first) || last.Less(first) {
		return netip.Addr{}, netip.Addr{}, false
	}
	return first, last, true
}

// AllocateIP returns the lowest usable address of the cluster CIDR that
// no container holds. It reserves nothing: the address is taken when a
// container that carries it is put, so allocate and put one container
// before allocating for the next. The result depends only on which
// addresses the containers hold, so every replica allocates the same.
func (t *Txn) AllocateIP() (netip.Addr, error) {
	if !t.p.configRead {
		t.p.config, t.p.configRead = t.Config(), true
	}
	cidr := t.p.config.ClusterCIDR
	if !cidr.IsValid() {
		return netip.Addr{}, fmt.Errorf("allocate a container address: %w: the scheduler leader sets it when the cluster starts; check the scheduler's --cluster-cidr", ErrNoClusterCIDR)
	}
	first, last, ok := UsableRange(cidr)
	if !ok {
		return netip.Addr{}, fmt.Errorf("allocate a container address: %w: %s has no usable address; the cluster needs a larger CIDR", ErrCIDRFull, cidr)
	}
	start := first
	if t.ipHint.IsValid() && cidr.Contains(t.ipHint) && first.Less(t.ipHint) {
		start = t.ipHint
	}
	it, err := t.tx.LowerBound(TableContainers, indexIP, start)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("scan container addresses: %w", err)
	}
	// Walk the stored containers' addresses from start, and the
	// transaction's buffered ones (pending), until an address neither
	// holds.
	cand := start
	obj := it.Next()
	for cand.IsValid() && !last.Less(cand) {
		if _, held := t.p.byIP[cand]; held {
			cand = cand.Next()
			continue
		}
		for obj != nil {
			if held := obj.(*Container).IP; held.Less(cand) || held.BitLen() != cand.BitLen() {
				obj = it.Next()
				continue
			}
			break
		}
		if obj == nil || obj.(*Container).IP != cand {
			break
		}
		cand = cand.Next()
		obj = it.Next()
	}
	// Every address from start up to cand is held: later walks may
	// start at cand.
	t.ipHint = cand
	if !cand.IsValid() || last.Less(cand) {
		return netip.Addr{}, fmt.Errorf("allocate a container address: %w: all %s are in use; remove containers or grow the cluster CIDR", ErrCIDRFull, cidr)
	}
	t.p.freeIP = cand
	return cand, nil
}

// addressFreed keeps the hint's promise when an address below it is
// released.
func (t *Txn) addressFreed(a netip.Addr) {
	if t.ipHint.IsValid() && a.Less(t.ipHint) {
		t.ipHint = a
	}
}
