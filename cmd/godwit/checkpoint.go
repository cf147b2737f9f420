package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() {
	register(newCheckpointCommand)
	register(newRestoreCommand)
}

// checkpointView is a checkpoint as `checkpoint ls -o json` prints it, and
// the top level of `checkpoint inspect -o json`. Its keys are part of the
// CLI's contract.
type checkpointView struct {
	ID             string              `json:"id"`
	Container      string              `json:"container"`
	ContainerID    string              `json:"container_id,omitempty"`
	Image          string              `json:"image"`
	ImageLayers    []string            `json:"image_layers"`
	IP             string              `json:"ip,omitempty"`
	Created        time.Time           `json:"created"`
	SizeBytes      int64               `json:"size_bytes"`
	LeaveRunning   bool                `json:"leave_running"`
	TCPEstablished bool                `json:"tcp_established"`
	Node           string              `json:"node"`
	CRIUVersion    string              `json:"criu_version"`
	RuncVersion    string              `json:"runc_version"`
	KernelVersion  string              `json:"kernel_version"`
	Stats          checkpointStatsView `json:"stats"`
}

// checkpointStatsView is CRIU's statistics, in CRIU's microseconds.
type checkpointStatsView struct {
	FreezingTimeUs     int64 `json:"freezing_time_us"`
	FrozenTimeUs       int64 `json:"frozen_time_us"`
	MemdumpTimeUs      int64 `json:"memdump_time_us"`
	MemwriteTimeUs     int64 `json:"memwrite_time_us"`
	PagesScanned       int64 `json:"pages_scanned"`
	PagesSkippedParent int64 `json:"pages_skipped_parent"`
	PagesWritten       int64 `json:"pages_written"`
	RestoreTimeUs      int64 `json:"restore_time_us"`
	PagesRestored      int64 `json:"pages_restored"`
	ImageBytes         int64 `json:"image_bytes"`
}

// checkpointDetailView is `checkpoint inspect -o json`: the checkpoint's
// summary and what its CRIU images hold. A stored checkpoint (through the
// agent) and an archive file (read here) give the same shape.
type checkpointDetailView struct {
	checkpointView
	Processes   []criuimg.Process `json:"processes"`
	Mounts      []criuimg.Mount   `json:"mounts"`
	MemoryBytes int64             `json:"memory_bytes"`
	Warnings    []string          `json:"warnings"`
}

// checkpointResultView is `checkpoint NAME -o json`.
type checkpointResultView struct {
	checkpointView
	Archive *archiveView `json:"archive,omitempty"`
}

type archiveView struct {
	Path      string `json:"path"`
	SizeBytes int64  `json:"size_bytes"`
	Encrypted bool   `json:"encrypted"`
}

// restoreView is `restore -o json`.
type restoreView struct {
	Container  containerView   `json:"container"`
	Checkpoint *checkpointView `json:"checkpoint,omitempty"`
	Warnings   []string        `json:"warnings"`
}

func newCheckpointView(c *pb.Checkpoint) checkpointView {
	s := c.GetStats()
	return checkpointView{
		ID: c.GetId(), Container: c.GetContainerName(), ContainerID: c.GetContainerId(),
		Image: c.GetImage(), ImageLayers: nonNil(c.GetImageLayers()), IP: c.GetIp(),
		Created: c.GetCreated().AsTime(), SizeBytes: c.GetSizeBytes(),
		LeaveRunning: c.GetLeaveRunning(), TCPEstablished: c.GetTcpEstablished(),
		Node: c.GetNode(), CRIUVersion: c.GetCriuVersion(), RuncVersion: c.GetRuncVersion(),
		KernelVersion: c.GetKernelVersion(),
		Stats: checkpointStatsView{
			FreezingTimeUs: s.GetFreezingTimeUs(), FrozenTimeUs: s.GetFrozenTimeUs(),
			MemdumpTimeUs: s.GetMemdumpTimeUs(), MemwriteTimeUs: s.GetMemwriteTimeUs(),
			PagesScanned: s.GetPagesScanned(), PagesSkippedParent: s.GetPagesSkippedParent(),
			PagesWritten: s.GetPagesWritten(), RestoreTimeUs: s.GetRestoreTimeUs(),
			PagesRestored: s.GetPagesRestored(), ImageBytes: s.GetImageBytes(),
		},
	}
}

