package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// `godwit node drain NODE` asks the scheduler leader to empty a node for
// maintenance: the leader checks that every container can go somewhere,
// cordons the node and moves them, a few at a time, and records every
// step in raft. This command only starts the drain (DrainNode) and
// follows it (WatchDrain, re-attaching as migrate does when the stream
// breaks); interrupting it stops the following, never the drain.
//
// It watches a stream rather than polling InspectDrain: the bytes of the
// moves in flight are soft state that only the leader's migration
// drivers hold, never written to raft, and a stream also says at once
// when a container is blocked.

// drainPolicies are --on-deadline's words.
var drainPolicies = []string{"stop", "fail", "checkpoint"}

type nodeDrainOptions struct {
	deadline    time.Duration
	maxParallel int32
	onDeadline  string
	detach      bool
	watch       bool
	out         *outputFormat
}

func newNodeDrainCommand(g *globalOptions) *cobra.Command {
	o := &nodeDrainOptions{}
	cmd := &cobra.Command{
		Use:   "drain NODE [--deadline DURATION] [--max-parallel K] [--on-deadline stop|fail|checkpoint] [--detach]",
		Short: "Empty a node for maintenance: move every container elsewhere, live, a few at a time",
		Long: `Drain asks the cluster's leader to empty NODE. The leader first checks that
every container on it can go somewhere (room on another node, counted for all
of them together; constraints; CPU features; a migration strategy in common);
if any cannot, the drain is refused with each container and why, and nothing
changes. Otherwise the node becomes draining (nothing new is placed on it) and
its containers are live-migrated, at most --max-parallel at a time. A move that
fails is retried a few times, then the container is blocked; a blocked
container is said at once, with why. The drain is done only when the node holds
no container; it then stays cordoned until ` + "`godwit node uncordon NODE`" + `,
which also ends a drain that is running.

At the --deadline, --on-deadline says what happens to what is left: fail (the
default) ends the drain as failed and leaves it running; stop stops it on the
node and ends the drain as stopped (exit status 0: nothing runs there);
checkpoint checkpoints each container left, stopping it, keeps the checkpoint
on another node that has its image as well as on this one, and puts the
container there, stopped: ` + "`godwit start NAME`" + ` restores it where it was.
The drain survives a failover of the leader. Interrupting this command stops
following the drain, not the drain: follow it again with --watch.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runNodeDrain(cmd, g, o, args[0])
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.deadline, "deadline", 0, "how long the drain may take (e.g. 30m); then --on-deadline applies (default: no deadline)")
	f.Int32Var(&o.maxParallel, "max-parallel", 1, "how many containers may move at once")
	f.StringVar(&o.onDeadline, "on-deadline", "", "what happens at the deadline to what is left: checkpoint (keep it, stopped, on another node), stop, or fail (the default; leave it running)")
	f.BoolVar(&o.detach, "detach", false, "return once the drain has started; the leader goes on with it")
	f.BoolVar(&o.watch, "watch", false, "follow the node's running drain (or show how the last one ended) instead of starting one")
	o.out = addOutputFlag(cmd)
	return cmd
}

func runNodeDrain(cmd *cobra.Command, g *globalOptions, o *nodeDrainOptions, node string) error {
	changed := cmd.Flags().Changed
	if o.watch {
		var given []string
		for _, name := range []string{"deadline", "max-parallel", "on-deadline", "detach"} {
			if changed(name) {
				given = append(given, "--"+name)
			}
		}
		if len(given) > 0 {
			return fmt.Errorf("--watch follows the drain that runs; %s %s for starting one: drop one or the other", strings.Join(given, ", "),
				plural(len(given), "is", "are"))
		}
	}
	switch {
	case o.maxParallel < 1:
		return fmt.Errorf("--max-parallel %d: move at least 1 container at a time", o.maxParallel)
	case o.deadline < 0:
		return fmt.Errorf("--deadline %s: want a positive duration, such as 30m", o.deadline)
	case o.onDeadline != "" && !slices.Contains(drainPolicies, o.onDeadline):
		return fmt.Errorf("--on-deadline %q: want stop or fail", o.onDeadline)
	case o.onDeadline != "" && o.deadline == 0:
		return fmt.Errorf("--on-deadline %s applies at the deadline: give --deadline too", o.onDeadline)
	}
	ctx, stop := interruptible(cmd)
	defer stop()
	r := &drainRun{g: g, node: node, out: *o.out, stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr(), label: "node drain " + node}
	if o.watch {
		return r.followAndReport(ctx)
	}
	req := &pb.DrainNodeRequest{Node: node, DeadlineMs: o.deadline.Milliseconds(), OnDeadline: o.onDeadline, MaxParallel: o.maxParallel}
	if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
		r.rec, err = c.DrainNode(ctx, req)
		return err
	}); err != nil {
		return err
	}
	fmt.Fprintf(r.stderr, "%s: started: %s\n", r.label, drainPlanText(r.rec))
	if o.detach {
		fmt.Fprintf(r.stderr, "%s: follow it with `godwit node drain %s --watch`; end it with `godwit node uncordon %s`\n", r.label, node, node)
		if r.out == outputJSON {
			return printJSON(r.stdout, newDrainView(r.rec))
		}
		_, err := fmt.Fprintf(r.stdout, "node %s is draining\n", node)
		return err
	}
	return r.followAndReport(ctx)
}

// drainPlanText is "3 containers to move, 2 at a time, by 15:04:05, then
// stop".
func drainPlanText(d *pb.Drain) string {
	s := fmt.Sprintf("%d %s to move, %d at a time", d.GetLeft(), plural(int(d.GetLeft()), "container", "containers"), d.GetMaxParallel())
	if dl := timeOrNil(d.GetDeadline()); dl != nil {
		s += fmt.Sprintf(", by %s, then %s", dl.Local().Format(time.TimeOnly), d.GetOnDeadline())
	}
	return s
}

// drainRun is one `godwit node drain` followed.
type drainRun struct {
	g              *globalOptions
	node           string
	out            outputFormat
	stdout, stderr io.Writer
	label          string

	// rec is the latest record the scheduler sent.
	rec *pb.Drain
}

// followAndReport follows the drain to its end and reports how it ended.
func (r *drainRun) followAndReport(ctx context.Context) error {
	p := newDrainProgress(r.stderr, r.label)
	err := r.follow(ctx, p)
	p.ui.finish()
	if err != nil {
		return err
	}
	return r.report()
}

// follow watches the drain until its last message, re-attaching when the
// stream breaks, as migrate's follow does (watchReattachAttempts in a row
// at most), and leaves the final record in r.rec.
func (r *drainRun) follow(ctx context.Context, p *drainProgress) error {
	stopped := func() error {
		return fmt.Errorf("stopped following the drain of node %s; it goes on in the cluster: `godwit node drain %s --watch` follows it again, `godwit node uncordon %s` ends it",
			r.node, r.node, r.node)
	}
	delay := watchReattachDelay
	failed := 0
	for {
		err := r.g.callCluster(func(c pb.ClusterServiceClient) error { return r.watchOnce(ctx, c, p) })
		var broken *watchBroken
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return stopped()
		case !errors.As(err, &broken):
			return err
		}
		if broken.progressed {
			failed, delay = 0, watchReattachDelay
		}
		if failed++; failed > watchReattachAttempts {
			return fmt.Errorf("lost track of the drain of node %s after %d attempts to re-attach (%s); it goes on in the cluster: follow it with `godwit node drain %s --watch` once a scheduler answers (`godwit cluster status`)",
				r.node, watchReattachAttempts, broken.cause, r.node)
		}
		p.interrupt(fmt.Sprintf("lost the progress stream (%s); re-attaching to the drain (%d of %d)", broken.cause, failed, watchReattachAttempts))
		select {
		case <-ctx.Done():
			return stopped()
		case <-time.After(delay):
		}
		delay = min(2*delay, watchReattachMaxDelay)
	}
}

// watchOnce follows one WatchDrain stream: nil after the last message, a
// *watchBroken when a new call may get past how it ended, else the
// call's error.
func (r *drainRun) watchOnce(ctx context.Context, c pb.ClusterServiceClient, p *drainProgress) error {
	stream, err := c.WatchDrain(ctx, &pb.NodeRef{Name: r.node})
	if err != nil {
		return reattachable(ctx, err, false)
	}
	progressed := false
	for {
		m, err := stream.Recv()
		switch {
		case err == io.EOF:
			return &watchBroken{cause: "the scheduler ended the stream before the drain ended", progressed: progressed}
		case err != nil:
			return reattachable(ctx, err, progressed)
		}
		progressed = true
		if d := m.GetDrain(); d != nil {
			r.rec = d
		}
		p.update(m)
		if m.GetDone() {
			return nil
		}
	}
}

// report prints how the drain ended; one that did not end done is an
// error.
func (r *drainRun) report() error {
	v := newDrainView(r.rec)
	if r.out == outputJSON {
		if err := printJSON(r.stdout, v); err != nil {
			return err
		}
	}
	took := "-"
	if v.Started != nil && v.Ended != nil {
		took = shortDuration(v.Ended.Sub(*v.Started))
	}
	if v.Status == drainStopped {
		// The policy the operator chose did its work: nothing runs on
		// the node.
		if r.out == outputJSON {
			return nil
		}
		_, err := fmt.Fprintf(r.stdout, "node %s: the drain reached its deadline after %s: %d %s moved; %s\n",
			v.Node, took, v.Moved, plural(int(v.Moved), "container", "containers"), v.Reason)
		return err
	}
	if v.Status != "done" {
		var b strings.Builder
		fmt.Fprintf(&b, "the drain of node %s %s after %s: %d moved, %d failed %s, %d left", v.Node, endedWord(v.Status), took,
			v.Moved, v.Failed, plural(int(v.Failed), "move", "moves"), v.Left)
		if v.Reason != "" {
			b.WriteString(": " + v.Reason)
		}
		for _, bl := range v.Blocked {
			fmt.Fprintf(&b, "\n  %s: %s", bl.Container, bl.Reason)
		}
		return errors.New(b.String())
	}
	if r.out == outputJSON {
		return nil
	}
	checkpointed := ""
	if v.Checkpointed > 0 {
		checkpointed = fmt.Sprintf(", %d checkpointed to other nodes at the deadline (`godwit start NAME` restores each there)", v.Checkpointed)
	}
	_, err := fmt.Fprintf(r.stdout, "node %s drained in %s: %d %s moved, %d failed %s%s; it stays cordoned for its maintenance: `godwit node uncordon %s` once it is back\n",
		v.Node, took, v.Moved, plural(int(v.Moved), "container", "containers"), v.Failed, plural(int(v.Failed), "move", "moves"), checkpointed, v.Node)
	return err
}

// drainStopped is a drain that ended at its deadline with what was left
// stopped (state.DrainStopped).
const drainStopped = "stopped"

func endedWord(status string) string {
	switch status {
	case "cancelled":
		return "was cancelled"
	case "running":
		return "is still running"
	}
	return status
}

// drainProgress shows a drain's progress on stderr: a line when a
// container is blocked (at once, with why), when the counts change (with
// the time left, once the leader can estimate it), and a bar of the bytes
// of the moves in flight (one line per set of moves when stderr is no
// terminal).
type drainProgress struct {
	ui    *progressUI
	w     io.Writer
	label string
	// blocked is the reason shown for each blocked container, by ID.
	blocked map[string]string
	// counts is the last counts line shown.
	counts string
	// moving is the set of moves the bar shows, and its text.
	moving, movingText string
}

func newDrainProgress(w io.Writer, label string) *drainProgress {
	return &drainProgress{ui: newProgressUI(w, label), w: w, label: label, blocked: map[string]string{}}
}

// update shows what changed in m.
func (p *drainProgress) update(m *pb.DrainProgress) {
	d := m.GetDrain()
	for _, b := range d.GetBlocked() {
		if p.blocked[b.GetContainerId()] != b.GetReason() {
			p.blocked[b.GetContainerId()] = b.GetReason()
			p.line(fmt.Sprintf("%s cannot move: %s", b.GetContainer(), b.GetReason()))
		}
	}
	if counts := fmt.Sprintf("%d left, %d moved, %d failed", d.GetLeft(), d.GetMoved(), d.GetFailed()); counts != p.counts {
		p.counts = counts
		if eta := m.GetEtaMs(); eta > 0 && !m.GetDone() {
			counts += "; about " + shortDuration((time.Duration(eta) * time.Millisecond).Round(time.Second)) + " to go"
		}
		p.line(counts)
	}
	if m.GetDone() {
		return
	}
	var key, text []string
	for _, mv := range m.GetMoves() {
		key = append(key, mv.GetMigrationId())
		text = append(text, mv.GetContainer()+" to "+mv.GetDestination())
	}
	if k := strings.Join(key, ","); k != p.moving {
		p.moving, p.movingText = k, "moving "+strings.Join(text, ", ")
		p.ui.finish()
		p.ui.phase = ""
	}
	if len(key) == 0 {
		return
	}
	p.ui.update(p.movingText, m.GetBytesDone(), m.GetBytesTotal())
}

// line prints note on a line of its own, the bar redrawn after it.
func (p *drainProgress) line(note string) {
	p.ui.finish()
	if p.ui.tty {
		p.ui.phase = ""
	}
	fmt.Fprintf(p.w, "%s: %s\n", p.label, note)
}

// interrupt says why the progress stopped for a while.
func (p *drainProgress) interrupt(note string) {
	p.ui.finish()
	p.ui.phase = ""
	p.moving = ""
	fmt.Fprintf(p.w, "%s: %s\n", p.label, note)
}

// drainView is a drain's record as `node drain -o json` prints it. Its
// keys are part of the CLI's contract.
type drainView struct {
	Node string `json:"node"`
	// Status is running, done, failed, cancelled or stopped (the
	// deadline passed and --on-deadline stop stopped what was left).
	Status      string     `json:"status"`
	Deadline    *time.Time `json:"deadline,omitempty"`
	OnDeadline  string     `json:"on_deadline,omitempty"`
	MaxParallel int32      `json:"max_parallel"`
	Started     *time.Time `json:"started,omitempty"`
	Ended       *time.Time `json:"ended,omitempty"`
	Updated     *time.Time `json:"updated,omitempty"`
	// Left is how many containers are still on the node; Moved how many
	// the drain moved; Failed how many of its moves failed.
	Left   int32 `json:"left"`
	Moved  int32 `json:"moved"`
	Failed int32 `json:"failed"`
	// Checkpointed counts the containers the deadline's checkpoint
	// policy kept, stopped, on other nodes.
	Checkpointed int32 `json:"checkpointed"`
	// Blocked are the containers that cannot move now, and why.
	Blocked     []drainBlockedView `json:"blocked"`
	RequestedBy string             `json:"requested_by,omitempty"`
	// Reason says why it ended when it did not end done.
	Reason string `json:"reason,omitempty"`
}

type drainBlockedView struct {
	Container   string `json:"container"`
	ContainerID string `json:"container_id"`
	Reason      string `json:"reason"`
}

func newDrainView(d *pb.Drain) drainView {
	v := drainView{
		Node: d.GetNode(), Status: d.GetStatus(), Deadline: timeOrNil(d.GetDeadline()), OnDeadline: d.GetOnDeadline(),
		MaxParallel: d.GetMaxParallel(), Started: timeOrNil(d.GetStarted()), Ended: timeOrNil(d.GetEnded()), Updated: timeOrNil(d.GetUpdated()),
		Left: d.GetLeft(), Moved: d.GetMoved(), Failed: d.GetFailed(), Checkpointed: d.GetCheckpointed(), Blocked: []drainBlockedView{},
		RequestedBy: d.GetRequestedBy(), Reason: d.GetReason(),
	}
	for _, b := range d.GetBlocked() {
		v.Blocked = append(v.Blocked, drainBlockedView{Container: b.GetContainer(), ContainerID: b.GetContainerId(), Reason: b.GetReason()})
	}
	return v
}
