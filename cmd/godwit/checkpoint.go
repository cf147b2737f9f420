package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() {
	register(newCheckpointCommand)
}

// parseCompression checks --compress.
func parseCompression(v string) (string, error) {
	switch bundle.Compression(v) {
	case bundle.Zstd, bundle.NoCompression:
		return v, nil
	}
	return "", fmt.Errorf("--compress %q: use %s or %s", v, bundle.Zstd, bundle.NoCompression)
}

// exportOptions are the flags of a command that writes an archive.
type exportOptions struct {
	compress   string
	encryptKey string
}

func (o *exportOptions) addFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.compress, "compress", string(bundle.Zstd), "compression of the archive: zstd or none")
	cmd.Flags().StringVar(&o.encryptKey, "encrypt-key", "",
		"encrypt the archive here, with the age key in FILE (see `godwit checkpoint keygen`); the key never goes to the agent")
}

// check refuses bad flags and an unusable destination or key before
// anything is checkpointed or exported.
func (o *exportOptions) check(path string) error {
	if _, err := parseCompression(o.compress); err != nil {
		return err
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("export to %s: it is a directory; give the archive's file name", path)
	}
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("export to %s: %w", path, err)
	} else if !st.IsDir() {
		return fmt.Errorf("export to %s: %s is not a directory", path, dir)
	}
	if o.encryptKey != "" {
		if err := agentclient.CheckEncryptKey(o.encryptKey); err != nil {
			return fmt.Errorf("--encrypt-key: %w", err)
		}
	}
	return nil
}

// export writes checkpoint ref to path with a progress display.
func (o *exportOptions) export(ctx context.Context, g *globalOptions, stderr io.Writer, ref, path string) (*archiveView, error) {
	ui := newProgressUI(stderr, "export "+ref)
	var size int64
	err := g.call(func(c pb.AgentServiceClient) (err error) {
		size, err = agentclient.ExportCheckpointFile(ctx, c, g.dataDialer(), ref, path, agentclient.ExportOptions{
			Compression:    o.compress,
			EncryptKeyFile: o.encryptKey,
			Progress:       func(done, total int64) { ui.update("exporting", done, total) },
		})
		return err
	})
	ui.finish()
	if err != nil {
		return nil, err
	}
	return &archiveView{Path: path, SizeBytes: size, Encrypted: o.encryptKey != ""}, nil
}

