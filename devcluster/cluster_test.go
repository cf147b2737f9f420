package devcluster_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/busybox"
	"github.com/godwit/godwit/internal/netnsutil"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The tests share one cluster name, one at a time: they run in sequence.
// The ranges are this package's alone among godwit's tests.
const (
	clusterName = "dcx"
	// childEnv, set, makes the test binary the run that
	// TestInterruptedRunIsRemoved kills: its value is the godwit binary.
	childEnv = "DEVCLUSTER_TEST_CHILD_BIN"
	// childWorkDirEnv is the interrupted run's work dir.
	childWorkDirEnv = "DEVCLUSTER_TEST_CHILD_WORKDIR"
)

var (
	subnet        = netip.MustParsePrefix("10.77.0.0/24")
	containerCIDR = netip.MustParsePrefix("10.78.0.0/24")
)

func TestMain(m *testing.M) {
	if bin := os.Getenv(childEnv); bin != "" {
		os.Exit(interruptedRun(bin, os.Getenv(childWorkDirEnv)))
	}
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

func config() devcluster.Config {
	return devcluster.Config{Name: clusterName, Subnet: subnet, ContainerCIDR: containerCIDR}
}

func TestHostsReachEachOtherAndTheirAgents(t *testing.T) {
	c := devclustertest.Start(t, config(), "a", "b", "c")
	a, b, third := c.Host("a"), c.Host("b"), c.Host("c")
	for _, h := range []*devcluster.Host{a, b} {
		if _, err := h.StartAgent(context.Background(), devcluster.AgentOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("every host has its own address", func(t *testing.T) {
		want := map[string]string{"a": "10.77.0.2", "b": "10.77.0.3", "c": "10.77.0.4"}
		for _, h := range c.Hosts() {
			if h.Addr().String() != want[h.Name()] {
				t.Errorf("host %s has address %s, want %s", h.Name(), h.Addr(), want[h.Name()])
			}
			if got := addrsIn(t, h.NetnsPath()); !slices.Contains(got, h.Addr().String()) {
				t.Errorf("host %s's namespace has addresses %v, not its own %s", h.Name(), got, h.Addr())
			}
		}
	})

	t.Run("the root namespace reaches both agents' APIs", func(t *testing.T) {
		for _, h := range []*devcluster.Host{a, b} {
			var info struct{ Name, Address string }
			out := godwit(t, c.TLSEnv(), h.Agent().Addr(), "node", "info", "-o", "json")
			if err := json.Unmarshal(out, &info); err != nil {
				t.Fatalf("node info: %v\n%s", err, out)
			}
			if info.Name != h.Node() || info.Address != h.Addr().String()+":7701" {
				t.Errorf("agent at %s says it is %+v, want node %s at %s:7701", h.Agent().Addr(), info, h.Node(), h.Addr())
			}
		}
	})

	t.Run("a third host reaches the others", func(t *testing.T) {
		for _, h := range []*devcluster.Host{a, b} {
			conn, err := third.Dial(context.Background(), "tcp", h.Agent().Addr())
			if err != nil {
				t.Fatalf("from host c: %v", err)
			}
			if got := conn.LocalAddr().String(); !strings.HasPrefix(got, third.Addr().String()+":") {
				t.Errorf("connection from host c to %s comes from %s, want c's address %s", h.Name(), got, third.Addr())
			}
			conn.Close()
			if out, err := third.Exec(context.Background(), "/bin/busybox", "ping", "-c", "1", "-W", "2", h.Addr().String()); err != nil {
				t.Errorf("ping from host c: %v\n%s", err, out)
			}
		}
	})

	t.Run("a host runs commands in its own namespace", func(t *testing.T) {
		out, err := a.Exec(context.Background(), "cat", "/proc/net/dev")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), "eth0:") || strings.Contains(string(out), "gwd-"+clusterName) {
			t.Fatalf("host a's /proc/net/dev does not show its eth0 alone:\n%s", out)
		}
		if _, err := a.Exec(context.Background(), "false"); err == nil {
			t.Fatal("Exec of a failing command returned no error")
		}
	})

	t.Run("a second agent on a host is refused", func(t *testing.T) {
		_, err := a.StartAgent(context.Background(), devcluster.AgentOptions{})
		if !errors.Is(err, devcluster.ErrAgentRunning) {
			t.Fatalf("second StartAgent on host a: err = %v, want ErrAgentRunning", err)
		}
	})

	t.Run("a killed agent starts again", func(t *testing.T) {
		old := b.Agent()
		old.Kill()
		if old.Running() || syscall.Kill(old.Pid(), 0) == nil {
			t.Fatalf("agent %s still runs after Kill", old)
		}
		again, err := b.StartAgent(context.Background(), devcluster.AgentOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if again.Pid() == old.Pid() || again.Addr() != old.Addr() {
			t.Fatalf("restarted agent is %s, want a new process at %s", again, old.Addr())
		}
		if _, err := again.Client().NodeInfo(context.Background(), &pb.NodeInfoRequest{}); err != nil {
			t.Fatalf("restarted agent does not answer: %v", err)
		}
	})

	t.Run("agents serve mutual TLS unless started --insecure", func(t *testing.T) {
		if a.Agent().Insecure() {
			t.Fatal("the agent on host a runs --insecure by default")
		}
		out, err := runGodwit(t, nil, a.Agent().Addr(), "node", "info")
		if err == nil || !strings.Contains(string(out), "serves TLS") {
			t.Errorf("a plaintext CLI against host a's agent: %v\n%s\nwant refused, saying the agent serves TLS", err, out)
		}
		b.Agent().Kill()
		plain, err := b.StartAgent(context.Background(), devcluster.AgentOptions{Insecure: true})
		if err != nil {
			t.Fatal(err)
		}
		if !plain.Insecure() || plain.ClientTLS() != nil {
			t.Errorf("an agent started with Insecure reports Insecure %v, ClientTLS %v", plain.Insecure(), plain.ClientTLS())
		}
		if _, err := plain.Client().NodeInfo(context.Background(), &pb.NodeInfoRequest{}); err != nil {
			t.Fatalf("the --insecure agent's client: %v", err)
		}
		godwit(t, nil, plain.Addr(), "node", "info")
		if out, err := runGodwit(t, c.TLSEnv(), plain.Addr(), "node", "info"); err == nil || !strings.Contains(string(out), "serves plaintext") {
			t.Errorf("a TLS CLI against an --insecure agent: %v\n%s\nwant refused, saying the agent serves plaintext", err, out)
		}
	})

	t.Run("routes follow the container's host", func(t *testing.T) {
		ip, err := c.ContainerIP()
		if err != nil {
			t.Fatal(err)
		}
		dst := netip.PrefixFrom(ip, 32)
		for _, via := range []*devcluster.Host{a, b} {
			if err := c.Route(context.Background(), dst, via); err != nil {
				t.Fatal(err)
			}
			if got := gatewaysTo(t, "", dst); !slices.Equal(got, []string{via.Addr().String()}) {
				t.Errorf("after Route via %s the root namespace routes %s via %v", via.Name(), dst, got)
			}
			for _, h := range c.Hosts() {
				var want []string
				if h != via {
					want = []string{via.Addr().String()}
				}
				if got := gatewaysTo(t, h.NetnsPath(), dst); !slices.Equal(got, want) {
					t.Errorf("after Route via %s host %s routes %s via %v, want %v", via.Name(), h.Name(), dst, got, want)
				}
			}
		}
		if err := c.Unroute(context.Background(), dst); err != nil {
			t.Fatal(err)
		}
		for _, ns := range []string{"", a.NetnsPath(), b.NetnsPath(), third.NetnsPath()} {
			if got := gatewaysTo(t, ns, dst); len(got) > 0 {
				t.Errorf("after Unroute namespace %q routes %s via %v", ns, dst, got)
			}
		}
	})
}

func TestCloseLeavesNothing(t *testing.T) {
	c := devclustertest.Start(t, config(), "a", "b")
	devclustertest.StartAgents(t, c, devcluster.AgentOptions{})
	a, b := c.Host("a"), c.Host("b")
	devclustertest.ImportBusybox(t, a.Agent())
	ip, err := c.ContainerIP()
	if err != nil {
		t.Fatal(err)
	}
	ct, err := a.Agent().Client().RunContainer(context.Background(), &pb.RunContainerRequest{
		Name: "sleeper", Image: devclustertest.BusyboxImage, Args: []string{"sleep", "1000"}, Ip: ip.String(),
	})
	if err != nil {
		t.Fatalf("run container: %v", err)
	}
	if err := c.Route(context.Background(), netip.PrefixFrom(ip, 32), a); err != nil {
		t.Fatal(err)
	}
	// b's agent is killed: Close must remove what it cannot ask it to.
	b.Agent().Kill()

	pids := []int{a.Agent().Pid(), b.Agent().Pid(), int(ct.GetPid())}
	workDir := c.WorkDir()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	assertNothingLeft(t, clusterName, workDir, pids)

	// The name is free again.
	again, err := devcluster.New(context.Background(), devcluster.Config{
		Name: clusterName, Subnet: subnet, ContainerCIDR: containerCIDR, Bin: testutil.Godwit(t),
	})
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefusesALiveClusterOfTheSameName(t *testing.T) {
	devclustertest.Start(t, config())
	_, err := devcluster.New(context.Background(), devcluster.Config{
		Name: clusterName, Subnet: netip.MustParsePrefix("10.77.9.0/24"),
		ContainerCIDR: netip.MustParsePrefix("10.78.9.0/24"), Bin: testutil.Godwit(t),
	})
	if !errors.Is(err, devcluster.ErrInUse) {
		t.Fatalf("New with the name of a live cluster: err = %v, want ErrInUse", err)
	}
	if _, err := os.Stat("/sys/class/net/gwd-" + clusterName); err != nil {
		t.Fatalf("the refused New removed the live cluster's bridge: %v", err)
	}
}

func TestNewRefusesRangesInUse(t *testing.T) {
	devclustertest.Start(t, config())
	_, err := devcluster.New(context.Background(), devcluster.Config{
		Name: clusterName + "2", Subnet: subnet,
		ContainerCIDR: netip.MustParsePrefix("10.78.9.0/24"), Bin: testutil.Godwit(t),
	})
	if err == nil || !strings.Contains(err.Error(), "10.77.0.1/24") {
		t.Fatalf("New with another cluster's subnet: err = %v, want a refusal naming the bridge's address", err)
	}
	if _, err := os.Stat("/run/godwit-devcluster/" + clusterName + "2.json"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused New left its record: %v", err)
	}
}

// leftovers is what the interrupted run reports before it is killed.
type leftovers struct {
	AgentPid, ContainerPid int
	WorkDir                string
}

func TestInterruptedRunIsRemoved(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc", "nsenter")
	workDir := filepath.Join(t.TempDir(), "interrupted")
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childEnv+"="+testutil.Godwit(t), childWorkDirEnv+"="+workDir)
	child.Stderr = os.Stderr
	stdout, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	var left leftovers
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err == nil {
		err = json.Unmarshal([]byte(line), &left)
	}
	// Killed as a test binary is on a timeout: no cleanup runs.
	_ = child.Process.Kill()
	_ = child.Wait()
	if err != nil {
		t.Fatalf("the run to interrupt did not set up its cluster: %v (%q)", err, line)
	}
	t.Cleanup(func() { _ = devcluster.Remove(context.Background(), clusterName, nil) })

	// What a killed run leaves: its agent, its container, its host.
	for _, pid := range []int{left.AgentPid, left.ContainerPid} {
		if syscall.Kill(pid, 0) != nil {
			t.Fatalf("process %d of the interrupted run is gone already: the test does not test leftovers", pid)
		}
	}
	if _, ok := netnsutil.PinnedInode(filepath.Join("/run/netns", "gwd-"+clusterName+"-a")); !ok {
		t.Fatal("the interrupted run's host namespace is not pinned: the test does not test leftovers")
	}

	c := devclustertest.Start(t, config())
	assertGone(t, []int{left.AgentPid, left.ContainerPid})
	if _, err := os.Stat(left.WorkDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the interrupted run's work dir %s is still there: %v", left.WorkDir, err)
	}
	if _, ok := netnsutil.PinnedInode(filepath.Join("/run/netns", "gwd-"+clusterName+"-a")); ok {
		t.Errorf("the interrupted run's host namespace is still pinned")
	}
	if cg := nodeCgroupDirs(clusterName); len(cg) > 0 {
		t.Errorf("the interrupted run's cgroups are still there: %v", cg)
	}

	// The same host and container come up again where the old ones were.
	h, err := c.AddHost(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	// (Its namespace's inode is not compared with the old one's: the
	// kernel reuses a freed namespace's inode number, so an equal number
	// proves nothing; the old one is checked unpinned above.)
	a, err := h.StartAgent(context.Background(), devcluster.AgentOptions{})
	if err != nil {
		t.Fatal(err)
	}
	devclustertest.ImportBusybox(t, a)
	ip, err := c.ContainerIP()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Client().RunContainer(context.Background(), &pb.RunContainerRequest{
		Name: "sleeper", Image: devclustertest.BusyboxImage, Args: []string{"sleep", "1000"}, Ip: ip.String(),
	}); err != nil {
		t.Fatalf("run the container again with its address: %v", err)
	}
}

// interruptedRun sets up a cluster with a host, an agent and a container,
// reports them on stdout as JSON, and waits to be killed.
func interruptedRun(bin, workDir string) int {
	ctx := context.Background()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "interrupted run:", err)
		return 1
	}
	c, err := devcluster.New(ctx, devcluster.Config{
		Name: clusterName, Subnet: subnet, ContainerCIDR: containerCIDR, Bin: bin, WorkDir: workDir,
	})
	if err != nil {
		return fail(err)
	}
	h, err := c.AddHost(ctx, "a")
	if err != nil {
		return fail(err)
	}
	a, err := h.StartAgent(ctx, devcluster.AgentOptions{})
	if err != nil {
		return fail(err)
	}
	tarball := filepath.Join(workDir, "busybox.tar")
	if err := busybox.WriteTar(tarball); err != nil {
		return fail(err)
	}
	f, err := os.Open(tarball)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	if _, err := agentclient.ImportImage(ctx, a.Client(), f, devclustertest.BusyboxImage, 0); err != nil {
		return fail(err)
	}
	ip, err := c.ContainerIP()
	if err != nil {
		return fail(err)
	}
	ct, err := a.Client().RunContainer(ctx, &pb.RunContainerRequest{
		Name: "sleeper", Image: devclustertest.BusyboxImage, Args: []string{"sleep", "1000"}, Ip: ip.String(),
	})
	if err != nil {
		return fail(err)
	}
	if err := json.NewEncoder(os.Stdout).Encode(leftovers{AgentPid: a.Pid(), ContainerPid: int(ct.GetPid()), WorkDir: workDir}); err != nil {
		return fail(err)
	}
	select {} // until killed
}

// assertNothingLeft checks, from the kernel, that nothing of the cluster
// named name is left.
func assertNothingLeft(t *testing.T, name, workDir string, pids []int) {
	t.Helper()
	assertGone(t, pids)
	links, err := dump(netlink.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name == "gwd-"+name || strings.HasPrefix(l.Attrs().Alias, "godwit devcluster "+name) {
			t.Errorf("link %s (%s) is left", l.Attrs().Name, l.Attrs().Alias)
		}
	}
	routes, err := dump(func() ([]netlink.Route, error) { return netlink.RouteList(nil, netlink.FAMILY_V4) })
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		if subnet.Contains(ip.Unmap()) || containerCIDR.Contains(ip.Unmap()) {
			t.Errorf("route %s is left", r)
		}
	}
	if pins, _ := filepath.Glob("/run/netns/gwd-" + name + "-*"); len(pins) > 0 {
		t.Errorf("network namespaces are left: %v", pins)
	}
	if cg := nodeCgroupDirs(name); len(cg) > 0 {
		t.Errorf("cgroups are left: %v", cg)
	}
	if _, err := os.Stat(workDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir %s is left: %v", workDir, err)
	}
	if _, err := os.Stat("/run/godwit-devcluster/" + name + ".json"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the cluster's record is left: %v", err)
	}
}

