package main

import (
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/units"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() { register(newMigrationCommand) }

func newMigrationCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "migration",
		Aliases: []string{"migrations"},
		Short:   "The cluster's migrations: list them, show one, cancel one",
		Long: `The migrations the cluster's leader drives (started by ` + "`godwit migrate`" + `, a node
drain or the balancer), as recorded in raft: each with its container, source
and destination nodes, strategy, phase and statistics. They exist only in a
cluster; a migration between two agents (migrate --from-agent/--to-agent)
is in that command's own journal.`,
	}
	cmd.AddCommand(newMigrationListCommand(g), newMigrationInspectCommand(g), newMigrationCancelCommand(g))
	return cmd
}

// clusterMigrationView is a cluster migration's record as `migrate -o
// json`, `migration ls -o json` and `migration inspect -o json` print it.
// The keys it shares with the direct mode's view (id, container, from,
// to, strategy, strategy_reason, phase, downtime_ms, total_ms, bytes_sent,
// phases) mean the same, but from and to are node names.
type clusterMigrationView struct {
	ID          string `json:"id"`
	Container   string `json:"container"`
	ContainerID string `json:"container_id"`
	From        string `json:"from"`
	To          string `json:"to"`
	Strategy    string `json:"strategy"`
	// StrategyReason and DestinationReason say why the leader chose them.
	StrategyReason    string `json:"strategy_reason,omitempty"`
	DestinationReason string `json:"destination_reason,omitempty"`
	// Phase is prepare, sync, dump, transfer, restore, ready, committed,
	// done or aborted.
	Phase string `json:"phase"`
	// Generation is the container's generation when the move started.
	Generation uint64 `json:"generation"`
	// RequestedBy is who asked; Reason why the move runs (operator,
	// drain NODE, balancer).
	RequestedBy string `json:"requested_by,omitempty"`
	Reason      string `json:"reason,omitempty"`
	DowntimeMs  int64  `json:"downtime_ms"`
	TotalMs     int64  `json:"total_ms"`
	BytesSent   int64  `json:"bytes_sent"`
	// Phases is how long each phase that has ended lasted, in ms.
	Phases map[string]int64 `json:"phases"`
	// Timeline is every phase reached, in order, with its start.
	Timeline []migrationPhaseView `json:"timeline"`
	// Aborting: the leader aborts it without the destination's
	// acknowledgement. DestinationCleanup: aborted so, the destination
	// still owes dropping what it prepared.
	Aborting           bool `json:"aborting,omitempty"`
	DestinationCleanup bool `json:"destination_cleanup,omitempty"`
	// Error is why it was aborted, or the last error its driver got past.
	Error   string     `json:"error,omitempty"`
	Created *time.Time `json:"created,omitempty"`
	Updated *time.Time `json:"updated,omitempty"`
}

type migrationPhaseView struct {
	Phase   string     `json:"phase"`
	Started *time.Time `json:"started,omitempty"`
	// DurationMs is how long the phase lasted; 0 while it runs.
	DurationMs int64 `json:"duration_ms"`
}

func newClusterMigrationView(m *pb.Migration) clusterMigrationView {
	v := clusterMigrationView{
		ID: m.GetId(), Container: m.GetContainer(), ContainerID: m.GetContainerId(), From: m.GetSource(), To: m.GetDestination(),
		Strategy: m.GetStrategy(), StrategyReason: m.GetWhyStrategy(), DestinationReason: m.GetWhyDestination(),
		Phase: m.GetPhase(), Generation: m.GetGeneration(), RequestedBy: m.GetRequestedBy(), Reason: m.GetReason(),
		DowntimeMs: m.GetStats().GetDowntimeMs(), TotalMs: m.GetStats().GetTotalMs(), BytesSent: m.GetStats().GetBytes(),
		Phases: map[string]int64{}, Timeline: []migrationPhaseView{}, Error: m.GetError(),
		Aborting: m.GetAborting(), DestinationCleanup: m.GetDestinationCleanup(),
		Created: timeOrNil(m.GetCreated()), Updated: timeOrNil(m.GetUpdated()),
	}
	if v.Container == "" {
		v.Container = shortDigest(v.ContainerID)
	}
	phases := m.GetPhases()
	for i, ph := range phases {
		v.Timeline = append(v.Timeline, migrationPhaseView{Phase: ph.GetPhase(), Started: timeOrNil(ph.GetStarted()), DurationMs: ph.GetDurationMs()})
		// A phase has ended once another began; done and aborted never do.
		if i < len(phases)-1 && !terminalPhase(ph.GetPhase()) {
			v.Phases[ph.GetPhase()] = ph.GetDurationMs()
		}
	}
	return v
}

func terminalPhase(phase string) bool {
	return phase == string(migrate.PhaseDone) || phase == string(migrate.PhaseAborted)
}

// lastPhase is the last phase the migration reached before it ended (or
// where it is); "" when none is recorded.
func (v clusterMigrationView) lastPhase() string {
	for i := len(v.Timeline) - 1; i >= 0; i-- {
		if ph := v.Timeline[i].Phase; !terminalPhase(ph) {
			return ph
		}
	}
	return ""
}

// msOrDash writes milliseconds as a short duration, or "-" for none.
func msOrDash(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return shortDuration(time.Duration(ms) * time.Millisecond)
}

