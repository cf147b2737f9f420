package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/balance"
)

// `godwit balance` is the cluster's balancer: the leader moves running
// containers between nodes to even out their measured load, when a move
// pays for its cost (docs/balance.md). These commands show it (status,
// plan: a dry run, history) and set its policy (enable, disable, set),
// which raft keeps. They exist only in a cluster.

func init() { register(newBalanceCommand) }

func newBalanceCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "balance",
		Short: "The cluster's balancer: its status, a dry run of its plan, its history and its policy",
		Long: `The scheduler leader measures the load of every ready node (its containers'
CPU and memory use) and, while the balancer is enabled, moves running
containers live from the most loaded nodes to the least loaded, but only when
a move is predicted to pay for its cost (downtime and bytes) several times
over, never back to a node a container left recently, and never a container
pinned with run --pin or the label godwit.io/pin=true. Each move is a
migration with reason "balancer"; ` + "`godwit migration inspect ID`" + ` says why it was made.

A new cluster's balancer is disabled: ` + "`godwit balance plan`" + ` shows what it would do,
` + "`godwit balance enable`" + ` starts it. docs/balance.md explains every choice and key.`,
	}
	cmd.AddCommand(newBalanceStatusCommand(g), newBalancePlanCommand(g), newBalanceEnableCommand(g, true),
		newBalanceEnableCommand(g, false), newBalanceSetCommand(g), newBalanceHistoryCommand(g))
	return cmd
}

// balanceStatusView is `balance status -o json`. Its keys are part of
// the CLI's contract.
type balanceStatusView struct {
	Enabled bool `json:"enabled"`
	// Balancing: the leader's last round balanced; it goes on until the
	// imbalance reaches the target.
	Balancing bool    `json:"balancing"`
	Imbalance float64 `json:"imbalance"`
	CPU       float64 `json:"cpu"`
	Memory    float64 `json:"memory"`
	Target    float64 `json:"target"`
	Trigger   float64 `json:"trigger"`
	// Nodes is how many ready nodes are measured; Samples how many
	// containers the leader holds load samples of.
	Nodes   int32 `json:"nodes"`
	Samples int32 `json:"samples"`
	// Stop and Reason say what a plan would do now.
	Stop         string                `json:"stop"`
	Reason       string                `json:"reason"`
	InFlight     []balanceInFlightView `json:"in_flight"`
	LastRound    *time.Time            `json:"last_round,omitempty"`
	LastDecision *time.Time            `json:"last_decision,omitempty"`
	// Policy is every key with its value, as `balance set` takes it.
	Policy          map[string]string `json:"policy"`
	PolicyUpdated   *time.Time        `json:"policy_updated,omitempty"`
	PolicyUpdatedBy string            `json:"policy_updated_by,omitempty"`
	// settings keep the keys' order and help for the text.
	settings []*pb.BalanceSetting
}

type balanceInFlightView struct {
	Migration   string     `json:"migration"`
	Container   string     `json:"container"`
	ContainerID string     `json:"container_id"`
	From        string     `json:"from"`
	To          string     `json:"to"`
	Phase       string     `json:"phase"`
	Created     *time.Time `json:"created,omitempty"`
}

func newBalanceStatusView(st *pb.BalanceStatusResponse) balanceStatusView {
	v := balanceStatusView{
		Enabled: st.GetEnabled(), Balancing: st.GetBalancing(), Imbalance: st.GetImbalance(), CPU: st.GetCpu(), Memory: st.GetMemory(),
		Target: st.GetTarget(), Trigger: st.GetTrigger(), Nodes: st.GetNodes(), Samples: st.GetSamples(), Stop: st.GetStop(), Reason: st.GetReason(),
		InFlight: []balanceInFlightView{}, LastRound: timeOrNil(st.GetLastRound()), LastDecision: timeOrNil(st.GetLastDecision()),
		Policy: map[string]string{}, PolicyUpdated: timeOrNil(st.GetPolicyUpdated()), PolicyUpdatedBy: st.GetPolicyUpdatedBy(),
		settings: st.GetPolicy(),
	}
	for _, m := range st.GetInFlight() {
		v.InFlight = append(v.InFlight, balanceInFlightView{Migration: m.GetMigrationId(), Container: m.GetContainer(), ContainerID: m.GetContainerId(),
			From: m.GetFrom(), To: m.GetTo(), Phase: m.GetPhase(), Created: timeOrNil(m.GetCreated())})
	}
	for _, s := range st.GetPolicy() {
		v.Policy[s.GetKey()] = s.GetValue()
	}
	return v
}

