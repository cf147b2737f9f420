package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/clictx"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() { register(newDevCommand) }

const (
	// defaultDevName names the cluster, and the context, that `dev up`
	// builds when given no --name.
	defaultDevName = "dev"
	// defaultDevSubnet and defaultDevContainerCIDR are ranges that no
	// test of godwit uses, so a developer's dev cluster and the tests can
	// run side by side.
	defaultDevSubnet        = "10.99.0.0/24"
	defaultDevContainerCIDR = "10.98.0.0/16"
	// devNodesReadyTimeout bounds the wait for every agent to register
	// and show ready: they do within seconds of their start.
	devNodesReadyTimeout = time.Minute
	// devNodesPoll is how often `dev up` asks the leader for the nodes.
	devNodesPoll = 200 * time.Millisecond
	// devNodesCallTimeout bounds one ListNodes call.
	devNodesCallTimeout = 5 * time.Second
	// devLogLines is how much of a process's log a failed `dev up` shows.
	devLogLines = 20
	// schedulerHostPrefix and nodeHostPrefix name the hosts: s1, s2, ...
	// run the schedulers, n1, n2, ... the agents.
	schedulerHostPrefix = "s"
	nodeHostPrefix      = "n"
	// readyStatus is a node's status in ListNodes once it is registered
	// with a valid lease and schedulable.
	readyStatus = "ready"
	// reservedSubnetAddrs are the addresses of a dev cluster's subnet that
	// no host can take: the network and broadcast addresses, and the
	// bridge's.
	reservedSubnetAddrs = 3
)

// devSchedulerCounts are the sizes of scheduler quorum `dev up` builds:
// an odd number, so that a majority survives the loss of a minority.
var devSchedulerCounts = []int{1, 3, 5}

// errNeedRoot: the dev commands create network namespaces, a bridge,
// routes and cgroups.
var errNeedRoot = errors.New("must run as root")

// geteuid is os.Geteuid, replaced in tests.
var geteuid = os.Geteuid

func newDevCommand(*globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Build and remove a local cluster on this machine (network-namespace hosts, real processes)",
		Long: `Build a whole godwit cluster on this machine, for trying godwit out and for
developing it: each host is a network namespace with its own address on a
bridge, running a real godwit scheduler or agent (devcluster). Both
subcommands need root.`,
		Args: cobra.NoArgs,
	}
	cmd.AddCommand(newDevUpCommand(), newDevDownCommand(), newDevRoutesCommand())
	return cmd
}

// devUpOptions are `dev up`'s flags.
type devUpOptions struct {
	name                  string
	nodes, schedulers     int
	subnet, containerCIDR string
	insecure              bool
}

// devPlan is what `dev up` builds, from checked options.
type devPlan struct {
	cfg devcluster.Config
	// schedulerHosts and nodeHosts are the hosts' names, in the order
	// they are added.
	schedulerHosts, nodeHosts []string
	insecure                  bool
}

// plan checks the options and says what `dev up` builds.
func (o devUpOptions) plan() (devPlan, error) {
	if o.nodes < 1 {
		return devPlan{}, fmt.Errorf("--nodes %d: give at least 1 node", o.nodes)
	}
	if !slices.Contains(devSchedulerCounts, o.schedulers) {
		return devPlan{}, fmt.Errorf("--schedulers %d: give 1, 3 or 5 (an odd number keeps a majority when a minority fails)", o.schedulers)
	}
	subnet, err := netip.ParsePrefix(o.subnet)
	if err != nil {
		return devPlan{}, fmt.Errorf("--subnet %q: %w: give an IPv4 prefix such as %s", o.subnet, err, defaultDevSubnet)
	}
	cidr, err := netip.ParsePrefix(o.containerCIDR)
	if err != nil {
		return devPlan{}, fmt.Errorf("--container-cidr %q: %w: give an IPv4 prefix such as %s", o.containerCIDR, err, defaultDevContainerCIDR)
	}
	// devcluster refuses IPv6, saying so.
	if subnet.Addr().Is4() {
		if free := 1<<(32-subnet.Bits()) - reservedSubnetAddrs; o.nodes+o.schedulers > free {
			return devPlan{}, fmt.Errorf("--subnet %s holds %d hosts, and %d nodes and %d schedulers need %d: give a wider subnet",
				subnet, max(free, 0), o.nodes, o.schedulers, o.nodes+o.schedulers)
		}
	}
	p := devPlan{
		cfg:      devcluster.Config{Name: o.name, Subnet: subnet, ContainerCIDR: cidr},
		insecure: o.insecure,
	}
	for i := 1; i <= o.schedulers; i++ {
		p.schedulerHosts = append(p.schedulerHosts, schedulerHostPrefix+strconv.Itoa(i))
	}
	for i := 1; i <= o.nodes; i++ {
		p.nodeHosts = append(p.nodeHosts, nodeHostPrefix+strconv.Itoa(i))
	}
	return p, nil
}

