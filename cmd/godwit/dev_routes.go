package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The machine that ran `dev up` reaches a container's address through a
// route via the host that runs it, which must follow the container when
// it moves. `dev up` starts `godwit dev routes`, which follows the
// scheduler's events and keeps those routes (devcluster.SyncRoutes). It
// runs inside the first scheduler's host, so that `dev down`, or the
// removal of an interrupted `dev up`, kills it with the hosts' other
// processes, and it reaches the namespace that holds the bridge through
// a descriptor it inherits.

const (
	// routesRootNetnsFD is the descriptor `dev routes` inherits the root
	// network namespace on: the first of exec.Cmd.ExtraFiles.
	routesRootNetnsFD = 3
	// routesLogName is the follower's log in the cluster's work dir.
	routesLogName = "routes.log"
	// routesResync is how often the follower syncs the routes without an
	// event, in case it missed one.
	routesResync = 5 * time.Second
	// routesRetry is how long it waits before trying the next scheduler
	// when it lost the one it followed.
	routesRetry = time.Second
	// routesCallTimeout bounds the calls of one sync.
	routesCallTimeout = 10 * time.Second
	// routesLogMode is the mode of the follower's log.
	routesLogMode = 0o600
)

// routesOptions are `dev routes`' flags.
type routesOptions struct {
	name       string
	schedulers []string
	tlsDir     string
	insecure   bool
	rootFD     int
}

func newDevRoutesCommand() *cobra.Command {
	var o routesOptions
	cmd := &cobra.Command{
		Use:   "routes --name NAME --scheduler ADDR,... (--tls-dir DIR | --insecure)",
		Short: "Keep the routes to a dev cluster's containers (started by dev up)",
		Long: `Follow the cluster's events and keep one route per container, its address
via the host that runs it, in the namespace of the bridge (inherited on
--root-netns-fd) and in every host. dev up starts it; dev down stops it.`,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(o.schedulers) == 0 {
				return errors.New("--scheduler: give the API address of at least one scheduler")
			}
			creds, err := routesCredentials(o)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), nil)).With("cluster", o.name)
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return followRoutes(ctx, o, creds, netns.NsHandle(o.rootFD), log)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", defaultDevName, "the cluster's name")
	f.StringSliceVar(&o.schedulers, "scheduler", nil, "API addresses of the cluster's schedulers, comma-separated")
	f.StringVar(&o.tlsDir, "tls-dir", "", "directory of the operator's ca.pem, cert.pem and key.pem")
	f.BoolVar(&o.insecure, "insecure", false, "talk to the schedulers in plaintext")
	f.IntVar(&o.rootFD, "root-netns-fd", routesRootNetnsFD, "inherited descriptor of the network namespace that holds the cluster's bridge")
	return cmd
}

func routesCredentials(o routesOptions) (grpc.DialOption, error) {
	switch {
	case o.insecure && o.tlsDir != "":
		return nil, errors.New("--insecure and --tls-dir: give one")
	case o.insecure:
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	case o.tlsDir == "":
		return nil, errors.New("give --tls-dir (the operator's certificate) or --insecure")
	}
	id, err := pki.Load(pki.DirFiles(o.tlsDir))
	if err != nil {
		return nil, err
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(id.ClientConfig())), nil
}

// followRoutes syncs the routes on every event of the scheduler it
// follows, and every routesResync, until ctx ends; when it loses a
// scheduler it follows the next one.
func followRoutes(ctx context.Context, o routesOptions, creds grpc.DialOption, rootNS netns.NsHandle, log *slog.Logger) error {
	s := &routeSyncer{name: o.name, rootNS: rootNS, log: log}
	for i := 0; ; i++ {
		addr := o.schedulers[i%len(o.schedulers)]
		err := s.follow(ctx, addr, creds)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("lost the scheduler's events: following the next scheduler", "scheduler", addr, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(routesRetry):
		}
	}
}

// routeSyncer syncs a cluster's routes with what a scheduler says.
type routeSyncer struct {
	name   string
	rootNS netns.NsHandle
	log    *slog.Logger
	// last is the table of the last successful sync.
	last map[netip.Addr]netip.Addr
}

