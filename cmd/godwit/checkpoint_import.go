package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// importedView is `checkpoint import -o json` and `checkpoint push -o
// json`: the checkpoint as the receiving node lists it, and what that
// node said. Its keys are part of the CLI's contract.
type importedView struct {
	checkpointView
	// ManifestDigest identifies the checkpoint's content on every node.
	ManifestDigest string `json:"manifest_digest"`
	// AlreadyPresent: the node had this checkpoint already.
	AlreadyPresent bool `json:"already_present"`
	// KeptOn is the node that now keeps it (Node is the one that dumped).
	KeptOn        string   `json:"kept_on"`
	ReceivedBytes int64    `json:"received_bytes"`
	Warnings      []string `json:"warnings"`
}

func newImportedView(r *pb.ImportCheckpointResponse) importedView {
	return importedView{
		checkpointView: newCheckpointView(r.GetCheckpoint()),
		ManifestDigest: r.GetManifestDigest(),
		AlreadyPresent: r.GetAlreadyPresent(),
		KeptOn:         r.GetNode(),
		ReceivedBytes:  r.GetReceivedBytes(),
		Warnings:       nonNil(r.GetWarnings()),
	}
}

// reportImported prints what an import or a push kept, in the output
// format asked for.
func reportImported(cmd *cobra.Command, out outputFormat, resp *pb.ImportCheckpointResponse) error {
	v := newImportedView(resp)
	if out == outputJSON {
		return printJSON(cmd.OutOrStdout(), v)
	}
	return writeImported(cmd.OutOrStdout(), cmd.ErrOrStderr(), v)
}

// writeImported prints what a node kept on stdout and the warnings on
// stderr.
func writeImported(stdout, stderr io.Writer, v importedView) error {
	line := fmt.Sprintf("checkpoint %s of %s (%s, dumped on %s) kept on %s", v.ID, v.Container, units.FormatBytes(v.SizeBytes), v.Node, v.KeptOn)
	if v.AlreadyPresent {
		line = fmt.Sprintf("checkpoint %s of %s was on %s already: nothing changed", v.ID, v.Container, v.KeptOn)
	}
	if _, err := fmt.Fprintf(stdout, "%s\n%s\n", v.ID, line); err != nil {
		return err
	}
	for _, w := range v.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	return nil
}

func newCheckpointImportCommand(g *globalOptions) *cobra.Command {
	var (
		decryptKey string
		out        *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "import FILE [--decrypt-key FILE]",
		Short: "Keep an exported checkpoint archive on the agent's node, under its original ID, without restoring it",
		Long: `Upload an exported checkpoint archive to the agent, which checks every
member against the manifest and keeps the checkpoint among its own, under
its original ID: ` + "`godwit checkpoint ls`" + ` lists it and
` + "`godwit restore NAME --checkpoint ID`" + ` restores it there, even if the
container never ran on that node.

The node must have the image the checkpoint was taken from (import it
first with ` + "`godwit image import`" + `), room for it, and a host that can
restore it; otherwise the archive is refused as soon as its manifest is
read. A tampered, truncated or malformed archive is refused, and nothing is
left of a refused or interrupted import. Importing the same checkpoint
again changes nothing; a different checkpoint under an ID the node uses is
refused.

An encrypted archive is decrypted here with --decrypt-key, so the key never
goes to the agent. Standard output gets the checkpoint's ID on its first
line, then a summary; with -o json, one object (the keys of checkpoint ls
-o json, plus manifest_digest, already_present, kept_on, received_bytes and
warnings). Progress goes to standard error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := interruptible(cmd)
			defer stop()
			ui := newProgressUI(cmd.ErrOrStderr(), "import "+args[0])
			var resp *pb.ImportCheckpointResponse
			err := g.call(func(c pb.AgentServiceClient) (err error) {
				resp, err = agentclient.ImportCheckpointFile(ctx, c, g.dataDialer(), args[0], decryptKey,
					func(done, total int64) { ui.update("uploading", done, total) })
				return err
			})
			ui.finish()
			if err != nil {
				return err
			}
			return reportImported(cmd, *out, resp)
		},
	}
	cmd.Flags().StringVar(&decryptKey, "decrypt-key", "", "age key FILE that the archive was encrypted with")
	out = addOutputFlag(cmd)
	return cmd
}

func newCheckpointPushCommand(g *globalOptions) *cobra.Command {
	var (
		to       string
		compress string
		out      *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "push ID --to ADDR [--compress none|zstd]",
		Short: "Send a stored checkpoint from the agent's node to another agent, which keeps it",
		Long: `Have the agent send its stored checkpoint ID to the agent at ADDR (its API
address, host:port, as it advertises it), directly between the two nodes:
the sending agent presents its own node certificate and accepts only an
agent certificate of the cluster's CA that names ADDR (plaintext between
agents started with --insecure). The destination checks every member and
keeps the checkpoint under the same ID, as ` + "`godwit checkpoint import`" + ` does;
it stays on the sending node too (remove it there with ` + "`godwit checkpoint rm`" + `
once you no longer need it). Ctrl-C stops the transfer, and the
destination keeps nothing of it.

--compress zstd compresses the archive on the way (default none: memory
pages hardly compress). Output is as for ` + "`godwit checkpoint import`" + `.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return fmt.Errorf("say where to send the checkpoint: --to ADDR, the destination agent's address (host:port)")
			}
			if _, err := parseCompression(compress); err != nil {
				return err
			}
			ctx, stop := interruptible(cmd)
			defer stop()
			ui := newProgressUI(cmd.ErrOrStderr(), "push "+args[0]+" to "+to)
			var resp *pb.ImportCheckpointResponse
			err := g.call(func(c pb.AgentServiceClient) (err error) {
				resp, err = agentclient.PushCheckpoint(ctx, c, &pb.PushCheckpointRequest{Ref: args[0], Address: to, Compression: compress},
					func(done, total int64) { ui.update("pushing", done, total) })
				return err
			})
			ui.finish()
			if err != nil {
				return err
			}
			return reportImported(cmd, *out, resp)
		},
	}
	f := cmd.Flags()
	f.StringVar(&to, "to", "", "the destination agent's API address, host:port (required)")
	f.StringVar(&compress, "compress", string(bundle.NoCompression), "compression on the way: none or zstd")
	out = addOutputFlag(cmd)
	return cmd
}

// agentPeerCredentials are what an agent calls other agents' APIs with
// (agent.WithPeerCredentials): its node certificate, accepting only
// agents' certificates of the cluster's CA; plaintext for an agent
// started with --insecure (id nil).
func agentPeerCredentials(id *pki.Identity) credentials.TransportCredentials {
	if id == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(pki.RequirePeerRole(id.ClientConfig(), pki.RoleAgent))
}
