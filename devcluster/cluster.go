package devcluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/netnsutil"
	"github.com/godwit/godwit/internal/pki"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

const (
	// routeMetric is the metric of the routes Route sets. An agent routes
	// the containers it runs with metric 0, so its route wins on its own
	// host while a cluster route for the same address stays as the
	// fallback, and neither has to delete the other while a container
	// moves.
	routeMetric = 100
	// workDirMode keeps the agents' data private to root.
	workDirMode = 0o700
	// closeRemoveTimeout bounds the removal of one host's containers
	// through its agent on Close; the sweep then removes what is left.
	closeRemoveTimeout = 30 * time.Second
	// enabled is how /proc/sys spells a boolean that is on.
	enabled = "1"
)

var (
	// ErrClosed means the cluster was closed.
	ErrClosed = errors.New("cluster closed")
	// ErrHostExists means AddHost was given the name of an existing host.
	ErrHostExists = errors.New("host exists")
	// ErrNoAddress means the subnet or the container CIDR is used up.
	ErrNoAddress = errors.New("address range exhausted")
)

// Config is what New needs to create a cluster.
type Config struct {
	// Name names the cluster, and prefixes every kernel object, path and
	// agent node name it creates: 1 to 11 lowercase letters and digits.
	// One live process at a time may hold a name; New removes what an
	// interrupted run of the same name left.
	Name string
	// Subnet holds the host addresses, IPv4: its first address is the
	// bridge's in the root network namespace, the next ones go to hosts in
	// the order they are added.
	Subnet netip.Prefix
	// ContainerCIDR is every agent's --container-cidr (IPv4, /30 or
	// wider), the same on every host because a container keeps its IP
	// when it moves. Each agent allocates from it on its own, so give
	// containers addresses from ContainerIP instead of leaving the choice
	// to the agents.
	ContainerCIDR netip.Prefix
	// Bin is the godwit binary the agents run.
	Bin string
	// WorkDir holds each host's agent data dir and log. The cluster owns
	// it: Close removes it, so it must be missing or empty. Empty means
	// TMPDIR/gwd-NAME. Keep it short: CRIU's sockets live below it.
	WorkDir string
	// Log receives what the cluster does; nil discards it.
	Log *slog.Logger
}

// Cluster is a set of hosts, each a network namespace with its own address
// on a bridge in the root network namespace, where the caller runs: the
// root namespace reaches every host, and, through Route, every container.
// Its methods are safe for concurrent use.
type Cluster struct {
	name          string
	subnet        netip.Prefix
	containerCIDR netip.Prefix
	bridgeAddr    netip.Addr
	bin           string
	nsenter       string
	workDir       string
	log           *slog.Logger
	// tls is the cluster's CA and the operator's identity, in
	// WORKDIR/_tls.
	tls *clusterTLS
	// gossipKeyFile is the gossip pool's key, WORKDIR/_tls/gossip.key.
	gossipKeyFile string

	lock *os.File
	// ownsWorkDir is set once the record names workDir as the cluster's:
	// only then may Close remove it.
	ownsWorkDir bool
	rootNS      netns.NsHandle
	root        *netlink.Handle
	bridge      netlink.Link

	mu     sync.Mutex
	hosts  []*Host
	nextIP netip.Addr
	// schedulers maps a host's name to the scheduler StartScheduler last
	// started there; schedMu serializes StartScheduler.
	schedulers map[string]*Scheduler
	schedMu    sync.Mutex
	// closed refuses further changes; removed is set once Close has
	// removed everything, detached once Detach has left it running.
	closed   bool
	removed  bool
	detached bool
	closeMu  sync.Mutex // held for the whole of Close and Detach
}