func newDevUpCommand() *cobra.Command {
	o := devUpOptions{}
	cmd := &cobra.Command{
		Use:   "up [--name dev] --nodes N --schedulers 1|3|5 [--subnet CIDR] [--container-cidr CIDR] [--insecure]",
		Short: "Build a local cluster and make it the CLI's current context",
		Long: `Build a cluster on this machine and leave it running: --schedulers scheduler
replicas, each on a host of its own (s1, s2, ...), forming the raft cluster
together (--bootstrap-expect), and --nodes agents on hosts n1, n2, ...,
joining the schedulers' gossip pool. Hosts are network namespaces
gwd-NAME-HOST on the bridge gwd-NAME, with addresses from --subnet in that
order (the bridge takes the first); containers get addresses from
--container-cidr. Everything speaks mutual TLS with a throwaway CA and
gossips with a fresh key (--insecure: plaintext, for debugging).

It waits until a leader is elected and every node is registered and ready,
then saves a CLI context named after the cluster, with the operator's
certificate, and makes it current: plain ` + "`godwit node ls`" + ` talks to the
cluster. The processes outlive this command; ` + "`godwit dev down`" + ` removes
them and every other trace. Logs: WORKDIR/HOST/scheduler.log and
agent.log (the work dir is printed).

The machine reaches every host's address, and every container's: a
follower (` + "`godwit dev routes`" + `, log WORKDIR/routes.log) keeps a route
to each container's address via its node's host, in this machine's
namespace and in every host, following the scheduler's events as
containers come, move and go.

Needs root.`,
		Example: `  sudo godwit dev up --nodes 3 --schedulers 3
  sudo godwit node ls
  sudo godwit dev down`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot("dev up"); err != nil {
				return err
			}
			p, err := o.plan()
			if err != nil {
				return err
			}
			if p.cfg.Bin, err = os.Executable(); err != nil {
				return fmt.Errorf("find the godwit binary the hosts run: %w", err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return devUp(ctx, p, cmd.OutOrStdout(), devLogger(cmd.ErrOrStderr()))
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", defaultDevName, "the cluster's name (1 to 11 lowercase letters and digits), and its context's")
	f.IntVar(&o.nodes, "nodes", 1, "how many agents (nodes) to run")
	f.IntVar(&o.schedulers, "schedulers", 1, "how many scheduler replicas to run: 1, 3 or 5")
	f.StringVar(&o.subnet, "subnet", defaultDevSubnet, "the hosts' addresses (IPv4): the bridge takes the first, the hosts the next ones")
	f.StringVar(&o.containerCIDR, "container-cidr", defaultDevContainerCIDR, "the containers' addresses (IPv4), disjoint from --subnet")
	f.BoolVar(&o.insecure, "insecure", false, "run every scheduler and agent in plaintext without authentication, gossip unencrypted")
	return cmd
}

// devUp builds the cluster p describes, saves its context and detaches
// it. On any failure, or when ctx ends first, it removes everything it
// built.
func devUp(ctx context.Context, p devPlan, out io.Writer, log *slog.Logger) (err error) {
	name := p.cfg.Name
	c, err := devcluster.New(ctx, p.cfg)
	if err != nil {
		return err
	}
	saved := false
	defer func() {
		if err == nil {
			return
		}
		fmt.Fprintf(out, "removing what was built of cluster %s\n", name)
		err = errors.Join(err, c.Close())
		if saved {
			err = errors.Join(err, clictx.Remove(name))
		}
	}()
	fmt.Fprintf(out, "cluster %s: bridge gwd-%s at %s, work dir %s\n", name, name, c.BridgeAddr(), c.WorkDir())

	var schedulers []*devcluster.Scheduler
	var gossip []string
	for _, hn := range p.schedulerHosts {
		h, err := c.AddHost(ctx, hn)
		if err != nil {
			return err
		}
		s, err := h.StartScheduler(ctx, devcluster.SchedulerOptions{
			BootstrapExpect: len(p.schedulerHosts), Join: slices.Clone(gossip), Insecure: p.insecure,
		})
		if err != nil {
			return err
		}
		schedulers = append(schedulers, s)
		gossip = append(gossip, s.GossipAddr())
		fmt.Fprintf(out, "scheduler %s on host %s: API %s, gossip %s\n", s.Name(), hn, s.Addr(), s.GossipAddr())
	}
	leader, err := c.WaitLeader(ctx, schedulers...)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "leader elected: %s\n", leader.Name())

	var agents []*devcluster.Agent
	for _, hn := range p.nodeHosts {
		h, err := c.AddHost(ctx, hn)
		if err != nil {
			return err
		}
		a, err := h.StartAgent(ctx, devcluster.AgentOptions{Insecure: p.insecure, Join: gossip})
		if err != nil {
			return err
		}
		agents = append(agents, a)
		fmt.Fprintf(out, "agent %s on host %s: API %s\n", a.Node(), hn, a.Addr())
	}
	if err := waitNodesReady(ctx, leader, agents); err != nil {
		return err
	}
	fmt.Fprintf(out, "%d nodes registered and ready\n", len(agents))
	if err := startRoutes(c, p, schedulers); err != nil {
		return err
	}

	// Every scheduler's address: the CLI goes on with the next when one
	// is down.
	addrs := make([]string, len(schedulers))
	for i, s := range schedulers {
		addrs[i] = s.Addr()
	}
	cc := clictx.Context{Name: name, Addr: strings.Join(addrs, ","), Insecure: p.insecure}
	if !p.insecure {
		cc.TLS = c.TLSFiles()
	}
	if err := clictx.Save(cc, true); err != nil {
		return err
	}
	saved = true
	if err := c.Detach(); err != nil {
		return err
	}
	log.Debug("dev cluster detached", "cluster", name)
	printDevSummary(out, c, p, leader)
	return nil
}

// waitNodesReady waits until the leader lists every agent's node ready.
// When the time runs out it says which are not, and shows the end of
// their logs.
func waitNodesReady(ctx context.Context, leader *devcluster.Scheduler, agents []*devcluster.Agent) error {
	ctx, cancel := context.WithTimeout(ctx, devNodesReadyTimeout)
	defer cancel()
	var last error
	for {
		notReady, err := nodesNotReady(ctx, leader, agents)
		if err == nil && len(notReady) == 0 {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			var b strings.Builder
			fmt.Fprintf(&b, "the nodes did not all register within %s: %v", devNodesReadyTimeout, ctx.Err())
			if last != nil {
				fmt.Fprintf(&b, " (last answer of %s: %v)", leader.Name(), last)
			}
			for _, a := range notReady {
				fmt.Fprintf(&b, "\nnode %s is not ready; the end of its agent's log:\n%s", a.Node(), lastLines(a.LogTail(), devLogLines))
			}
			fmt.Fprintf(&b, "\nthe end of %s's log:\n%s", leader.Name(), lastLines(leader.LogTail(), devLogLines))
			return errors.New(b.String())
		case <-time.After(devNodesPoll):
		}
	}
}

// nodesNotReady lists the agents whose node the leader does not list as
// ready; all of them when it cannot be asked.
func nodesNotReady(ctx context.Context, leader *devcluster.Scheduler, agents []*devcluster.Agent) ([]*devcluster.Agent, error) {
	cctx, cancel := context.WithTimeout(ctx, devNodesCallTimeout)
	defer cancel()
	resp, err := leader.Client().ListNodes(cctx, &pb.ListNodesRequest{})
	if err != nil {
		return agents, err
	}
	status := map[string]string{}
	for _, n := range resp.GetNodes() {
		status[n.GetName()] = n.GetStatus()
	}
	var out []*devcluster.Agent
	for _, a := range agents {
		if status[a.Node()] != readyStatus {
			out = append(out, a)
		}
	}
	return out, nil
}

// printDevSummary tells the user what `dev up` built and what to run
// next.
func printDevSummary(w io.Writer, c *devcluster.Cluster, p devPlan, leader *devcluster.Scheduler) {
	name := p.cfg.Name
	security := "mutual TLS, encrypted gossip"
	if p.insecure {
		security = "PLAINTEXT, no authentication (--insecure)"
	}
	fmt.Fprintf(w, "\ncluster %s is up: %d schedulers (leader %s), %d nodes, %s\n",
		name, len(p.schedulerHosts), leader.Name(), len(p.nodeHosts), security)
	if !p.insecure {
		fmt.Fprintf(w, "  operator certificate: %s\n", c.TLSFiles().Cert)
	}
	fmt.Fprintf(w, "  logs: %s/HOST/scheduler.log and agent.log\n", c.WorkDir())
	fmt.Fprintf(w, "  containers get addresses from %s, routed from this machine (log %s)\n",
		p.cfg.ContainerCIDR, filepath.Join(c.WorkDir(), routesLogName))
	fmt.Fprintf(w, "context %s is current: plain godwit commands talk to this cluster.\n\nNext:\n", name)
	for _, line := range []string{
		"godwit node ls",
		"godwit cluster status",
		"godwit image import busybox.tar",
		"godwit run --name web busybox -- httpd -f -p 80",
		"godwit dev down --name " + name,
	} {
		fmt.Fprintf(w, "  %s\n", line)
	}
}

func newDevDownCommand() *cobra.Command {
	var name string
	cmd := &cobra.Command{
		Use:   "down [--name dev]",
		Short: "Remove a local cluster and every trace of it, its context included",
		Long: `Remove the cluster that ` + "`godwit dev up`" + ` built: its schedulers, agents and
containers, their processes, cgroups and mounts, the hosts' network
namespaces, the bridge and its routes, the work dir, and the CLI context of
the same name. It also removes what a ` + "`dev up`" + ` interrupted half way left.
Removing a cluster that is not there is not an error.

Needs root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireRoot("dev down"); err != nil {
				return err
			}
			return devDown(cmd.Context(), name, cmd.OutOrStdout(), devLogger(cmd.ErrOrStderr()))
		},
	}
	cmd.Flags().StringVar(&name, "name", defaultDevName, "the cluster's name, as given to dev up")
	return cmd
}

// devDown removes the cluster named name and its context.
func devDown(ctx context.Context, name string, out io.Writer, log *slog.Logger) error {
	existed, err := devcluster.Exists(name)
	if err != nil {
		return err
	}
	if err := devcluster.Remove(ctx, name, log); err != nil {
		return fmt.Errorf("remove cluster %s: %w; run `godwit dev down --name %s` again once it is fixed", name, err, name)
	}
	if existed {
		fmt.Fprintf(out, "cluster %s removed\n", name)
	} else {
		fmt.Fprintf(out, "no cluster %s on this machine\n", name)
	}
	switch err := clictx.Remove(name); {
	case err == nil:
		fmt.Fprintf(out, "context %s removed\n", name)
	case !errors.Is(err, clictx.ErrNotFound):
		return fmt.Errorf("remove context %s: %w", name, err)
	}
	return nil
}

// requireRoot fails unless the process runs as root, saying what needs it.
func requireRoot(what string) error {
	if geteuid() != 0 {
		return fmt.Errorf("godwit %s %w: it creates network namespaces, a bridge, routes and cgroups; run it with sudo", what, errNeedRoot)
	}
	return nil
}

// devLogger reports what devcluster does that the user should know
// (leftovers of an interrupted run removed, processes that would not
// stop) on w.
func devLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}
