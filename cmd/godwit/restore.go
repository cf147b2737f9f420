package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/agent/agentclient"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() {
	register(newRestoreCommand)
}

// restoreOptions are restore's flags.
type restoreOptions struct {
	checkpoint string
	name       string
	from       string
	decryptKey string
}

// check refuses flag combinations that do not name exactly one source.
func (o *restoreOptions) check(args []string) error {
	switch {
	case len(args) > 1:
		return fmt.Errorf("restore takes one container NAME, got %d arguments", len(args))
	case len(args) == 0 && o.from == "":
		return errors.New("say what to restore: godwit restore NAME (from a checkpoint on the node) or godwit restore --from FILE (from an archive)")
	case len(args) == 1 && o.from != "":
		return errors.New("give a container NAME or --from FILE, not both: --from restores the container recorded in the archive (use --name to rename it)")
	case o.from != "" && o.checkpoint != "":
		return errors.New("--checkpoint picks a checkpoint stored on the node; it cannot be combined with --from FILE")
	case o.from == "" && o.decryptKey != "":
		return errors.New("--decrypt-key applies to --from FILE only: checkpoints stored on a node are not encrypted")
	}
	return nil
}

func newRestoreCommand(g *globalOptions) *cobra.Command {
	var (
		o   restoreOptions
		out *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "restore NAME [--checkpoint ID] [--name NEW] | restore --from FILE [--name NEW] [--decrypt-key FILE]",
		Short: "Restore a container from a checkpoint on its node or from an archive file",
		Long: `Restore a container, with its memory, open files, IP and established TCP
connections, and leave it running.

godwit restore NAME restores the container NAME on the agent's node from its
latest checkpoint there, or from --checkpoint ID.

godwit restore --from FILE uploads an exported archive to the agent, which
checks every digest, the image layers, the CPU features and the versions
before CRIU reads anything, then restores the container it holds. An
encrypted archive is decrypted here with --decrypt-key, so the key never
goes to the agent; tampering or a wrong key is refused and nothing is
restored.

--name NEW restores as a new container called NEW.`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(args); err != nil {
				return err
			}
			ctx, stop := interruptible(cmd)
			defer stop()
			var resp *pb.RestoreResponse
			if o.from != "" {
				ui := newProgressUI(cmd.ErrOrStderr(), "restore "+o.from)
				err := g.call(func(c pb.AgentServiceClient) (err error) {
					resp, err = agentclient.RestoreArchiveFile(ctx, c, g.dataDialer(), o.from, o.name, o.decryptKey,
						func(done, total int64) { ui.update("uploading", done, total) })
					return err
				})
				ui.finish()
				if err != nil {
					return err
				}
			} else if err := g.call(func(c pb.AgentServiceClient) (err error) {
				resp, err = c.Restore(ctx, &pb.RestoreRequest{Container: args[0], CheckpointId: o.checkpoint, Name: o.name})
				return err
			}); err != nil {
				return err
			}
			v := newRestoreView(resp)
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeRestore(cmd.OutOrStdout(), cmd.ErrOrStderr(), v)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.checkpoint, "checkpoint", "", "checkpoint ID to restore (default: the container's latest)")
	f.StringVar(&o.name, "name", "", "restore as a new container with this name")
	f.StringVar(&o.from, "from", "", "restore from this exported archive FILE")
	f.StringVar(&o.decryptKey, "decrypt-key", "", "age key FILE that the --from archive was encrypted with")
	out = addOutputFlag(cmd)
	return cmd
}

func newRestoreView(r *pb.RestoreResponse) restoreView {
	v := restoreView{Container: newContainerView(r.GetContainer()), Warnings: nonNil(r.GetWarnings())}
	if r.GetCheckpoint() != nil {
		cp := newCheckpointView(r.GetCheckpoint())
		v.Checkpoint = &cp
	}
	return v
}

// writeRestore prints what was restored on stdout and the warnings on
// stderr.
func writeRestore(stdout, stderr io.Writer, v restoreView) error {
	line := fmt.Sprintf("restored %s on %s with IP %s", v.Container.Name, v.Container.Node, v.Container.IP)
	if cp := v.Checkpoint; cp != nil {
		line += " from checkpoint " + cp.ID
		if cp.Stats.RestoreTimeUs > 0 {
			line += " in " + usDuration(cp.Stats.RestoreTimeUs)
		}
	}
	if _, err := fmt.Fprintln(stdout, line); err != nil {
		return err
	}
	for _, w := range v.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	return nil
}

// progressRedraw spaces a bar's redraws: export chunks arrive far more
// often than a person reads.
const progressRedraw = 100 * time.Millisecond