// New creates a cluster's bridge in the calling thread's network namespace
// (the root namespace of the cluster) with the subnet's first address.
// First it takes the cluster's name (ErrInUse if a live process holds it)
// and removes everything an interrupted run of that name left behind. It
// refuses a subnet or container CIDR that overlaps an address or route the
// root namespace already has: another cluster or test would then share
// the addresses.
func New(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if err := validateClusterName(cfg.Name); err != nil {
		return nil, err
	}
	if err := validatePrefixes(cfg.Subnet, cfg.ContainerCIDR); err != nil {
		return nil, err
	}
	if cfg.Bin == "" || !filepath.IsAbs(cfg.Bin) {
		return nil, fmt.Errorf("godwit binary %q: give an absolute path (`make build` writes bin/godwit)", cfg.Bin)
	}
	if _, err := os.Stat(cfg.Bin); err != nil {
		return nil, fmt.Errorf("godwit binary: %w (`make build` writes bin/godwit)", err)
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		return nil, fmt.Errorf("nsenter runs commands in the hosts: install util-linux: %w", err)
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("cluster", cfg.Name)
	workDir := cfg.WorkDir
	if workDir == "" {
		workDir = filepath.Join(os.TempDir(), workDirPrefix+cfg.Name)
	}
	if workDir, err = filepath.Abs(workDir); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	bridgeAddr, err := nthAddr(cfg.Subnet, 1)
	if err != nil {
		return nil, err
	}
	firstIP, err := nthAddr(cfg.ContainerCIDR, firstContainerOffset)
	if err != nil {
		return nil, err
	}

	lock, err := lockCluster(cfg.Name)
	if err != nil {
		return nil, err
	}
	if err := checkNotDetached(cfg.Name); err != nil {
		lock.Close()
		return nil, err
	}
	c := &Cluster{
		name:          cfg.Name,
		subnet:        cfg.Subnet.Masked(),
		containerCIDR: cfg.ContainerCIDR.Masked(),
		bridgeAddr:    bridgeAddr,
		bin:           cfg.Bin,
		nsenter:       nsenter,
		workDir:       workDir,
		log:           log,
		lock:          lock,
		rootNS:        netns.None(),
		nextIP:        firstIP,
		schedulers:    map[string]*Scheduler{},
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, c.Close())
		}
	}()

	warnLeftovers(c.name, log)
	if err := sweep(ctx, c.name, "", log); err != nil {
		return nil, fmt.Errorf("remove what an earlier run of cluster %q left: %w", c.name, err)
	}
	if err := checkEmptyDir(workDir); err != nil {
		return nil, err
	}
	if c.rootNS, err = netnsutil.Current(); err != nil {
		return nil, err
	}
	if c.root, err = netnsutil.NetlinkHandle(c.rootNS); err != nil {
		return nil, err
	}
	if err := c.checkFree(); err != nil {
		return nil, err
	}
	if err := writeRecord(c.name, record{WorkDir: workDir}); err != nil {
		return nil, err
	}
	c.ownsWorkDir = true
	if err := os.MkdirAll(workDir, workDirMode); err != nil {
		return nil, fmt.Errorf("create work dir: %w", err)
	}
	if c.tls, err = newClusterTLS(filepath.Join(workDir, tlsDirName)); err != nil {
		return nil, err
	}
	c.gossipKeyFile = filepath.Join(workDir, tlsDirName, gossipKeyName)
	if err := pki.CreateGossipKey(c.gossipKeyFile); err != nil {
		return nil, err
	}
	if err := c.createBridge(); err != nil {
		return nil, err
	}
	log.Info("cluster created", "bridge", bridgeName(c.name), "address", bridgeAddr, "work_dir", workDir)
	return c, nil
}

func validatePrefixes(subnet, containers netip.Prefix) error {
	for _, p := range []struct {
		name   string
		prefix netip.Prefix
	}{{"subnet", subnet}, {"container CIDR", containers}} {
		if !p.prefix.IsValid() || !p.prefix.Addr().Is4() {
			return fmt.Errorf("%s %v: give an IPv4 prefix such as 10.77.0.0/24", p.name, p.prefix)
		}
	}
	if subnet.Overlaps(containers) {
		return fmt.Errorf("subnet %s and container CIDR %s overlap: give them disjoint ranges", subnet, containers)
	}
	return nil
}

// checkEmptyDir fails unless dir is missing or empty: the cluster removes
// its work dir on Close.
func checkEmptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("work dir: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("work dir %s is not empty, and the cluster removes its work dir on Close: give a missing or empty one", dir)
	}
	return nil
}