// manifestView summarises a manifest read here from an archive, as the
// agent summarises the ones it stores.
func manifestView(m *bundle.Manifest) checkpointView {
	v := checkpointView{
		ID: m.ID, Container: m.Container.Name, ContainerID: m.Container.ID,
		Image: m.Image.Name, ImageLayers: []string{}, IP: m.Container.IP,
		Created: m.Created.UTC(), SizeBytes: m.Size(),
		LeaveRunning: m.Options.LeaveRunning, TCPEstablished: m.Options.TCPEstablished,
		Node: m.Host.Node, CRIUVersion: m.Host.CRIUVersion, RuncVersion: m.Host.RuncVersion,
		KernelVersion: m.Host.Kernel,
		Stats: checkpointStatsView{
			FreezingTimeUs: m.Stats.FreezingTimeUs, FrozenTimeUs: m.Stats.FrozenTimeUs,
			MemdumpTimeUs: m.Stats.MemdumpTimeUs, MemwriteTimeUs: m.Stats.MemwriteTimeUs,
			PagesScanned: m.Stats.PagesScanned, PagesSkippedParent: m.Stats.PagesSkippedParent,
			PagesWritten: m.Stats.PagesWritten, RestoreTimeUs: m.Stats.RestoreTimeUs,
			PagesRestored: m.Stats.PagesRestored,
		},
	}
	for _, d := range m.Image.Layers {
		v.ImageLayers = append(v.ImageLayers, d.String())
	}
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, bundle.CRIUDir+"/") {
			v.Stats.ImageBytes += f.Size
		}
	}
	return v
}

func newCheckpointDetailView(d *pb.CheckpointDetail) checkpointDetailView {
	v := checkpointDetailView{
		checkpointView: newCheckpointView(d.GetCheckpoint()),
		Processes:      []criuimg.Process{},
		Mounts:         []criuimg.Mount{},
		MemoryBytes:    d.GetMemoryBytes(),
		Warnings:       nonNil(d.GetWarnings()),
	}
	for _, p := range d.GetProcesses() {
		cp := criuimg.Process{
			PID: int(p.GetPid()), PPID: int(p.GetPpid()), PGID: int(p.GetPgid()), SID: int(p.GetSid()),
			State: p.GetState(), Comm: p.GetComm(), Cmdline: p.GetCmdline(), Exe: p.GetExe(),
			Cwd: p.GetCwd(), Root: p.GetRoot(), Threads: int(p.GetThreads()), MemoryBytes: p.GetMemoryBytes(),
		}
		for _, f := range p.GetFiles() {
			cp.Files = append(cp.Files, criuimg.File{FD: int(f.GetFd()), Type: f.GetType(), Path: f.GetPath()})
		}
		for _, s := range p.GetSockets() {
			cp.Sockets = append(cp.Sockets, criuimg.Socket{
				FD: int(s.GetFd()), Family: s.GetFamily(), Type: s.GetType(), Protocol: s.GetProtocol(),
				State: s.GetState(), LocalAddr: s.GetLocalAddr(), LocalPort: int(s.GetLocalPort()),
				RemoteAddr: s.GetRemoteAddr(), RemotePort: int(s.GetRemotePort()), Path: s.GetPath(),
				Inode: s.GetInode(), PeerInode: s.GetPeerInode(),
			})
		}
		v.Processes = append(v.Processes, cp)
	}
	for _, m := range d.GetMounts() {
		v.Mounts = append(v.Mounts, criuimg.Mount{
			ID: int(m.GetId()), ParentID: int(m.GetParentId()), Mountpoint: m.GetMountpoint(),
			FSType: m.GetFstype(), Source: m.GetSource(), Root: m.GetRoot(), Options: m.GetOptions(),
			External: m.GetExternal(),
		})
	}
	return v
}

// archiveDetailView is what inspecting an archive file shows: the same as
// for a stored checkpoint, statistics from the manifest included, so that
// both print alike.
func archiveDetailView(m *bundle.Manifest, r *criuimg.Report) checkpointDetailView {
	return checkpointDetailView{
		checkpointView: manifestView(m),
		Processes:      nonNil(r.Processes),
		Mounts:         nonNil(r.Mounts),
		MemoryBytes:    r.MemoryBytes,
		Warnings:       nonNil(r.Warnings),
	}
}

