package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/internal/units"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() { register(newMigrateCommand) }

const (
	// exitMigrationHeld is migrate's exit status when the move could be
	// neither finished nor undone: the source keeps the container stopped
	// until --resume or --abort. Any other failure exits 1.
	exitMigrationHeld = 3
	// agentCheckTimeout bounds asking each agent who it is before a move,
	// so that a wrong address fails at once rather than mid-migration.
	agentCheckTimeout = 15 * time.Second
	// migrationIDBytes is the randomness of a generated migration ID
	// (12 hex digits after "m-").
	migrationIDBytes = 6
	// rootJournalDir is where root's migrate keeps its journal.
	rootJournalDir = "/var/lib/godwit/migrations"
	// agentsFileSuffix names the file beside a journal record that says
	// which nodes the migration runs between. It must not end in ".json",
	// which the journal reads as records.
	agentsFileSuffix = ".agents"
)

// phaseOrder lists the phases in the order a summary prints them.
var phaseOrder = []migrate.Phase{
	migrate.PhasePrepare, migrate.PhaseSync, migrate.PhaseDump, migrate.PhaseTransfer, migrate.PhaseRestore,
	migrate.PhaseReady, migrate.PhaseCommitted, migrate.PhaseDone, migrate.PhaseAborted,
}

// migrateOptions are migrate's flags.
type migrateOptions struct {
	from, to     string
	strategy     string
	id           string
	resume       string
	abort        string
	journal      string
	abortTimeout time.Duration
	// stepTimeout and stallTimeout bound a call that does not answer
	// and a data connection that moves nothing (DriveOptions).
	stepTimeout  time.Duration
	stallTimeout time.Duration
	out          *outputFormat
	global       *globalOptions // the CLI's TLS credentials, for both agents
	// minimizeDowntime lets auto pick post-copy.
	minimizeDowntime bool

	// want is --strategy, parsed; the strategy itself is chosen once both
	// agents said what they support (migrate.Choose, in start).
	want migrate.Strategy
}