// checkFree fails if the root namespace has an address or a route in the
// cluster's subnet or container CIDR.
func (c *Cluster) checkFree() error {
	addrs, err := retryDump(func() ([]netlink.Addr, error) { return c.root.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		ip, _ := netip.AddrFromSlice(a.IP)
		if c.subnet.Contains(ip.Unmap()) || c.containerCIDR.Contains(ip.Unmap()) {
			return fmt.Errorf("address %s (%s) is in cluster %s's subnet %s or container CIDR %s: give the cluster other ranges",
				a.IPNet, a.Label, c.name, c.subnet, c.containerCIDR)
		}
	}
	routes, err := retryDump(func() ([]netlink.Route, error) { return c.root.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue // the default route
		}
		dst, ok := prefixOf(r.Dst)
		// A default route overlaps everything, harmlessly.
		if ok && dst.Bits() > 0 && (dst.Overlaps(c.subnet) || dst.Overlaps(c.containerCIDR)) {
			return fmt.Errorf("route %s exists, in cluster %s's subnet %s or container CIDR %s: give the cluster other ranges",
				dst, c.name, c.subnet, c.containerCIDR)
		}
	}
	return nil
}

func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	ip, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func (c *Cluster) createBridge() error {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridgeName(c.name), HardwareAddr: bridgeMAC(c.name)}}
	if err := c.root.LinkAdd(br); err != nil {
		return fmt.Errorf("create bridge %s: %w", br.Name, err)
	}
	link, err := c.root.LinkByName(br.Name)
	if err != nil {
		return fmt.Errorf("find bridge %s: %w", br.Name, err)
	}
	c.bridge = link
	if err := c.root.LinkSetAlias(link, "godwit devcluster "+c.name); err != nil {
		return fmt.Errorf("name bridge %s: %w", br.Name, err)
	}
	addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(c.bridgeAddr, c.subnet.Bits()))}
	if err := c.root.AddrAdd(link, addr); err != nil {
		return fmt.Errorf("address bridge %s: %w", br.Name, err)
	}
	if err := c.root.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring up bridge %s: %w", br.Name, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// BridgeAddr is the root namespace's address on the cluster's bridge.
func (c *Cluster) BridgeAddr() netip.Addr { return c.bridgeAddr }

// ContainerCIDR is every agent's --container-cidr.
func (c *Cluster) ContainerCIDR() netip.Prefix { return c.containerCIDR }

// WorkDir holds the hosts' data dirs and logs.
func (c *Cluster) WorkDir() string { return c.workDir }

// Hosts returns the hosts in the order they were added.
func (c *Cluster) Hosts() []*Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.hosts)
}

// Host returns the host named name, or nil.
func (c *Cluster) Host(name string) *Host {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, h := range c.hosts {
		if h.name == name {
			return h
		}
	}
	return nil
}

// ContainerIP returns a container address no earlier call returned, for a
// container to be run with (RunContainerRequest.ip): the cluster plays
// the scheduler's part of allocating addresses cluster-wide. It fails with
// ErrNoAddress when the container CIDR is used up.
func (c *Cluster) ContainerIP() (netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ip := c.nextIP
	if !ip.IsValid() || !c.containerCIDR.Contains(ip) || !c.containerCIDR.Contains(ip.Next()) {
		return netip.Addr{}, fmt.Errorf("container CIDR %s: %w", c.containerCIDR, ErrNoAddress)
	}
	c.nextIP = ip.Next()
	return ip, nil
}

// AddHost creates a host: a network namespace pinned at
// /run/netns/gwd-CLUSTER-NAME with loopback up, forwarding on, and eth0,
// the end of a veth pair whose other end is a port of the bridge, holding
// the host's address; its default route is via the bridge's address. On
// failure it leaves nothing of the host.
func (c *Cluster) AddHost(ctx context.Context, name string) (_ *Host, err error) {
	if err := validateHostName(name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	for _, h := range c.hosts {
		if h.name == name {
			return nil, fmt.Errorf("host %q: %w", name, ErrHostExists)
		}
	}
	addr, err := nthAddr(c.subnet, firstHostOffset+len(c.hosts))
	if err != nil {
		return nil, fmt.Errorf("host %q: subnet %s has no address left: %w", name, c.subnet, err)
	}
	names := make([]string, 0, len(c.hosts)+1)
	for _, h := range c.hosts {
		names = append(names, h.name)
	}
	if err := writeRecord(c.name, record{WorkDir: c.workDir, Hosts: append(names, name)}); err != nil {
		return nil, err
	}

	h := &Host{
		cluster: c,
		name:    name,
		addr:    addr,
		netns:   netnsPath(c.name, name),
		dir:     hostDir(c.workDir, name),
		ns:      netns.None(),
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, h.destroy(), writeRecord(c.name, record{WorkDir: c.workDir, Hosts: names}))
		}
	}()
	if err := os.MkdirAll(h.dir, workDirMode); err != nil {
		return nil, fmt.Errorf("host %q: create its dir: %w", name, err)
	}
	if err := netnsutil.Create(h.netns); err != nil {
		return nil, fmt.Errorf("host %q: %w", name, err)
	}
	if h.ns, err = netns.GetFromPath(h.netns); err != nil {
		return nil, fmt.Errorf("host %q: open its network namespace: %w", name, err)
	}
	if h.nl, err = netnsutil.NetlinkHandle(h.ns); err != nil {
		return nil, fmt.Errorf("host %q: %w", name, err)
	}
	if err := c.plugHost(h); err != nil {
		return nil, fmt.Errorf("host %q: %w", name, err)
	}
	c.hosts = append(c.hosts, h)
	c.log.Info("host added", "host", name, "address", addr, "netns", h.netns)
	return h, nil
}

