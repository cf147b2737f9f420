package network

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// newNodeManager returns a Manager for a fresh node namespace standing in
// for a host, with the node address .1 of cidr, and the namespace's path.
func newNodeManager(t *testing.T, cidr string) (*Manager, string) {
	t.Helper()
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	node := n.IP.To4()
	node[3]++
	nodePath := newNodeNetns(t, node.String())
	cfg := testConfig(t, t.TempDir(), cidr)
	cfg.NodeNetns = nodePath
	return newManager(t, cfg), nodePath
}

func detach(t *testing.T, m *Manager, id string) {
	t.Helper()
	if err := m.Detach(t.Context(), id); err != nil {
		t.Fatalf("Detach %s: %v", id, err)
	}
}

// assertDetached checks that the Manager holds ep detached, with its
// address and names, and that Leftovers sees only the reservation.
func assertDetached(t *testing.T, m *Manager, ep *Endpoint) {
	t.Helper()
	got, err := m.Lookup(ep.ContainerID)
	if err != nil {
		t.Fatalf("%s: Lookup: %v", ep.ContainerID, err)
	}
	if got.Attached || !got.IP.Equal(ep.IP) || got.NetnsPath != ep.NetnsPath || got.HostVeth != ep.HostVeth {
		t.Errorf("%s: Lookup = %+v, want %+v detached", ep.ContainerID, *got, *ep)
	}
	i := slices.IndexFunc(m.List(), func(e *Endpoint) bool { return e.ContainerID == ep.ContainerID })
	if i < 0 || m.List()[i].Attached {
		t.Errorf("%s: List does not hold it detached (index %d)", ep.ContainerID, i)
	}
	want := []string{"ip reservation " + ep.IP.String() + " (detached)"}
	if left := m.Leftovers(ep.ContainerID); !slices.Equal(left, want) {
		t.Errorf("%s: Leftovers = %q, want %q", ep.ContainerID, left, want)
	}
}

// assertReattached checks that got is ep back again, attached, with a
// network that works from the node namespace at nodePath.
func assertReattached(t *testing.T, nodePath string, ep, got *Endpoint) {
	t.Helper()
	if !got.Attached || !got.IP.Equal(ep.IP) || got.NetnsPath != ep.NetnsPath || got.HostVeth != ep.HostVeth {
		t.Errorf("%s: Setup after Detach = %+v, want %+v attached", ep.ContainerID, *got, *ep)
	}
	assertContainerSide(t, got)
	assertHostSide(t, nodePath, got)
	if err := echoFrom(t, nodePath, serveEcho(t, got)); err != nil {
		t.Errorf("%s: node to container after reattach: %v", ep.ContainerID, err)
	}
}

// TestDetachKeepsAddress checks that Detach removes the kernel objects but
// not the reservation, and that the reservation holds against everyone but
// its container.
func TestDetachKeepsAddress(t *testing.T) {
	requireNetAdmin(t)
	m, nodePath := newNodeManager(t, "10.250.50.0/24")
	ep := setup(t, m, "detach-c1", nil)
	if !ep.Attached {
		t.Errorf("Setup returned %+v, want it attached", *ep)
	}

	detach(t, m, ep.ContainerID)
	assertKernelGone(t, nodePath, ep)
	assertDetached(t, m, ep)

	if err := m.Detach(t.Context(), ep.ContainerID); err != nil {
		t.Errorf("second Detach: %v", err)
	}
	assertDetached(t, m, ep)

	other := net.ParseIP("10.250.50.99")
	tests := []struct {
		name    string
		id      string
		ip      net.IP
		wantErr error
		wantMsg []string
	}{
		{name: "address requested by another container", id: "detach-c2", ip: ep.IP, wantErr: ErrAddressInUse},
		{
			name:    "container reattached with another address",
			id:      ep.ContainerID,
			ip:      other,
			wantErr: ErrAddressMismatch,
			wantMsg: []string{ep.IP.String(), other.String()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := m.Setup(t.Context(), tt.id, tt.ip)
			if err == nil {
				t.Cleanup(func() { m.Teardown(context.Background(), tt.id) })
				t.Fatalf("Setup succeeded with %+v, want %v", *got, tt.wantErr)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.wantMsg {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("err = %v, want it to name %s", err, s)
				}
			}
			if tt.id != ep.ContainerID {
				if left := m.Leftovers(tt.id); len(left) != 0 {
					t.Errorf("refused Setup left %q", left)
				}
			}
			assertKernelGone(t, nodePath, ep)
			assertDetached(t, m, ep)
		})
	}

	if next := setup(t, m, "detach-c3", nil); next.IP.Equal(ep.IP) {
		t.Errorf("allocation handed out %s, which detached %s holds", next.IP, ep.ContainerID)
	}
}