// assertGone checks that none of pids runs (a zombie has exited).
func assertGone(t *testing.T, pids []int) {
	t.Helper()
	for _, pid := range pids {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err == nil && !strings.Contains(string(stat), ") Z ") {
			t.Errorf("process %d is left: %s", pid, stat)
		}
	}
}

// nodeCgroupDirs lists the cgroups of the cluster's agents in every
// hierarchy.
func nodeCgroupDirs(cluster string) []string {
	var dirs []string
	for _, pattern := range []string{"/sys/fs/cgroup/*/godwit/" + cluster + "-*", "/sys/fs/cgroup/godwit/" + cluster + "-*"} {
		m, _ := filepath.Glob(pattern)
		dirs = append(dirs, m...)
	}
	return dirs
}

// dump runs a netlink dump until no concurrent change (other tests')
// interrupts it.
func dump[T any](list func() ([]T, error)) ([]T, error) {
	for {
		res, err := list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return res, err
		}
	}
}

// handleIn opens netlink in the namespace pinned at path; "" is the
// test's own.
func handleIn(t *testing.T, path string) *netlink.Handle {
	t.Helper()
	ns := netns.None()
	if path != "" {
		var err error
		if ns, err = netns.GetFromPath(path); err != nil {
			t.Fatal(err)
		}
		defer ns.Close()
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// gatewaysTo lists the gateways of the namespace's routes to dst.
func gatewaysTo(t *testing.T, nsPath string, dst netip.Prefix) []string {
	t.Helper()
	filter := &netlink.Route{Dst: &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), 32)}}
	h := handleIn(t, nsPath)
	routes, err := dump(func() ([]netlink.Route, error) {
		return h.RouteListFiltered(netlink.FAMILY_V4, filter, netlink.RT_FILTER_DST)
	})
	if err != nil {
		t.Fatal(err)
	}
	var gws []string
	for _, r := range routes {
		if r.Gw != nil {
			gws = append(gws, r.Gw.String())
		}
	}
	return gws
}

// addrsIn lists the IPv4 addresses of the namespace pinned at path.
func addrsIn(t *testing.T, path string) []string {
	t.Helper()
	h := handleIn(t, path)
	addrs, err := dump(func() ([]netlink.Addr, error) { return h.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range addrs {
		out = append(out, a.IP.String())
	}
	return out
}

// godwit runs the CLI against the agent at addr and returns its output.
// godwit runs the CLI against the agent at addr with env (the cluster's
// TLSEnv, or none for plaintext) and fails t if it fails.
func godwit(t *testing.T, env []string, addr string, args ...string) []byte {
	t.Helper()
	out, err := runGodwit(t, env, addr, args...)
	if err != nil {
		t.Fatalf("godwit %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runGodwit runs the CLI against the agent at addr with env, none of the
// test's own GODWIT_TLS_* variables, and returns its combined output.
func runGodwit(t *testing.T, env []string, addr string, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, testutil.Godwit(t), append([]string{"--agent", addr}, args...)...)
	cmd.Env = append(append(os.Environ(), "GODWIT_TLS_CA=", "GODWIT_TLS_CERT=", "GODWIT_TLS_KEY="), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return []byte(stdout.String() + stderr.String()), err
	}
	return []byte(stdout.String()), nil
}