func newMigrateCommand(g *globalOptions) *cobra.Command {
	o := &migrateOptions{global: g}
	var cluster *clusterMigrateFlags
	cmd := &cobra.Command{
		Use:   "migrate NAME [--to NODE | --from-agent ADDR --to-agent ADDR] [--strategy auto|stop-copy|stream|pre-copy|post-copy] [--detach] [-o json]",
		Short: "Live-migrate a running container to another node of the cluster, or from one agent to another",
		Long: `In a cluster (the target is a scheduler: --addr, GODWIT_ADDR or the current
context), ask the cluster's leader to move a running container to --to NODE,
or to the node placement picks. The leader chooses the strategy as below from
what both nodes support, records the migration in raft, drives both agents
and commits the move; it goes on if this command is interrupted, and a new
leader takes it over if the leader fails. migrate follows it with the same
progress and final statistics as below, adding why this destination and why
this strategy (-o json: the record, as ` + "`godwit migration inspect -o json`" + `
prints it); it re-attaches when the leader fails over. A migration that ends
aborted exits with status 1 and its error. --detach prints the migration's ID
and returns at once: ` + "`godwit migration ls`, `migration inspect ID`" + ` and
` + "`migration cancel ID`" + ` follow it.

With --from-agent and --to-agent (or without a cluster), move a running
container from the agent at --from-agent to the agent at
--to-agent, keeping its memory, its IP and its TCP connections. The container
is frozen and dumped, its checkpoint goes from agent to agent, the destination
restores it held stopped, and only then does it run there: the source keeps
its stopped copy until the destination runs the container, so that exactly
one copy ever runs.

Strategies (--strategy): stop-copy freezes, dumps, sends and restores;
stream dumps the memory straight into a CRIU page server on the destination;
pre-copy copies the memory while the container runs, round after round, then
freezes for a short final dump (it needs the kernel's soft-dirty tracking);
post-copy restores at once and lets the memory follow. Both agents are asked
what they support on their hosts (as ` + "`godwit node info`" + ` shows it) before
anything stops: auto, the default, picks the first of pre-copy, stream and
stop-copy that both support and says why; a named strategy that one host
lacks is refused with the reason. Auto picks post-copy only with
--minimize-downtime, since until the last page has arrived losing either
node loses the container.

Any failure before the destination runs the container undoes the move: the
destination discards its copy, and the container runs on the source again
from where it was (exit status 1). Ctrl-C does the same. When the destination
cannot acknowledge the abort, the source keeps the container stopped rather
than risk two running copies: migrate says so and exits with status 3; once
the destination is reachable, finish the move with --resume ID or undo it
with --abort ID (with the same two agents).

Nothing waits for ever on an agent that stopped answering (a hung or stopped
process, a cut network): each call to an agent that reports no progress
(prepare, dump, restore, commit, abort, finish) fails after --step-timeout,
and a transfer between the agents on which no byte moves for
--stall-timeout fails naming the peer; the rules above then apply.

The driver's record of each migration is kept in a journal directory
(--journal; default $XDG_STATE_HOME/godwit/migrations, else
~/.local/state/godwit/migrations, and /var/lib/godwit/migrations for root),
written at every phase, which --resume and --abort read.

Progress goes to standard error. Standard output gets one line (migrated
NAME from A to B (ID): downtime, total, bytes sent, strategy) and the time of
each phase; with -o json one object: id, container, from, to, strategy,
strategy_reason, phase, downtime_ms, total_ms, bytes_sent, phases (phase ->
ms), warnings, and for pre-copy pre_copy (its rounds and the rule that
stopped them).`,
		Example: `  godwit migrate c1 --to node2
  godwit migrate c1 --minimize-downtime --detach
  godwit migrate c1 --from-agent 10.0.0.1:7701 --to-agent 10.0.0.2:7701
  godwit migrate --resume m-0123456789ab --from-agent 10.0.0.1:7701 --to-agent 10.0.0.2:7701
  godwit migrate --abort m-0123456789ab --from-agent 10.0.0.1:7701 --to-agent 10.0.0.2:7701`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if handled, err := migrateInCluster(cmd, g, o, cluster, args); handled {
				return err
			}
			if err := o.check(args, cmd.Flags().Changed); err != nil {
				return err
			}
			dir := o.journal
			if dir == "" {
				var err error
				if dir, err = defaultJournalDir(os.Geteuid(), os.Getenv); err != nil {
					return err
				}
			}
			j, err := migrate.OpenJournal(dir)
			if err != nil {
				return fmt.Errorf("%w: give a writable --journal DIR", err)
			}
			ctx, stop := interruptible(cmd)
			defer stop()
			r := &migrateRun{opts: o, journal: j, dir: dir, stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr()}
			switch {
			case o.resume != "":
				return r.finishHeld(ctx, o.resume, false)
			case o.abort != "":
				return r.finishHeld(ctx, o.abort, true)
			}
			return r.start(ctx, args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.from, "from-agent", "", "`ADDR` of the agent the container runs on (required)")
	f.StringVar(&o.to, "to-agent", "", "`ADDR` of the agent to move the container to (required)")
	f.StringVar(&o.strategy, "strategy", string(migrate.Auto), "auto, stop-copy, stream, pre-copy or post-copy (auto: the best that both agents support)")
	f.BoolVar(&o.minimizeDowntime, "minimize-downtime", false, "let auto pick post-copy, whose downtime hardly grows with memory: losing either node before all pages have arrived loses the container")
	f.StringVar(&o.id, "id", "", "migration `ID` (default: generated, m- and 12 hex digits)")
	f.StringVar(&o.resume, "resume", "", "finish held migration `ID` (with the same two agents)")
	f.StringVar(&o.abort, "abort", "", "undo held migration `ID`: the container runs on the source again (with the same two agents)")
	f.StringVar(&o.journal, "journal", "", "`DIR` holding the driver's migration records (default $XDG_STATE_HOME/godwit/migrations, ~/.local/state/godwit/migrations, or /var/lib/godwit/migrations as root)")
	f.DurationVar(&o.abortTimeout, "abort-timeout", time.Minute, "how long to keep trying to give the container back to the source after a failure before leaving it held")
	f.DurationVar(&o.stepTimeout, "step-timeout", migrate.DefaultStepTimeout, "how long one call to an agent that reports no progress (prepare, dump, restore, commit, abort, finish) may take before the move treats the agent as gone")
	f.DurationVar(&o.stallTimeout, "stall-timeout", datachan.DefaultStallTimeout, "how long a transfer between the agents may move no byte before it fails")
	cluster = addClusterMigrateFlags(cmd)
	o.out = addOutputFlag(cmd)
	return cmd
}

// check refuses bad arguments and flags before anything is dialled or
// recorded; changed tells whether a flag was given.
func (o *migrateOptions) check(args []string, changed func(string) bool) error {
	finishing := o.resume != "" || o.abort != ""
	switch {
	case o.resume != "" && o.abort != "":
		return errors.New("--resume and --abort exclude each other: give one")
	case finishing && len(args) > 0:
		return fmt.Errorf("--resume and --abort take a migration ID, whose record names its container: drop %q", strings.Join(args, " "))
	case !finishing && len(args) != 1:
		return errors.New("name one container to move: godwit migrate NAME --from-agent ADDR --to-agent ADDR")
	}
	if finishing {
		for _, name := range []string{"strategy", "id", "minimize-downtime"} {
			if changed(name) {
				return fmt.Errorf("--%s applies to a new migration; a held one keeps what it was started with", name)
			}
		}
	}
	switch {
	case o.from == "":
		return errors.New("--from-agent ADDR is required: the agent the container runs on")
	case o.to == "":
		return errors.New("--to-agent ADDR is required: the agent to move the container to")
	case o.from == o.to:
		return fmt.Errorf("--from-agent and --to-agent are both %s: a migration moves a container between two agents", o.from)
	case o.abortTimeout <= 0:
		return fmt.Errorf("--abort-timeout %s: want a positive duration", o.abortTimeout)
	case o.stepTimeout <= 0:
		return fmt.Errorf("--step-timeout %s: want a positive duration", o.stepTimeout)
	case o.stallTimeout <= 0 || o.stallTimeout > datachan.MaxStallTimeout:
		return fmt.Errorf("--stall-timeout %s: want a positive duration up to %s", o.stallTimeout, datachan.MaxStallTimeout)
	}
	var err error
	if o.want, err = migrate.ParseStrategy(o.strategy); err != nil {
		return fmt.Errorf("--strategy: %w", err)
	}
	if o.minimizeDowntime && o.want != migrate.Auto {
		return fmt.Errorf("--minimize-downtime lets --strategy auto pick post-copy; --strategy %s leaves nothing to pick: drop one of them", o.want)
	}
	return nil
}

// defaultJournalDir is where migrate keeps its records without --journal:
// the XDG state directory of the user, or /var/lib for root.
func defaultJournalDir(euid int, getenv func(string) string) (string, error) {
	if euid == 0 {
		return rootJournalDir, nil
	}
	// The XDG spec has relative values ignored.
	if d := getenv("XDG_STATE_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "godwit", "migrations"), nil
	}
	home := getenv("HOME")
	if !filepath.IsAbs(home) {
		return "", errors.New("no directory for the migration journal: HOME is not set; give --journal DIR")
	}
	return filepath.Join(home, ".local", "state", "godwit", "migrations"), nil
}

// newMigrationID makes an ID for a migration: "m-" and 12 hex digits.
func newMigrationID() string {
	b := make([]byte, migrationIDBytes)
	_, _ = rand.Read(b) // never fails: crypto/rand aborts the program instead
	return "m-" + hex.EncodeToString(b)
}

// migrationEnd is one agent of a migration, as the CLI reached it.
type migrationEnd struct {
	Address string `json:"address"` // as given on the command line
	Node    string `json:"node"`    // the agent's node name
}

// migrationAgents is what the journal keeps beside a record: the two
// agents, so that --resume and --abort refuse a different pair (an abort
// sent to the source as if it were the destination would discard the
// source's checkpoint).
type migrationAgents struct {
	From migrationEnd `json:"from"`
	To   migrationEnd `json:"to"`
}

// migrateRun is one invocation of migrate.
type migrateRun struct {
	opts           *migrateOptions
	journal        *migrate.Journal
	dir            string
	stdout, stderr io.Writer
}

func (r *migrateRun) agentsPath(id string) string { return filepath.Join(r.dir, id+agentsFileSuffix) }

// start drives a new migration of container name.
func (r *migrateRun) start(ctx context.Context, name string) error {
	id := r.opts.id
	if id == "" {
		id = newMigrationID()
	}
	switch rec, err := r.journal.Get(id); {
	case err == nil:
		return fmt.Errorf("--id %s: the journal %s already has migration %s (%s, phase %s): pick another ID, or finish it with --resume or --abort",
			id, r.dir, id, rec.Container, rec.Phase)
	case !errors.Is(err, migrate.ErrUnknownMigration):
		return fmt.Errorf("--id: %w", err)
	}
	src, dst, closeAll, err := dialMigrationAgents(ctx, r.opts.global, r.opts.from, r.opts.to, true)
	if err != nil {
		return err
	}
	defer closeAll()
	// Chosen before anything is recorded or frozen: a strategy one host
	// lacks stops the move here, with why.
	choice, err := migrate.Choose(r.opts.want, src.caps, dst.caps, r.opts.minimizeDowntime)
	if err != nil {
		return fmt.Errorf("cannot migrate %s from node %s to node %s: %w; nothing was stopped: pick another --strategy (auto picks the best both support), or fix the host as `godwit doctor` says there",
			name, src.end.Node, dst.end.Node, err)
	}
	agents := migrationAgents{From: src.end, To: dst.end}
	if err := r.writeAgents(id, agents); err != nil {
		return err
	}
	label := "migrate " + name
	fmt.Fprintf(r.stderr, "%s: migration %s from %s (node %s) to %s (node %s), strategy %s: %s\n",
		label, id, src.end.Address, src.end.Node, dst.end.Address, dst.end.Node, choice.Strategy, choice.Reason)
	if choice.Strategy == migrate.PostCopy {
		writePostCopyWarning(r.stderr, label, src.end.Node, dst.end.Node)
	}
	p := newMigrationProgress(r.stderr, label)
	res, err := migrate.Drive(ctx, migrate.Migration{ID: id, Container: name, Strategy: choice.Strategy},
		src.agent, dst.agent, r.driveOptions(p))
	return r.report(res, err, p, agents, choice.Reason)
}

// writePostCopyWarning warns that a post-copy move puts the container at
// the mercy of both nodes until its memory has arrived.
func writePostCopyWarning(w io.Writer, label, src, dst string) {
	fmt.Fprintf(w, "%s: warning: post-copy runs the container on node %s before all its memory has arrived: until the last page is in, losing either node (%s or %s) loses the container\n",
		label, dst, src, dst)
}

// finishHeld resumes (abort false) or aborts migration id from its record.
func (r *migrateRun) finishHeld(ctx context.Context, id string, abort bool) error {
	rec, err := r.journal.Get(id)
	if errors.Is(err, migrate.ErrUnknownMigration) {
		return fmt.Errorf("no migration %s in the journal %s: give --journal DIR where `godwit migrate` recorded it", id, r.dir)
	}
	if err != nil {
		return err
	}
	recorded, err := r.readAgents(id)
	if err != nil {
		return err
	}
	src, dst, closeAll, err := dialMigrationAgents(ctx, r.opts.global, r.opts.from, r.opts.to, false)
	if err != nil {
		return err
	}
	defer closeAll()
	if recorded != nil && (recorded.From.Node != src.end.Node || recorded.To.Node != dst.end.Node) {
		return fmt.Errorf("migration %s moves %s from node %s (%s) to node %s (%s), but --from-agent %s is node %s and --to-agent %s is node %s: give the agents it was started with",
			id, rec.Container, recorded.From.Node, recorded.From.Address, recorded.To.Node, recorded.To.Address,
			src.end.Address, src.end.Node, dst.end.Address, dst.end.Node)
	}
	if recorded == nil {
		fmt.Fprintf(r.stderr, "warning: %s is missing, so the agents of migration %s cannot be checked: make sure --from-agent is its source and --to-agent its destination\n",
			r.agentsPath(id), id)
	}
	agents := migrationAgents{From: src.end, To: dst.end}
	p := newMigrationProgress(r.stderr, "migrate "+id)
	var res *migrate.Result
	if abort {
		res, err = migrate.AbortMigration(ctx, rec, src.agent, dst.agent, r.driveOptions(p))
	} else {
		res, err = migrate.Resume(ctx, rec, src.agent, dst.agent, r.driveOptions(p))
	}
	return r.report(res, err, p, agents, "")
}

func (r *migrateRun) driveOptions(p *migrationProgress) migrate.DriveOptions {
	return migrate.DriveOptions{
		OnEvent:      p.event,
		OnRecord:     r.saveRecord,
		AbortTimeout: r.opts.abortTimeout,
		StepTimeout:  r.opts.stepTimeout,
		StallTimeout: r.opts.stallTimeout,
	}
}

// failpointDriverAfter names the failpoint that kills the driver (this
// process) right after it recorded a phase, e.g.
// "migrate/driver/after-ready", for fault tests.
const failpointDriverAfter = "migrate/driver/after-"

// saveRecord writes the driver's record to the journal at every phase.
func (r *migrateRun) saveRecord(rec *migrate.Record) error {
	if err := r.journal.Put(rec); err != nil {
		return err
	}
	failpoint.Hit(failpointDriverAfter + string(rec.Phase))
	return nil
}

// report prints how the migration ended and turns a held migration into
// exit status 3.
func (r *migrateRun) report(res *migrate.Result, err error, p *migrationProgress, agents migrationAgents, strategyWhy string) error {
	p.ui.finish()
	if res != nil && res.Record != nil {
		v := newMigrationView(res, agents.From.Address, agents.To.Address)
		v.StrategyReason = strategyWhy
		if *r.opts.out == outputJSON {
			if perr := printJSON(r.stdout, v); perr != nil {
				return errors.Join(err, perr)
			}
		} else if err == nil {
			writeMigrationSummary(r.stdout, v, agents, strategyWhy)
		}
	}
	var held *migrate.HeldError
	if errors.As(err, &held) {
		if !p.printed(held.Error()) {
			fmt.Fprintln(r.stderr, "godwit:", held.Error())
		}
		undo := "run the container on the source again with"
		if !held.DestinationAborted {
			fmt.Fprintf(r.stderr, "godwit: finish the move with:  %s\n", r.finishCommand("--resume", held.ID, agents))
			undo = "or " + undo
		}
		fmt.Fprintf(r.stderr, "godwit: %s:  %s\n", undo, r.finishCommand("--abort", held.ID, agents))
		return exitError{code: exitMigrationHeld}
	}
	return err
}

// finishCommand is the command line that resumes or aborts migration id
// with the same agents and journal.
func (r *migrateRun) finishCommand(verb, id string, agents migrationAgents) string {
	line := fmt.Sprintf("godwit migrate %s %s --from-agent %s --to-agent %s", verb, id, agents.From.Address, agents.To.Address)
	if r.opts.journal != "" {
		line += " --journal " + r.opts.journal
	}
	return line
}

// writeMigrationSummary prints the outcome: the statistics of a move, or
// where the container runs after an abort.
func writeMigrationSummary(w io.Writer, v migrationView, agents migrationAgents, strategyWhy string) {
	if v.Phase == string(migrate.PhaseAborted) {
		fmt.Fprintf(w, "aborted migration %s: %s runs on the source, %s (node %s)\n", v.ID, v.Container, v.From, agents.From.Node)
		return
	}
	// The reason in full went out before the move; "auto" or "asked for"
	// is enough here.
	strategy := v.Strategy
	if why, _, _ := strings.Cut(strategyWhy, ":"); why != "" {
		strategy += " (" + why + ")"
	}
	ms := func(n int64) string { return shortDuration(time.Duration(n) * time.Millisecond) }
	fmt.Fprintf(w, "migrated %s from %s to %s (%s): downtime %s, total %s, %s sent, strategy %s\n",
		v.Container, v.From, v.To, v.ID, ms(v.DowntimeMs), ms(v.TotalMs), units.FormatBytes(v.BytesSent), strategy)
	var phases []string
	for _, ph := range phaseOrder {
		if d, ok := v.Phases[string(ph)]; ok {
			phases = append(phases, fmt.Sprintf("%s %s", ph, ms(d)))
		}
	}
	if len(phases) > 0 {
		fmt.Fprintf(w, "phases: %s\n", strings.Join(phases, ", "))
	}
	if v.LayerBytes > 0 || v.SyncBytes > 0 {
		fmt.Fprintf(w, "root filesystem before the freeze: %s of image layers, %s of the writable layer\n",
			units.FormatBytes(v.LayerBytes), units.FormatBytes(v.SyncBytes))
	}
	if pc := v.PreCopy; pc != nil {
		fmt.Fprintf(w, "pre-copy: %d rounds, %s sent while the container ran; stopped by %q: %s\n",
			len(pc.Rounds), units.FormatBytes(pc.bytesSent()), pc.Rule, pc.Detail)
	}
	for _, warning := range v.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warning)
	}
}

