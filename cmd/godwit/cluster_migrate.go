package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// In a cluster, `godwit migrate NAME` asks the scheduler leader to move
// the container: the leader picks the destination and the strategy,
// records the migration in raft and drives both agents. This command
// only starts it (Migrate) and follows it (WatchMigration); interrupting
// the command stops the following, never the migration.

// How the command re-attaches to a migration whose progress stream broke
// (the leader failed over, the scheduler restarted): it calls
// WatchMigration again up to watchReattachAttempts times in a row, waiting
// watchReattachDelay, doubled after each failed attempt up to
// watchReattachMaxDelay, so that it outlasts a raft election and the new
// leader's taking over of the migration (about 17s in all). An attempt
// that delivers progress starts the count again. Variables so that tests
// can shorten them.
var (
	watchReattachAttempts = 6
	watchReattachDelay    = 500 * time.Millisecond
	watchReattachMaxDelay = 5 * time.Second
)

// clusterMigrateFlags are migrate's flags that only a cluster
// understands.
type clusterMigrateFlags struct {
	to     string
	detach bool
}

// clusterMigrateFlagNames are the names of clusterMigrateFlags.
var clusterMigrateFlagNames = []string{"to", "detach"}

// directMigrateFlagNames are migrate's flags for a move this command
// drives itself between two agents; the cluster's leader has its own.
var directMigrateFlagNames = []string{"id", "resume", "abort", "journal", "abort-timeout", "step-timeout", "stall-timeout"}

func addClusterMigrateFlags(cmd *cobra.Command) *clusterMigrateFlags {
	c := &clusterMigrateFlags{}
	f := cmd.Flags()
	f.StringVar(&c.to, "to", "", "cluster: move the container to `NODE` (default: placement picks the best node)")
	f.BoolVar(&c.detach, "detach", false, "cluster: print the migration ID and return at once; the leader goes on with the move")
	return c
}