// follow syncs on each event of the scheduler at addr until its event
// stream ends.
func (s *routeSyncer) follow(ctx context.Context, addr string, creds grpc.DialOption) error {
	conn, err := grpc.NewClient(addr, append(rpc.DialOptions(), creds)...)
	if err != nil {
		return err
	}
	defer conn.Close()
	client := pb.NewClusterServiceClient(conn)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Events(ctx, &pb.EventsRequest{Follow: true})
	if err != nil {
		return err
	}
	s.log.Info("following the scheduler's events", "scheduler", addr)
	// Events only say that something changed: one sync covers any number
	// of them.
	changed := make(chan struct{}, 1)
	ended := make(chan error, 1)
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				ended <- err
				return
			}
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}()
	resync := time.NewTicker(routesResync)
	defer resync.Stop()
	for {
		if err := s.sync(ctx, client); err != nil {
			s.log.Warn("sync the routes", "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-ended:
			return err
		case <-changed:
		case <-resync.C:
		}
	}
}

// sync sets a route for every container with an address and a node.
func (s *routeSyncer) sync(ctx context.Context, client pb.ClusterServiceClient) error {
	ctx, cancel := context.WithTimeout(ctx, routesCallTimeout)
	defer cancel()
	nodes, err := client.ListNodes(ctx, &pb.ListNodesRequest{})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	containers, err := client.ListContainers(ctx, &pb.ListContainersRequest{All: true})
	if err != nil {
		return fmt.Errorf("list containers: %w", err)
	}
	want := routeTable(nodes.GetNodes(), containers.GetContainers())
	if err := devcluster.SyncRoutes(ctx, s.name, s.rootNS, want); err != nil {
		return err
	}
	if !maps.Equal(want, s.last) {
		s.log.Info("routes synced", "routes", len(want))
		s.last = want
	}
	return nil
}

// routeTable maps each container's address to the host address of its
// node (a node's address is its agent's, HOSTADDR:PORT).
func routeTable(nodes []*pb.Node, containers []*pb.Container) map[netip.Addr]netip.Addr {
	hostOf := map[string]netip.Addr{}
	for _, n := range nodes {
		if ap, err := netip.ParseAddrPort(n.GetAddress()); err == nil {
			hostOf[n.GetName()] = ap.Addr()
		} else if a, err := netip.ParseAddr(n.GetAddress()); err == nil {
			hostOf[n.GetName()] = a
		}
	}
	want := map[netip.Addr]netip.Addr{}
	for _, c := range containers {
		ip, err := netip.ParseAddr(c.GetIp())
		via, ok := hostOf[c.GetNode()]
		if err == nil && ok {
			want[ip] = via
		}
	}
	return want
}

// startRoutes starts `godwit dev routes` for the cluster in the host of
// its first scheduler, with the namespace of the caller (the bridge's)
// on routesRootNetnsFD, detached: it outlives `dev up`.
func startRoutes(c *devcluster.Cluster, p devPlan, schedulers []*devcluster.Scheduler) error {
	addrs := make([]string, len(schedulers))
	for i, s := range schedulers {
		addrs[i] = s.Addr()
	}
	args := []string{"dev", "routes", "--name", p.cfg.Name, "--scheduler", strings.Join(addrs, ","),
		"--root-netns-fd", strconv.Itoa(routesRootNetnsFD)}
	if p.insecure {
		args = append(args, "--insecure")
	} else {
		args = append(args, "--tls-dir", filepath.Dir(c.TLSFiles().Cert))
	}
	// dev up runs in the bridge's namespace: devcluster enters the hosts'
	// only on threads of its own.
	rootFile, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return fmt.Errorf("open this network namespace for the route follower: %w", err)
	}
	defer rootFile.Close() // the child has its own descriptor
	logFile, err := os.OpenFile(filepath.Join(c.WorkDir(), routesLogName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, routesLogMode)
	if err != nil {
		return fmt.Errorf("open the route follower's log: %w", err)
	}
	defer logFile.Close()
	// Not bound to any context: it runs until dev down kills it.
	cmd := schedulers[0].Host().Command(context.Background(), p.cfg.Bin, args...)
	cmd.ExtraFiles = []*os.File{rootFile}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the route follower: %w", err)
	}
	go func() { _ = cmd.Wait() }() // reaps it, should it die while dev up runs
	return nil
}
