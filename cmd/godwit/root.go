package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/pki"
)

// globalOptions are the flags every operator command shares.
type globalOptions struct {
	agentAddr string // --agent / GODWIT_AGENT: the node agent to talk to
	// tlsFiles are --tls-ca, --tls-cert and --tls-key (GODWIT_TLS_*):
	// none means plaintext; tls is what they load to (client.go).
	tlsFiles pki.Files
	tls      clientTLS
	// clusterAddr is --addr / GODWIT_ADDR: a scheduler of the cluster.
	// Which of it, --agent and the current context a command talks to is
	// target's choice (cluster_target.go).
	clusterAddr string
	// clusterPick is which of the cluster target's addresses answered
	// last (callCluster tries it first).
	clusterPick int
	// flags are the root's persistent flags, which tell a flag given on
	// the command line from its default; nil for an options copy that
	// talks to one agent (withAgent).
	flags interface{ Changed(name string) bool }
	// command is the command running, for messages that name it.
	command  *cobra.Command
	resolved targetOnce
}

func newRootCommand() *cobra.Command {
	opts := &globalOptions{}
	root := &cobra.Command{
		Use:           "godwit",
		Short:         "Live migration and checkpointing for Linux container clusters",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&opts.agentAddr, "agent", envOr("GODWIT_AGENT", "127.0.0.1:7701"),
		"address of the node agent to talk to (env GODWIT_AGENT)")
	addTLSFlags(root, opts)
	addClusterFlags(root, opts)

	for _, add := range subcommands {
		root.AddCommand(add(opts))
	}
	return root
}

// subcommands is filled by each command's file in init, so that adding a
// command touches only its own file.
var subcommands []func(*globalOptions) *cobra.Command

func register(f func(*globalOptions) *cobra.Command) { subcommands = append(subcommands, f) }

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