func newBalanceStatusCommand(g *globalOptions) *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "status [-o json]",
		Short: "Show the balancer: enabled or not, the imbalance now against its target, its moves in flight, its policy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st *pb.BalanceStatusResponse
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				st, err = c.BalanceStatus(cmd.Context(), &pb.BalanceStatusRequest{})
				return err
			}); err != nil {
				return err
			}
			v := newBalanceStatusView(st)
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeBalanceStatus(cmd.OutOrStdout(), v, time.Now())
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

// writeBalanceStatus prints the status's fields, then the policy:
//
//	FIELD      VALUE
//	balancer   enabled, balancing
//	imbalance  0.412 (CPU 0.500, memory 0.300) over 3 nodes: target 0.150, trigger 0.250
//	...
//
//	KEY        VALUE  MEANING
//	enabled    true   the leader executes plans (balance enable|disable)
func writeBalanceStatus(w io.Writer, v balanceStatusView, now time.Time) error {
	tw := table(w, "FIELD", "VALUE")
	row := func(k, val string) { fmt.Fprintf(tw, "%s\t%s\n", k, val) }
	switch {
	case !v.Enabled:
		row("balancer", "disabled: `godwit balance enable` starts it; `godwit balance plan` shows what it would do")
	case v.Balancing:
		row("balancer", "enabled, balancing (until the imbalance is under the target)")
	default:
		row("balancer", "enabled, idle (until the imbalance passes the trigger)")
	}
	row("imbalance", fmt.Sprintf("%s over %d %s: target %.3f, trigger %.3f", measureText(v.Imbalance, v.CPU, v.Memory),
		v.Nodes, plural(int(v.Nodes), "node", "nodes"), v.Target, v.Trigger))
	row("a plan now", v.Reason)
	row("load samples", fmt.Sprintf("of %d %s", v.Samples, plural(int(v.Samples), "container", "containers")))
	if len(v.InFlight) == 0 {
		row("in flight", "none")
	}
	for i, m := range v.InFlight {
		k := ""
		if i == 0 {
			k = "in flight"
		}
		row(k, fmt.Sprintf("%s: %s %s to %s (%s)", m.Migration, m.Container, m.From, m.To, m.Phase))
	}
	ago := func(t *time.Time, none string) string {
		if t == nil {
			return none
		}
		return humanDuration(now.Sub(*t)) + " ago"
	}
	if v.Enabled {
		row("last round", ago(v.LastRound, "none yet"))
	}
	row("last decision", ago(v.LastDecision, "none: no plan has started a move"))
	if v.PolicyUpdated != nil {
		row("policy set", ago(v.PolicyUpdated, "")+" by "+v.PolicyUpdatedBy)
	} else {
		row("policy set", "never: the defaults")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = table(w, "KEY", "VALUE", "MEANING")
	for _, s := range v.settings {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", s.GetKey(), s.GetValue(), s.GetHelp())
	}
	return tw.Flush()
}

// measureText is "0.412 (CPU 0.500, memory 0.300)".
func measureText(imbalance, cpu, memory float64) string {
	return fmt.Sprintf("%.3f (CPU %.3f, memory %.3f)", imbalance, cpu, memory)
}

// balanceDecisionView is a plan as `balance plan -o json` prints it, and
// an executed decision in `balance history -o json`. Its keys are part of
// the CLI's contract: moves each with container, from, to, gain and cost;
// rejected each with container and reason.
type balanceDecisionView struct {
	Time      *time.Time `json:"time,omitempty"`
	Imbalance float64    `json:"imbalance"`
	CPU       float64    `json:"cpu"`
	Memory    float64    `json:"memory"`
	// Predicted is the imbalance once the moves in flight and planned are
	// done.
	Predicted float64 `json:"predicted"`
	Target    float64 `json:"target"`
	Trigger   float64 `json:"trigger"`
	Triggered bool    `json:"triggered"`
	// Stop is why the plan ends where it does; Reason says it in words.
	Stop     string                 `json:"stop"`
	Reason   string                 `json:"reason"`
	Nodes    int32                  `json:"nodes"`
	InFlight int32                  `json:"in_flight"`
	Moves    []balanceMoveView      `json:"moves"`
	Rejected []balanceRejectionView `json:"rejected"`
	// NodeLoads and Excluded are a dry run's: each ready node's load,
	// and the nodes left out with why.
	NodeLoads []balanceNodeView      `json:"node_loads,omitempty"`
	Excluded  []balanceExclusionView `json:"excluded,omitempty"`
	// Index is the raft index that recorded an executed decision.
	Index uint64 `json:"index,omitempty"`
}

type balanceMoveView struct {
	Container   string `json:"container"`
	ContainerID string `json:"container_id"`
	From        string `json:"from"`
	To          string `json:"to"`
	// Gain x Stability exceeded cost_multiple x Cost; Score is Gain x
	// Stability / Cost.
	Gain      float64 `json:"gain"`
	Cost      float64 `json:"cost"`
	Stability float64 `json:"stability"`
	Score     float64 `json:"score,omitempty"`
	// Load is what the move carries, measured.
	LoadMilliCPU    int64 `json:"load_milli_cpu"`
	LoadMemoryBytes int64 `json:"load_memory_bytes"`
	// Predicted bytes, downtime and duration.
	Bytes           int64   `json:"bytes"`
	DowntimeMs      int64   `json:"downtime_ms"`
	DurationMs      int64   `json:"duration_ms"`
	ImbalanceBefore float64 `json:"imbalance_before,omitempty"`
	ImbalanceAfter  float64 `json:"imbalance_after"`
	Reason          string  `json:"reason"`
	CostBasis       string  `json:"cost_basis,omitempty"`
	// In the history: the migration started, or why none was; its phase
	// now and its measured downtime and bytes; its error.
	Migration        string `json:"migration,omitempty"`
	Refused          string `json:"refused,omitempty"`
	Phase            string `json:"phase,omitempty"`
	ActualDowntimeMs int64  `json:"actual_downtime_ms,omitempty"`
	ActualBytes      int64  `json:"actual_bytes,omitempty"`
	Error            string `json:"error,omitempty"`
}

type balanceRejectionView struct {
	Container   string `json:"container"`
	ContainerID string `json:"container_id"`
	Node        string `json:"node"`
	Rule        string `json:"rule"`
	Reason      string `json:"reason"`
}

type balanceNodeView struct {
	Node                 string `json:"node"`
	CapacityMilliCPU     int64  `json:"capacity_milli_cpu"`
	CapacityMemoryBytes  int64  `json:"capacity_memory_bytes"`
	UsedMilliCPU         int64  `json:"used_milli_cpu"`
	UsedMemoryBytes      int64  `json:"used_memory_bytes"`
	PredictedMilliCPU    int64  `json:"predicted_milli_cpu"`
	PredictedMemoryBytes int64  `json:"predicted_memory_bytes"`
	Loaded               bool   `json:"loaded"`
}

type balanceExclusionView struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

func newBalanceDecisionView(d *pb.BalanceDecision) balanceDecisionView {
	v := balanceDecisionView{
		Time: timeOrNil(d.GetTime()), Imbalance: d.GetImbalance(), CPU: d.GetCpu(), Memory: d.GetMemory(), Predicted: d.GetPredicted(),
		Target: d.GetTarget(), Trigger: d.GetTrigger(), Triggered: d.GetTriggered(), Stop: d.GetStop(), Reason: d.GetReason(),
		Nodes: d.GetNodeCount(), InFlight: d.GetInFlight(), Moves: []balanceMoveView{}, Rejected: []balanceRejectionView{}, Index: d.GetIndex(),
	}
	for _, m := range d.GetMoves() {
		v.Moves = append(v.Moves, balanceMoveView{
			Container: m.GetContainer(), ContainerID: m.GetContainerId(), From: m.GetFrom(), To: m.GetTo(),
			Gain: m.GetGain(), Cost: m.GetCost(), Stability: m.GetStability(), Score: m.GetScore(),
			LoadMilliCPU: m.GetLoadMilliCpu(), LoadMemoryBytes: m.GetLoadMemoryBytes(),
			Bytes: m.GetBytes(), DowntimeMs: m.GetDowntimeMs(), DurationMs: m.GetDurationMs(),
			ImbalanceBefore: m.GetImbalanceBefore(), ImbalanceAfter: m.GetImbalanceAfter(), Reason: m.GetReason(), CostBasis: m.GetCostBasis(),
			Migration: m.GetMigrationId(), Refused: m.GetRefused(), Phase: m.GetMigrationPhase(),
			ActualDowntimeMs: m.GetActualDowntimeMs(), ActualBytes: m.GetActualBytes(), Error: m.GetMigrationError(),
		})
	}
	for _, r := range d.GetRejected() {
		v.Rejected = append(v.Rejected, balanceRejectionView{Container: r.GetContainer(), ContainerID: r.GetContainerId(), Node: r.GetNode(),
			Rule: r.GetRule(), Reason: r.GetReason()})
	}
	for _, n := range d.GetNodes() {
		v.NodeLoads = append(v.NodeLoads, balanceNodeView{Node: n.GetNode(),
			CapacityMilliCPU: n.GetCapacityMilliCpu(), CapacityMemoryBytes: n.GetCapacityMemoryBytes(),
			UsedMilliCPU: n.GetUsedMilliCpu(), UsedMemoryBytes: n.GetUsedMemoryBytes(),
			PredictedMilliCPU: n.GetPredictedMilliCpu(), PredictedMemoryBytes: n.GetPredictedMemoryBytes(), Loaded: n.GetLoaded()})
	}
	for _, e := range d.GetExcluded() {
		v.Excluded = append(v.Excluded, balanceExclusionView{Node: e.GetNode(), Reason: e.GetReason()})
	}
	return v
}

func newBalancePlanCommand(g *globalOptions) *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "plan [-o json]",
		Short: "A dry run: the moves the balancer would start now, with their gain and cost, and why every other candidate stays",
		Long: `Plan asks the leader to plan on the cluster as it is now, with the load
samples it holds, exactly as its balancing rounds do, and to start nothing:
the moves, in the order they would start, each with its predicted gain, cost,
downtime and bytes and why; every running container on a loaded node that
would stay, with the rule that keeps it (pinned, cooldown, not-worth ...) and
why. It works whether the balancer is enabled or not.

-o json prints {"moves": [...], "rejected": [...], ...}: each move with
container, from, to, gain and cost; each rejection with container, node, rule
and reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var d *pb.BalanceDecision
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				d, err = c.BalancePlan(cmd.Context(), &pb.BalancePlanRequest{})
				return err
			}); err != nil {
				return err
			}
			v := newBalanceDecisionView(d)
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeBalancePlan(cmd.OutOrStdout(), v)
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

// writeBalancePlan prints the imbalance and why the plan stops, the
// moves (a table, then each move's reason on a line of its own), then
// the containers that stay, each with its rule and reason.
func writeBalancePlan(w io.Writer, v balanceDecisionView) error {
	fmt.Fprintf(w, "imbalance %s over %d %s; target %.3f, trigger %.3f\n", measureText(v.Imbalance, v.CPU, v.Memory),
		v.Nodes, plural(int(v.Nodes), "node", "nodes"), v.Target, v.Trigger)
	if v.Triggered {
		fmt.Fprintf(w, "predicted %.3f after %d planned %s and %d in flight\n", v.Predicted, len(v.Moves), plural(len(v.Moves), "move", "moves"), v.InFlight)
	}
	fmt.Fprintf(w, "%s\n", v.Reason)
	if len(v.NodeLoads) > 0 {
		fmt.Fprintln(w)
		tw := table(w, "NODE", "CPU", "MEMORY", "CPU PREDICTED", "MEMORY PREDICTED", "GIVES")
		for _, n := range v.NodeLoads {
			gives := "-"
			if n.Loaded {
				gives = "yes: above the mean"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, percent(n.UsedMilliCPU, n.CapacityMilliCPU), percent(n.UsedMemoryBytes, n.CapacityMemoryBytes),
				percent(n.PredictedMilliCPU, n.CapacityMilliCPU), percent(n.PredictedMemoryBytes, n.CapacityMemoryBytes), gives)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(v.Moves) > 0 {
		fmt.Fprintln(w)
		tw := table(w, "#", "CONTAINER", "FROM", "TO", "LOAD", "GAIN", "STABILITY", "COST", "DOWNTIME", "BYTES", "IMBALANCE AFTER")
		for i, m := range v.Moves {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%.2f\t%.2f\t%.2f\t%s\t%s\t%.3f\n", i+1, m.Container, m.From, m.To,
				loadText(m.LoadMilliCPU, m.LoadMemoryBytes), m.Gain, m.Stability, m.Cost, msOrDash(m.DowntimeMs), bytesText(m.Bytes), m.ImbalanceAfter)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		for i, m := range v.Moves {
			fmt.Fprintf(w, "%d. %s: %s\n", i+1, m.Container, m.Reason)
		}
	}
	if len(v.Rejected) > 0 {
		fmt.Fprintln(w)
		tw := table(w, "STAYS", "NODE", "RULE", "REASON")
		for _, r := range v.Rejected {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Container, r.Node, r.Rule, r.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, e := range v.Excluded {
		fmt.Fprintf(w, "node %s is left out: %s\n", e.Node, e.Reason)
	}
	return nil
}

// loadText is "0.8 CPU, 512 MiB".
func loadText(milliCPU, memory int64) string {
	return strconv.FormatFloat(float64(milliCPU)/1000, 'f', -1, 64) + " CPU, " + units.FormatBytes(memory)
}

// percent is used over capacity, as "42%"; "-" without a capacity.
func percent(used, capacity int64) string {
	if capacity <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(used)/float64(capacity))
}

func bytesText(n int64) string {
	if n <= 0 {
		return "-"
	}
	return units.FormatBytes(n)
}

func newBalanceEnableCommand(g *globalOptions, enable bool) *cobra.Command {
	use, short := "enable", "Let the leader execute the balancer's plans, every interval"
	if !enable {
		use, short = "disable", "Stop the balancer: no new move starts; those in flight finish"
	}
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			resp, err := setBalance(cmd, g, []*pb.BalanceSetting{{Key: "enabled", Value: fmt.Sprint(enable)}})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			interval := "its interval"
			for _, s := range resp.GetPolicy() {
				if s.GetKey() == "interval" {
					interval = s.GetValue()
				}
			}
			switch {
			case enable && len(resp.GetChanged()) == 0:
				fmt.Fprintf(w, "the balancer was enabled already: the leader plans every %s\n", interval)
			case enable:
				fmt.Fprintf(w, "balancer enabled: the leader plans every %s and moves containers when a move pays; `godwit balance status` follows it\n", interval)
			case len(resp.GetChanged()) == 0:
				fmt.Fprintln(w, "the balancer was disabled already")
			default:
				fmt.Fprintln(w, "balancer disabled: no new move starts; the moves in flight finish (`godwit migration ls`)")
			}
			return nil
		},
	}
}

func newBalanceSetCommand(g *globalOptions) *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "set KEY=VALUE...",
		Short: "Change the balancer's policy: every setting is applied, or none",
		Long: `Set changes keys of the balancer's policy, which raft keeps. Every setting is
applied, or none: an unknown key or a value that would make the policy
invalid refuses them all, with what to change. Durations as 90s or 10m;
fractions as 0.2 or 20%; sizes in bytes or with KiB, MiB, GiB. The keys:

  ` + strings.Join(balance.Keys(), ", ") + `

` + "`godwit balance status`" + ` lists them with their values and meanings; docs/balance.md
explains each.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var settings []*pb.BalanceSetting
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return fmt.Errorf("%q: want KEY=VALUE, such as trigger=0.3 (the keys are %s)", a, strings.Join(balance.Keys(), ", "))
				}
				settings = append(settings, &pb.BalanceSetting{Key: k, Value: v})
			}
			resp, err := setBalance(cmd, g, settings)
			if err != nil {
				return err
			}
			if *out == outputJSON {
				policy := map[string]string{}
				for _, s := range resp.GetPolicy() {
					policy[s.GetKey()] = s.GetValue()
				}
				changed := resp.GetChanged()
				if changed == nil {
					changed = []string{}
				}
				return printJSON(cmd.OutOrStdout(), struct {
					Changed []string          `json:"changed"`
					Policy  map[string]string `json:"policy"`
				}{changed, policy})
			}
			if len(resp.GetChanged()) == 0 {
				_, err := fmt.Fprintln(cmd.OutOrStdout(), "nothing changed: the policy had these values already")
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "balance policy changed: %s\n", strings.Join(resp.GetChanged(), " "))
			return err
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