// TestReattachKeepsAddress detaches and re-attaches one container several
// times, as repeated checkpoint/restore cycles do, and checks that it comes
// back with its address and a network that passes traffic each time.
func TestReattachKeepsAddress(t *testing.T) {
	requireNetAdmin(t)
	m, nodePath := newNodeManager(t, "10.250.51.0/24")
	ep := setup(t, m, "reattach-c1", net.ParseIP("10.250.51.40"))

	tests := []struct {
		name string
		ip   net.IP
	}{
		{name: "no address requested", ip: nil},
		{name: "reserved address requested", ip: ep.IP},
		{name: "again without an address", ip: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			detach(t, m, ep.ContainerID)
			assertKernelGone(t, nodePath, ep)
			got, err := m.Setup(t.Context(), ep.ContainerID, tt.ip)
			if err != nil {
				t.Fatalf("Setup after Detach: %v", err)
			}
			assertReattached(t, nodePath, ep, got)
			if again, err := m.Lookup(ep.ContainerID); err != nil || !again.Attached {
				t.Errorf("Lookup after reattach = %+v, %v; want it attached", again, err)
			}
			if _, err := m.Setup(t.Context(), ep.ContainerID, nil); !errors.Is(err, ErrExists) {
				t.Errorf("Setup of the reattached container: err = %v, want ErrExists", err)
			}
		})
	}
}

// TestReattachFailureKeepsReservation makes Setup of a detached container
// fail and checks that it stays detached with its address, and that a later
// Setup still works.
func TestReattachFailureKeepsReservation(t *testing.T) {
	requireNetAdmin(t)
	const id = "refail-c1"
	tests := []struct {
		name string
		cidr string
		// prepare breaks Setup and returns what repairs it.
		prepare func(t *testing.T, h *netlink.Handle, ep *Endpoint) (ctx context.Context, repair func())
		wantErr error
		wantMsg string
	}{
		{
			name: "context already canceled",
			cidr: "10.250.52.0/24",
			prepare: func(t *testing.T, h *netlink.Handle, ep *Endpoint) (context.Context, func()) {
				ctx, cancel := context.WithCancel(t.Context())
				cancel()
				return ctx, func() {}
			},
			wantErr: context.Canceled,
		},
		{
			name: "host route taken at the last step",
			cidr: "10.250.52.0/24",
			prepare: func(t *testing.T, h *netlink.Handle, ep *Endpoint) (context.Context, func()) {
				lo, err := h.LinkByName(loopbackInterface)
				if err != nil {
					t.Fatal(err)
				}
				r := &netlink.Route{LinkIndex: lo.Attrs().Index, Dst: &net.IPNet{IP: ep.IP, Mask: net.CIDRMask(ipv4Bits, ipv4Bits)}}
				if err := h.RouteAdd(r); err != nil {
					t.Fatal(err)
				}
				return t.Context(), func() {
					if err := h.RouteDel(r); err != nil {
						t.Fatal(err)
					}
				}
			},
			wantMsg: "another route for this address exists",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, nodePath := newNodeManager(t, tt.cidr)
			ep := setup(t, m, id, nil)
			detach(t, m, id)
			ctx, repair := tt.prepare(t, handleIn(t, nodePath), ep)

			got, err := m.Setup(ctx, id, nil)
			if err == nil {
				t.Fatalf("Setup succeeded with %+v, want an error", *got)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want it to say %q", err, tt.wantMsg)
			}
			repair()
			assertKernelGone(t, nodePath, ep)
			assertDetached(t, m, ep)

			got, err = m.Setup(t.Context(), id, nil)
			if err != nil {
				t.Fatalf("Setup once repaired: %v", err)
			}
			assertReattached(t, nodePath, ep, got)
		})
	}
}

// TestTeardownAfterDetach checks that removing a detached container frees
// its address and leaves nothing.
func TestTeardownAfterDetach(t *testing.T) {
	requireNetAdmin(t)
	m, nodePath := newNodeManager(t, "10.250.53.0/24")
	ep := setup(t, m, "tdetach-c1", nil)
	detach(t, m, ep.ContainerID)

	if err := m.Teardown(t.Context(), ep.ContainerID); err != nil {
		t.Fatalf("Teardown of a detached container: %v", err)
	}
	assertGone(t, m, nodePath, ep)
	if err := m.Detach(t.Context(), ep.ContainerID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Detach after Teardown: err = %v, want ErrNotFound", err)
	}
	if next := setup(t, m, "tdetach-c2", ep.IP); !next.IP.Equal(ep.IP) {
		t.Errorf("freed address %s not reusable: got %s", ep.IP, next.IP)
	}
}