// plugHost creates the host's veth pair, its end already in the host's
// namespace as eth0, and sets up the host's addresses and routes.
func (c *Cluster) plugHost(h *Host) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: vethName(c.name, h.name)},
		PeerName:      hostInterface,
		PeerNamespace: netlink.NsFd(int(h.ns)),
	}
	if err := c.root.LinkAdd(veth); err != nil {
		return fmt.Errorf("create veth %s: %w", veth.Name, err)
	}
	rootEnd, err := c.root.LinkByName(veth.Name)
	if err != nil {
		return fmt.Errorf("find veth %s: %w", veth.Name, err)
	}
	if err := c.root.LinkSetAlias(rootEnd, vethAlias(c.name, h.name)); err != nil {
		return fmt.Errorf("name veth %s: %w", veth.Name, err)
	}
	if err := c.root.LinkSetMasterByIndex(rootEnd, c.bridge.Attrs().Index); err != nil {
		return fmt.Errorf("attach veth %s to bridge %s: %w", veth.Name, bridgeName(c.name), err)
	}
	if err := c.root.LinkSetUp(rootEnd); err != nil {
		return fmt.Errorf("bring up veth %s: %w", veth.Name, err)
	}

	for _, ifname := range []string{loopbackInterface, hostInterface} {
		link, err := h.nl.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("find %s: %w", ifname, err)
		}
		if ifname == hostInterface {
			addr := &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(h.addr, c.subnet.Bits()))}
			if err := h.nl.AddrAdd(link, addr); err != nil {
				return fmt.Errorf("address %s: %w", ifname, err)
			}
			h.eth0 = link
		}
		if err := h.nl.LinkSetUp(link); err != nil {
			return fmt.Errorf("bring up %s: %w", ifname, err)
		}
	}
	def := &netlink.Route{LinkIndex: h.eth0.Attrs().Index, Gw: c.bridgeAddr.AsSlice()}
	if err := h.nl.RouteAdd(def); err != nil {
		return fmt.Errorf("add default route via %s: %w", c.bridgeAddr, err)
	}
	// The agent routes its containers' /32s to their veths and forwards
	// between them and eth0.
	return setSysctl(h.ns, "ip_forward", enabled)
}

// Route routes prefix, a container's address as a /32, via the host
// that runs it: in the root namespace and in every other host, replacing
// the route an earlier Route set for prefix, and it removes that route
// from via itself, where the agent routes the address to the container.
// Call it again after a container moved. The agent's own route (metric 0)
// takes precedence on its host over the cluster's (routeMetric).
func (c *Cluster) Route(ctx context.Context, prefix netip.Prefix, via *Host) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if via == nil || via.cluster != c {
		return errors.New("route: via is not a host of this cluster")
	}
	prefix = prefix.Masked()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	gw := via.addr.AsSlice()
	dst := ipNet(prefix)
	if err := c.root.RouteReplace(&netlink.Route{Dst: dst, Gw: gw, LinkIndex: c.bridge.Attrs().Index, Priority: routeMetric}); err != nil {
		return fmt.Errorf("route %s via %s in the root namespace: %w", prefix, via.name, err)
	}
	var errs []error
	for _, h := range c.hosts {
		if h == via {
			if err := h.nl.RouteDel(&netlink.Route{Dst: dst, Priority: routeMetric, LinkIndex: h.eth0.Attrs().Index}); err != nil && !errors.Is(err, unix.ESRCH) {
				errs = append(errs, fmt.Errorf("remove cluster route %s from host %s: %w", prefix, h.name, err))
			}
			continue
		}
		r := &netlink.Route{Dst: dst, Gw: gw, LinkIndex: h.eth0.Attrs().Index, Priority: routeMetric}
		if err := h.nl.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route %s via %s in host %s: %w", prefix, via.name, h.name, err))
		}
	}
	if len(errs) == 0 {
		c.log.Info("route set", "prefix", prefix, "via", via.name)
	}
	return errors.Join(errs...)
}