// migrationView is a migration's Result as -o json prints it.
type migrationView struct {
	ID        string `json:"id"`
	Container string `json:"container"`
	From      string `json:"from"`
	To        string `json:"to"`
	Strategy  string `json:"strategy"`
	// StrategyReason is why the strategy was chosen ("asked for", or
	// auto's reason, naming what each host lacked); empty for --resume
	// and --abort.
	StrategyReason string `json:"strategy_reason,omitempty"`
	// PreCopy is how pre-copy's rounds went (pre-copy only).
	PreCopy *preCopyView `json:"pre_copy,omitempty"`
	// Phase is where the move stands: done, aborted, or the phase a held
	// migration stopped in.
	Phase      string           `json:"phase"`
	DowntimeMs int64            `json:"downtime_ms"`
	TotalMs    int64            `json:"total_ms"`
	BytesSent  int64            `json:"bytes_sent"`
	Phases     map[string]int64 `json:"phases"`
	Warnings   []string         `json:"warnings"`
	// LayerBytes and SyncBytes are the root filesystem sent before the
	// freeze: image layers the destination lacked, the writable layer
	// synced while the container ran.
	LayerBytes int64 `json:"layer_bytes,omitempty"`
	SyncBytes  int64 `json:"sync_bytes,omitempty"`
}

