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

// TestSetupConnectivity runs the Manager in the test's own namespace, as an
// agent on a real host does, and checks that the host reaches each container
// and the containers reach each other.
func TestSetupConnectivity(t *testing.T) {
	requireNetAdmin(t)
	m := newManager(t, testConfig(t, t.TempDir(), "10.250.41.0/24"))

	c1 := setup(t, m, "conn-c1", nil)
	c2 := setup(t, m, "conn-c2", net.ParseIP("10.250.41.77"))

	for _, tt := range []struct {
		name string
		ep   *Endpoint
		want string
	}{
		{name: "allocated", ep: c1, want: "10.250.41.2"},
		{name: "requested", ep: c2, want: "10.250.41.77"},
	} {
		t.Run("address "+tt.name, func(t *testing.T) {
			if !tt.ep.IP.Equal(net.ParseIP(tt.want)) {
				t.Errorf("IP = %s, want %s", tt.ep.IP, tt.want)
			}
			assertContainerSide(t, tt.ep)
			assertHostSide(t, "", tt.ep)
		})
	}

	c1Addr, c2Addr := serveEcho(t, c1), serveEcho(t, c2)
	tests := []struct {
		name string
		from string // namespace path; "" is the host
		to   string
	}{
		{name: "host to c1", from: "", to: c1Addr},
		{name: "host to c2", from: "", to: c2Addr},
		{name: "c1 to c2", from: c1.NetnsPath, to: c2Addr},
		{name: "c2 to c1", from: c2.NetnsPath, to: c1Addr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := echoFrom(t, tt.from, tt.to); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestTeardownLeavesNothing checks that removal leaves no namespace, veth,
// route or reservation, that it can be repeated, and that the address is
// free again.
func TestTeardownLeavesNothing(t *testing.T) {
	requireNetAdmin(t)
	m := newManager(t, testConfig(t, t.TempDir(), "10.250.42.0/24"))
	ep := setup(t, m, "gone-c1", nil)
	if left := m.Leftovers(ep.ContainerID); len(left) == 0 {
		t.Fatal("Leftovers is empty for a container that is set up; it cannot prove a removal")
	}

	if err := m.Teardown(t.Context(), ep.ContainerID); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	assertGone(t, m, "", ep)

	if err := m.Teardown(t.Context(), ep.ContainerID); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
	if err := m.Teardown(t.Context(), "never-set-up"); err != nil {
		t.Errorf("Teardown of an unknown container: %v", err)
	}

	again := setup(t, m, "gone-c2", ep.IP)
	if !again.IP.Equal(ep.IP) {
		t.Errorf("released address %s not reusable: got %s", ep.IP, again.IP)
	}
}

// TestTeardownFinishesPartialSetup removes the pieces of a container whose
// Setup was interrupted, here by deleting its veth behind the Manager's back.
func TestTeardownFinishesPartialSetup(t *testing.T) {
	requireNetAdmin(t)
	nodePath := newNodeNetns(t, "10.250.47.1")
	cfg := testConfig(t, t.TempDir(), "10.250.47.0/24")
	cfg.NodeNetns = nodePath
	m := newManager(t, cfg)
	ep := setup(t, m, "partial-c1", nil)

	if err := deleteLink(handleIn(t, nodePath), ep.HostVeth); err != nil {
		t.Fatal(err)
	}
	if err := m.Teardown(t.Context(), ep.ContainerID); err != nil {
		t.Fatalf("Teardown with the veth already gone: %v", err)
	}
	assertGone(t, m, nodePath, ep)
}

// TestSetupFailureLeavesNothing makes Setup fail at different steps and
// checks that it undid its own work and nothing else.
func TestSetupFailureLeavesNothing(t *testing.T) {
	requireNetAdmin(t)
	const id = "fail-c1"
	tests := []struct {
		name string
		cidr string
		// prepare breaks one step; it returns the IP to request and the
		// Leftovers that belong to the test, not to Setup.
		prepare func(t *testing.T, m *Manager, h *netlink.Handle) (net.IP, []string)
		wantErr error
		wantMsg string
	}{
		{
			name: "context already canceled",
			cidr: "10.250.43.0/24",
			prepare: func(t *testing.T, m *Manager, h *netlink.Handle) (net.IP, []string) {
				return nil, nil
			},
			wantErr: context.Canceled,
		},
		{
			name: "veth name taken by a link that is not ours",
			cidr: "10.250.43.0/24",
			prepare: func(t *testing.T, m *Manager, h *netlink.Handle) (net.IP, []string) {
				attrs := netlink.NewLinkAttrs()
				attrs.Name = m.vethName(id)
				if err := h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "notours"}); err != nil {
					t.Fatal(err)
				}
				return nil, []string{"veth " + attrs.Name}
			},
			wantMsg: "already exists",
		},
		{
			name: "host route taken at the last step",
			cidr: "10.250.43.0/24",
			prepare: func(t *testing.T, m *Manager, h *netlink.Handle) (net.IP, []string) {
				ip := net.ParseIP("10.250.43.50")
				lo, err := h.LinkByName(loopbackInterface)
				if err != nil {
					t.Fatal(err)
				}
				if err := h.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}); err != nil {
					t.Fatal(err)
				}
				return ip, nil
			},
			wantMsg: "another route for this address exists",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodePath := newNodeNetns(t, "10.250.43.1")
			cfg := testConfig(t, t.TempDir(), tt.cidr)
			cfg.NodeNetns = nodePath
			m := newManager(t, cfg)
			ip, ours := tt.prepare(t, m, handleIn(t, nodePath))

			ctx := t.Context()
			if tt.wantErr == context.Canceled {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			ep, err := m.Setup(ctx, id, ip)
			if err == nil {
				t.Cleanup(func() { m.Teardown(context.Background(), id) })
				t.Fatalf("Setup succeeded with %+v, want an error", ep)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want it to say %q", err, tt.wantMsg)
			}
			if left := m.Leftovers(id); !slices.Equal(left, ours) {
				t.Errorf("Leftovers = %q, want only the test's own %q", left, ours)
			}
			if _, err := m.Lookup(id); !errors.Is(err, ErrNotFound) {
				t.Errorf("Lookup err = %v, want ErrNotFound (address released)", err)
			}
		})
	}
}