// Unroute removes the routes Route set for prefix, everywhere.
func (c *Cluster) Unroute(ctx context.Context, prefix netip.Prefix) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	prefix = prefix.Masked()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	dst := ipNet(prefix)
	var errs []error
	if err := c.root.RouteDel(&netlink.Route{Dst: dst, Priority: routeMetric, LinkIndex: c.bridge.Attrs().Index}); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("remove route %s from the root namespace: %w", prefix, err))
	}
	for _, h := range c.hosts {
		if err := h.nl.RouteDel(&netlink.Route{Dst: dst, Priority: routeMetric, LinkIndex: h.eth0.Attrs().Index}); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("remove route %s from host %s: %w", prefix, h.name, err))
		}
	}
	return errors.Join(errs...)
}

// Close removes everything the cluster created: each running agent's
// containers, through the agent; the agents; then, without their help,
// anything left (processes in the hosts, containers, cgroups, mounts, the
// work dir, the namespaces, veths, bridge and routes), and releases the
// cluster's name. It goes on past errors and returns them all; it may be
// called after a failed New or AddHost. Once it has succeeded, calling it
// again does nothing; after it failed, the record of what is left stays,
// and the next Close, or the next New of the name in any process, removes
// it. Each of its waits is bounded, and it takes no context: cleanup must
// run to the end.
func (c *Cluster) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	c.mu.Lock()
	if c.removed || c.detached {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	hosts := slices.Clone(c.hosts)
	schedulers := maps.Clone(c.schedulers)
	c.mu.Unlock()

	if c.lock == nil {
		// An earlier Close failed and let the name go.
		lock, err := lockCluster(c.name)
		if errors.Is(err, ErrInUse) {
			// Its new holder removed what was left when it took it.
			c.removed = true
			return nil
		}
		if err != nil {
			return err
		}
		c.lock = lock
	}

	for _, h := range hosts {
		if err := h.removeContainers(); err != nil {
			// The sweep removes them without the agent.
			c.log.Warn("could not remove containers through the agent", "host", h.name, "err", err)
		}
	}
	for _, h := range hosts {
		if a := h.Agent(); a != nil {
			if err := a.Stop(); err != nil {
				c.log.Warn("agent did not stop cleanly", "host", h.name, "err", err)
			}
		}
	}
	// Then the schedulers, each leaving the gossip pool on SIGTERM.
	for _, h := range hosts {
		if s := schedulers[h.name]; s != nil {
			if err := s.Stop(); err != nil {
				c.log.Warn("scheduler did not stop cleanly", "host", h.name, "err", err)
			}
		}
	}
	// The sweep works from the record and the kernel; the cluster's own
	// handles are closed first so that none keeps a namespace alive.
	for _, h := range hosts {
		h.closeHandles()
	}
	if c.root != nil {
		c.root.Close()
		c.root = nil
	}
	if c.rootNS.IsOpen() {
		_ = c.rootNS.Close()
	}
	workDir := ""
	if c.ownsWorkDir {
		workDir = c.workDir
	}
	var errs []error
	if err := sweep(context.Background(), c.name, workDir, c.log); err != nil {
		errs = append(errs, err)
	}
	// The name is released even when something is left: the record
	// names it, and whoever takes the name next removes it.
	if err := c.lock.Close(); err != nil {
		errs = append(errs, fmt.Errorf("release cluster lock: %w", err))
	}
	c.lock = nil
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.mu.Lock()
	c.removed = true
	c.mu.Unlock()
	c.log.Info("cluster removed")
	return nil
}

// removeContainers force-removes every container of the host's agent, if
// it runs.
func (h *Host) removeContainers() error {
	a := h.Agent()
	if a == nil || !a.Running() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeRemoveTimeout)
	defer cancel()
	list, err := a.Client().ListContainers(ctx, &pb.ListContainersRequest{All: true})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	var errs []error
	for _, ct := range list.GetContainers() {
		if _, err := a.Client().RemoveContainer(ctx, &pb.RemoveContainerRequest{Ref: ct.GetId(), Force: true}); err != nil {
			errs = append(errs, fmt.Errorf("remove container %s: %w", ct.GetName(), err))
		}
	}
	return errors.Join(errs...)
}