func newMigrationView(res *migrate.Result, from, to string) migrationView {
	v := migrationView{
		ID: res.ID, From: from, To: to, Strategy: string(res.Strategy),
		DowntimeMs: res.Downtime.Milliseconds(), TotalMs: res.Total.Milliseconds(), BytesSent: res.BytesSent,
		LayerBytes: res.LayerBytes, SyncBytes: res.SyncBytes,
		Phases: make(map[string]int64, len(res.Phases)), Warnings: nonNil(res.Warnings),
	}
	if res.Record != nil {
		v.Container, v.Phase = res.Record.Container, string(res.Record.Phase)
	}
	v.PreCopy = newPreCopyView(res.PreCopy)
	for ph, d := range res.Phases {
		v.Phases[string(ph)] = d.Milliseconds()
	}
	return v
}

// migrationProgress turns the driver's events into the progress display:
// a bar or line per phase, and a line for each thing that happens within
// a phase (an abort under way, a warning).
type migrationProgress struct {
	ui      *progressUI
	w       io.Writer
	label   string
	phase   migrate.Phase
	message string
	shown   []string
}

func newMigrationProgress(w io.Writer, label string) *migrationProgress {
	return &migrationProgress{ui: newProgressUI(w, label), w: w, label: label}
}

// event is DriveOptions.OnEvent; the driver calls it one at a time.
func (p *migrationProgress) event(ev migrate.Event) {
	switch {
	case ev.Phase != p.phase:
		p.phase, p.message = ev.Phase, ev.Message
	case ev.Message != p.message && ev.BytesDone == 0 && ev.BytesTotal == 0:
		p.message = ev.Message
		p.ui.finish()
		fmt.Fprintf(p.w, "%s: %s\n", p.label, ev.Message)
		p.shown = append(p.shown, ev.Message)
		return
	}
	p.ui.update(string(ev.Phase), ev.BytesDone, ev.BytesTotal)
}