func newCheckpointCommand(g *globalOptions) *cobra.Command {
	var (
		leaveRunning bool
		exportPath   string
		exp          exportOptions
		out          *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "checkpoint NAME [--leave-running] [--export FILE [--compress zstd|none] [--encrypt-key FILE]]",
		Short: "Checkpoint a running container with CRIU; list, inspect, export and remove checkpoints",
		Long: `Checkpoint a running container: CRIU freezes it and writes its memory, open
files and TCP connections to a checkpoint kept on its node. The container
then stops, keeping its IP for the restore, unless --leave-running is given.

Standard output gets the checkpoint's ID on its first line, then a summary
(frozen time, size) and, with --export, the archive written; with -o json,
one JSON object (the keys of checkpoint ls -o json, plus archive: path,
size_bytes, encrypted). Progress goes to standard error.

With --export FILE the checkpoint is then also written to FILE as one
archive (see docs/checkpoint-format.md), which ` + "`godwit restore --from FILE`" + `
restores on any node of the same kind. FILE appears complete or not at all.
With --encrypt-key KEYFILE the archive is encrypted here, before it touches
the disk, and the key never goes to the agent.`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return errors.New("name one container to checkpoint: godwit checkpoint NAME (see godwit checkpoint --help for ls, inspect, export, import, push, rm and keygen)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if exportPath == "" {
				for _, name := range []string{"compress", "encrypt-key"} {
					if cmd.Flags().Changed(name) {
						return fmt.Errorf("--%s applies to the exported archive: add --export FILE", name)
					}
				}
			} else if err := exp.check(exportPath); err != nil {
				return err
			}
			ctx, stop := interruptible(cmd)
			defer stop()

			ui := newProgressUI(cmd.ErrOrStderr(), "checkpoint "+args[0])
			var cp *pb.Checkpoint
			err := g.call(func(c pb.AgentServiceClient) (err error) {
				cp, err = agentclient.Checkpoint(ctx, c, &pb.CheckpointRequest{Container: args[0], LeaveRunning: leaveRunning},
					func(p *pb.CheckpointProgress) { ui.update(p.GetPhase(), p.GetDoneBytes(), p.GetTotalBytes()) })
				return err
			})
			ui.finish()
			if err != nil {
				return err
			}
			v := checkpointResultView{checkpointView: newCheckpointView(cp)}
			text := *out != outputJSON
			if text {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\n%s\n", v.ID, checkpointSummary(v.checkpointView))
			}
			if exportPath != "" {
				if v.Archive, err = exp.export(ctx, g, cmd.ErrOrStderr(), v.ID, exportPath); err != nil {
					return fmt.Errorf("checkpoint %s is kept on node %s, but exporting it failed: %w; retry with `godwit checkpoint export %s %s`",
						v.ID, v.Node, err, v.ID, exportPath)
				}
				if text {
					fmt.Fprintln(cmd.OutOrStdout(), archiveSummary(*v.Archive))
				}
			}
			if !text {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&leaveRunning, "leave-running", false, "keep the container running after the checkpoint")
	f.StringVar(&exportPath, "export", "", "also write the checkpoint to FILE as an archive")
	exp.addFlags(cmd)
	out = addOutputFlag(cmd)
	cmd.AddCommand(newCheckpointListCommand(g), newCheckpointInspectCommand(g), newCheckpointExportCommand(g),
		newCheckpointRemoveCommand(g), newCheckpointKeygenCommand(),
		newCheckpointImportCommand(g), newCheckpointPushCommand(g)) // checkpoint_import.go
	return cmd
}

// checkpointSummary is the line printed after a checkpoint.
func checkpointSummary(v checkpointView) string {
	return fmt.Sprintf("checkpointed %s on %s: frozen %s, %s (CRIU images %s)", v.Container, v.Node,
		usDuration(v.Stats.FrozenTimeUs), units.FormatBytes(v.SizeBytes), units.FormatBytes(v.Stats.ImageBytes))
}

func archiveSummary(a archiveView) string {
	what := "archive"
	if a.Encrypted {
		what = "encrypted archive"
	}
	return fmt.Sprintf("exported to %s (%s, %s)", a.Path, what, units.FormatBytes(a.SizeBytes))
}

func newCheckpointExportCommand(g *globalOptions) *cobra.Command {
	var exp exportOptions
	cmd := &cobra.Command{
		Use:   "export ID FILE [--compress zstd|none] [--encrypt-key FILE]",
		Short: "Write a stored checkpoint to FILE as an archive that any node can restore",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := exp.check(args[1]); err != nil {
				return err
			}
			ctx, stop := interruptible(cmd)
			defer stop()
			a, err := exp.export(ctx, g, cmd.ErrOrStderr(), args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), archiveSummary(*a))
			return nil
		},
	}
	exp.addFlags(cmd)
	return cmd
}

func newCheckpointListCommand(g *globalOptions) *cobra.Command {
	var (
		container string
		out       *outputFormat
	)
	cmd := &cobra.Command{
		Use:     "ls [--container NAME]",
		Aliases: []string{"list"},
		Short:   "List the checkpoints stored on the node, oldest first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *pb.ListCheckpointsResponse
			if err := g.call(func(c pb.AgentServiceClient) (err error) {
				resp, err = c.ListCheckpoints(cmd.Context(), &pb.ListCheckpointsRequest{Container: container})
				return err
			}); err != nil {
				return err
			}
			views := make([]checkpointView, 0, len(resp.GetCheckpoints()))
			for _, cp := range resp.GetCheckpoints() {
				views = append(views, newCheckpointView(cp))
			}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), views)
			}
			return writeCheckpointTable(cmd.OutOrStdout(), views)
		},
	}
	cmd.Flags().StringVar(&container, "container", "", "only the checkpoints of this container (name or ID)")
	out = addOutputFlag(cmd)
	return cmd
}

func writeCheckpointTable(w io.Writer, views []checkpointView) error {
	tw := table(w, "ID", "CONTAINER", "CREATED", "SIZE", "FROZEN", "NODE")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Container, v.Created.Local().Format(time.DateTime),
			units.FormatBytes(v.SizeBytes), usDuration(v.Stats.FrozenTimeUs), v.Node)
	}
	return tw.Flush()
}

