package main

import (
	"fmt"

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
}

func newNodeCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Inspect nodes"}
	var out *outputFormat
	info := &cobra.Command{
		Use:   "info",
		Short: "Show the agent's node: name, address, snapshotter, capacity and versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var r *pb.NodeInfoResponse
			if err := g.call(func(c pb.AgentServiceClient) (err error) {
				r, err = c.NodeInfo(cmd.Context(), &pb.NodeInfoRequest{})
				return err
			}); err != nil {
				return err
			}
			v := nodeView{Name: r.GetName(), Address: r.GetAddress(), Snapshotter: r.GetSnapshotter(),
				ContainerCIDR: r.GetContainerCidr(), Labels: r.GetLabels(), CPUs: r.GetCpus(),
				MemoryBytes: r.GetMemoryBytes(), Kernel: r.GetKernelVersion(), Runc: r.GetRuncVersion(),
				CRIU: r.GetCriuVersion(), Godwit: r.GetGodwitVersion()}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			tw := table(cmd.OutOrStdout(), "FIELD", "VALUE")
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
			return tw.Flush()
		},
	}
	out = addOutputFlag(info)
	cmd.AddCommand(info)
	return cmd
}
