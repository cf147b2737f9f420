package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/netnsutil"
)

// ContainerInterface is the name of the container's end of its veth.
const ContainerInterface = "eth0"

const (
	// netnsSubdir holds the pinned namespaces under the run dir.
	netnsSubdir = "netns"
	// vethPrefix starts every host-side veth name, so an operator can tell
	// godwit's links apart in `ip link`.
	vethPrefix = "gw"
	// vethHashLen is how many hex digits of the hash follow the prefix.
	// 40 bits keep names of many nodes sharing one kernel apart, and the
	// whole name within maxIfNameLen.
	vethHashLen = 10
	// maxIfNameLen is the kernel's limit on an interface name (IFNAMSIZ
	// less the terminating NUL).
	maxIfNameLen = unix.IFNAMSIZ - 1
	// vethNameFits fails to compile if a veth name could exceed the limit.
	vethNameFits = uint(maxIfNameLen - len(vethPrefix) - vethHashLen)
	// loopbackInterface is the namespace's loopback device.
	loopbackInterface = "lo"
	// enabled is how /proc/sys spells a boolean that is on.
	enabled = "1"
	// noProxyDelay makes proxy ARP answer at once (see configureHostEnd).
	noProxyDelay = "0"
	// linkUpTimeout bounds the wait for the veth to pass traffic; the
	// kernel defers non-urgent link events by at most about one second.
	linkUpTimeout = 3 * time.Second
	// linkUpPoll is how often the wait looks at the links.
	linkUpPoll = 10 * time.Millisecond
)

var (
	// ErrNoAddresses means every address of --container-cidr is taken.
	ErrNoAddresses = errors.New("no free container address")
	// ErrAddressInUse means a requested address belongs to another container.
	ErrAddressInUse = errors.New("address in use")
	// ErrOutOfRange means a requested address is outside --container-cidr or
	// is one of its reserved addresses (network, node, broadcast).
	ErrOutOfRange = errors.New("address not usable for a container")
	// ErrNotFound means the container has no network endpoint on this node.
	ErrNotFound = errors.New("no network endpoint")
	// ErrExists means Setup was called for a container that already has an
	// attached endpoint.
	ErrExists = errors.New("network endpoint exists")
	// ErrAddressMismatch means Setup asked for another address than the one
	// a detached endpoint keeps reserved.
	ErrAddressMismatch = errors.New("address differs from the container's reserved address")
	// ErrInvalidID means a container id cannot name a file or kernel object.
	ErrInvalidID = errors.New("invalid container id")
	// ErrClosed means the Manager was closed.
	ErrClosed = errors.New("network manager closed")
)