// TestDetachSurvivesRestart checks that a restarted Manager knows the
// container is detached and brings it back with its address.
func TestDetachSurvivesRestart(t *testing.T) {
	requireNetAdmin(t)
	nodePath := newNodeNetns(t, "10.250.54.1")
	cfg := testConfig(t, t.TempDir(), "10.250.54.0/24")
	cfg.NodeNetns = nodePath

	before, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ep := setup(t, before, "rdetach-c1", nil)
	detach(t, before, ep.ContainerID)
	if err := before.Close(); err != nil {
		t.Fatal(err)
	}

	after := newManager(t, cfg)
	t.Cleanup(func() { after.Teardown(context.Background(), ep.ContainerID) })
	assertDetached(t, after, ep)
	if next := setup(t, after, "rdetach-c2", nil); next.IP.Equal(ep.IP) {
		t.Errorf("restarted Manager handed out %s, which detached %s holds", next.IP, ep.ContainerID)
	}
	got, err := after.Setup(t.Context(), ep.ContainerID, nil)
	if err != nil {
		t.Fatalf("Setup after restart: %v", err)
	}
	assertReattached(t, nodePath, ep, got)
}

// TestDetachedAddressMovesToAnotherAgent runs two agents in one node
// namespace, as tests do: once agent A has detached a checkpointed
// container, agent B restores it with the same address and its own host
// route, while A keeps the address reserved and removes its record later
// without disturbing B.
func TestDetachedAddressMovesToAnotherAgent(t *testing.T) {
	requireNetAdmin(t)
	nodePath := newNodeNetns(t, "10.250.55.1")
	newAgent := func(name string) *Manager {
		cfg := testConfig(t, t.TempDir(), "10.250.55.0/24")
		cfg.NodeName += "/" + name
		cfg.NodeNetns = nodePath
		return newManager(t, cfg)
	}
	a, b := newAgent("a"), newAgent("b")
	const id = "move-c1"
	onA := setup(t, a, id, nil)

	// The node has one route per /32: while A routes the address, B cannot.
	if ep, err := b.Setup(t.Context(), id, onA.IP); err == nil {
		t.Cleanup(func() { b.Teardown(context.Background(), id) })
		t.Fatalf("B set up %+v while A routes its address", *ep)
	} else if !strings.Contains(err.Error(), "another route for this address exists") {
		t.Errorf("B's Setup while A routes the address: err = %v, want the route conflict", err)
	}
	if left := b.Leftovers(id); len(left) != 0 {
		t.Errorf("B's refused Setup left %q", left)
	}

	detach(t, a, id)
	onB := setup(t, b, id, onA.IP)
	if !onB.IP.Equal(onA.IP) || onB.HostVeth == onA.HostVeth || onB.NetnsPath == onA.NetnsPath {
		t.Fatalf("B's endpoint %+v, want A's address %s under B's own names (A: %+v)", *onB, onA.IP, *onA)
	}
	assertContainerSide(t, onB)
	assertHostSide(t, nodePath, onB)
	addr := serveEcho(t, onB)
	if err := echoFrom(t, nodePath, addr); err != nil {
		t.Errorf("node to the container on B: %v", err)
	}
	assertDetached(t, a, onA)

	// While B routes the address, A cannot take it back, and stays detached.
	if ep, err := a.Setup(t.Context(), id, nil); err == nil {
		t.Fatalf("A re-attached %+v while B routes its address", *ep)
	} else if !strings.Contains(err.Error(), "another route for this address exists") {
		t.Errorf("A's Setup while B routes the address: err = %v, want the route conflict", err)
	}
	assertDetached(t, a, onA)
	assertHostSide(t, nodePath, onB)

	if err := a.Teardown(t.Context(), id); err != nil {
		t.Fatalf("A's Teardown of the detached container: %v", err)
	}
	if left := a.Leftovers(id); len(left) != 0 {
		t.Errorf("A's Leftovers after Teardown = %q, want none", left)
	}
	assertHostSide(t, nodePath, onB)
	if err := echoFrom(t, nodePath, addr); err != nil {
		t.Errorf("node to the container on B after A's Teardown: %v", err)
	}
}

// TestDetachRefuses checks the errors of Detach that need no kernel.
func TestDetachRefuses(t *testing.T) {
	tests := []struct {
		name    string
		closed  bool
		wantErr error
	}{
		{name: "unknown container", wantErr: ErrNotFound},
		{name: "closed manager", closed: true, wantErr: ErrClosed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t, testConfig(t, t.TempDir(), "10.250.56.0/24"))
			if tt.closed {
				if err := m.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.Detach(t.Context(), "never-set-up"); !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
		})
	}
}
