package network

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/netnsutil"
)

// Holding packets during a freeze.
//
// While a container is frozen for a migration its TCP peers' packets are
// dropped (CRIU's network lock, or a namespace with no socket yet), and
// each peer backs off exponentially: the first packet after the freeze
// leaves it at the next retransmission, 0.2, 0.6, 1.4, 3.0 s ... after its
// first loss, so a client sees the freeze rounded up to that series (DESIGN.md
// section 7). A Hold catches those packets on the node instead and sends
// them on once the container runs again, wherever it runs: the container
// answers at once and the peer's gap is the freeze itself.
//
// How: a policy rule sends everything routed to the container's /32 to a
// table of its own whose one route leads into a TUN device the Hold reads;
// Release deletes the rule, so the node's main table applies again (the
// container back on this node, or the forward to its new node), and writes
// the caught packets out through a raw socket. The TUN device is not
// persistent: if the agent dies, the kernel deletes it with its route, and
// the rule left behind points at an empty table, so packets go by the main
// table again (and are lost, as they would be without a Hold).

// Bounds on what a Hold keeps: a peer retransmits what was lost anyway,
// so past these the packets are dropped as they would be without a Hold.
const (
	holdMaxPackets = 4096
	holdMaxBytes   = 16 << 20
	// holdMTU is the TUN device's MTU: as large as a packet can be, so
	// that no packet routed to it is refused as too big (which would
	// make the peer lower its path MTU).
	holdMTU = 65535
	// holdRulePriority puts the hold's rule before the main table's
	// (32766).
	holdRulePriority = 100
	// holdTableBase is added to the TUN device's interface index to name
	// the hold's routing table, unique on the node.
	holdTableBase = 0x67770000
)

// Hold catches the packets the node routes to one address. Release sends
// them on; Discard drops them.
type Hold struct {
	m    *Manager
	ip   netip.Addr
	tun  *os.File
	link string
	rule *netlink.Rule
	done chan struct{} // closed when the reader stops

	stopOnce sync.Once
	stopErr  error

	mu      sync.Mutex
	packets [][]byte
	bytes   int
	dropped int
}

// Hold starts catching the packets the node routes to ip (an IPv4
// address): nothing reaches ip until Release or Discard. Start it before
// the container freezes; a failure leaves the node as it was.
func (m *Manager) Hold(ctx context.Context, ip net.IP) (*Hold, error) {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok || !addr.Unmap().Is4() {
		return nil, fmt.Errorf("hold packets to %v: not an IPv4 address", ip)
	}
	addr = addr.Unmap()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	host, err := m.hostHandle()
	if err != nil {
		return nil, err
	}
	h := &Hold{m: m, ip: addr, link: holdLinkName(addr), done: make(chan struct{})}
	if err := netnsutil.Run(m.nodeNS, func() error {
		h.tun, err = openTUN(h.link)
		return err
	}); err != nil {
		return nil, fmt.Errorf("hold packets to %s: %w", addr, err)
	}
	if err := h.route(host); err != nil {
		h.tun.Close()
		return nil, fmt.Errorf("hold packets to %s: %w", addr, err)
	}
	go h.read()
	m.log.Debug("holding packets", "ip", addr, "link", h.link)
	return h, nil
}

// holdLinkName names the TUN device of a hold on addr (15 bytes at most).
func holdLinkName(addr netip.Addr) string {
	return fmt.Sprintf("gwh%08x", binary.BigEndian.Uint32(addr.AsSlice()))
}

// openTUN creates the non-persistent TUN device name in the calling
// thread's namespace and returns its queue, non-blocking so that Close
// interrupts a Read.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create TUN device %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// route brings the TUN device up and routes h.ip into it through a rule
// and a table of its own.
func (h *Hold) route(host *netlink.Handle) error {
	link, err := host.LinkByName(h.link)
	if err != nil {
		return fmt.Errorf("find TUN device %s: %w", h.link, err)
	}
	if err := host.LinkSetMTU(link, holdMTU); err != nil {
		return fmt.Errorf("set MTU of %s: %w", h.link, err)
	}
	if err := host.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up %s: %w", h.link, err)
	}
	table := holdTableBase + link.Attrs().Index
	dst := hostPrefix(h.ip)
	if err := host.RouteAdd(&netlink.Route{Dst: dst, LinkIndex: link.Attrs().Index, Table: table}); err != nil {
		return fmt.Errorf("route %s to %s: %w", dst, h.link, err)
	}
	rule := netlink.NewRule()
	rule.Priority = holdRulePriority
	rule.Dst = dst
	rule.Table = table
	if err := host.RuleAdd(rule); err != nil {
		return fmt.Errorf("add rule for %s: %w", dst, err)
	}
	h.rule = rule
	return nil
}