// setBalance sends the settings to the leader.
func setBalance(cmd *cobra.Command, g *globalOptions, settings []*pb.BalanceSetting) (*pb.SetBalanceResponse, error) {
	var resp *pb.SetBalanceResponse
	err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
		resp, err = c.SetBalance(cmd.Context(), &pb.SetBalanceRequest{Settings: settings})
		return err
	})
	return resp, err
}

func newBalanceHistoryCommand(g *globalOptions) *cobra.Command {
	var (
		limit int32
		out   *outputFormat
	)
	cmd := &cobra.Command{
		Use:   "history [--limit N] [-o json]",
		Short: "The decisions the balancer executed, oldest first: the imbalance, each move's predicted and actual downtime, and its outcome",
		Long: `History lists the balancer's executed decisions (the last 100 the cluster
keeps; a plan that started no move is not recorded): when, the imbalance it
measured and predicted, and each move: its predicted gain, cost and downtime,
its migration, and the migration's outcome and measured downtime (or why the
move was refused). ` + "`godwit migration inspect ID`" + ` shows a move in full.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit %d: want 0 (all) or more", limit)
			}
			var resp *pb.BalanceHistoryResponse
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				resp, err = c.BalanceHistory(cmd.Context(), &pb.BalanceHistoryRequest{Limit: limit})
				return err
			}); err != nil {
				return err
			}
			views := make([]balanceDecisionView, 0, len(resp.GetDecisions()))
			for _, d := range resp.GetDecisions() {
				views = append(views, newBalanceDecisionView(d))
			}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), views)
			}
			return writeBalanceHistory(cmd.OutOrStdout(), views)
		},
	}
	cmd.Flags().Int32Var(&limit, "limit", 0, "only the latest N decisions (default: all the cluster keeps)")
	out = addOutputFlag(cmd)
	return cmd
}

// writeBalanceHistory prints each decision on a line, then its moves:
//
//	2026-01-02T12:00:00+01:00  imbalance 0.412 (CPU 0.500, memory 0.300), predicted 0.120, target 0.150, over 3 nodes
//	  CONTAINER  FROM  TO  GAIN   COST  DOWNTIME  ACTUAL  MIGRATION       OUTCOME
//	  web        n1    n2  12.30  2.50  1.2s      900ms   m-0123456789ab  done
func writeBalanceHistory(w io.Writer, views []balanceDecisionView) error {
	if len(views) == 0 {
		_, err := fmt.Fprintln(w, "no decision executed yet: a plan is recorded once it starts a move (`godwit balance plan` shows the next)")
		return err
	}
	for i, v := range views {
		if i > 0 {
			fmt.Fprintln(w)
		}
		when := "-"
		if v.Time != nil {
			when = v.Time.Local().Format(time.RFC3339)
		}
		fmt.Fprintf(w, "%s  imbalance %s, predicted %.3f, target %.3f, over %d %s\n", when, measureText(v.Imbalance, v.CPU, v.Memory),
			v.Predicted, v.Target, v.Nodes, plural(int(v.Nodes), "node", "nodes"))
		tw := table(w, "  CONTAINER", "FROM", "TO", "GAIN", "COST", "DOWNTIME", "ACTUAL", "MIGRATION", "OUTCOME")
		for _, m := range v.Moves {
			migration, outcome := m.Migration, moveOutcome(m)
			if migration == "" {
				migration = "-"
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%.2f\t%.2f\t%s\t%s\t%s\t%s\n", m.Container, m.From, m.To, m.Gain, m.Cost,
				msOrDash(m.DowntimeMs), msOrDash(m.ActualDowntimeMs), migration, outcome)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// moveOutcome is where a move's migration stands: its phase (with its
// error), "refused: why", or "unknown" once the cluster no longer keeps
// the migration's record.
func moveOutcome(m balanceMoveView) string {
	switch {
	case m.Migration == "":
		return "refused: " + m.Refused
	case m.Phase == "":
		return "unknown: the cluster no longer keeps the migration's record"
	case m.Error != "":
		return m.Phase + ": " + m.Error
	}
	return m.Phase
}
