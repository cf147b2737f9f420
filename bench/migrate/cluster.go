package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

const (
	// clusterName prefixes every kernel object, path and node name the
	// benchmark's cluster creates; its ranges are apart from every test's.
	clusterName = "bmig"
	// The hosts: the container runs on a, moves to b, and the probe
	// connects from c, a third host, as a client of the service would.
	hostA, hostB, hostC = "a", "b", "c"
	// workloadImage is the workload's image name on both agents.
	workloadImage = "workload"

	// readyBase and readyPerGiB bound how long a new container may take to
	// answer: the workload fills its memory before it listens.
	readyBase   = 30 * time.Second
	readyPerGiB = 30 * time.Second
	// dialTimeout bounds one connection attempt to a new container;
	// dialRetry is the pause between two.
	dialTimeout = 2 * time.Second
	dialRetry   = 100 * time.Millisecond
	// removeTimeout bounds removing one container through its agent.
	removeTimeout = time.Minute

	// diskPerSize is how many copies of a container's memory a move keeps
	// on disk at once: the baseline's images on a's side and their copy on
	// b's (godwit's move holds as many: the source's and the destination's).
	diskPerSize = 3
)

var (
	clusterSubnet     = netip.MustParsePrefix("10.77.20.0/24")
	clusterContainers = netip.MustParsePrefix("10.78.20.0/24")
)

// bench is the cluster the moves run on: hosts a, b and c, agents on a
// and b with the workload image imported, and the tools the baseline runs.
type bench struct {
	cluster *devcluster.Cluster
	a, b, c *devcluster.Host
	// runc is the runc binary the baseline runs, the agents' own.
	runc string
	// work holds the baseline's images.
	work string
	info *pb.NodeInfoResponse
	log  *slog.Logger
	// cool is how long each move waits, its container running, before it
	// starts (--cool).
	cool time.Duration
	// linkTLS is the data channel measurement's server and client TLS
	// (dataChannelTLS).
	linkTLS [2]*tls.Config
}

// newBench creates the cluster, starts the agents and imports the
// workload image on both.
func newBench(ctx context.Context, bin, work, rootfsTar string, insecure bool, log *slog.Logger) (_ *bench, err error) {
	if bin, err = filepath.Abs(bin); err != nil {
		return nil, err
	}
	b := &bench{work: work, log: log}
	if b.runc, err = lookTools(); err != nil {
		return nil, err
	}
	b.cluster, err = devcluster.New(ctx, devcluster.Config{
		Name: clusterName, Subnet: clusterSubnet, ContainerCIDR: clusterContainers, Bin: bin,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.Close())
		}
	}()
	hosts := map[string]**devcluster.Host{hostA: &b.a, hostB: &b.b, hostC: &b.c}
	for _, name := range []string{hostA, hostB, hostC} {
		if *hosts[name], err = b.cluster.AddHost(ctx, name); err != nil {
			return nil, err
		}
	}
	for _, h := range []*devcluster.Host{b.a, b.b} {
		a, err := h.StartAgent(ctx, devcluster.AgentOptions{Insecure: insecure})
		if err != nil {
			return nil, err
		}
		// The agent's memory is read from its process: nsenter must have
		// become the agent, not stayed its parent.
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", a.Pid())); err != nil || strings.TrimSpace(string(comm)) != "godwit" {
			return nil, fmt.Errorf("agent of host %s: pid %d is %q, not godwit (%v): its memory cannot be read", h.Name(), a.Pid(), comm, err)
		}
		if err := importImage(ctx, a, rootfsTar); err != nil {
			return nil, err
		}
	}
	if b.info, err = b.a.Agent().Client().NodeInfo(ctx, &pb.NodeInfoRequest{}); err != nil {
		return nil, fmt.Errorf("node info of host a: %w", err)
	}
	log.Info("cluster ready", "cluster", clusterName, "agent_a", b.a.Agent(), "agent_b", b.b.Agent())
	return b, nil
}

// strategies asks both agents which strategies they support and keeps
// those of want (all when nil) that both do; left are the others, with
// why.
func (b *bench) strategies(ctx context.Context, want []migrate.Strategy) (use []migrate.Strategy, left []unmeasured, err error) {
	var infos [2]*pb.NodeInfoResponse
	for i, h := range []*devcluster.Host{b.a, b.b} {
		if infos[i], err = h.Agent().Client().NodeInfo(ctx, &pb.NodeInfoRequest{Strategies: true}); err != nil {
			return nil, nil, fmt.Errorf("strategies of host %s: %w", h.Name(), err)
		}
	}
	use, left = pickStrategies(want, infos[0], infos[1])
	return use, left, nil
}

