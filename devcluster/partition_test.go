package devcluster_test

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/netnsutil"
)

// reachPort is where listenIn listens on each host.
const reachPort = 7790

// cutWait is how long a connection across a cut link is given before it
// counts as cut off: an SYN that is dropped is never answered.
// reachWait is how long one across a link that must get through is
// given: much longer, for a loaded machine (go test ./... runs the
// cluster tests beside this package).
const (
	cutWait   = 500 * time.Millisecond
	reachWait = 10 * time.Second
)

// listenIn accepts (and closes) connections on h's address, reachPort.
func listenIn(t *testing.T, h *devcluster.Host) {
	t.Helper()
	ns, err := netns.GetFromPath(h.NetnsPath())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var l net.Listener
	if err := netnsutil.Run(ns, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(h.Addr().String(), strconv.Itoa(reachPort)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// reaches reports whether a connection from host from (nil: the root
// namespace) to host to gets through within wait.
func reaches(t *testing.T, from, to *devcluster.Host, wait time.Duration) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	addr := net.JoinHostPort(to.Addr().String(), strconv.Itoa(reachPort))
	var c net.Conn
	var err error
	if from == nil {
		var d net.Dialer
		c, err = d.DialContext(ctx, "tcp", addr)
	} else {
		c, err = from.Dial(ctx, "tcp", addr)
	}
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestCutAndHeal: a cut link drops what two hosts send each other, both
// ways, and nothing else; Heal brings it back, also after a repeated Cut.
func TestCutAndHeal(t *testing.T) {
	// No agent runs here: any existing binary will do for the agents'.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := devclustertest.Start(t, devcluster.Config{Name: "dcut", Bin: self,
		Subnet: netip.MustParsePrefix("10.77.39.0/24"), ContainerCIDR: netip.MustParsePrefix("10.78.39.0/24")}, "a", "b", "c")
	a, b, third := c.Host("a"), c.Host("b"), c.Host("c")
	for _, h := range c.Hosts() {
		listenIn(t, h)
	}
	type path struct {
		name     string
		from, to *devcluster.Host
		cut      bool // cut off while a-b is cut
	}
	paths := []path{
		{"a to b", a, b, true},
		{"b to a", b, a, true},
		{"a to c", a, third, false},
		{"c to b", third, b, false},
		{"root to a", nil, a, false},
		{"root to b", nil, b, false},
	}
	check := func(step string, cut bool) {
		t.Helper()
		for _, p := range paths {
			want := !(cut && p.cut)
			wait := reachWait
			if !want {
				wait = cutWait
			}
			if got := reaches(t, p.from, p.to, wait); got != want {
				t.Errorf("%s: %s gets through: %v, want %v", step, p.name, got, want)
			}
		}
	}
	ctx := context.Background()
	check("before the cut", false)
	if err := c.Cut(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	check("cut", true)
	if err := c.Cut(ctx, b, a); err != nil {
		t.Fatalf("cut again: %v", err)
	}
	if err := c.Heal(ctx, a, b); err != nil {
		t.Fatal(err)
	}
	check("healed", false)
	if err := c.Heal(ctx, a, b); err != nil {
		t.Errorf("heal a healed link: %v", err)
	}
	if err := c.Cut(ctx, a, a); err == nil {
		t.Errorf("cutting a host from itself: no error")
	}
}