// TestSetupRefusesConflicts checks the errors a caller can act on.
func TestSetupRefusesConflicts(t *testing.T) {
	requireNetAdmin(t)
	m := newManager(t, testConfig(t, t.TempDir(), "10.250.48.0/24"))
	first := setup(t, m, "dup-c1", nil)

	tests := []struct {
		name    string
		id      string
		ip      net.IP
		wantErr error
	}{
		{name: "container already set up", id: "dup-c1", wantErr: ErrExists},
		{name: "address held by another container", id: "dup-c2", ip: first.IP, wantErr: ErrAddressInUse},
		{name: "address outside the cidr", id: "dup-c3", ip: net.ParseIP("10.250.49.5"), wantErr: ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Setup(t.Context(), tt.id, tt.ip)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.id != first.ContainerID {
				if left := m.Leftovers(tt.id); len(left) != 0 {
					t.Errorf("refused Setup left %q", left)
				}
			}
		})
	}
	assertHostSide(t, "", first)
}

// TestManagerInNodeNetns runs the Manager for a node that is its own
// namespace, as every node of a test cluster is: everything host-side must
// land in that namespace and nothing in the test's.
func TestManagerInNodeNetns(t *testing.T) {
	requireNetAdmin(t)
	tests := []struct {
		name string
		cidr string
		node string
		// newIn creates the Manager for the node namespace at nodePath.
		newIn func(t *testing.T, cfg Config, nodePath string) *Manager
	}{
		{
			name: "namespace path in config",
			cidr: "10.250.44.0/24",
			node: "10.250.44.1",
			newIn: func(t *testing.T, cfg Config, nodePath string) *Manager {
				cfg.NodeNetns = nodePath
				return newManager(t, cfg)
			},
		},
		{
			name: "created on a thread inside the node namespace",
			cidr: "10.250.45.0/24",
			node: "10.250.45.1",
			newIn: func(t *testing.T, cfg Config, nodePath string) *Manager {
				var m *Manager
				if err := inNetns(t, nodePath, func() error {
					var err error
					m, err = New(cfg)
					return err
				}); err != nil {
					t.Fatalf("New: %v", err)
				}
				t.Cleanup(func() { m.Close() })
				return m
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodePath := newNodeNetns(t, tt.node)
			m := tt.newIn(t, testConfig(t, t.TempDir(), tt.cidr), nodePath)
			c1 := setup(t, m, "node-c1", nil)
			c2 := setup(t, m, "node-c2", nil)

			for _, ep := range []*Endpoint{c1, c2} {
				assertContainerSide(t, ep)
				assertHostSide(t, nodePath, ep)
			}
			own := handleIn(t, "")
			for _, ep := range []*Endpoint{c1, c2} {
				if _, err := own.LinkByName(ep.HostVeth); !isLinkNotFound(err) {
					t.Errorf("host veth %s is in the test's namespace (err = %v)", ep.HostVeth, err)
				}
				if routes := routesTo(t, own, ep.IP); len(routes) != 0 {
					t.Errorf("route to %s is in the test's namespace: %v", ep.IP, routes)
				}
			}

			c1Addr, c2Addr := serveEcho(t, c1), serveEcho(t, c2)
			if err := echoFrom(t, nodePath, c1Addr); err != nil {
				t.Errorf("node to c1: %v", err)
			}
			if err := echoFrom(t, c1.NetnsPath, c2Addr); err != nil {
				t.Errorf("c1 to c2: %v", err)
			}

			for _, ep := range []*Endpoint{c1, c2} {
				if err := m.Teardown(t.Context(), ep.ContainerID); err != nil {
					t.Fatalf("Teardown %s: %v", ep.ContainerID, err)
				}
				assertGone(t, m, nodePath, ep)
			}
		})
	}
}

