package network

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// udpIn listens for datagrams on ep's address inside its namespace.
func udpIn(t *testing.T, ep *Endpoint) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := inNetns(t, ep.NetnsPath, func() error {
		var err error
		c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ep.IP})
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", ep.ContainerID, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendFrom sends each payload as one datagram from the namespace at path
// to addr.
func sendFrom(t *testing.T, path string, addr net.Addr, payloads ...string) {
	t.Helper()
	var c net.Conn
	if err := inNetns(t, path, func() error {
		var err error
		c, err = net.Dial("udp4", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, p := range payloads {
		if _, err := c.Write([]byte(p)); err != nil {
			t.Fatalf("send %q: %v", p, err)
		}
	}
}

// received reads datagrams from c until none comes for wait.
func received(c *net.UDPConn, wait time.Duration) []string {
	var got []string
	buf := make([]byte, 2048)
	for {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:n]))
	}
}

func payloads(n int) []string {
	var p []string
	for i := range n {
		p = append(p, fmt.Sprintf("datagram %d", i))
	}
	return p
}

// assertUnheld checks that the hold on ep left nothing in the node's
// namespace: no TUN device, no rule.
func assertUnheld(t *testing.T, nodePath string, ep *Endpoint) {
	t.Helper()
	h := handleIn(t, nodePath)
	if _, err := h.LinkByName(holdLinkName(netip.MustParseAddr(ep.IP.String()))); err == nil {
		t.Errorf("TUN device of the hold on %s still exists", ep.IP)
	}
	rules, err := h.RuleList(netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.Priority == holdRulePriority {
			t.Errorf("hold rule left: %v", r)
		}
	}
}

func TestHoldCatchesPacketsAndReleaseSendsThemOnInOrder(t *testing.T) {
	requireNetAdmin(t)
	m, nodePath := newNodeManager(t, "10.250.60.0/24")
	ep := setup(t, m, "hold-c1", nil)
	in := udpIn(t, ep)

	h, err := m.Hold(t.Context(), ep.IP)
	if err != nil {
		t.Fatalf("Hold: %v", err)
	}
	want := payloads(20)
	sendFrom(t, nodePath, in.LocalAddr(), want...)
	if got := received(in, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("the container got %q while its packets were held", got)
	}

	sent, dropped, err := h.Release(t.Context())
	if err != nil || sent != len(want) || dropped != 0 {
		t.Fatalf("Release = %d sent, %d dropped, %v; want %d, 0, nil", sent, dropped, err, len(want))
	}
	got := received(in, time.Second)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after Release the container got %q, want %q", got, want)
	}
	assertUnheld(t, nodePath, ep)

	sendFrom(t, nodePath, in.LocalAddr(), "direct")
	if got := received(in, time.Second); fmt.Sprint(got) != "[direct]" {
		t.Errorf("after Release a new packet arrived as %q, want [direct]", got)
	}
	if _, _, err := h.Release(t.Context()); err != nil {
		t.Errorf("second Release: %v", err)
	}
}

func TestHoldDiscardDropsWhatItCaught(t *testing.T) {
	requireNetAdmin(t)
	m, nodePath := newNodeManager(t, "10.250.61.0/24")
	ep := setup(t, m, "hold-c2", nil)
	in := udpIn(t, ep)

	h, err := m.Hold(t.Context(), ep.IP)
	if err != nil {
		t.Fatalf("Hold: %v", err)
	}
	sendFrom(t, nodePath, in.LocalAddr(), payloads(3)...)
	if err := h.Discard(); err != nil {
		t.Fatalf("Discard: %v", err)
	}
	if got := received(in, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("the container got %q from a discarded hold", got)
	}
	assertUnheld(t, nodePath, ep)
}

// An agent that dies holding packets leaves a rule to an empty table:
// packets go by the main table again, and the next agent removes it.
func TestHoldOfADeadAgentFallsBackAndIsCleanedUp(t *testing.T) {
	requireNetAdmin(t)
	m, nodePath := newNodeManager(t, "10.250.62.0/24")
	ep := setup(t, m, "hold-c3", nil)
	in := udpIn(t, ep)

	h, err := m.Hold(t.Context(), ep.IP)
	if err != nil {
		t.Fatalf("Hold: %v", err)
	}
	h.tun.Close() // what the kernel does when the agent dies
	<-h.done
	sendFrom(t, nodePath, in.LocalAddr(), "after death")
	if got := received(in, time.Second); fmt.Sprint(got) != "[after death]" {
		t.Errorf("with the holding agent dead a packet arrived as %q, want [after death]", got)
	}
	if err := m.RemoveStaleHolds(); err != nil {
		t.Fatalf("RemoveStaleHolds: %v", err)
	}
	assertUnheld(t, nodePath, ep)
}

func TestHoldRefusesANonIPv4Address(t *testing.T) {
	m := newManager(t, testConfig(t, t.TempDir(), "10.250.63.0/24"))
	if _, err := m.Hold(t.Context(), net.ParseIP("fd00::1")); err == nil {
		t.Error("Hold of an IPv6 address succeeded")
	}
}