// read keeps every packet the TUN device yields, within the bounds, until
// the device is closed.
func (h *Hold) read() {
	defer close(h.done)
	buf := make([]byte, holdMTU)
	for {
		n, err := h.tun.Read(buf)
		if err != nil {
			return
		}
		if !h.isFor(buf[:n]) {
			continue // the device's own traffic (IPv6 router solicitations)
		}
		h.mu.Lock()
		if len(h.packets) < holdMaxPackets && h.bytes+n <= holdMaxBytes {
			h.packets = append(h.packets, append([]byte(nil), buf[:n]...))
			h.bytes += n
		} else {
			h.dropped++
		}
		h.mu.Unlock()
	}
}

// isFor reports whether p is an IPv4 packet to the held address.
func (h *Hold) isFor(p []byte) bool {
	const ipv4HeaderLen = 20
	return len(p) >= ipv4HeaderLen && p[0]>>4 == 4 && netip.AddrFrom4([4]byte(p[16:20])) == h.ip
}

// stop deletes the rule and the TUN device (with its route) and waits
// for the reader: from then on the node's main table routes h.ip. Only
// the first call does anything.
func (h *Hold) stop() error {
	h.stopOnce.Do(func() { h.stopErr = h.unroute() })
	return h.stopErr
}

func (h *Hold) unroute() error {
	var errs []error
	h.m.mu.Lock()
	host, err := h.m.hostHandle()
	if err == nil && h.rule != nil {
		if err := host.RuleDel(h.rule); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete the hold's rule for %s: %w", h.ip, err))
		}
	}
	h.m.mu.Unlock()
	if err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, h.tun.Close())
	<-h.done
	return errors.Join(errs...)
}

// Release stops holding and sends the caught packets on, in the order
// they came, through the node's routes as they are now: to the container
// if it runs here again, or to the node it moved to once the node forwards
// its address there. It returns how many packets it sent and how many it
// had to drop. Call it once the container runs.
func (h *Hold) Release(ctx context.Context) (sent, dropped int, err error) {
	if err := h.stop(); err != nil {
		return 0, 0, err
	}
	h.mu.Lock()
	packets, dropped := h.packets, h.dropped
	h.packets = nil
	h.mu.Unlock()
	if len(packets) == 0 {
		return 0, dropped, nil
	}
	var fd int
	if err := netnsutil.Run(h.m.nodeNS, func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
		return err
	}); err != nil {
		return 0, dropped + len(packets), fmt.Errorf("send held packets to %s: raw socket: %w", h.ip, err)
	}
	defer unix.Close(fd)
	to := &unix.SockaddrInet4{Addr: h.ip.As4()}
	for i, p := range packets {
		if err := ctx.Err(); err != nil {
			return sent, dropped + len(packets) - i, err
		}
		// The packets keep their headers, the peer's source address
		// included (IPPROTO_RAW implies IP_HDRINCL).
		if err := unix.Sendto(fd, p, 0, to); err != nil {
			dropped++
			continue
		}
		sent++
	}
	h.m.log.Debug("held packets sent on", "ip", h.ip, "sent", sent, "dropped", dropped)
	return sent, dropped, nil
}

// Discard stops holding and drops what was caught.
func (h *Hold) Discard() error {
	err := h.stop()
	h.mu.Lock()
	h.packets = nil
	h.mu.Unlock()
	return err
}

// RemoveStaleHolds deletes the rules that holds of an agent that died
// left behind (their TUN devices and routes died with it). Call it when
// the agent starts, before any Hold.
func (m *Manager) RemoveStaleHolds() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	host, err := m.hostHandle()
	if err != nil {
		return err
	}
	rules, err := host.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list routing rules: %w", err)
	}
	var errs []error
	for _, r := range rules {
		if r.Priority == holdRulePriority && r.Table >= holdTableBase && r.Table < holdTableBase+1<<24 {
			if err := host.RuleDel(&r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete stale hold rule to %v: %w", r.Dst, err))
			}
		}
	}
	return errors.Join(errs...)
}
