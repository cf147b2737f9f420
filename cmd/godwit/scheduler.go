package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/config"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/server"
	"github.com/godwit/godwit/scheduler/state"
)

func init() { register(newSchedulerCommand) }

// Default ports of a scheduler: its API, raft, and gossip.
const (
	defaultSchedulerListen = "127.0.0.1:7710"
	raftPortOffset         = 1
	gossipPortOffset       = 2
)

func newSchedulerCommand(*globalOptions) *cobra.Command {
	var (
		cfg         server.Config
		insecure    bool
		tlsFiles    pki.Files
		gossipKey   string
		cidr        string
		logLevel    string
		join        []string
		fastTimings bool
		leaveOnStop bool
	)
	var metricsAddr string // --metrics: scheduler_metrics.go
	cmd := &cobra.Command{
		Use:   "scheduler --name NAME --data-dir DIR --listen ADDR --bootstrap-expect N [--join ADDR,...]",
		Short: "Run a scheduler replica: the cluster state in raft, placement, and the cluster API",
		Long: `Run one scheduler replica. Three or five replicas keep the cluster state in
raft (hashicorp/raft, log and snapshots under --data-dir); any of them
answers the cluster API on --listen, forwarding writes to the leader.

Replicas and agents find each other in an encrypted gossip pool
(memberlist, --gossip-listen, key from --gossip-key-file): the first
--bootstrap-expect replicas form the cluster once they have all met;
a replica started later without --bootstrap-expect is added by the
leader. --join names the gossip address of any member.

Raft listens on the --listen port + 1 and gossip on + 2 unless given.`,
		Example: `  godwit scheduler --name s1 --data-dir /var/lib/godwit/s1 --listen 10.0.0.1:7710 \
    --bootstrap-expect 3 --join 10.0.0.2:7712,10.0.0.3:7712 \
    --tls-ca ca.pem --tls-cert s1.pem --tls-key s1-key.pem --gossip-key-file gossip.key`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if cfg.Identity, err = daemonIdentity(tlsFiles, insecure, "scheduler"); err != nil {
				return err
			}
			if insecure {
				fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: scheduler %s serves its API and raft in PLAINTEXT with NO AUTHENTICATION and gossips unencrypted (--insecure): "+
					"anyone who can reach it controls the cluster\n", cfg.Name)
			}
			if gossipKey != "" {
				if cfg.GossipKey, err = pki.LoadGossipKey(gossipKey); err != nil {
					return err
				}
			}
			if cidr != "" {
				if cfg.ClusterCIDR, err = netip.ParsePrefix(cidr); err != nil {
					return fmt.Errorf("--cluster-cidr %q: %w: give a prefix such as 10.88.0.0/16", cidr, err)
				}
			}
			for _, addr := range []*string{&cfg.RaftListen, &cfg.GossipListen} {
				if *addr != "" {
					continue
				}
				offset := raftPortOffset
				if addr == &cfg.GossipListen {
					offset = gossipPortOffset
				}
				if *addr, err = portOffset(cfg.Listen, offset); err != nil {
					return err
				}
			}
			if cfg.RaftAdvertise == "" && cfg.Advertise != "" {
				cfg.RaftAdvertise, _ = portOffset(cfg.Advertise, raftPortOffset)
			}
			if cfg.GossipAdvertise == "" && cfg.Advertise != "" {
				cfg.GossipAdvertise, _ = portOffset(cfg.Advertise, gossipPortOffset)
			}
			cfg.Join = join
			cfg.Logger = log
			log.Debug("garbage collector target", "gogc", server.TuneGC())
			cfg.Timing = server.LANTiming
			if fastTimings {
				cfg.Timing = server.TestTiming
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sm, err := newSchedulerMetrics(metricsAddr, log)
			if err != nil {
				return err
			}
			cfg.Metrics = sm.counters()
			s, err := server.Start(ctx, cfg)
			if err != nil {
				return err
			}
			sm.serve(ctx, s)
			<-ctx.Done()
			if leaveOnStop {
				log.Info("scheduler stopping and leaving the cluster (--leave-on-stop)")
				return s.Leave()
			}
			log.Info("scheduler stopping; it stays a raft voter and rejoins when started again")
			return s.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "scheduler name, unique among the schedulers (required)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for raft's log, stable store and snapshots (required)")
	f.StringVar(&cfg.Listen, "listen", defaultSchedulerListen, "address the cluster API listens on")
	f.StringVar(&cfg.Advertise, "advertise", "", "address others reach the API at (default --listen)")
	f.StringVar(&cfg.RaftListen, "raft-listen", "", "address raft listens on (default: the --listen port + 1)")
	f.StringVar(&cfg.RaftAdvertise, "raft-advertise", "", "address other schedulers reach raft at (default --raft-listen)")
	f.StringVar(&cfg.GossipListen, "gossip-listen", "", "address gossip listens on, TCP and UDP (default: the --listen port + 2)")
	f.StringVar(&cfg.GossipAdvertise, "gossip-advertise", "", "address others reach gossip at (default --gossip-listen)")
	f.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", 0, "form a new cluster once this many schedulers have met (1, 3 or 5; 0: join an existing cluster)")
	f.StringSliceVar(&join, "join", nil, "gossip addresses of members to join (comma-separated)")
	f.StringVar(&cidr, "cluster-cidr", "", "container addresses for the whole cluster, recorded by the first leader (default "+server.DefaultClusterCIDR.String()+")")
	f.StringVar(&tlsFiles.CA, "tls-ca", "", "the cluster CA's certificate (PEM)")
	f.StringVar(&tlsFiles.Cert, "tls-cert", "", "this scheduler's certificate (PEM, --role scheduler), naming the addresses it is reached at")
	f.StringVar(&tlsFiles.Key, "tls-key", "", "the private key of --tls-cert (PEM, mode 0600)")
	f.StringVar(&gossipKey, "gossip-key-file", "", "the gossip pool's key (godwit tls gossip-key create FILE)")
	f.BoolVar(&insecure, "insecure", false, "serve plaintext without authentication, and gossip unencrypted (one host or tests only)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&metricsAddr, "metrics", "", "HOST:PORT to serve Prometheus metrics on, at /metrics (and /healthz); default none")
	config.AddFlag(cmd) // --config FILE
	f.BoolVar(&leaveOnStop, "leave-on-stop", false, "on SIGTERM, leave the cluster for good (the leader removes this scheduler from raft) instead of stopping as a voter that comes back")
	f.BoolVar(&fastTimings, "test-timings", false, "short leases, elections and gossip probes, for tests on one host")
	_ = f.MarkHidden("test-timings")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("data-dir")
	cmd.AddCommand(newSchedulerRecoverCommand())
	return cmd
}

// portOffset is addr with its port moved by offset.
func portOffset(addr string, offset int) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", fmt.Errorf("address %q: the port is not a number", addr)
	}
	if p == 0 {
		return net.JoinHostPort(host, "0"), nil
	}
	return net.JoinHostPort(host, strconv.Itoa(p+offset)), nil
}

