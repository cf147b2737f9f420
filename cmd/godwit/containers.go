package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() {
	register(newRunCommand)
	register(newPsCommand)
	register(newInspectCommand)
	register(newLogsCommand)
	register(newStopCommand)
	register(newStartCommand)
	register(newRmCommand)
	register(newExecCommand)
}

// containerView is a container as `ps -o json` and `inspect -o json` print
// it. Its keys are part of the CLI's contract.
type containerView struct {
	Name        string            `json:"name"`
	ID          string            `json:"id"`
	State       string            `json:"state"`
	Image       string            `json:"image"`
	ImageID     string            `json:"image_id"`
	IP          string            `json:"ip"`
	Node        string            `json:"node"`
	Pid         int32             `json:"pid,omitempty"`
	Args        []string          `json:"args"`
	Env         []string          `json:"env,omitempty"`
	WorkingDir  string            `json:"working_dir,omitempty"`
	Hostname    string            `json:"hostname,omitempty"`
	User        string            `json:"user,omitempty"`
	CPUs        float64           `json:"cpus,omitempty"`
	MemoryBytes int64             `json:"memory_bytes,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Snapshotter string            `json:"snapshotter,omitempty"`
	Created     *time.Time        `json:"created,omitempty"`
	Started     *time.Time        `json:"started,omitempty"`
	Finished    *time.Time        `json:"finished,omitempty"`
	ExitCode    *int32            `json:"exit_code,omitempty"`
	ExitSignal  string            `json:"exit_signal,omitempty"`
	// LastCheckpoint is what `restore NAME` restores.
	LastCheckpoint string `json:"last_checkpoint,omitempty"`
}

func newContainerView(c *pb.Container) containerView {
	v := containerView{
		Name: c.GetName(), ID: c.GetId(), State: stateName(c.GetState()), Image: c.GetImage(),
		ImageID: c.GetImageId(), IP: c.GetIp(), Node: c.GetNode(), Pid: c.GetPid(), Args: c.GetArgs(),
		Env: c.GetEnv(), WorkingDir: c.GetWorkingDir(), Hostname: c.GetHostname(), User: c.GetUser(),
		CPUs: c.GetCpus(), MemoryBytes: c.GetMemoryBytes(), Labels: c.GetLabels(), Snapshotter: c.GetSnapshotter(),
		ExitSignal: c.GetExitSignal(), LastCheckpoint: c.GetLastCheckpoint(),
	}
	v.Created, v.Started, v.Finished = timeOrNil(c.GetCreated()), timeOrNil(c.GetStarted()), timeOrNil(c.GetFinished())
	if v.State == "exited" || v.State == "stopped" {
		code := c.GetExitCode()
		v.ExitCode = &code
	}
	return v
}

func timeOrNil(ts *timestamppb.Timestamp) *time.Time {
	if !ts.IsValid() {
		return nil
	}
	t := ts.AsTime()
	return &t
}

// stateName is the lowercase state the CLI prints: created, running,
// stopped, exited, checkpointed or migrating.
func stateName(s pb.ContainerState) string {
	if s == pb.ContainerState_CONTAINER_STATE_UNSPECIFIED {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(s.String(), "CONTAINER_STATE_"))
}

// status is ps's human summary: "Up 3 minutes", "Exited (3) 2 hours ago".
func (v containerView) status(now time.Time) string {
	switch {
	case v.State == "running" && v.Started != nil:
		return "Up " + humanDuration(now.Sub(*v.Started))
	case (v.State == "exited" || v.State == "stopped") && v.Finished != nil:
		code := "0"
		if v.ExitSignal != "" {
			code = v.ExitSignal
		} else if v.ExitCode != nil {
			code = fmt.Sprint(*v.ExitCode)
		}
		return fmt.Sprintf("%s (%s) %s ago", strings.ToUpper(v.State[:1])+v.State[1:], code, humanDuration(now.Sub(*v.Finished)))
	}
	return v.State
}

func humanDuration(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d seconds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

func newRunCommand(g *globalOptions) *cobra.Command {
	var (
		req    pb.RunContainerRequest
		memory string
		labels []string
		place  *placementFlags
		out    *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [-- CMD ARGS...]",
		Short: "Create and start a container from an image",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Image, req.Args = args[0], args[1:]
			if memory != "" {
				n, err := units.ParseSize(memory)
				if err != nil {
					return fmt.Errorf("--memory: %w", err)
				}
				req.MemoryBytes = n
			}
			var err error
			if req.Labels, err = parseKeyValues(labels, "--label"); err != nil {
				return err
			}
			for _, kv := range req.Env {
				if !strings.Contains(kv, "=") {
					return fmt.Errorf("--env %q: want KEY=VALUE", kv)
				}
			}
			if placed, err := runInCluster(cmd, g, &req, place, *out); placed {
				return err
			}
			var c *pb.Container
			if err := g.call(func(client pb.AgentServiceClient) (err error) {
				c, err = client.RunContainer(cmd.Context(), &req)
				return err
			}); err != nil {
				return err
			}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), newContainerView(c))
			}
			fmt.Fprintln(cmd.OutOrStdout(), c.GetId())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Name, "name", "", "container name (default: generated)")
	f.Float64Var(&req.Cpus, "cpus", 0, "CPU limit in cores, such as 0.5 (default: unlimited)")
	f.StringVar(&memory, "memory", "", "memory limit, such as 512m or 1g (default: unlimited)")
	f.StringArrayVarP(&req.Env, "env", "e", nil, "environment variable K=V (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "container label K=V (repeatable)")
	f.StringVarP(&req.WorkingDir, "workdir", "w", "", "working directory inside the container")
	f.StringVar(&req.Hostname, "hostname", "", "hostname (default: the container's name)")
	f.StringVarP(&req.User, "user", "u", "", "user as UID[:GID]")
	f.StringVar(&req.Ip, "ip", "", "container IP (default: allocated from the node's --container-cidr)")
	place = addPlacementFlags(cmd)
	out = addOutputFlag(cmd)
	return cmd
}

func newPsCommand(g *globalOptions) *cobra.Command {
	var (
		all bool
		out *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "ps [-a]",
		Short: "List running containers (-a: all)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *pb.ListContainersResponse
			if err := g.callContainers(func(c containerAPI) (err error) {
				resp, err = c.ListContainers(cmd.Context(), &pb.ListContainersRequest{All: all})
				return err
			}); err != nil {
				return err
			}
			views := make([]containerView, 0, len(resp.GetContainers()))
			for _, c := range resp.GetContainers() {
				views = append(views, newContainerView(c))
			}
			sort.SliceStable(views, func(i, j int) bool { return views[i].Name < views[j].Name })
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), views)
			}
			now := time.Now()
			tw := table(cmd.OutOrStdout(), "NAME", "ID", "IMAGE", "STATE", "STATUS", "IP", "NODE")
			for _, v := range views {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, shortDigest(v.ID), v.Image, v.State, v.status(now), v.IP, v.Node)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include containers that are not running")
	out = addOutputFlag(cmd)
	return cmd
}

func newInspectCommand(g *globalOptions) *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "inspect CONTAINER",
		Short: "Show everything the cluster (or the agent) knows about a container",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var c *pb.Container
			if err := g.callContainers(func(client containerAPI) (err error) {
				c, err = client.InspectContainer(cmd.Context(), &pb.ContainerRef{Ref: args[0]})
				return err
			}); err != nil {
				return err
			}
			v := newContainerView(c)
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return printInspect(cmd.OutOrStdout(), v)
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

func printInspect(w io.Writer, v containerView) error {
	tw := table(w, "FIELD", "VALUE")
	row := func(k string, val any) { fmt.Fprintf(tw, "%s\t%v\n", k, val) }
	row("name", v.Name)
	row("id", v.ID)
	row("state", v.status(time.Now()))
	row("image", v.Image+" ("+shortDigest(v.ImageID)+")")
	row("node", v.Node)
	row("ip", v.IP)
	if v.Pid != 0 {
		row("pid", v.Pid)
	}
	row("command", strings.Join(v.Args, " "))
	row("working dir", v.WorkingDir)
	row("hostname", v.Hostname)
	if v.CPUs > 0 {
		row("cpus", v.CPUs)
	}
	if v.MemoryBytes > 0 {
		row("memory", units.FormatBytes(v.MemoryBytes))
	}
	for _, k := range sortedKeys(v.Labels) {
		row("label", k+"="+v.Labels[k])
	}
	row("snapshotter", v.Snapshotter)
	if v.LastCheckpoint != "" {
		row("last checkpoint", v.LastCheckpoint)
	}
	if v.Created != nil {
		row("created", v.Created.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func newLogsCommand(g *globalOptions) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] CONTAINER",
		Short: "Print a container's output (-f: keep following it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.callContainers(func(c containerAPI) error {
				stream, err := c.Logs(cmd.Context(), &pb.LogsRequest{Ref: args[0], Follow: follow})
				if err != nil {
					return err
				}
				for {
					chunk, err := stream.Recv()
					if err == io.EOF {
						return nil
					}
					if err != nil {
						return err
					}
					if _, err := cmd.OutOrStdout().Write(chunk.GetData()); err != nil {
						return err
					}
				}
			})
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the container exits")
	return cmd
}

func newStopCommand(g *globalOptions) *cobra.Command {
	var timeout int32
	cmd := &cobra.Command{
		Use:   "stop [-t SECONDS] CONTAINER...",
		Short: "Stop containers: SIGTERM, then SIGKILL after the timeout",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.callContainers(func(c containerAPI) error {
				for _, ref := range args {
					if _, err := c.StopContainer(cmd.Context(), &pb.StopContainerRequest{Ref: ref, TimeoutSeconds: timeout}); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
				}
				return nil
			})
		},
	}
	cmd.Flags().Int32VarP(&timeout, "time", "t", 10, "seconds to wait after SIGTERM before SIGKILL")
	return cmd
}

func newStartCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "start CONTAINER...",
		Short: "Start stopped or exited containers again",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.callContainers(func(c containerAPI) error {
				for _, ref := range args {
					if _, err := c.StartContainer(cmd.Context(), &pb.ContainerRef{Ref: ref}); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
				}
				return nil
			})
		},
	}
}

func newRmCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] CONTAINER...",
		Short: "Remove containers and everything made for them (-f: kill running ones first)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.callContainers(func(c containerAPI) error {
				for _, ref := range args {
					if _, err := c.RemoveContainer(cmd.Context(), &pb.RemoveContainerRequest{Ref: ref, Force: force}); err != nil {
						return err
					}
					fmt.Fprintln(cmd.OutOrStdout(), ref)
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container before removing it")
	return cmd
}

func newExecCommand(g *globalOptions) *cobra.Command {
	var (
		env     []string
		workdir string
	)
	cmd := &cobra.Command{
		Use:   "exec CONTAINER -- CMD [ARGS...]",
		Short: "Run a command in a running container",
		Long: `Run a command in a running container and print its output; godwit exits
with the command's exit code.

Processes started with exec are not part of the container's process tree as
CRIU sees it: they are not checkpointed and do not survive a checkpoint or a
migration. Run long-lived processes as part of the container's command.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var code int32
			err := g.call(func(c pb.AgentServiceClient) error {
				stream, err := c.Exec(cmd.Context(), &pb.ExecRequest{Ref: args[0], Args: args[1:], Env: env, WorkingDir: workdir})
				if err != nil {
					return err
				}
				for {
					msg, err := stream.Recv()
					if err == io.EOF {
						return nil
					}
					if err != nil {
						return err
					}
					os.Stdout.Write(msg.GetStdout())
					os.Stderr.Write(msg.GetStderr())
					if msg.GetExited() {
						code = msg.GetExitCode()
					}
				}
			})
			if err != nil {
				return err
			}
			if code != 0 {
				return exitError{code: int(code)}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "environment variable K=V (repeatable)")
	cmd.Flags().StringVarP(&workdir, "workdir", "w", "", "working directory inside the container")
	return cmd
}