// TestRestartKeepsNetworks checks that containers keep their network while
// the agent restarts, and that the new Manager finds and removes them.
func TestRestartKeepsNetworks(t *testing.T) {
	requireNetAdmin(t)
	nodePath := newNodeNetns(t, "10.250.46.1")
	cfg := testConfig(t, t.TempDir(), "10.250.46.0/24")
	cfg.NodeNetns = nodePath

	before, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ep := setup(t, before, "restart-c1", nil)
	if err := before.Close(); err != nil {
		t.Fatal(err)
	}

	after := newManager(t, cfg)
	t.Cleanup(func() { after.Teardown(context.Background(), ep.ContainerID) })
	got, err := after.Lookup(ep.ContainerID)
	if err != nil {
		t.Fatalf("Lookup after restart: %v", err)
	}
	if got.NetnsPath != ep.NetnsPath || !got.IP.Equal(ep.IP) || got.HostVeth != ep.HostVeth {
		t.Errorf("Lookup after restart = %+v, want %+v", *got, *ep)
	}
	if err := echoFrom(t, nodePath, serveEcho(t, ep)); err != nil {
		t.Errorf("container unreachable after restart: %v", err)
	}

	next := setup(t, after, "restart-c2", nil)
	if next.IP.Equal(ep.IP) {
		t.Errorf("restarted Manager handed out %s, which restart-c1 holds", next.IP)
	}

	if err := after.Teardown(t.Context(), ep.ContainerID); err != nil {
		t.Fatalf("Teardown after restart: %v", err)
	}
	assertGone(t, after, nodePath, ep)
}
