package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// clusterNodeView is a node of the cluster as `node ls -o json` and
// `node inspect -o json` print it. Its keys are part of the CLI's
// contract: name, address, status, labels and containers at least.
type clusterNodeView struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	// Status is ready, cordoned, draining, suspect or down.
	Status string `json:"status"`
	// Labels is an object, empty when the node has none.
	Labels map[string]string `json:"labels"`
	// Containers counts the containers placed on the node.
	Containers     int32         `json:"containers"`
	Capacity       resourcesView `json:"capacity"`
	Allocated      resourcesView `json:"allocated"`
	Versions       versionsView  `json:"versions"`
	Health         string        `json:"health"`
	Schedulability string        `json:"schedulability"`
	Epoch          uint64        `json:"epoch"`
	Registered     *time.Time    `json:"registered,omitempty"`
	HealthChanged  *time.Time    `json:"health_changed,omitempty"`
	CPU            cpuView       `json:"cpu"`
	Snapshotter    string        `json:"snapshotter,omitempty"`
	// Strategies are the migration strategies the node's agent supports.
	Strategies []string `json:"strategies"`
	// Load is the agent's latest sample, when the leader has one.
	Load *loadView `json:"load,omitempty"`
}

type resourcesView struct {
	MilliCPU    int64 `json:"milli_cpu"`
	MemoryBytes int64 `json:"memory_bytes"`
}

type versionsView struct {
	Godwit string `json:"godwit"`
	Runc   string `json:"runc"`
	CRIU   string `json:"criu"`
	Kernel string `json:"kernel"`
}

type cpuView struct {
	Vendor string   `json:"vendor,omitempty"`
	Model  string   `json:"model,omitempty"`
	Flags  []string `json:"flags,omitempty"`
}

type loadView struct {
	Sampled     *time.Time `json:"sampled,omitempty"`
	CPUMillis   int64      `json:"cpu_millis"`
	MemoryBytes int64      `json:"memory_bytes"`
}

func newResourcesView(r *pb.Resources) resourcesView {
	return resourcesView{MilliCPU: r.GetMilliCpu(), MemoryBytes: r.GetMemoryBytes()}
}

func newClusterNodeView(n *pb.Node) clusterNodeView {
	v := clusterNodeView{
		Name: n.GetName(), Address: n.GetAddress(), Status: n.GetStatus(), Labels: n.GetLabels(),
		Containers: n.GetContainers(), Capacity: newResourcesView(n.GetCapacity()), Allocated: newResourcesView(n.GetAllocated()),
		Versions: versionsView{Godwit: n.GetGodwitVersion(), Runc: n.GetRuncVersion(), CRIU: n.GetCriuVersion(), Kernel: n.GetKernelVersion()},
		Health:   n.GetHealth(), Schedulability: n.GetSchedulability(), Epoch: n.GetEpoch(),
		Registered: timeOrNil(n.GetRegistered()), HealthChanged: timeOrNil(n.GetHealthChanged()),
		CPU:         cpuView{Vendor: n.GetCpuVendor(), Model: n.GetCpuModel(), Flags: n.GetCpuFlags()},
		Snapshotter: n.GetSnapshotter(), Strategies: n.GetStrategies(),
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if v.Strategies == nil {
		v.Strategies = []string{}
	}
	if l := n.GetLoad(); l != nil {
		v.Load = &loadView{Sampled: timeOrNil(l.GetSampled()), CPUMillis: l.GetCpuMillis(), MemoryBytes: l.GetMemoryBytes()}
	}
	return v
}

// newNodeClusterCommands are node's subcommands that talk to the cluster.
func newNodeClusterCommands(g *globalOptions) []*cobra.Command {
	return []*cobra.Command{newNodeListCommand(g), newNodeInspectCommand(g),
		newNodeCordonCommand(g, "cordon", "Stop placing new containers on a node; what runs there stays",
			func(c pb.ClusterServiceClient) nodeCall { return c.CordonNode }),
		newNodeCordonCommand(g, "uncordon", "Place new containers on a node again",
			func(c pb.ClusterServiceClient) nodeCall { return c.UncordonNode }),
		newNodeDrainCommand(g),
	}
}

func newNodeListCommand(g *globalOptions) *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the cluster's nodes: status, containers, allocated and total CPU and memory, labels",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *pb.ListNodesResponse
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				resp, err = c.ListNodes(cmd.Context(), &pb.ListNodesRequest{})
				return err
			}); err != nil {
				return err
			}
			views := make([]clusterNodeView, 0, len(resp.GetNodes()))
			for _, n := range resp.GetNodes() {
				views = append(views, newClusterNodeView(n))
			}
			sort.SliceStable(views, func(i, j int) bool { return views[i].Name < views[j].Name })
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), views)
			}
			return writeNodeList(cmd.OutOrStdout(), views)
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