// migrateInCluster runs migrate against the cluster when the target is
// one and neither --from-agent nor --to-agent was given; handled says
// whether it did (or refused to), so that migrate goes on with the direct
// two-agent move only when not.
func migrateInCluster(cmd *cobra.Command, g *globalOptions, o *migrateOptions, c *clusterMigrateFlags, args []string) (handled bool, err error) {
	changed := cmd.Flags().Changed
	given := func(names []string) []string {
		var out []string
		for _, name := range names {
			if changed(name) {
				out = append(out, "--"+name)
			}
		}
		return out
	}
	direct := changed("from-agent") || changed("to-agent")
	t, terr := g.target()
	if direct || terr != nil || t.kind != clusterTarget {
		cluster := given(clusterMigrateFlagNames)
		switch {
		case len(cluster) == 0:
			return false, nil
		case direct:
			return true, fmt.Errorf("%s %s for a migration the cluster's leader drives; with --from-agent and --to-agent this command moves the container itself, to the agent at --to-agent: drop one or the other",
				strings.Join(cluster, ", "), plural(len(cluster), "is", "are"))
		case terr != nil:
			return true, terr
		}
		return true, clusterFlagsError(t, cluster)
	}
	if flags := given(directMigrateFlagNames); len(flags) > 0 {
		return true, fmt.Errorf("%s %s for a migration between two agents (--from-agent, --to-agent) that this command drives; in the cluster at %s%s the leader drives migrations and resumes or aborts them itself: follow one with `godwit migration inspect ID`, stop it with `godwit migration cancel ID`",
			strings.Join(flags, ", "), plural(len(flags), "is", "are"), t.addr, t.fromNote())
	}
	if len(args) != 1 {
		return true, errors.New("name one container to move: godwit migrate NAME [--to NODE]")
	}
	want, err := migrate.ParseStrategy(o.strategy)
	if err != nil {
		return true, fmt.Errorf("--strategy: %w", err)
	}
	if o.minimizeDowntime && want != migrate.Auto {
		return true, fmt.Errorf("--minimize-downtime lets --strategy auto pick post-copy; --strategy %s leaves nothing to pick: drop one of them", want)
	}
	ctx, stop := interruptible(cmd)
	defer stop()
	r := &clusterMigrateRun{g: g, out: *o.out, stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr(), label: "migrate " + args[0]}
	req := &pb.MigrateRequest{Container: args[0], To: c.to, Strategy: string(want), MinimizeDowntime: o.minimizeDowntime}
	return true, r.run(ctx, req, c.detach)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// clusterMigrateRun is one `godwit migrate` against the cluster.
type clusterMigrateRun struct {
	g              *globalOptions
	out            outputFormat
	stdout, stderr io.Writer
	label          string

	// rec is the latest record the scheduler sent.
	rec *pb.Migration
	// phase and bytes are where the progress stood at the last message,
	// which tells a stream that shows the migration moving on from one
	// that repeats where it is.
	phase string
	bytes int64
	// warned: the post-copy warning was printed.
	warned bool
}

// run starts the migration and, unless detach, follows it to its end.
func (r *clusterMigrateRun) run(ctx context.Context, req *pb.MigrateRequest, detach bool) error {
	if err := r.g.callCluster(func(c pb.ClusterServiceClient) (err error) {
		r.rec, err = c.Migrate(ctx, req)
		return err
	}); err != nil {
		return err
	}
	id := r.rec.GetId()
	r.phase = r.rec.GetPhase()
	if detach {
		fmt.Fprintf(r.stderr, "%s: started migration %s%s; follow it with `godwit migration inspect %s`\n", r.label, id, r.route(), id)
		if r.out == outputJSON {
			return printJSON(r.stdout, newClusterMigrationView(r.rec))
		}
		_, err := fmt.Fprintln(r.stdout, id)
		return err
	}
	fmt.Fprintf(r.stderr, "%s: migration %s%s\n", r.label, id, r.route())
	if why := r.rec.GetWhyDestination(); why != "" {
		fmt.Fprintf(r.stderr, "%s: destination %s: %s\n", r.label, r.rec.GetDestination(), why)
	}
	if s, why := r.rec.GetStrategy(), r.rec.GetWhyStrategy(); why != "" {
		fmt.Fprintf(r.stderr, "%s: strategy %s: %s\n", r.label, s, why)
	}
	r.warnPostCopy()
	p := newMigrationProgress(r.stderr, r.label)
	err := r.follow(ctx, id, p)
	p.ui.finish()
	if err != nil {
		return err
	}
	return r.report()
}

// route is " of c1 from node n1 to node n2, strategy pre-copy", with the
// parts the record has so far.
func (r *clusterMigrateRun) route() string {
	var b strings.Builder
	if s := r.rec.GetSource(); s != "" {
		b.WriteString(" from node " + s)
	}
	if d := r.rec.GetDestination(); d != "" {
		b.WriteString(" to node " + d)
	}
	if s := r.rec.GetStrategy(); s != "" {
		b.WriteString(", strategy " + s)
	}
	return b.String()
}

// warnPostCopy prints the post-copy warning once the strategy is known to
// be post-copy.
func (r *clusterMigrateRun) warnPostCopy() {
	if r.warned || r.rec.GetStrategy() != string(migrate.PostCopy) {
		return
	}
	r.warned = true
	writePostCopyWarning(r.stderr, r.label, r.rec.GetSource(), r.rec.GetDestination())
}

// errWatchEnded is a progress stream that ended before it said anything.
var errWatchEnded = errors.New("the progress stream ended without a message")

// watchBroken is a progress stream that ended before the migration did,
// in a way a new call may get past; it is no gRPC status, so that
// callCluster leaves it as it is.
type watchBroken struct {
	cause string
	// progressed: the stream showed the migration moving on (a new phase,
	// bytes sent) before it ended.
	progressed bool
	// ended: the scheduler ended the stream itself after it sent the
	// record of a migration still open, as it does when it stops driving
	// the migration (it lost the leadership): it is to be followed again,
	// and this is no failure.
	ended bool
}

func (e *watchBroken) Error() string { return e.cause }

// follow watches migration id until its last message, re-attaching when
// the stream ends early, and leaves the final record in r.rec. It gives
// up after watchReattachAttempts failed calls in a row; a stream that the
// scheduler ended with the open record is followed again for as long as
// it takes, since the cluster still answers for the migration.
func (r *clusterMigrateRun) follow(ctx context.Context, id string, p *migrationProgress) error {
	stopped := func() error {
		return fmt.Errorf("stopped following migration %s; it goes on in the cluster: `godwit migration inspect %s` shows it, `godwit migration cancel %s` stops it",
			id, id, id)
	}
	delay := watchReattachDelay
	failed := 0
	// noted: the scheduler's ending of the stream was said since the
	// migration last moved on.
	noted := false
	for {
		err := r.g.callCluster(func(c pb.ClusterServiceClient) error { return r.watchOnce(ctx, c, id, p) })
		var broken *watchBroken
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return stopped()
		case !errors.As(err, &broken):
			return fmt.Errorf("following migration %s: %w; it may go on in the cluster: `godwit migration inspect %s` shows it", id, err, id)
		}
		if broken.progressed {
			failed, delay, noted = 0, watchReattachDelay, false
		}
		switch {
		case broken.ended && !noted:
			noted = true
			p.interrupt(fmt.Sprintf("the scheduler stopped streaming migration %s, still in phase %s; following it again", id, r.rec.GetPhase()))
		case !broken.ended:
			if failed++; failed > watchReattachAttempts {
				return fmt.Errorf("lost track of migration %s after %d attempts to re-attach (%s); it goes on in the cluster: follow it with `godwit migration inspect %s` once a scheduler answers (`godwit cluster status`)",
					id, watchReattachAttempts, broken.cause, id)
			}
			p.interrupt(fmt.Sprintf("lost the progress stream (%s); re-attaching to migration %s (%d of %d)", broken.cause, id, failed, watchReattachAttempts))
		}
		select {
		case <-ctx.Done():
			return stopped()
		case <-time.After(delay):
		}
		delay = min(2*delay, watchReattachMaxDelay)
	}
}

