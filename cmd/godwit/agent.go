package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/internal/authz"
	"github.com/godwit/godwit/internal/config"
	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/rpc"
)

// noAgentTLS is why an agent started with neither TLS files nor
// --insecure refuses to start, and what to pass.
const noAgentTLS = "the agent serves its API and data connections over mutual TLS: give --tls-ca CA.pem --tls-cert NODE.pem --tls-key NODE-KEY.pem " +
	"(a CA and agent certificates: `godwit tls ca create --dir DIR`, then `godwit tls cert create --dir DIR --role agent --name NODE --host ADDRESS`), " +
	"or, on a host or network you trust, --insecure for plaintext without authentication"

func init() { register(newAgentCommand) }

func newAgentCommand(*globalOptions) *cobra.Command {
	var (
		cfg      agent.Config
		listen   string
		cidr     string
		labels   []string
		insecure bool
		tlsFiles pki.Files
		logLevel string
		cluster  agentClusterFlags // agent_cluster.go
		dev      bool              // agent_dev.go
	)
	var metricsAddr string // --metrics: agent_metrics.go
	cmd := &cobra.Command{
		Use:   "agent --name NAME --data-dir DIR --listen ADDR (--tls-ca FILE --tls-cert FILE --tls-key FILE | --insecure)",
		Short: "Run the node agent: images, snapshots, containers and their network on this node",
		Long: `Run the node agent. It serves the node API over gRPC and keeps the node's
images, snapshots and containers under --data-dir. Containers keep running
when the agent stops; a restarted agent re-adopts them.

The API and the data connections beside it (checkpoint archives, migration
images) are served on --listen over mutual TLS: --tls-cert is this node's
certificate (role agent, its addresses among its names: godwit tls cert
create --role agent), --tls-key its key, and --tls-ca the cluster's CA,
which every client and every other agent must present a certificate of.
The caller's role decides what it may call: operator and scheduler
everything, viewer only reads (node info, ps, inspect, logs), agent the
migration calls. The agent sends migrations to other agents with the same
certificate. --insecure serves plaintext without authentication instead,
for one host or tests.

With --join the agent is part of a cluster: it gossips with the members
(encrypted with --gossip-key-file), registers with a scheduler, reports
its containers and load in heartbeats, and holds a lease by them. While
it has no valid lease (no scheduler reached in time) it starts, resumes
and commits nothing, since the scheduler may have placed its containers
elsewhere; it registers again as soon as a scheduler answers. Without
--join the agent is standalone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if dev {
				d, err := devAgent(ctx, &cfg, &tlsFiles, &cluster, insecure, log)
				if err != nil {
					return err
				}
				defer d.close()
				go d.offerBusybox(ctx, log)
				fmt.Fprintf(cmd.ErrOrStderr(), "godwit dev: agent %s and scheduler %s on %s; data in %s\n"+
					"the CLI's current context is now %q: try `godwit node ls`, then `godwit image import` and `godwit run`\n",
					devName, devSchedulerName, devHost, d.dir, devName)
			} else if cfg.Name == "" || cfg.DataDir == "" {
				return errors.New("give --name and --data-dir (or --dev for a one-machine cluster with no configuration)")
			}
			id, err := agentIdentity(tlsFiles, insecure)
			if err != nil {
				return err
			}
			var parseErr error
			if cfg.Labels, parseErr = parseKeyValues(labels, "--label"); parseErr != nil {
				return parseErr
			}
			if cidr != "" {
				_, n, err := net.ParseCIDR(cidr)
				if err != nil {
					return fmt.Errorf("--container-cidr %q: %w", cidr, err)
				}
				cfg.ContainerCIDR = n
			}
			if cfg.Self, err = os.Executable(); err != nil {
				return fmt.Errorf("find the godwit binary to run shims with: %w", err)
			}
			cfg.Log = log
			am, err := newAgentMetrics(metricsAddr, log)
			if err != nil {
				return err
			}
			cfg.Observer = am.observer()
			if cfg.Advertise == "" {
				cfg.Advertise = listen
			}
			cl, err := cluster.setup(cfg, listen, insecure, id)
			if err != nil {
				return err
			}
			if cl != nil {
				cfg.Fence = cl.fence
			}

			return runAgent(ctx, cfg, listen, id, log, cl, am)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Name, "name", "", "node name, unique in the cluster (required)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for images, snapshots, containers and logs (required)")
	f.StringVar(&cfg.RunDir, "run-dir", "", "directory for runtime state: runc, netns mounts (default DATA-DIR/run)")
	f.StringVar(&listen, "listen", "127.0.0.1:7701", "address the node API listens on")
	f.StringVar(&cfg.Advertise, "advertise", "", "address other nodes and the scheduler reach this agent at (default --listen)")
	f.StringVar(&cidr, "container-cidr", agent.DefaultContainerCIDR, "addresses for this node's containers")
	f.StringArrayVar(&labels, "label", nil, "node label K=V (repeatable)")
	f.StringVar(&cfg.Snapshotter, "snapshotter", "", "overlay or btrfs (default: btrfs when the data dir is on btrfs, else overlay)")
	f.StringVar(&cfg.Runc, "runc", "runc", "runc binary")
	f.StringVar(&tlsFiles.CA, "tls-ca", "", "the cluster CA's certificate (PEM): clients and other agents must present a certificate it signed")
	f.StringVar(&tlsFiles.Cert, "tls-cert", "", "this node's certificate (PEM), signed by --tls-ca, naming the addresses the agent is reached at")
	f.StringVar(&tlsFiles.Key, "tls-key", "", "the private key of --tls-cert (PEM, mode 0600)")
	f.BoolVar(&insecure, "insecure", false, "serve the API in plaintext, without authentication, instead of TLS (one host or tests only)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&metricsAddr, "metrics", "", "HOST:PORT to serve Prometheus metrics on, at /metrics (and /healthz); default none")
	config.AddFlag(cmd) // --config FILE
	cluster.register(cmd)
	f.BoolVar(&dev, "dev", false, "one machine, no configuration: this agent plus an embedded single-voter scheduler, a throwaway CA, "+
		"a temporary data dir unless --data-dir, and the CLI context \"dev\" while it runs")
	return cmd
}

// agentIdentity loads the agent's TLS identity from the three files, or
// returns nil with --insecure; it refuses any other combination, saying
// what to pass.
func agentIdentity(f pki.Files, insecure bool) (*pki.Identity, error) {
	missing := f.Missing()
	switch {
	case insecure && len(missing) < 3:
		return nil, errors.New("--insecure serves plaintext, so it takes no --tls-ca, --tls-cert or --tls-key: drop one or the other")
	case insecure:
		return nil, nil
	case len(missing) == 3:
		return nil, errors.New(noAgentTLS)
	case len(missing) > 0:
		flags := make([]string, len(missing))
		for i, m := range missing {
			flags[i] = "--tls-" + m
		}
		return nil, fmt.Errorf("missing %s: the agent's TLS needs all three of --tls-ca, --tls-cert and --tls-key", strings.Join(flags, " and "))
	}
	id, err := pki.Load(f)
	if err != nil {
		return nil, err
	}
	if id.Role() != pki.RoleAgent {
		return nil, fmt.Errorf("the certificate %s has the %s role, and an agent serves with an agent's: issue one with `godwit tls cert create --role agent --name NODE --host ADDRESS`", f.Cert, id.Role())
	}
	return id, nil
}

// muxConfig is the data channel's configuration: TLS with the agent's
// identity (nil: plaintext, with the loud warning), checked against the
// node's name and the address it advertises.
func muxConfig(cfg agent.Config, addr net.Addr, id *pki.Identity, log *slog.Logger) (datachan.Config, error) {
	if id == nil {
		fmt.Fprintf(os.Stderr, "WARNING: node %s serves its API on %s in PLAINTEXT with NO AUTHENTICATION (--insecure): "+
			"anyone who can reach it can run containers as root on this host\n", cfg.Name, addr)
		log.Warn("API is insecure: plaintext, no authentication", "listen", addr.String())
		return datachan.Config{Log: log}, nil
	}
	server, err := id.ServerConfig()
	if err != nil {
		return datachan.Config{}, err
	}
	if id.Name() != cfg.Name {
		log.Warn("the TLS certificate names another node: is it this node's?", "certificate", id.Name(), "node", cfg.Name)
	}
	// Other agents and clients dial the advertised address and accept
	// only a certificate that names it.
	if host, _, err := net.SplitHostPort(cfg.Advertise); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			if err := id.VerifyHost(host); err != nil {
				log.Warn("clients that dial the advertised address will refuse this agent", "advertise", cfg.Advertise, "error", err)
			}
		}
	}
	log.Info("API and data connections served over mutual TLS", "listen", addr.String(), "certificate", id.Name())
	return datachan.Config{Log: log, TLS: server, ClientTLS: id.ClientConfig()}, nil
}

// runAgent runs the agent until ctx ends; cl, when set, joins it to the
// cluster once it serves; am, when set, serves its metrics.
func runAgent(ctx context.Context, cfg agent.Config, listen string, id *pki.Identity, log *slog.Logger, cl *agentCluster, am *agentMetrics) error {
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()
	am.serve(ctx, a)

	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	muxCfg, err := muxConfig(cfg, lis.Addr(), id, log)
	if err != nil {
		lis.Close()
		return err
	}

	// One address serves both gRPC and the data connections that carry
	// checkpoint archives beside it (internal/datachan), over one TLS.
	mux := datachan.Listen(lis, muxCfg)
	defer mux.Close()
	srv := agentServer(mux, id, log, am.serverOptions()...)
	a.Register(srv, agent.WithDataChannel(mux), agent.WithPeerCredentials(agentPeerCredentials(id))) // checkpoint_import.go
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(mux.RPCListener()) }()
	log.Info("agent ready", "node", cfg.Name, "listen", lis.Addr().String(), "data_dir", cfg.DataDir)
	if cl != nil {
		if err := cl.start(ctx, a, log); err != nil {
			srv.Stop()
			return err
		}
		defer cl.stop()
	}

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		log.Info("agent stopping; containers keep running")
		srv.GracefulStop()
		return nil
	}
}

// agentServer is the agent's gRPC server on mux: the shared transport
// options, the mux's credentials, and the agent's policy, which checks
// every call's role (internal/authz); an --insecure agent (id nil)
// allows every call. counters go before the policy, so that they see
// the calls it refuses too (--metrics).
func agentServer(mux *datachan.Mux, id *pki.Identity, log *slog.Logger, counters ...grpc.ServerOption) *grpc.Server {
	opts := append(append(rpc.ServerOptions(), counters...), authz.ServerOptions(authz.AgentPolicy(), authz.Options{Insecure: id == nil, Log: log})...)
	return grpc.NewServer(append(opts, grpc.Creds(mux.ServerCredentials()))...)
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