// containerIDPattern is what runc accepts as a container id, which also keeps
// the id safe as a file name under the run dir.
var containerIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.+-]{0,254}$`)

// Config configures a Manager.
type Config struct {
	// NodeName names the node; host-side veth names derive from it, so
	// agents with different names can share one kernel namespace.
	NodeName string
	// RunDir is the node's run dir; namespaces are pinned under
	// <RunDir>/netns.
	RunDir string
	// StateDir is where ipam.json persists the address reservations.
	StateDir string
	// CIDR is --container-cidr: IPv4, /30 or wider.
	CIDR *net.IPNet
	// Log receives the Manager's log; nil discards it.
	Log *slog.Logger
	// NodeNetns is the path of the node's network namespace (a bind mount or
	// /proc/PID/ns/net). Empty means the namespace of the thread calling New,
	// so an agent started inside a namespace needs nothing here.
	NodeNetns string
}

// Endpoint is one container's network on this node.
type Endpoint struct {
	ContainerID string
	// NetnsPath is the pinned namespace to give runc.
	NetnsPath string
	// IP is the container's address, held as a /32 on its eth0.
	IP net.IP
	// HostVeth is the node's end of the veth pair.
	HostVeth string
	// Attached is false between Detach and the next Setup: the address is
	// reserved, but the namespace, veth and host route are not meant to
	// exist (NetnsPath cannot be given to runc).
	Attached bool
	// Routed is false while the node does not route IP to the container
	// (SetupUnrouted, until Route).
	Routed bool
}

// Manager sets up and tears down container networks in one node's network
// namespace. Its methods are safe for concurrent use; Setup and Teardown run
// one at a time.
type Manager struct {
	nodeName string
	netnsDir string
	log      *slog.Logger
	// nodeNS is the namespace every host-side object lives in.
	nodeNS netns.NsHandle

	mu     sync.Mutex
	ipam   *ipam
	host   *netlink.Handle // opened on first use, so IPAM works without root
	closed bool
}

// New loads the node's address reservations and captures the node's network
// namespace. It changes nothing in the kernel and does not need root.
func New(cfg Config) (*Manager, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("network: no node name given; pass the agent's --name")
	}
	if cfg.RunDir == "" || cfg.StateDir == "" {
		return nil, errors.New("network: run dir and state dir are required")
	}
	runDir, err := filepath.Abs(cfg.RunDir)
	if err != nil {
		return nil, fmt.Errorf("network: run dir: %w", err)
	}
	prefix, err := prefixFromIPNet(cfg.CIDR)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, stateDirMode); err != nil {
		return nil, fmt.Errorf("network: create state dir: %w", err)
	}
	a, err := loadIPAM(filepath.Join(cfg.StateDir, ipamFileName), prefix, log)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	nodeNS, err := openNodeNetns(cfg.NodeNetns)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	return &Manager{
		nodeName: cfg.NodeName,
		netnsDir: filepath.Join(runDir, netnsSubdir),
		log:      log,
		nodeNS:   nodeNS,
		ipam:     a,
	}, nil
}

func openNodeNetns(path string) (netns.NsHandle, error) {
	if path != "" {
		ns, err := netns.GetFromPath(path)
		if err != nil {
			return netns.None(), fmt.Errorf("open node network namespace %s: %w", path, err)
		}
		return ns, nil
	}
	return netnsutil.Current()
}

// Close releases the Manager's handles. It leaves every container's network
// in place: containers keep running while the agent restarts.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.host != nil {
		m.host.Close()
	}
	return m.nodeNS.Close()
}

// Setup creates the container's network namespace, veth pair, address,
// default route and host route, and returns the endpoint. A nil ip allocates
// the lowest free address; otherwise ip is reserved, or Setup fails with
// ErrOutOfRange or ErrAddressInUse. A container whose endpoint is attached
// gets ErrExists.
//
// A container whose endpoint is detached (see Detach) already holds its
// address: Setup re-creates its kernel objects with that address and the
// recorded names. ip must then be nil or that address; another one fails
// with ErrAddressMismatch.
//
// On any failure, including ctx ending between steps, Setup undoes what it
// did: a new container is left with nothing, a detached one is left
// detached with its reservation.
//
// The reservation is persisted, and a detached endpoint marked attached,
// before any kernel object exists, so an agent that dies halfway leaves a
// record that Lookup finds and Teardown or Detach clears.
func (m *Manager) Setup(ctx context.Context, containerID string, ip net.IP) (*Endpoint, error) {
	return m.setup(ctx, containerID, ip, true)
}

// SetupUnrouted is Setup without the node's route to the address: the
// namespace, the veth pair and the address inside exist, but nothing
// outside the namespace reaches the container until Route. A migration's
// destination prepares a container's network this way before the freeze,
// so that the restore does not wait for it, and routes it at the commit:
// until then a packet must not reach the restored copy, whose kernel
// would acknowledge data that the source's copy, which runs again after
// an abort, never saw. Setup of the same container afterwards fails with
// ErrExists; Route, Teardown or Detach follow it.
func (m *Manager) SetupUnrouted(ctx context.Context, containerID string, ip net.IP) (*Endpoint, error) {
	return m.setup(ctx, containerID, ip, false)
}

func (m *Manager) setup(ctx context.Context, containerID string, ip net.IP, route bool) (ep *Endpoint, err error) {
	if err := validateID(containerID); err != nil {
		return nil, err
	}
	var want netip.Addr
	if ip != nil {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return nil, fmt.Errorf("%w: %v is not an IP address", ErrOutOfRange, ip)
		}
		want = a.Unmap()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	log := m.log.With("container", containerID)

	var undo []func() error
	defer func() {
		if err == nil {
			return
		}
		for i := len(undo) - 1; i >= 0; i-- {
			if uerr := undo[i](); uerr != nil {
				err = errors.Join(err, fmt.Errorf("undo: %w", uerr))
			}
		}
		log.Warn("container network setup failed", "err", err)
		err = fmt.Errorf("set up network of container %s: %w", containerID, err)
	}()
	step := func(fn func() error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return fn()
	}

	host, err := m.hostHandle()
	if err != nil {
		return nil, err
	}
	rec, known := m.ipam.lookup(containerID)
	reattach := known && rec.Detached
	if reattach {
		if want.IsValid() && want != rec.IP {
			return nil, fmt.Errorf("%w: the container is detached and keeps %s, %s was requested; request %s or no address, or tear down its network to change its address",
				ErrAddressMismatch, rec.IP, want, rec.IP)
		}
		if err := m.ipam.setDetached(containerID, false); err != nil {
			return nil, err
		}
		rec.Detached = false
		// The address was reserved before this call, so failing gives it
		// back to the detached endpoint rather than releasing it.
		undo = append(undo, func() error { return m.ipam.setDetached(containerID, true) })
	} else {
		rec = record{HostVeth: m.vethName(containerID), NetnsPath: m.netnsPath(containerID), Unrouted: !route}
		rec.IP, err = m.ipam.reserve(containerID, want, rec)
		if err != nil {
			return nil, err
		}
		undo = append(undo, func() error { return m.ipam.release(containerID) })
	}

	// Forwarding is a property of the node, not of the container, so it is
	// never undone.
	if err := step(func() error { return ensureSysctl(m.nodeNS, "ip_forward", enabled) }); err != nil {
		return nil, err
	}
	if err := step(func() error { return netnsutil.Create(rec.NetnsPath) }); err != nil {
		return nil, err
	}
	undo = append(undo, func() error { return netnsutil.Remove(rec.NetnsPath) })

	var hostLink netlink.Link
	if err := step(func() error {
		var err error
		hostLink, err = createVeth(host, rec)
		return err
	}); err != nil {
		return nil, err
	}
	// Deleting the host end also deletes the peer and every route via it.
	undo = append(undo, func() error { return deleteLink(host, rec.HostVeth) })

	if err := step(func() error { return m.configureHostEnd(host, hostLink) }); err != nil {
		return nil, err
	}
	if err := step(func() error { return configureContainer(rec) }); err != nil {
		return nil, err
	}
	if route {
		if err := step(func() error { return dropForward(host, rec.IP) }); err != nil {
			return nil, err
		}
		if err := step(func() error { return addHostRoute(host, hostLink, rec.IP) }); err != nil {
			return nil, err
		}
	}
	if err := waitLinksUp(ctx, host, rec); err != nil {
		return nil, err
	}
	if rec.Unrouted == route { // a detached endpoint set up again
		if err := m.ipam.setUnrouted(containerID, !route); err != nil {
			return nil, err
		}
		rec.Unrouted = !route
	}

	log.Info("container network ready", "ip", rec.IP, "veth", rec.HostVeth, "netns", rec.NetnsPath, "reattached", reattach, "routed", route)
	return endpointOf(containerID, rec), nil
}

// Route makes the node route the address of a container set up with
// SetupUnrouted to it, replacing any other route to the address (a
// forward to another node); a routed container is left as it is.
func (m *Manager) Route(ctx context.Context, containerID string) error {
	if err := validateID(containerID); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	rec, ok := m.ipam.lookup(containerID)
	switch {
	case !ok:
		return fmt.Errorf("route container %s: %w", containerID, ErrNotFound)
	case rec.Detached:
		return fmt.Errorf("route container %s: its network is detached: set it up first", containerID)
	case !rec.Unrouted:
		return nil
	}
	host, err := m.hostHandle()
	if err != nil {
		return err
	}
	link, err := host.LinkByName(rec.HostVeth)
	if err != nil {
		return fmt.Errorf("route container %s: find veth %s: %w", containerID, rec.HostVeth, err)
	}
	// Replace, not add: the move is decided, so this container takes the
	// address over on this node, from a forward to another node or, when
	// two agents share one namespace (tests, demos), from the source's
	// frozen copy, whose removal later deletes only routes via its own
	// veth.
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostPrefix(rec.IP), Scope: netlink.SCOPE_LINK}
	if err := host.RouteReplace(r); err != nil {
		return fmt.Errorf("route container %s: host route %s dev %s: %w", containerID, r.Dst, rec.HostVeth, err)
	}
	if err := m.ipam.setUnrouted(containerID, false); err != nil {
		return err
	}
	m.log.Info("container network routed", "container", containerID, "ip", rec.IP, "veth", rec.HostVeth)
	return nil
}

// Teardown removes the container's host route, veth pair and pinned network
// namespace, then releases its address. Parts already gone are not errors,
// so it finishes an interrupted Setup or Teardown and may be called any
// number of times. The address is released only once everything else is
// gone, so it is never handed out while the old container may still answer
// on it; on error, run Teardown again. It does not stop halfway when ctx
// ends: a half-removed network is worse than a late return.
func (m *Manager) Teardown(ctx context.Context, containerID string) error {
	if err := validateID(containerID); err != nil {
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
	rec := m.recordOrDefault(containerID)

	if errs := removeKernelObjects(host, rec); len(errs) > 0 {
		err := fmt.Errorf("tear down network of container %s (its address stays reserved; run the removal again): %w",
			containerID, errors.Join(errs...))
		m.log.Warn("container network teardown failed", "container", containerID, "err", err)
		return err
	}
	if err := m.ipam.release(containerID); err != nil {
		return fmt.Errorf("tear down network of container %s: release address: %w", containerID, err)
	}
	m.log.Info("container network removed", "container", containerID, "ip", rec.IP)
	return nil
}

// Detach removes the container's host routes, veth pair and pinned network
// namespace, like Teardown, but keeps its address reserved and its record,
// marked detached, so that a later Setup of the container brings them back
// with the same address. It is for a container whose processes are gone but
// whose identity is not (checkpointed and stopped): the address stays
// this node's to restore with, while another agent sharing the node's
// network namespace may run the container meanwhile and route the address
// through its own veth. The container's processes must be gone: one still
// in the namespace keeps it alive, without its veth.
//
// Parts already gone are not errors and a detached endpoint may be
// detached again, so Detach finishes an interrupted Detach and may be
// called any number of times. The endpoint is marked detached, and the mark
// persisted, only once everything is gone; on error it stays attached and
// Detach can be run again. Like Teardown it does not stop halfway when ctx
// ends. A container without an endpoint fails with ErrNotFound.
func (m *Manager) Detach(ctx context.Context, containerID string) error {
	if err := validateID(containerID); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	rec, ok := m.ipam.lookup(containerID)
	if !ok {
		return fmt.Errorf("detach network of container %s: %w", containerID, ErrNotFound)
	}
	host, err := m.hostHandle()
	if err != nil {
		return err
	}
	if errs := removeKernelObjects(host, rec); len(errs) > 0 {
		err := fmt.Errorf("detach network of container %s (it stays attached; run the detach again): %w",
			containerID, errors.Join(errs...))
		m.log.Warn("container network detach failed", "container", containerID, "err", err)
		return err
	}
	if err := m.ipam.setDetached(containerID, true); err != nil {
		return fmt.Errorf("detach network of container %s: record it as detached: %w", containerID, err)
	}
	m.log.Info("container network detached", "container", containerID, "ip", rec.IP)
	return nil
}

// removeKernelObjects removes the routes to the container's /32 via its
// veth, the veth pair and the pinned namespace, each only if it exists, and
// returns every error. It goes on after an error, so one call removes all it
// can.
func removeKernelObjects(host *netlink.Handle, rec record) []error {
	var errs []error
	link, err := host.LinkByName(rec.HostVeth)
	switch {
	case isLinkNotFound(err):
		link = nil
	case err != nil:
		errs = append(errs, fmt.Errorf("find veth %s: %w", rec.HostVeth, err))
	}
	if link != nil && rec.IP.IsValid() {
		if err := deleteHostRoutes(host, link, rec.IP); err != nil {
			errs = append(errs, err)
		}
	}
	if link != nil {
		if err := deleteLink(host, rec.HostVeth); err != nil {
			errs = append(errs, err)
		}
	}
	if err := netnsutil.Remove(rec.NetnsPath); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// Lookup returns the endpoint recorded for containerID, as persisted, so it
// works after an agent restart; Endpoint.Attached tells a detached endpoint
// apart. It does not check the kernel (Leftovers does). It fails with
// ErrNotFound when the container has no endpoint.
func (m *Manager) Lookup(containerID string) (*Endpoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := m.ipam.lookup(containerID)
	if !ok {
		return nil, fmt.Errorf("container %s: %w", containerID, ErrNotFound)
	}
	return endpointOf(containerID, rec), nil
}

// List returns every recorded endpoint, attached or detached, ordered by
// container id, so a restarted agent can match them against its containers.
func (m *Manager) List() []*Endpoint {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Endpoint, 0, len(m.ipam.byID))
	for id, rec := range m.ipam.byID {
		out = append(out, endpointOf(id, rec))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ContainerID < out[j].ContainerID })
	return out
}

// Leftovers describes what exists on this node for containerID: its netns
// file and mount, its host veth, host routes via that veth, and its address
// reservation. It is empty once Teardown succeeded. For a detached endpoint
// it lists only the reservation, marked detached, unless Detach was
// interrupted: the kernel objects are not expected, so none is listed as
// missing, and any that exists is listed. A part that cannot be checked is
// listed with the reason, so a caller never mistakes "unknown" for "gone".
func (m *Manager) Leftovers(containerID string) []string {
	if err := validateID(containerID); err != nil {
		return nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	rec := m.recordOrDefault(containerID)

	var out []string
	if _, err := os.Lstat(rec.NetnsPath); err == nil {
		out = append(out, "netns file "+rec.NetnsPath)
	} else if !errors.Is(err, os.ErrNotExist) {
		out = append(out, fmt.Sprintf("netns file %s: cannot check: %v", rec.NetnsPath, err))
	}
	if mounted, err := isMountPoint(rec.NetnsPath); err != nil {
		out = append(out, fmt.Sprintf("netns mount %s: cannot check: %v", rec.NetnsPath, err))
	} else if mounted {
		out = append(out, "netns mount "+rec.NetnsPath)
	}
	switch {
	case rec.IP.IsValid() && rec.Detached:
		out = append(out, fmt.Sprintf("ip reservation %s (detached)", rec.IP))
	case rec.IP.IsValid():
		out = append(out, fmt.Sprintf("ip reservation %s", rec.IP))
	}
	if m.closed {
		return append(out, "veth and routes: cannot check: "+ErrClosed.Error())
	}
	host, err := m.hostHandle()
	if err != nil {
		return append(out, fmt.Sprintf("veth and routes: cannot check: %v", err))
	}
	link, err := host.LinkByName(rec.HostVeth)
	switch {
	case isLinkNotFound(err):
		return out
	case err != nil:
		return append(out, fmt.Sprintf("veth %s: cannot check: %v", rec.HostVeth, err))
	}
	out = append(out, "veth "+rec.HostVeth)
	routes, err := host.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: link.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return append(out, fmt.Sprintf("routes via %s: cannot check: %v", rec.HostVeth, err))
	}
	for _, r := range routes {
		out = append(out, fmt.Sprintf("route %s dev %s", r.Dst, rec.HostVeth))
	}
	return out
}

// HostVethName returns the name of the node's end of containerID's veth on
// node nodeName: a short hash, since interface names are limited to 15
// bytes and several nodes may share one kernel namespace.
func HostVethName(nodeName, containerID string) string {
	sum := sha256.Sum256([]byte(nodeName + "\x00" + containerID))
	return vethPrefix + hex.EncodeToString(sum[:])[:vethHashLen]
}

func (m *Manager) vethName(containerID string) string {
	return HostVethName(m.nodeName, containerID)
}

func (m *Manager) netnsPath(containerID string) string {
	return filepath.Join(m.netnsDir, containerID)
}

// recordOrDefault returns the persisted record, or the names the container's
// objects would have, so leftovers of a record lost in a crash are found.
func (m *Manager) recordOrDefault(containerID string) record {
	if rec, ok := m.ipam.lookup(containerID); ok {
		return rec
	}
	return record{HostVeth: m.vethName(containerID), NetnsPath: m.netnsPath(containerID)}
}

// hostHandle returns the netlink handle of the node's namespace, opening it
// on first use. The caller holds m.mu.
func (m *Manager) hostHandle() (*netlink.Handle, error) {
	if m.host == nil {
		h, err := netnsutil.NetlinkHandle(m.nodeNS)
		if err != nil {
			return nil, fmt.Errorf("node network namespace: %w", err)
		}
		m.host = h
	}
	return m.host, nil
}

func endpointOf(containerID string, rec record) *Endpoint {
	return &Endpoint{
		ContainerID: containerID,
		NetnsPath:   rec.NetnsPath,
		IP:          net.IP(rec.IP.AsSlice()),
		HostVeth:    rec.HostVeth,
		Attached:    !rec.Detached,
		Routed:      !rec.Detached && !rec.Unrouted,
	}
}

func validateID(containerID string) error {
	if !containerIDPattern.MatchString(containerID) {
		return fmt.Errorf("%w: %q: use letters, digits, '_', '.', '+' and '-', starting with a letter or digit", ErrInvalidID, containerID)
	}
	return nil
}

// createVeth creates the veth pair with its peer born inside the container's
// namespace as eth0, so no temporary name can clash in the node's namespace.
func createVeth(host *netlink.Handle, rec record) (netlink.Link, error) {
	cns, err := netns.GetFromPath(rec.NetnsPath)
	if err != nil {
		return nil, fmt.Errorf("open container network namespace: %w", err)
	}
	defer cns.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = rec.HostVeth
	veth := &netlink.Veth{
		LinkAttrs:     attrs,
		PeerName:      ContainerInterface,
		PeerNamespace: netlink.NsFd(cns),
	}
	if err := host.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth %s: %w; a link of that name already exists in the node's network namespace, remove it if no container uses it", rec.HostVeth, err)
		}
		return nil, fmt.Errorf("create veth %s: %w", rec.HostVeth, err)
	}
	link, err := host.LinkByName(rec.HostVeth)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("find new veth %s: %w", rec.HostVeth, err), deleteLink(host, rec.HostVeth))
	}
	return link, nil
}

// configureHostEnd makes the node answer ARP for every address it can route
// on the container's behalf: the container's default route points at eth0
// without a gateway, so it ARPs for every destination and the node's end
// replies with its own MAC. The kernel delays proxy replies by a random time
// up to proxy_delay (0.8 s by default) to let a real owner answer first;
// behind this veth there is no other owner, and the delay would stall every
// first packet, a restored container's included, so it is set to zero.
func (m *Manager) configureHostEnd(host *netlink.Handle, link netlink.Link) error {
	name := link.Attrs().Name
	if err := ensureSysctl(m.nodeNS, "conf/"+name+"/proxy_arp", enabled); err != nil {
		return err
	}
	if err := ensureSysctl(m.nodeNS, "neigh/"+name+"/proxy_delay", noProxyDelay); err != nil {
		return err
	}
	if err := host.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up veth %s: %w", name, err)
	}
	return nil
}

// containerHandle opens a netlink handle inside the container's network
// namespace. The namespace file is closed at once: the socket keeps its
// namespace.
func containerHandle(rec record) (*netlink.Handle, error) {
	cns, err := netns.GetFromPath(rec.NetnsPath)
	if err != nil {
		return nil, fmt.Errorf("open container network namespace: %w", err)
	}
	defer cns.Close()
	h, err := netnsutil.NetlinkHandle(cns)
	if err != nil {
		return nil, fmt.Errorf("container network namespace: %w", err)
	}
	return h, nil
}

// configureContainer brings up lo and eth0 in the container's namespace,
// gives eth0 the container's address as a /32 (no subnet: every peer,
// local or not, is reached through the node) and adds `default dev eth0`.
func configureContainer(rec record) error {
	h, err := containerHandle(rec)
	if err != nil {
		return err
	}
	defer h.Close()

	lo, err := h.LinkByName(loopbackInterface)
	if err != nil {
		return fmt.Errorf("find container lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("bring up container lo: %w", err)
	}
	eth, err := h.LinkByName(ContainerInterface)
	if err != nil {
		return fmt.Errorf("find container %s: %w", ContainerInterface, err)
	}
	addr := &netlink.Addr{IPNet: hostPrefix(rec.IP)}
	if err := h.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("add %s to container %s: %w", addr.IPNet, ContainerInterface, err)
	}
	if err := h.LinkSetUp(eth); err != nil {
		return fmt.Errorf("bring up container %s: %w", ContainerInterface, err)
	}
	def := &netlink.Route{
		LinkIndex: eth.Attrs().Index,
		Dst:       &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, ipv4Bits)},
		Scope:     netlink.SCOPE_LINK,
	}
	if err := h.RouteAdd(def); err != nil {
		return fmt.Errorf("add default route dev %s in container: %w", ContainerInterface, err)
	}
	return nil
}

// waitLinksUp returns once both ends of the veth are operationally up. The
// kernel attaches a device's transmit queue when it handles the carrier
// event, which it may defer; until then packets are dropped. Setup promises
// a network that passes traffic at once (a health check, a restored TCP
// connection), so it checks rather than assumes; on this kernel both ends
// are normally up at the first look.
func waitLinksUp(ctx context.Context, host *netlink.Handle, rec record) error {
	ch, err := containerHandle(rec)
	if err != nil {
		return err
	}
	defer ch.Close()

	ctx, cancel := context.WithTimeout(ctx, linkUpTimeout)
	defer cancel()
	tick := time.NewTicker(linkUpPoll)
	defer tick.Stop()
	for {
		hostUp, err := operUp(host, rec.HostVeth)
		if err != nil {
			return err
		}
		contUp, err := operUp(ch, ContainerInterface)
		if err != nil {
			return err
		}
		if hostUp && contUp {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("veth %s did not come up (node end up: %v, container end up: %v): %w", rec.HostVeth, hostUp, contUp, ctx.Err())
		case <-tick.C:
		}
	}
}

func operUp(h *netlink.Handle, name string) (bool, error) {
	link, err := h.LinkByName(name)
	if err != nil {
		return false, fmt.Errorf("find %s: %w", name, err)
	}
	return link.Attrs().OperState == netlink.OperUp, nil
}

// addHostRoute routes the container's /32 to its veth in the node.
func addHostRoute(host *netlink.Handle, link netlink.Link, ip netip.Addr) error {
	r := &netlink.Route{
		LinkIndex: link.Attrs().Index,
		Dst:       hostPrefix(ip),
		Scope:     netlink.SCOPE_LINK,
	}
	if err := host.RouteAdd(r); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add host route %s dev %s: %w; another route for this address exists in the node's network namespace (another agent sharing it still routes the address: detach or remove the container there; or two agents have overlapping --container-cidr)", r.Dst, link.Attrs().Name, err)
		}
		return fmt.Errorf("add host route %s dev %s: %w", r.Dst, link.Attrs().Name, err)
	}
	return nil
}

// deleteHostRoutes deletes the routes to ip/32 via link, and no other route
// to ip: once the container has moved, the node routes ip via another node,
// and that route is not the container's to remove.
func deleteHostRoutes(host *netlink.Handle, link netlink.Link, ip netip.Addr) error {
	filter := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: hostPrefix(ip)}
	routes, err := host.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_DST)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return fmt.Errorf("list host routes of %s: %w", ip, err)
	}
	var errs []error
	for i := range routes {
		if err := host.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete host route %s dev %s: %w", routes[i].Dst, link.Attrs().Name, err))
		}
	}
	return errors.Join(errs...)
}

// deleteLink deletes a link by name; a link already gone is not an error.
func deleteLink(host *netlink.Handle, name string) error {
	link, err := host.LinkByName(name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find veth %s: %w", name, err)
	}
	if err := host.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete veth %s: %w", name, err)
	}
	return nil
}

func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func hostPrefix(ip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(ipv4Bits, ipv4Bits)}
}