// watchOnce follows one WatchMigration stream. It returns nil after the
// last message, a *watchBroken when the stream ended early in a way that
// a new call may get past, and otherwise the call's error.
func (r *clusterMigrateRun) watchOnce(ctx context.Context, c pb.ClusterServiceClient, id string, p *migrationProgress) error {
	stream, err := c.WatchMigration(ctx, &pb.MigrationRef{Id: id})
	if err != nil {
		return reattachable(ctx, err, false)
	}
	progressed, gotRecord := false, false
	for {
		m, err := stream.Recv()
		switch {
		case err == io.EOF && gotRecord:
			return &watchBroken{cause: "the scheduler ended the stream", progressed: progressed, ended: true}
		case err == io.EOF:
			return &watchBroken{cause: errWatchEnded.Error(), progressed: progressed}
		case err != nil:
			return reattachable(ctx, err, progressed)
		}
		if m.GetPhase() != r.phase || m.GetBytesDone() != r.bytes {
			progressed = true
			r.phase, r.bytes = m.GetPhase(), m.GetBytesDone()
		}
		if rec := m.GetMigration(); rec != nil {
			gotRecord = true
			r.rec = rec
			r.warnPostCopy()
		}
		p.event(migrate.Event{ID: id, Phase: migrate.Phase(m.GetPhase()), BytesDone: m.GetBytesDone(), BytesTotal: m.GetBytesTotal(),
			Throughput: m.GetThroughput(), ETA: time.Duration(m.GetEtaMs()) * time.Millisecond, Message: m.GetMessage()})
		if m.GetDone() {
			if m.GetMigration() == nil {
				// The record is what the end is reported from.
				rec, err := c.InspectMigration(ctx, &pb.MigrationRef{Id: id})
				if err != nil {
					return err
				}
				r.rec = rec
			}
			return nil
		}
	}
}

// reattachable turns err into a *watchBroken when a new WatchMigration
// may get past it: the scheduler went away or lost the leadership
// (Unavailable, Aborted), or the stream was cut (Canceled or
// DeadlineExceeded while this command's context is live, Internal,
// Unknown). Answers about the request itself (NotFound, PermissionDenied,
// Unimplemented ...) are returned as they are.
func reattachable(ctx context.Context, err error, progressed bool) error {
	st, ok := status.FromError(err)
	if !ok || ctx.Err() != nil {
		return err
	}
	switch st.Code() {
	case codes.Unavailable, codes.Aborted, codes.Canceled, codes.DeadlineExceeded, codes.Internal, codes.Unknown:
		return &watchBroken{cause: st.Message(), progressed: progressed}
	}
	return err
}

// interrupt ends the current phase's bar with a note, and has the next
// event show its phase again.
func (p *migrationProgress) interrupt(note string) {
	p.ui.finish()
	p.ui.phase = ""
	fmt.Fprintf(p.w, "%s: %s\n", p.label, note)
}

// report prints how the migration ended; an aborted one is an error.
func (r *clusterMigrateRun) report() error {
	v := newClusterMigrationView(r.rec)
	if r.out == outputJSON {
		if err := printJSON(r.stdout, v); err != nil {
			return err
		}
	}
	if v.Phase == string(migrate.PhaseAborted) {
		return v.abortedError()
	}
	if r.out == outputJSON {
		return nil
	}
	return writeClusterMigrationSummary(r.stdout, v)
}

// abortedError says that the migration was aborted, why, and where the
// container is.
func (v clusterMigrationView) abortedError() error {
	cause := v.Error
	if cause == "" {
		cause = "no reason recorded"
	}
	where := ""
	if ph := v.lastPhase(); ph != "" {
		where = " in phase " + ph
	}
	return fmt.Errorf("migration %s of %s from node %s to node %s was aborted%s: %s; the container was not moved: `godwit inspect %s` shows where it runs, `godwit migration inspect %s` what happened",
		v.ID, v.Container, v.From, v.To, where, cause, v.Container, v.ID)
}

// writeClusterMigrationSummary prints a finished migration's statistics
// as the direct mode does, then why this destination and this strategy.
func writeClusterMigrationSummary(w io.Writer, v clusterMigrationView) error {
	direct := migrationView{ID: v.ID, Container: v.Container, From: v.From, To: v.To, Strategy: v.Strategy,
		Phase: v.Phase, DowntimeMs: v.DowntimeMs, TotalMs: v.TotalMs, BytesSent: v.BytesSent, Phases: v.Phases}
	writeMigrationSummary(w, direct, migrationAgents{From: migrationEnd{Node: v.From}, To: migrationEnd{Node: v.To}}, v.StrategyReason)
	if v.DestinationReason != "" {
		fmt.Fprintf(w, "destination %s: %s\n", v.To, v.DestinationReason)
	}
	if v.StrategyReason != "" {
		fmt.Fprintf(w, "strategy %s: %s\n", v.Strategy, v.StrategyReason)
	}
	return nil
}