// nonNil makes JSON print an empty list as [], not null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// criuStats turns the statistics back into criuimg's form for its text.
func (s checkpointStatsView) criuStats() *criuimg.Stats {
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	out := &criuimg.Stats{
		ImageBytes: s.ImageBytes,
		Dump: &criuimg.DumpStats{
			FreezingTime: us(s.FreezingTimeUs), FrozenTime: us(s.FrozenTimeUs),
			MemdumpTime: us(s.MemdumpTimeUs), MemwriteTime: us(s.MemwriteTimeUs),
			PagesScanned: s.PagesScanned, PagesSkippedParent: s.PagesSkippedParent,
			PagesWritten: s.PagesWritten,
		},
	}
	if s.RestoreTimeUs != 0 || s.PagesRestored != 0 {
		out.Restore = &criuimg.RestoreStats{RestoreTime: us(s.RestoreTimeUs), PagesRestored: s.PagesRestored}
	}
	return out
}

// shortDuration rounds a duration to what a person compares: 1.23s,
// 126.6ms, 450µs.
func shortDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func usDuration(us int64) string { return shortDuration(time.Duration(us) * time.Microsecond) }

// writeCheckpointDetail prints inspect's text: the summary, then the
// process tree, files, sockets, mounts and statistics.
func writeCheckpointDetail(w io.Writer, v checkpointDetailView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, val string) { fmt.Fprintf(tw, "%s\t%s\n", k, val) }
	row("Checkpoint", v.ID)
	container := v.Container
	if v.ContainerID != "" {
		container += " (" + shortDigest(v.ContainerID) + ")"
	}
	row("Container", container)
	layers := "layers"
	if len(v.ImageLayers) == 1 {
		layers = "layer"
	}
	row("Image", fmt.Sprintf("%s (%d %s)", v.Image, len(v.ImageLayers), layers))
	if v.IP != "" {
		row("IP", v.IP)
	}
	row("Created", v.Created.Local().Format(time.DateTime))
	row("Node", v.Node)
	row("Versions", fmt.Sprintf("CRIU %s, runc %s, kernel %s", v.CRIUVersion, v.RuncVersion, v.KernelVersion))
	row("Size", fmt.Sprintf("%s (CRIU images %s)", units.FormatBytes(v.SizeBytes), units.FormatBytes(v.Stats.ImageBytes)))
	var opts []string
	if v.TCPEstablished {
		opts = append(opts, "tcp-established")
	}
	if v.LeaveRunning {
		opts = append(opts, "leave-running")
	}
	if len(opts) > 0 {
		row("Options", strings.Join(opts, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	report := &criuimg.Report{
		Processes:   v.Processes,
		Mounts:      v.Mounts,
		MemoryBytes: v.MemoryBytes,
		Stats:       v.Stats.criuStats(),
		Warnings:    v.Warnings,
	}
	return report.WriteText(w)
}

// interruptible ends the command's context on Ctrl-C or SIGTERM, so that
// a long call is cancelled on the agent and partial files are removed.
func interruptible(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
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
				return errors.New("name one container to checkpoint: godwit checkpoint NAME (see godwit checkpoint --help for ls, inspect, export, rm and keygen)")
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
		newCheckpointRemoveCommand(g), newCheckpointKeygenCommand())
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

// progressUI shows a long call's progress on stderr: a bar per phase
// (bytes, rate and time left) when stderr is a terminal, otherwise one
// plain line per phase, so that logs stay readable.
type progressUI struct {
	w     io.Writer
	tty   bool
	label string
	phase string
	bar   *progressbar.ProgressBar
	max   int64 // the bar's total; -1 while unknown
}

func newProgressUI(w io.Writer, label string) *progressUI {
	f, ok := w.(*os.File)
	return &progressUI{w: w, tty: ok && term.IsTerminal(int(f.Fd())), label: label}
}

// update shows that phase has done of total bytes (total 0: unknown).
// The agent's closing "done" phase is not shown.
func (p *progressUI) update(phase string, done, total int64) {
	if phase == "done" {
		return
	}
	if phase != p.phase {
		p.finish()
		p.phase = phase
		if !p.tty {
			fmt.Fprintf(p.w, "%s: %s\n", p.label, phase)
			return
		}
		p.max = -1
		p.bar = progressbar.NewOptions64(p.max,
			progressbar.OptionSetDescription(p.label+": "+phase),
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true), // as units.FormatBytes prints sizes
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(progressRedraw),
			progressbar.OptionClearOnFinish(),
		)
	}
	if p.bar == nil {
		return
	}
	max := total
	if max <= 0 {
		max = -1 // a spinner
	}
	if max != p.max {
		p.max = max
		p.bar.ChangeMax64(max)
	}
	_ = p.bar.Set64(done)
}

// finish clears the current phase's bar.
func (p *progressUI) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}