// writeNodeList prints one row per node; CPU and MEMORY are what placed
// containers reserve of the node's capacity.
func writeNodeList(w io.Writer, views []clusterNodeView) error {
	tw := table(w, "NAME", "ADDRESS", "STATUS", "CONTAINERS", "CPU", "MEMORY", "LABELS")
	for _, v := range views {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", v.Name, v.Address, v.Status, v.Containers,
			formatMilliCPU(v.Allocated.MilliCPU)+"/"+formatMilliCPU(v.Capacity.MilliCPU),
			units.FormatBytes(v.Allocated.MemoryBytes)+"/"+units.FormatBytes(v.Capacity.MemoryBytes),
			formatLabels(v.Labels))
	}
	return tw.Flush()
}

// formatMilliCPU writes thousandths of a CPU as CPUs: "0.5", "4".
func formatMilliCPU(milli int64) string {
	return strconv.FormatFloat(float64(milli)/1000, 'f', -1, 64)
}

// formatLabels writes labels as k=v pairs, sorted, comma-separated.
func formatLabels(labels map[string]string) string {
	pairs := make([]string, 0, len(labels))
	for _, k := range sortedKeys(labels) {
		pairs = append(pairs, k+"="+labels[k])
	}
	return strings.Join(pairs, ",")
}

func newNodeInspectCommand(g *globalOptions) *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "inspect NODE",
		Short: "Show what the cluster knows about a node",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var n *pb.Node
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				n, err = c.InspectNode(cmd.Context(), &pb.NodeRef{Name: args[0]})
				return err
			}); err != nil {
				return err
			}
			v := newClusterNodeView(n)
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeNodeInspect(cmd.OutOrStdout(), v)
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

func writeNodeInspect(w io.Writer, v clusterNodeView) error {
	tw := table(w, "FIELD", "VALUE")
	row := func(k, val string) { fmt.Fprintf(tw, "%s\t%s\n", k, val) }
	row("name", v.Name)
	row("address", v.Address)
	row("status", v.Status)
	row("health", v.Health)
	row("schedulability", v.Schedulability)
	row("containers", fmt.Sprint(v.Containers))
	row("cpu", formatMilliCPU(v.Allocated.MilliCPU)+" of "+formatMilliCPU(v.Capacity.MilliCPU)+" allocated")
	row("memory", units.FormatBytes(v.Allocated.MemoryBytes)+" of "+units.FormatBytes(v.Capacity.MemoryBytes)+" allocated")
	if v.Load != nil {
		row("load", formatMilliCPU(v.Load.CPUMillis)+" CPU, "+units.FormatBytes(v.Load.MemoryBytes))
	}
	for _, k := range sortedKeys(v.Labels) {
		row("label", k+"="+v.Labels[k])
	}
	row("epoch", fmt.Sprint(v.Epoch))
	if v.Registered != nil {
		row("registered", v.Registered.Local().Format(time.RFC3339))
	}
	if v.HealthChanged != nil {
		row("health changed", v.HealthChanged.Local().Format(time.RFC3339))
	}
	row("kernel", v.Versions.Kernel)
	row("runc", v.Versions.Runc)
	row("criu", v.Versions.CRIU)
	row("godwit", v.Versions.Godwit)
	row("snapshotter", v.Snapshotter)
	row("cpu model", strings.TrimSpace(v.CPU.Vendor+" "+v.CPU.Model))
	row("cpu flags", fmt.Sprint(len(v.CPU.Flags)))
	row("strategies", strings.Join(v.Strategies, ", "))
	return tw.Flush()
}

// nodeCall is a ClusterService method that acts on one node.
type nodeCall = func(ctx context.Context, in *pb.NodeRef, opts ...grpc.CallOption) (*pb.Node, error)

func newNodeCordonCommand(g *globalOptions, use, short string, method func(pb.ClusterServiceClient) nodeCall) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NODE...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.callCluster(func(c pb.ClusterServiceClient) error {
				for _, name := range args {
					n, err := method(c)(cmd.Context(), &pb.NodeRef{Name: name})
					if err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "node %s is %s\n", n.GetName(), n.GetStatus())
				}
				return nil
			})
		},
	}
}
