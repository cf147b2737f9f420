package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/rpc"
)

func init() { register(newAgentCommand) }

func newAgentCommand(*globalOptions) *cobra.Command {
	var (
		cfg      agent.Config
		listen   string
		cidr     string
		labels   []string
		insecure bool
		logLevel string
	)
	cmd := &cobra.Command{
		Use:   "agent --name NAME --data-dir DIR --listen ADDR [--insecure]",
		Short: "Run the node agent: images, snapshots, containers and their network on this node",
		Long: `Run the node agent. It serves the node API over gRPC and keeps the node's
images, snapshots and containers under --data-dir. Containers keep running
when the agent stops; a restarted agent re-adopts them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			if !insecure {
				return errors.New("the agent API needs TLS credentials, which arrive with the cluster (`godwit tls`); " +
					"until then run it with --insecure on a host or network you trust")
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
			if cfg.Advertise == "" {
				cfg.Advertise = listen
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runAgent(ctx, cfg, listen, log)
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
	f.BoolVar(&insecure, "insecure", false, "serve the API in plaintext, without authentication (one host or tests only)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("data-dir")
	return cmd
}

func runAgent(ctx context.Context, cfg agent.Config, listen string, log *slog.Logger) error {
	a, err := agent.New(ctx, cfg)
	if err != nil {
		return err
	}
	defer a.Close()

	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	fmt.Fprintf(os.Stderr, "WARNING: node %s serves its API on %s in PLAINTEXT with NO AUTHENTICATION (--insecure): "+
		"anyone who can reach it can run containers as root on this host\n", cfg.Name, lis.Addr())
	log.Warn("API is insecure: plaintext, no authentication", "listen", lis.Addr().String())

	// One address serves both gRPC and the data connections that carry
	// checkpoint archives beside it (internal/datachan).
	mux := datachan.Listen(lis, datachan.Config{Log: log})
	defer mux.Close()
	srv := grpc.NewServer(rpc.ServerOptions()...)
	a.Register(srv, agent.WithDataChannel(mux))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(mux.RPCListener()) }()
	log.Info("agent ready", "node", cfg.Name, "listen", lis.Addr().String(), "data_dir", cfg.DataDir)

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		log.Info("agent stopping; containers keep running")
		srv.GracefulStop()
		return nil
	}
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
