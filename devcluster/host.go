package devcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/internal/netnsutil"
	"github.com/godwit/godwit/internal/pki"
)

const (
	// execOutputTail is how much of a failed command's output Exec's
	// error quotes.
	execOutputTail = 2 << 10
	// execWaitDelay bounds the wait for a command's output once it has
	// exited or been killed (exec.Cmd.WaitDelay).
	execWaitDelay = 2 * time.Second
)

// Host is one test host: a network namespace on the cluster's bridge with
// its own address, where an agent runs. Everything else (the mount
// namespace, /sys, cgroups, the process table) it shares with the root, as
// nodes of a cluster sharing one kernel do in godwit's tests.
type Host struct {
	cluster *Cluster
	name    string
	addr    netip.Addr
	netns   string
	dir     string

	// ns and nl are the host's namespace and a netlink socket in it;
	// eth0 is its end of the veth.
	ns   netns.NsHandle
	nl   *netlink.Handle
	eth0 netlink.Link

	mu    sync.Mutex
	agent *Agent
	// tls is the host's node certificate of the cluster's CA, issued
	// when its first agent starts.
	tls pki.Files
}

// Name is the host's name in the cluster.
func (h *Host) Name() string { return h.name }

// Addr is the host's address on the bridge, where its agent listens.
func (h *Host) Addr() netip.Addr { return h.addr }

// NetnsPath is where the host's network namespace is pinned, for
// `nsenter --net=PATH` (never `ip netns exec`, which remounts /sys and
// leaves runc without cgroups).
func (h *Host) NetnsPath() string { return h.netns }

// Node is the agent's node name on this host: CLUSTER-HOST.
func (h *Host) Node() string { return nodeName(h.cluster.name, h.name) }

// DataDir is the --data-dir of the host's agent. It outlives the agent,
// so an agent started again re-adopts the containers of the one before.
func (h *Host) DataDir() string { return agentDataDir(h.dir) }

// Agent returns the agent StartAgent last started on the host, running or
// not, or nil.
func (h *Host) Agent() *Agent {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.agent
}

// Command returns a command that runs name with args inside the host's
// network namespace (through nsenter --net, so it shares every other
// namespace with the caller), for the caller to start and wait for: a
// client that must keep running, for instance. It runs until ctx ends.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, h.cluster.nsenter, append([]string{"--net=" + h.netns, "--", name}, args...)...)
	// A command that leaves a child holding its output open must not
	// keep Wait from returning.
	cmd.WaitDelay = execWaitDelay
	return cmd
}

// Exec runs a command inside the host's network namespace and returns its
// standard output and error together. A command that fails returns an
// error that names it and quotes the end of its output.
func (h *Host) Exec(ctx context.Context, args ...string) ([]byte, error) {
	if len(args) == 0 {
		return nil, errors.New("exec: no command given")
	}
	out, err := h.Command(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		tail := out
		if len(tail) > execOutputTail {
			tail = tail[len(tail)-execOutputTail:]
		}
		return out, fmt.Errorf("%s on host %s: %w: %s", strings.Join(args, " "), h.name, err, strings.TrimSpace(string(tail)))
	}
	return out, nil
}

// Dial connects to address (an IP literal and port) from inside the
// host's network namespace, as a client on that host would. The
// connection belongs to the caller and may be used from any goroutine,
// so a test can keep a client connected from one host to a container
// through a migration without a process of its own.
func (h *Host) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	h.mu.Lock()
	ns := h.ns
	h.mu.Unlock()
	if !ns.IsOpen() {
		return nil, fmt.Errorf("dial from host %s: %w", h.name, ErrClosed)
	}
	conn, err := dialIn(ctx, ns, network, address)
	if err != nil {
		return nil, fmt.Errorf("dial %s from host %s: %w", address, h.name, err)
	}
	return conn, nil
}

// closeHandles closes the cluster's handles on the host's namespace.
func (h *Host) closeHandles() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.nl != nil {
		h.nl.Close()
		h.nl = nil
	}
	if h.ns.IsOpen() {
		_ = h.ns.Close()
	}
}

// destroy removes the host's kernel objects and dir, for an AddHost that
// failed before any agent ran there.
func (h *Host) destroy() error {
	h.closeHandles()
	var errs []error
	if err := killInNetns([]string{h.netns}, h.cluster.log); err != nil {
		errs = append(errs, err)
	}
	if err := netnsutil.Remove(h.netns); err != nil {
		errs = append(errs, err)
	}
	if err := deleteLink(h.cluster.root, vethName(h.cluster.name, h.name)); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(h.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove host dir: %w", err))
	}
	return errors.Join(errs...)
}
