package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() { register(newNodeCommand) }

// nodeView is a node as `node info -o json` prints it.
type nodeView struct {
	Name          string            `json:"name"`
	Address       string            `json:"address"`
	Snapshotter   string            `json:"snapshotter"`
	ContainerCIDR string            `json:"container_cidr"`
	Labels        map[string]string `json:"labels,omitempty"`
	CPUs          int32             `json:"cpus"`
	MemoryBytes   int64             `json:"memory_bytes"`
	Kernel        string            `json:"kernel"`
	Runc          string            `json:"runc"`
	CRIU          string            `json:"criu"`
	Godwit        string            `json:"godwit"`
	// Strategies are the migration strategies the agent supports on its
	// host, and why not where not.
	Strategies []strategyView `json:"strategies"`
}

// strategyView is one migration strategy as `node info -o json` prints it.
type strategyView struct {
	Name      string `json:"name"`
	Supported bool   `json:"supported"`
	Reason    string `json:"reason,omitempty"`
}

func newStrategyViews(in []*pb.StrategySupport) []strategyView {
	out := make([]strategyView, 0, len(in))
	for _, s := range in {
		out = append(out, strategyView{Name: s.GetName(), Supported: s.GetSupported(), Reason: s.GetReason()})
	}
	return out
}

func newNodeCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "List, inspect and cordon the cluster's nodes (info: one agent's node)"}
	var out *outputFormat
	info := &cobra.Command{
		Use:   "info",
		Short: "Show the agent's node: name, address, snapshotter, capacity, versions and migration strategies",
		Long: `Show the agent's node: its name, address, snapshotter, capacity, the
versions of the kernel, runc, CRIU and godwit, and the migration strategies
(stop-copy, stream, pre-copy, post-copy) the agent can carry out on its host,
with the reason and the fix for each it cannot. The agent probes its host
for them once, as ` + "`godwit doctor`" + ` does there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r *pb.NodeInfoResponse
			if err := g.call(func(c pb.AgentServiceClient) (err error) {
				r, err = c.NodeInfo(cmd.Context(), &pb.NodeInfoRequest{Strategies: true})
				return err
			}); err != nil {
				return err
			}
			v := nodeView{Name: r.GetName(), Address: r.GetAddress(), Snapshotter: r.GetSnapshotter(),
				ContainerCIDR: r.GetContainerCidr(), Labels: r.GetLabels(), CPUs: r.GetCpus(),
				MemoryBytes: r.GetMemoryBytes(), Kernel: r.GetKernelVersion(), Runc: r.GetRuncVersion(),
				CRIU: r.GetCriuVersion(), Godwit: r.GetGodwitVersion(), Strategies: newStrategyViews(r.GetStrategies())}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeNodeInfo(cmd.OutOrStdout(), v)
		},
	}
	out = addOutputFlag(info)
	cmd.AddCommand(info)
	cmd.AddCommand(newNodeClusterCommands(g)...)
	return cmd
}

// writeNodeInfo prints v as a table of fields, then one row per migration
// strategy:
//
//	strategy        stop-copy: yes
//	strategy        pre-copy: no: needs soft-dirty: ...
func writeNodeInfo(w io.Writer, v nodeView) error {
	tw := table(w, "FIELD", "VALUE")
	for _, row := range [][2]string{
		{"name", v.Name}, {"address", v.Address}, {"snapshotter", v.Snapshotter},
		{"container cidr", v.ContainerCIDR}, {"cpus", fmt.Sprint(v.CPUs)},
		{"memory", units.FormatBytes(v.MemoryBytes)}, {"kernel", v.Kernel}, {"runc", v.Runc},
		{"criu", v.CRIU}, {"godwit", v.Godwit},
	} {
		fmt.Fprintf(tw, "%s\t%s\n", row[0], row[1])
	}
	for _, k := range sortedKeys(v.Labels) {
		fmt.Fprintf(tw, "label\t%s=%s\n", k, v.Labels[k])
	}
	for _, s := range v.Strategies {
		if s.Supported {
			fmt.Fprintf(tw, "strategy\t%s: yes\n", s.Name)
			continue
		}
		fmt.Fprintf(tw, "strategy\t%s: no: %s\n", s.Name, s.Reason)
	}
	return tw.Flush()
}