// printed tells whether message was already shown as an event.
func (p *migrationProgress) printed(message string) bool { return slices.Contains(p.shown, message) }

// migrationPeer is one agent of a migration, dialled.
type migrationPeer struct {
	end   migrationEnd
	agent *agentclient.MigrationAgent
	// caps are the strategies it supports, when they were asked for.
	caps migrate.Capabilities
}

// dialMigrationAgents dials both agents and asks each who it is (and,
// with strategies, which migration strategies it supports), so that an
// unreachable agent, or the same one twice under two addresses, is
// refused before anything happens.
func dialMigrationAgents(ctx context.Context, g *globalOptions, from, to string, strategies bool) (src, dst *migrationPeer, closeAll func(), err error) {
	var closers []func()
	closeConns := func() {
		for _, c := range closers {
			c()
		}
	}
	defer func() {
		if err != nil {
			closeConns()
		}
	}()
	peers := make([]*migrationPeer, 2)
	for i, end := range []struct{ flag, role, addr string }{{"--from-agent", "source", from}, {"--to-agent", "destination", to}} {
		client, closeConn, err := g.withAgent(end.addr).agentClient()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", end.flag, err)
		}
		closers = append(closers, closeConn)
		infoCtx, cancel := context.WithTimeout(ctx, agentCheckTimeout)
		info, err := client.NodeInfo(infoCtx, &pb.NodeInfoRequest{Strategies: strategies})
		cancel()
		if err != nil {
			if mismatch := g.tlsMismatch(ctx, end.addr); mismatch != nil {
				return nil, nil, nil, fmt.Errorf("%s: %w", end.flag, mismatch)
			}
			return nil, nil, nil, fmt.Errorf("cannot reach the %s agent at %s (%s): is `godwit agent` running there? Check %s",
				end.role, end.addr, status.Convert(err).Message(), end.flag)
		}
		peers[i] = &migrationPeer{
			end:   migrationEnd{Address: end.addr, Node: info.GetName()},
			agent: &agentclient.MigrationAgent{Client: client, Addr: dataAddress(info.GetAddress(), end.addr)},
			caps:  capabilitiesOf(info),
		}
	}
	if peers[0].end.Node == peers[1].end.Node {
		return nil, nil, nil, fmt.Errorf("--from-agent %s and --to-agent %s are the same node, %s: a migration moves a container between two agents",
			from, to, peers[0].end.Node)
	}
	return peers[0], peers[1], closeConns, nil
}

// dataAddress is where the source agent sends the checkpoint to an agent:
// the address the agent advertises to other nodes, unless that names no
// host (an agent listening on all addresses), when the address this CLI
// reached it at is the best guess.
func dataAddress(advertised, dialled string) string {
	host, _, err := net.SplitHostPort(advertised)
	if err != nil || host == "" {
		return dialled
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		return dialled
	}
	return advertised
}

// writeAgents records the migration's two agents beside its record,
// before the driver writes the record itself.
func (r *migrateRun) writeAgents(id string, a migrationAgents) error {
	data, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(r.agentsPath(id), append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("record the agents of migration %s: %w: give a writable --journal DIR", id, err)
	}
	return nil
}

// readAgents reads what writeAgents wrote; nil when it is missing.
func (r *migrateRun) readAgents(id string) (*migrationAgents, error) {
	data, err := os.ReadFile(r.agentsPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the agents of migration %s: %w", id, err)
	}
	var a migrationAgents
	if err := json.Unmarshal(data, &a); err != nil {
		return nil, fmt.Errorf("the agents of migration %s: %s is corrupt (%w): remove it to go on without checking them", id, r.agentsPath(id), err)
	}
	return &a, nil
}