// lookTools finds what the baseline runs, before anything is created,
// and returns runc's path.
func lookTools() (string, error) {
	var runc string
	for _, tool := range []string{"runc", "criu", "iptables", "nsenter", "tar", "ss"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			return "", fmt.Errorf("%s is needed (install runc, criu, iptables, util-linux, tar and iproute2): %w", tool, err)
		}
		if tool == "runc" {
			runc = path
		}
	}
	if _, err := os.Stat(busybox); err != nil {
		return "", fmt.Errorf("the baseline sends with busybox nc: install busybox-static: %w", err)
	}
	return runc, nil
}

func importImage(ctx context.Context, a *devcluster.Agent, rootfsTar string) error {
	f, err := os.Open(rootfsTar)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := agentclient.ImportImage(ctx, a.Client(), f, workloadImage, 0); err != nil {
		return fmt.Errorf("import the workload into %s: %w\nthe agent's log ends with:\n%s", a, err, a.LogTail())
	}
	return nil
}

// Close removes the cluster: containers, agents, hosts.
func (b *bench) Close() error {
	if b.cluster == nil {
		return nil
	}
	return b.cluster.Close()
}

// conditions describes the host and the tools, for the report.
func (b *bench) conditions() conditions {
	return conditions{
		date:        time.Now().UTC(),
		cpu:         benchutil.CPUModel(),
		cores:       int(b.info.GetCpus()),
		memory:      b.info.GetMemoryBytes(),
		kernel:      b.info.GetKernelVersion(),
		cgroupMode:  benchutil.CgroupMode(),
		workFS:      benchutil.Filesystem(b.work),
		dataFS:      benchutil.Filesystem(b.cluster.WorkDir()),
		godwit:      b.info.GetGodwitVersion(),
		runc:        b.info.GetRuncVersion(),
		criu:        b.info.GetCriuVersion(),
		snapshotter: b.info.GetSnapshotter(),
		insecure:    b.a.Agent().Insecure(),
		cool:        b.cool,
	}
}

// workload is one container of the benchmark, running on host a with a
// cluster IP routed via a.
type workload struct {
	name string
	id   string
	ip   netip.Addr
}

func (w workload) addr() string {
	return net.JoinHostPort(w.ip.String(), strconv.Itoa(testutil.WorkloadPort))
}

// runWorkload runs the workload holding sizeMiB on host a with a new
// cluster IP, routes the IP via a, and connects from host c once it
// answers: the connection the probe holds through the move.
func (b *bench) runWorkload(ctx context.Context, name string, sizeMiB int) (workload, net.Conn, error) {
	ip, err := b.cluster.ContainerIP()
	if err != nil {
		return workload{}, nil, err
	}
	c, err := b.a.Agent().Client().RunContainer(ctx, &pb.RunContainerRequest{
		Name: name, Image: workloadImage, Args: []string{testutil.WorkloadPath, "-mem", strconv.Itoa(sizeMiB)}, Ip: ip.String(),
	})
	if err != nil {
		return workload{}, nil, fmt.Errorf("run %s on host a: %w", name, err)
	}
	w := workload{name: name, id: c.GetId(), ip: ip}
	if err := b.cluster.Route(ctx, netip.PrefixFrom(ip, 32), b.a); err != nil {
		return w, nil, err
	}
	conn, err := b.dialWorkload(ctx, w, readyBase+time.Duration(sizeMiB)*readyPerGiB/1024)
	return w, conn, err
}

// dialWorkload connects from host c to w until it answers COUNT, for at
// most timeout.
func (b *bench) dialWorkload(ctx context.Context, w workload, timeout time.Duration) (net.Conn, error) {
	deadline := time.Now().Add(timeout)
	for {
		conn, err := b.tryDial(ctx, w)
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the workload %s at %s did not answer from host c within %s: %w", w.name, w.addr(), timeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(dialRetry):
		}
	}
}

func (b *bench) tryDial(ctx context.Context, w workload) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	conn, err := b.c.Dial(dctx, "tcp4", w.addr())
	if err != nil {
		return nil, err
	}
	// The probe's client answers COUNT only once the workload listens,
	// which is after it filled its memory.
	if _, err := newClient(conn).count(dialTimeout); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// remove removes the container named name from both agents, wherever it
// is, so that the next move starts from the same state.
func (b *bench) remove(name string) error {
	ctx, cancel := context.WithTimeout(context.Background(), removeTimeout)
	defer cancel()
	var errs []error
	for _, h := range []*devcluster.Host{b.a, b.b} {
		a := h.Agent()
		list, err := a.Client().ListContainers(ctx, &pb.ListContainersRequest{All: true})
		if err != nil {
			errs = append(errs, fmt.Errorf("list containers on host %s: %w", h.Name(), err))
			continue
		}
		for _, c := range list.GetContainers() {
			if c.GetName() != name {
				continue
			}
			if _, err := a.Client().RemoveContainer(ctx, &pb.RemoveContainerRequest{Ref: c.GetId(), Force: true}); err != nil {
				errs = append(errs, fmt.Errorf("remove %s on host %s: %w", name, h.Name(), err))
			}
		}
	}
	return errors.Join(errs...)
}