func newCheckpointInspectCommand(g *globalOptions) *cobra.Command {
	var (
		decryptKey string
		out        *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "inspect ID|FILE [-o json] [--decrypt-key FILE]",
		Short: "Show what a checkpoint holds: processes, files, sockets, mounts, memory, statistics",
		Long: `Show what a checkpoint holds: its container, image, IP, node and versions,
the process tree with command lines, each process's open files and sockets
(with TCP state), the mounts, the memory dumped and CRIU's statistics.

ID names a checkpoint stored on the agent's node. An existing FILE (or any
argument with a '/') is an exported archive, read here without an agent: it
is extracted into a private temporary directory ($TMPDIR), every digest is
checked, and the directory is removed afterwards. An encrypted archive needs
--decrypt-key.

-o json prints one object: id, container, container_id, image, image_layers,
ip, created, size_bytes, leave_running, tcp_established, node, criu_version,
runc_version, kernel_version, stats (freezing_time_us, frozen_time_us,
memdump_time_us, memwrite_time_us, pages_scanned, pages_skipped_parent,
pages_written, restore_time_us, pages_restored, image_bytes), processes
(pid, ppid, pgid, sid, state, comm, cmdline, exe, cwd, root, threads,
memory_bytes, files [fd, type, path], sockets [fd, family, type, protocol,
state, local_addr, local_port, remote_addr, remote_port, path, inode,
peer_inode]), mounts (id, parent_id, mountpoint, fstype, source, root,
options, external), memory_bytes and warnings.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := interruptible(cmd)
			defer stop()
			var v checkpointDetailView
			if isArchivePath(args[0]) {
				var err error
				if v, err = inspectArchive(ctx, args[0], decryptKey); err != nil {
					return err
				}
			} else {
				if decryptKey != "" {
					return fmt.Errorf("--decrypt-key applies to an archive FILE; no file %s exists, and checkpoints stored on a node are not encrypted", args[0])
				}
				var d *pb.CheckpointDetail
				if err := g.call(func(c pb.AgentServiceClient) (err error) {
					d, err = c.InspectCheckpoint(ctx, &pb.CheckpointRef{Ref: args[0]})
					return err
				}); err != nil {
					return err
				}
				v = newCheckpointDetailView(d)
			}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeCheckpointDetail(cmd.OutOrStdout(), v)
		},
	}
	cmd.Flags().StringVar(&decryptKey, "decrypt-key", "", "age key FILE that an encrypted archive was exported with")
	out = addOutputFlag(cmd)
	return cmd
}

// isArchivePath tells an archive file from a checkpoint ID: IDs never hold
// a '/', and a file that exists is taken for what it is.
func isArchivePath(arg string) bool {
	if strings.ContainsRune(arg, '/') {
		return true
	}
	st, err := os.Stat(arg)
	return err == nil && !st.IsDir()
}

// inspectArchive reads an archive file here: Import checks every digest
// (and decrypts, with a key) into a private temporary directory, which is
// removed afterwards.
func inspectArchive(ctx context.Context, path, keyFile string) (_ checkpointDetailView, err error) {
	f, err := os.Open(path)
	if err != nil {
		return checkpointDetailView{}, fmt.Errorf("inspect archive: %w", err)
	}
	defer f.Close()
	tmp, err := os.MkdirTemp("", "godwit-inspect-")
	if err != nil {
		return checkpointDetailView{}, fmt.Errorf("inspect %s: %w", path, err)
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s: %w", tmp, rerr))
		}
	}()
	dir := filepath.Join(tmp, "checkpoint")
	m, err := bundle.Import(ctx, f, dir, bundle.ImportOptions{DecryptKeyFile: keyFile})
	if err != nil {
		return checkpointDetailView{}, fmt.Errorf("inspect %s: %w", path, err)
	}
	r, err := criuimg.Inspect(filepath.Join(dir, bundle.CRIUDir))
	if err != nil {
		return checkpointDetailView{}, fmt.Errorf("inspect %s: %w", path, err)
	}
	return archiveDetailView(m, r), nil
}

func newCheckpointRemoveCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "rm ID...",
		Aliases: []string{"remove"},
		Short:   "Remove stored checkpoints",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.call(func(c pb.AgentServiceClient) error {
				for _, ref := range args {
					if _, err := c.RemoveCheckpoint(cmd.Context(), &pb.CheckpointRef{Ref: ref}); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
				}
				return nil
			})
		},
	}
}

func newCheckpointKeygenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "keygen FILE",
		Short: "Create a key file for encrypting exported checkpoints (no agent needed)",
		Long: `Create an age key file (mode 0600) for --encrypt-key and --decrypt-key.
An existing file is never overwritten: it may be the only key to existing
archives. Keep the file secret and copy it to the machines that restore.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := bundle.GenerateKey(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote key %s: keep it secret; whoever holds it can read and forge archives encrypted with it\n", args[0])
			return nil
		},
	}
}
