package network

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/internal/netnsutil"
	"github.com/godwit/godwit/internal/testutil"
)

const (
	// testDialTimeout bounds one TCP connection attempt; everything is on
	// one kernel, so a working path answers in milliseconds.
	testDialTimeout = 3 * time.Second
)

// requireNetAdmin skips the test (fails it under CI=true) unless the process
// can create network namespaces and links: root with CAP_SYS_ADMIN and
// CAP_NET_ADMIN.
func requireNetAdmin(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	probe := filepath.Join(t.TempDir(), "probe")
	if err := netnsutil.Create(probe); err != nil {
		testutil.Missing(t, fmt.Sprintf("needs permission to create network namespaces (%v)", err))
	}
	if err := netnsutil.Remove(probe); err != nil {
		t.Fatalf("remove probe namespace: %v", err)
	}
}

// testConfig returns a Config under dir whose node name is unique to the
// test, so host veth names never clash with other tests on the same kernel.
func testConfig(t *testing.T, dir, cidr string) Config {
	t.Helper()
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		NodeName: "network-test/" + t.Name(),
		RunDir:   filepath.Join(dir, "run"),
		StateDir: filepath.Join(dir, "state"),
		CIDR:     n,
		Log:      slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

func newManager(t *testing.T, cfg Config) *Manager {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// setup sets up a container's network and tears it down when the test ends,
// even if Setup failed halfway.
func setup(t *testing.T, m *Manager, id string, ip net.IP) *Endpoint {
	t.Helper()
	t.Cleanup(func() {
		// t.Context is already canceled when cleanups run.
		if err := m.Teardown(context.Background(), id); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("cleanup teardown %s: %v", id, err)
		}
	})
	ep, err := m.Setup(t.Context(), id, ip)
	if err != nil {
		t.Fatalf("Setup %s: %v", id, err)
	}
	return ep
}

// openNetns opens a namespace by path; "" is the test's own namespace.
func openNetns(t *testing.T, path string) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	var err error
	if path == "" {
		ns, err = openNodeNetns("")
	} else {
		ns, err = netns.GetFromPath(path)
	}
	if err != nil {
		t.Fatalf("open netns %q: %v", path, err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// handleIn returns a netlink handle inside the namespace at path ("" is the
// test's own).
func handleIn(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	h, err := netnsutil.NetlinkHandle(openNetns(t, path))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// newNodeNetns creates a namespace standing in for a node, with lo up and
// holding the node's address, and removes it when the test ends.
func newNodeNetns(t *testing.T, nodeIP string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "node")
	if err := netnsutil.Create(path); err != nil {
		t.Fatalf("create node netns: %v", err)
	}
	t.Cleanup(func() {
		if err := netnsutil.Remove(path); err != nil {
			t.Errorf("remove node netns: %v", err)
		}
	})
	h := handleIn(t, path)
	lo, err := h.LinkByName(loopbackInterface)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	// The node's address goes on lo: not every kernel has the dummy
	// module, and the kernel picks addresses on lo as source addresses.
	addr, err := netlink.ParseAddr(nodeIP + "/32")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(lo, addr); err != nil {
		t.Fatalf("add node address: %v", err)
	}
	return path
}

// inNetns runs fn with its thread in the namespace at path ("" runs it
// where the test already is). Sockets created in fn stay in that namespace.
func inNetns(t *testing.T, path string, fn func() error) error {
	t.Helper()
	if path == "" {
		return fn()
	}
	return netnsutil.Run(openNetns(t, path), fn)
}

// serveEcho listens on ip inside the container's namespace and echoes one
// line per connection. It returns the address to dial.
func serveEcho(t *testing.T, ep *Endpoint) string {
	t.Helper()
	var ln net.Listener
	if err := inNetns(t, ep.NetnsPath, func() error {
		var err error
		ln, err = net.Listen("tcp", net.JoinHostPort(ep.IP.String(), "0"))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ep.ContainerID, err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(testDialTimeout))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil {
					_, _ = c.Write([]byte(line))
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// echoFrom connects from the namespace at fromPath ("" is the test's own)
// to addr, sends a line and checks it comes back: the path works both ways.
func echoFrom(t *testing.T, fromPath, addr string) error {
	t.Helper()
	var conn net.Conn
	if err := inNetns(t, fromPath, func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, testDialTimeout)
		return err
	}); err != nil {
		return fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(testDialTimeout))
	const msg = "hello from the other side\n"
	if _, err := conn.Write([]byte(msg)); err != nil {
		return fmt.Errorf("write to %s: %w", addr, err)
	}
	got, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read from %s: %w", addr, err)
	}
	if got != msg {
		return fmt.Errorf("echo from %s = %q, want %q", addr, got, msg)
	}
	return nil
}

// routesTo lists the routes to ip/32 in the main table of h's namespace.
func routesTo(t *testing.T, h *netlink.Handle, ip net.IP) []netlink.Route {
	t.Helper()
	dst := &net.IPNet{IP: ip.To4(), Mask: net.CIDRMask(ipv4Bits, ipv4Bits)}
	routes, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatalf("list routes to %s: %v", dst, err)
	}
	return routes
}

// assertContainerSide checks what the container sees: lo up, eth0 up with
// exactly its IP as a /32, and a default route out of eth0.
func assertContainerSide(t *testing.T, ep *Endpoint) {
	t.Helper()
	h := handleIn(t, ep.NetnsPath)
	lo, err := h.LinkByName(loopbackInterface)
	if err != nil {
		t.Fatal(err)
	}
	if lo.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: lo is down", ep.ContainerID)
	}
	eth, err := h.LinkByName(ContainerInterface)
	if err != nil {
		t.Fatalf("%s: no %s: %v", ep.ContainerID, ContainerInterface, err)
	}
	if eth.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: %s is down", ep.ContainerID, ContainerInterface)
	}
	addrs, err := h.AddrList(eth, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	want := ep.IP.String() + "/32"
	if len(addrs) != 1 || addrs[0].IPNet.String() != want {
		t.Errorf("%s: %s addresses = %v, want only %s", ep.ContainerID, ContainerInterface, addrs, want)
	}
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var def []string
	for _, r := range routes {
		if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
			def = append(def, fmt.Sprintf("dev %d gw %v scope %v", r.LinkIndex, r.Gw, r.Scope))
			if r.LinkIndex != eth.Attrs().Index || r.Gw != nil {
				t.Errorf("%s: default route %+v, want default dev %s", ep.ContainerID, r, ContainerInterface)
			}
		}
	}
	if len(def) != 1 {
		t.Errorf("%s: default routes = %v, want exactly one", ep.ContainerID, def)
	}
}