// daemonIdentity is a daemon's TLS identity, or nil with --insecure; it
// refuses any other combination, saying what to pass.
func daemonIdentity(f pki.Files, insecure bool, what string) (*pki.Identity, error) {
	switch missing := f.Missing(); {
	case insecure && len(missing) < 3:
		return nil, errors.New("--insecure serves plaintext, so it takes no --tls-ca, --tls-cert or --tls-key: drop one or the other")
	case insecure:
		return nil, nil
	case len(missing) == 3:
		return nil, fmt.Errorf("the %s serves mutual TLS: give --tls-ca, --tls-cert and --tls-key (`godwit tls ca create`, then `godwit tls cert create --role %s`), or --insecure on a host you trust", what, what)
	case len(missing) > 0:
		return nil, fmt.Errorf("missing --tls-%v: TLS needs all three of --tls-ca, --tls-cert and --tls-key", missing)
	}
	return pki.Load(f)
}

func newSchedulerRecoverCommand() *cobra.Command {
	var dataDir, peers, name string
	cmd := &cobra.Command{
		Use:   "recover --name NAME --data-dir DIR --peers FILE",
		Short: "Rewrite a stopped scheduler's raft configuration after quorum was lost for good",
		Long: `Recover a cluster whose majority of schedulers is gone for good. Run it on
every surviving scheduler while it is STOPPED, with the same --peers file:
a JSON list of {"id", "address", "voter"} naming the survivors. Then start
them again: they elect a leader among themselves. See docs/raft.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			servers, err := server.ReadPeersFile(peers)
			if err != nil {
				return err
			}
			log, _ := newLogger("info")
			// Recovery replays the log into a real FSM to write the
			// recovered snapshot: the cluster state survives it.
			cfg := server.RaftConfig{ID: name, DataDir: dataDir, Logger: log, FSM: fsm.New(state.NewStore(), log)}
			if err := server.RecoverCluster(cfg, servers); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "raft configuration of %s rewritten to %d servers: start the survivors again\n", name, len(servers))
			return nil
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the scheduler's name (required)")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the scheduler's data dir (required)")
	cmd.Flags().StringVar(&peers, "peers", "", "JSON file listing the surviving servers (required)")
	for _, f := range []string{"name", "data-dir", "peers"} {
		_ = cmd.MarkFlagRequired(f)
	}
	return cmd
}