func newMigrationListCommand(g *globalOptions) *cobra.Command {
	var (
		all   bool
		limit int32
		out   *outputFormat
	)
	cmd := &cobra.Command{
		Use:     "ls [-a] [--limit N] [-o json]",
		Aliases: []string{"list"},
		Short:   "List the cluster's open migrations and the latest finished one (-a: all it keeps), oldest first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if limit < 0 {
				return fmt.Errorf("--limit %d: want 0 (all) or more", limit)
			}
			var resp *pb.ListMigrationsResponse
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				resp, err = c.ListMigrations(cmd.Context(), &pb.ListMigrationsRequest{All: all, Limit: limit})
				return err
			}); err != nil {
				return err
			}
			views := make([]clusterMigrationView, 0, len(resp.GetMigrations()))
			for _, m := range resp.GetMigrations() {
				views = append(views, newClusterMigrationView(m))
			}
			sort.SliceStable(views, func(i, j int) bool {
				a, b := views[i].Created, views[j].Created
				return a != nil && b != nil && a.Before(*b)
			})
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), views)
			}
			return writeMigrationList(cmd.OutOrStdout(), views, time.Now())
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "include every finished migration the cluster keeps (done or aborted)")
	cmd.Flags().Int32Var(&limit, "limit", 0, "only the latest N migrations (default: no limit)")
	out = addOutputFlag(cmd)
	return cmd
}

// writeMigrationList prints one row per migration:
//
//	ID              CONTAINER  FROM  TO  STRATEGY  PHASE     DOWNTIME  AGE
//	m-0123456789ab  web        n1    n2  pre-copy  transfer  -         12 seconds
func writeMigrationList(w io.Writer, views []clusterMigrationView, now time.Time) error {
	tw := table(w, "ID", "CONTAINER", "FROM", "TO", "STRATEGY", "PHASE", "DOWNTIME", "AGE")
	for _, v := range views {
		age := "-"
		if v.Created != nil {
			age = humanDuration(now.Sub(*v.Created))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.ID, v.Container, v.From, v.To, v.Strategy, v.Phase, msOrDash(v.DowntimeMs), age)
	}
	return tw.Flush()
}

func newMigrationInspectCommand(g *globalOptions) *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "inspect ID [-o json]",
		Short: "Show a migration: its phases with their times, statistics, why this destination and strategy, who asked and why, its error",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var m *pb.Migration
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				m, err = c.InspectMigration(cmd.Context(), &pb.MigrationRef{Id: args[0]})
				return err
			}); err != nil {
				return err
			}
			v := newClusterMigrationView(m)
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeMigrationInspect(cmd.OutOrStdout(), v, time.Now())
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

// phaseStartLayout is RFC 3339 with milliseconds: phases last less than
// a second.
const phaseStartLayout = "2006-01-02T15:04:05.000Z07:00"

// writeMigrationInspect prints the record's fields, then its phases:
//
//	PHASE     STARTED                        DURATION
//	prepare   2025-06-01T12:00:00.000+02:00  12ms
//	transfer  2025-06-01T12:00:00.012+02:00  running for 3s
func writeMigrationInspect(w io.Writer, v clusterMigrationView, now time.Time) error {
	tw := table(w, "FIELD", "VALUE")
	row := func(k, val string) {
		if val != "" {
			fmt.Fprintf(tw, "%s\t%s\n", k, val)
		}
	}
	stamp := func(t *time.Time) string {
		if t == nil {
			return ""
		}
		return t.Local().Format(time.RFC3339)
	}
	phaseStart := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Local().Format(phaseStartLayout)
	}
	row("id", v.ID)
	container := v.Container
	if v.ContainerID != "" && v.ContainerID != v.Container {
		container += " (" + shortDigest(v.ContainerID) + ")"
	}
	row("container", container)
	row("from", v.From)
	row("to", v.To)
	row("strategy", v.Strategy)
	row("phase", v.Phase)
	row("generation", fmt.Sprint(v.Generation))
	row("requested by", v.RequestedBy)
	row("reason", v.Reason)
	row("created", stamp(v.Created))
	row("updated", stamp(v.Updated))
	row("downtime", msOrDash(v.DowntimeMs))
	row("total", msOrDash(v.TotalMs))
	bytes := "-"
	if v.BytesSent > 0 {
		bytes = units.FormatBytes(v.BytesSent)
	}
	row("bytes sent", bytes)
	row("why destination", v.DestinationReason)
	row("why strategy", v.StrategyReason)
	row("error", v.Error)
	switch {
	case v.Aborting:
		row("note", fmt.Sprintf("aborting without %s's acknowledgement: the move can no longer commit", v.To))
	case v.DestinationCleanup:
		row("note", fmt.Sprintf("%s did not acknowledge the abort; it is asked to drop what it holds (never run) once it answers", v.To))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Timeline) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = table(w, "PHASE", "STARTED", "DURATION")
	for i, ph := range v.Timeline {
		started := phaseStart(ph.Started)
		duration := shortDuration(time.Duration(ph.DurationMs) * time.Millisecond)
		switch {
		case terminalPhase(ph.Phase):
			duration = "-"
		case i == len(v.Timeline)-1 && ph.Started != nil:
			duration = "running for " + shortDuration(now.Sub(*ph.Started).Round(time.Second))
		case i == len(v.Timeline)-1:
			duration = "running"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", ph.Phase, started, duration)
	}
	return tw.Flush()
}

func newMigrationCancelCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Abort a migration that has not committed yet: the container stays on its source",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var m *pb.Migration
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				m, err = c.CancelMigration(cmd.Context(), &pb.MigrationRef{Id: args[0]})
				return err
			}); err != nil {
				return err
			}
			v := newClusterMigrationView(m)
			if v.Phase == string(migrate.PhaseAborted) {
				fmt.Fprintf(cmd.OutOrStdout(), "cancelled migration %s: %s stays on node %s\n", v.ID, v.Container, v.From)
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "cancelling migration %s (in phase %s): the leader aborts it and %s stays on node %s; `godwit migration inspect %s` shows when it is done\n",
				v.ID, v.Phase, v.Container, v.From, v.ID)
			return nil
		},
	}
}