// assertHostSide checks the node's end in the namespace at nodePath: the
// veth is up and proxies ARP, the node forwards, and the container's /32 is
// routed to the veth.
func assertHostSide(t *testing.T, nodePath string, ep *Endpoint) {
	t.Helper()
	h := handleIn(t, nodePath)
	link, err := h.LinkByName(ep.HostVeth)
	if err != nil {
		t.Fatalf("%s: host veth %s missing in the node namespace: %v", ep.ContainerID, ep.HostVeth, err)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("%s: host veth is down", ep.ContainerID)
	}
	ns := openNetns(t, nodePath)
	for key, want := range map[string]string{
		"ip_forward":                            enabled,
		"conf/" + ep.HostVeth + "/proxy_arp":    enabled,
		"neigh/" + ep.HostVeth + "/proxy_delay": noProxyDelay,
	} {
		if v, err := readSysctl(ns, key); err != nil || v != want {
			t.Errorf("%s: net.ipv4.%s = %q, %v; want %s", ep.ContainerID, strings.ReplaceAll(key, "/", "."), v, err, want)
		}
	}
	routes := routesTo(t, h, ep.IP)
	if len(routes) != 1 || routes[0].LinkIndex != link.Attrs().Index {
		t.Errorf("%s: host routes to %s = %v, want one via %s", ep.ContainerID, ep.IP, routes, ep.HostVeth)
	}
}

// assertGone checks, without trusting the Manager, that nothing of ep is
// left in the node namespace at nodePath, then that Leftovers agrees.
func assertGone(t *testing.T, m *Manager, nodePath string, ep *Endpoint) {
	t.Helper()
	assertKernelGone(t, nodePath, ep)
	if _, err := m.Lookup(ep.ContainerID); !errors.Is(err, ErrNotFound) {
		t.Errorf("%s: Lookup err = %v, want ErrNotFound", ep.ContainerID, err)
	}
	if left := m.Leftovers(ep.ContainerID); len(left) != 0 {
		t.Errorf("%s: Leftovers = %q, want none", ep.ContainerID, left)
	}
}

// assertKernelGone checks, without trusting the Manager, that ep's netns
// file, host veth and every route to its IP are gone from the node
// namespace at nodePath.
func assertKernelGone(t *testing.T, nodePath string, ep *Endpoint) {
	t.Helper()
	if _, err := os.Lstat(ep.NetnsPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: netns file %s: err = %v, want it gone", ep.ContainerID, ep.NetnsPath, err)
	}
	h := handleIn(t, nodePath)
	if _, err := h.LinkByName(ep.HostVeth); !isLinkNotFound(err) {
		t.Errorf("%s: host veth %s: err = %v, want it gone", ep.ContainerID, ep.HostVeth, err)
	}
	if routes := routesTo(t, h, ep.IP); len(routes) != 0 {
		t.Errorf("%s: routes to %s remain: %v", ep.ContainerID, ep.IP, routes)
	}
}
