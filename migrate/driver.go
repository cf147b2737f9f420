package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/godwit/godwit/internal/datachan"
)

// The driver's defaults for undoing a migration. An abort is retried
// because the destination's acknowledgement is the only thing that lets
// the source run its copy again: giving up after one lost reply would
// leave the container stopped for an operator to finish.
const (
	defaultAbortTimeout  = time.Minute
	defaultAbortAttempts = 5
	defaultAbortBackoff  = 500 * time.Millisecond
	// maxAbortBackoff caps the doubling pause between attempts.
	maxAbortBackoff = 8 * time.Second
)

// ErrHeld marks a migration the driver could neither finish nor undo: the
// source keeps the container stopped (its copy and images intact) until
// `godwit migrate --resume ID` or `--abort ID` completes the move. Errors
// matching it are *HeldError.
var ErrHeld = errors.New("migration held: the source keeps the container stopped")

// HeldError says why a migration is held with the container stopped on
// the source, and what finishes it. It matches ErrHeld.
type HeldError struct {
	ID string
	// Phase is the phase the driver's record reached.
	Phase Phase
	// Cause is what failed the migration.
	Cause error
	// Err is why the source could not run the container again: the
	// destination did not acknowledge the abort, or (DestinationAborted)
	// the source's resume failed after it did.
	Err error
	// DestinationAborted is set when the destination acknowledged the
	// abort, so that only the source's resume is missing.
	DestinationAborted bool
}

func (e *HeldError) Error() string {
	if e.DestinationAborted {
		return fmt.Sprintf("migration %s failed in %s: %v; the destination discarded its copy, but the source could not run the container again (%v), so it stays stopped: run `godwit migrate --abort %s`",
			e.ID, e.Phase, e.Cause, e.Err, e.ID)
	}
	return fmt.Sprintf("migration %s failed in %s: %v; the destination did not acknowledge the abort (%v), so the source keeps the container stopped rather than risk two running copies: once the destination is reachable, run `godwit migrate --resume %s` or `godwit migrate --abort %s`",
		e.ID, e.Phase, e.Cause, e.Err, e.ID, e.ID)
}

// ErrDecisionUnknown is what a DriveOptions.Decide error wraps when the
// decision may or may not have been made (the raft apply timed out, the
// leader changed during it).
var ErrDecisionUnknown = errors.New("the move's decision is unknown")

// DecisionError says that a move stopped at its decision without knowing
// it: the destination holds its ready copy stopped, the source its frozen
// one, and neither runs until the caller settles it: Resume if the
// decision was made, AbortMigration if not. It matches ErrHeld and
// ErrDecisionUnknown.
type DecisionError struct {
	ID  string
	Err error
}

func (e *DecisionError) Error() string {
	return fmt.Sprintf("migration %s stopped at its decision, which is unknown (%v): both copies are held stopped until it is settled: resume it if it was decided, abort it if not",
		e.ID, e.Err)
}

// Is makes a DecisionError match ErrHeld.
func (e *DecisionError) Is(target error) bool { return target == ErrHeld }

// Unwrap returns the decision's error.
func (e *DecisionError) Unwrap() error { return e.Err }

// Is makes a HeldError match ErrHeld.
func (e *HeldError) Is(target error) bool { return target == ErrHeld }

// Unwrap returns the cause and the reason the source stays stopped.
func (e *HeldError) Unwrap() []error {
	var out []error
	for _, err := range []error{e.Cause, e.Err} {
		if err != nil {
			out = append(out, err)
		}
	}
	return out
}

// Migration is one move for Drive to make.
type Migration struct {
	// ID names the migration on both agents and in the journals; every
	// step is idempotent by it. It must be a valid journal ID.
	ID string
	// Container is the name of the container on the source.
	Container string
	// Strategy is how the memory moves, already chosen (Choose): never
	// Auto. The driver passes it to the destination and records it; the
	// agents carry it out.
	Strategy Strategy
}

// Event is the driver's progress, for a progress bar or a log: one on
// entering each phase, then, during the transfer, one per progress report
// of the source.
type Event struct {
	ID    string
	Phase Phase
	// BytesDone and BytesTotal count the checkpoint sent so far and in
	// all (zero outside the transfer; BytesTotal zero when unknown).
	BytesDone, BytesTotal int64
	// Throughput is the transfer's average rate so far, in bytes per
	// second; zero when unknown.
	Throughput float64
	// ETA is the transfer's expected remaining time, zero when unknown
	// or done.
	ETA time.Duration
	// Message says what happens, for a human.
	Message string
}

// DriveOptions tune Drive, Resume and AbortMigration; the zero value is
// usable.
type DriveOptions struct {
	// OnEvent, if set, receives the progress events, one at a time (during
	// the transfer from the goroutine that sends). It must not block for
	// long: the transfer waits for it.
	OnEvent func(Event)
	// OnRecord, if set, is called with the migration's record after each
	// phase change (and after each pre-copy round), so that the caller
	// persists it (Journal.Put) before the driver goes on. Before the
	// commit an error aborts the migration:
	// a driver that could not record that it froze the container must not
	// freeze it, since a restarted driver would not know to resume it.
	// From the commit on an error is only a warning in the Result (a
	// stale record makes a later --resume repeat idempotent steps).
	OnRecord func(*Record) error
	// Decide, if set, is the move's commit point, owned by the caller: it
	// is called once the destination holds the ready copy (PhaseReady
	// recorded) and before the destination is told to run it, and must
	// make the decision durable (the scheduler commits the container's
	// new node and generation in raft). Once it returned nil the move only
	// finishes: the driver records PhaseCommitted and has the destination
	// run its copy (retried by Resume, which calls Decide again: it must
	// be idempotent). An error aborts the move, unless it wraps
	// ErrDecisionUnknown (the decision may or may not have been made):
	// then the driver neither aborts nor commits, and returns a
	// *DecisionError; the caller settles it with Resume (decided) or
	// AbortMigration (not decided) once it knows. Without Decide the
	// destination's acknowledged commit is the commit point.
	Decide func(ctx context.Context, rec *Record) error
	// FenceDestination, if set, lets an abort go on without the
	// destination's acknowledgement: it is called when the destination
	// could not be told to abort, and must make sure, durably, that the
	// move can no longer commit (the scheduler records it in raft, where
	// its Decide would commit); nil means it did. The source then runs the
	// container again, which is safe because the destination runs its
	// copy only on a commit, and Result.DestinationUnacked tells the
	// caller that the destination may still hold what it prepared, to be
	// dropped (its Abort) once it answers. It needs Decide: without it the
	// destination's acknowledged commit is the commit point, and only the
	// destination's acknowledged abort rules it out. Without
	// FenceDestination such an abort is held (*HeldError).
	FenceDestination func(ctx context.Context, rec *Record, why error) error
	// Now is the clock (default time.Now); it must be safe to call from
	// the sending goroutine.
	Now func() time.Time
	// NewToken makes the data channel token of a transfer (default
	// datachan.NewToken).
	NewToken func() (string, error)
	// AbortTimeout bounds undoing a failed migration: the destination's
	// abort and the source's resume, with their retries (default one
	// minute). Undoing runs even when the driver's context is cancelled
	// (an interrupted driver still returns the container to the source);
	// only this timeout ends it.
	AbortTimeout time.Duration
	// AbortAttempts is how many times the destination's abort, and then
	// the source's resume, are tried (default 5).
	AbortAttempts int
	// AbortBackoff is the first pause between attempts, doubled after
	// each (default 500ms).
	AbortBackoff time.Duration
	// Logger receives the driver's log (default: discarded).
	Logger *slog.Logger
	// Convergence bounds pre-copy's rounds (default DefaultConvergence);
	// only PreCopy uses it.
	Convergence ConvergencePolicy
	// StepTimeout bounds each call to an agent that reports no progress:
	// Describe, Prepare, Dump, Restore, Commit, Finish, and each attempt
	// of Abort and Resume (default DefaultStepTimeout). A call that runs
	// out of it fails with ErrStepTimeout and the usual rules apply:
	// before the commit the move aborts, and a destination that cannot
	// acknowledge the abort leaves it held (driver_timeout.go). The
	// transfers report progress and are bounded by StallTimeout instead.
	StepTimeout time.Duration
	// StallTimeout is how long a data connection of the migration may
	// move no byte before it fails, naming the peer (default: the
	// agents' own, datachan.DefaultStallTimeout). It travels to the
	// agents with every call (datachan.WithStallTimeout, internal/rpc).
	StallTimeout time.Duration
}

func (o DriveOptions) withDefaults() DriveOptions {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewToken == nil {
		o.NewToken = datachan.NewToken
	}
	if o.AbortTimeout <= 0 {
		o.AbortTimeout = defaultAbortTimeout
	}
	if o.AbortAttempts <= 0 {
		o.AbortAttempts = defaultAbortAttempts
	}
	if o.AbortBackoff <= 0 {
		o.AbortBackoff = defaultAbortBackoff
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Convergence.MaxIterations <= 0 {
		o.Convergence = DefaultConvergence
	}
	if o.StepTimeout <= 0 {
		o.StepTimeout = DefaultStepTimeout
	}
	return o
}

// Result is how a migration went. Drive, Resume and AbortMigration return
// one even with an error, holding the record as far as it got.
type Result struct {
	ID       string
	Strategy Strategy
	// Record is the migration's record; its Phase is where the move
	// stands (PhaseDone, PhaseAborted, or an open phase when held, or when
	// a warning left the source's copy to finish).
	Record *Record
	// Downtime is how long the container ran nowhere: from the start of
	// the dump to the end of the commit (or, after an abort, to the source
	// running it again). It differs from Record.Downtime, which runs to
	// PhaseDone and so counts the source's clean-up.
	Downtime time.Duration
	// Total is from the start of the migration to the end of this call.
	Total time.Duration
	// BytesSent is the checkpoint bytes the source reported sending in
	// this call (zero when a resumed migration had no transfer left);
	// pre-copy's rounds are in PreCopy.
	BytesSent int64
	// Phases is how long each phase lasted (Record.PhaseDurations).
	Phases map[Phase]time.Duration
	// Warnings are failures that did not fail the move: after the commit
	// the container runs on the destination whatever happens, so a source
	// that could not remove its stopped copy is reported here, with what
	// to run.
	Warnings []string
	// PreCopy is how pre-copy's rounds went and the rule that stopped
	// them (Record.PreCopy); nil for the other strategies.
	PreCopy *PreCopyOutcome
	// LayerBytes and SyncBytes are the root filesystem's bytes sent
	// before the freeze in this call, not in BytesSent: the image layers
	// the destination lacked, and the writable layer synced while the
	// container ran (what changed after the sync travels in the
	// checkpoint).
	LayerBytes, SyncBytes int64
	// DestinationUnacked is set when the move was aborted without the
	// destination's acknowledgement (DriveOptions.FenceDestination): the
	// destination may still hold what it prepared, never running it.
	DestinationUnacked bool
}

// Drive moves m's container from src to dst: it describes the container
// on the source, prepares the destination, dumps (the downtime starts),
// sends the checkpoint while the destination receives it, restores it
// held stopped on the destination, commits (the destination runs it) and
// finishes on the source (which drops its stopped copy).
//
// Until the commit every failure aborts: the destination discards what it
// holds and acknowledges, and only then does the source run its copy
// again. When the destination cannot acknowledge, the source keeps the
// container stopped and Drive returns a *HeldError (ErrHeld), unless the
// caller's DriveOptions.FenceDestination rules the commit out. A commit
// whose outcome is unknown is settled by asking the destination to abort:
// a refusal with ErrCommitted means it committed, and the move finishes.
// A failure of the source's Finish after the commit is a warning in the
// Result, not an error.
//
// The error of an aborted migration says so; the Result's record is then
// in PhaseAborted and the container runs on the source.
func Drive(ctx context.Context, m Migration, src Source, dst Destination, opts DriveOptions) (*Result, error) {
	switch {
	case !idPattern.MatchString(m.ID):
		return nil, fmt.Errorf("migration ID %q: want 1 to 128 letters, digits, '_', '.' or '-'", m.ID)
	case m.Container == "":
		return nil, fmt.Errorf("migration %s: no container named", m.ID)
	case m.Strategy == "" || m.Strategy == Auto:
		return nil, fmt.Errorf("migration %s: strategy %q: choose one first (Choose)", m.ID, m.Strategy)
	}
	opts = opts.withDefaults()
	ctx = datachan.WithStallTimeout(ctx, opts.StallTimeout)
	rec := NewRecord(m.ID, m.Strategy, opts.Now())
	rec.Container = m.Container
	d := newDriver(rec, src, dst, opts)
	if err := d.persist(); err != nil {
		return d.result(), err
	}
	return d.prepare(ctx)
}

// Resume continues the migration of rec, a record from the driver's
// journal, after its driver stopped: every step is idempotent, so it
// replays the step of rec's phase and goes on as Drive does, with Drive's
// failure rules. A migration that had frozen the container (PhaseDump,
// PhaseTransfer: dumped again if need be and sent again with a fresh
// token) continues; one in PhasePrepare describes and prepares again and
// continues when its record names the container, and is aborted when not
// (the container never stopped, so nothing is lost by starting again); a
// ready one commits; a committed one finishes. A done migration is left
// as it is; an aborted one is refused with ErrAborted.
func Resume(ctx context.Context, rec *Record, src Source, dst Destination, opts DriveOptions) (*Result, error) {
	if err := checkRecord(rec); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	ctx = datachan.WithStallTimeout(ctx, opts.StallTimeout)
	d := newDriver(rec, src, dst, opts)
	d.prepared = true
	d.mayBeStopped = order[rec.Phase] >= order[PhaseDump]
	d.preDumped = mayHavePreDumped(rec)
	d.rootfsSynced = order[rec.Phase] >= order[PhaseSync]
	switch {
	case rec.Phase == PhaseAborted:
		return d.result(), fmt.Errorf("migration %s: %w: the container runs on the source; start a new migration", rec.ID, ErrAborted)
	case rec.Phase == PhaseDone:
		return d.result(), nil
	case (rec.Phase == PhasePrepare || rec.Phase == PhaseSync) && rec.Container != "":
		// The container still runs: prepare again and sync from where
		// the record stands (pre-copy goes on after its last round).
		d.log.Info("resuming migration", "phase", rec.Phase)
		return d.prepare(ctx)
	case !d.mayBeStopped:
		return d.fail(ctx, fmt.Errorf("its driver stopped in %s, before the container was frozen, and its record does not say how to go on: start a new migration", rec.Phase))
	}
	d.log.Info("resuming migration", "phase", rec.Phase)
	return d.forward(ctx)
}

// AbortMigration aborts the migration of rec, a record from the driver's
// journal: the destination discards its copy and acknowledges, then the
// source, if it had frozen the container, runs it again. It is refused
// with ErrCommitted once rec is committed, or when the destination
// reports that it committed (rec then advances to PhaseCommitted if it
// was ready): such a move can only finish, with Resume. Aborting an
// aborted migration does nothing. When the destination cannot
// acknowledge, the source keeps the container stopped: *HeldError.
func AbortMigration(ctx context.Context, rec *Record, src Source, dst Destination, opts DriveOptions) (*Result, error) {
	if err := checkRecord(rec); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	ctx = datachan.WithStallTimeout(ctx, opts.StallTimeout)
	d := newDriver(rec, src, dst, opts)
	switch {
	case rec.Phase == PhaseAborted:
		return d.result(), nil
	case order[rec.Phase] >= order[PhaseCommitted]:
		return d.result(), d.committedError()
	}
	d.prepared = true
	d.mayBeStopped = order[rec.Phase] >= order[PhaseDump]
	d.preDumped = mayHavePreDumped(rec)
	d.rootfsSynced = order[rec.Phase] >= order[PhaseSync]
	committed, err := d.undo(ctx, errors.New("aborted on request"))
	if committed {
		if rec.Phase == PhaseReady {
			d.enterAfterCommit(PhaseCommitted, "committed: the container runs on the destination")
		}
		return d.result(), d.committedError()
	}
	return d.result(), err
}

// checkRecord refuses a record Resume and AbortMigration cannot act on.
func checkRecord(rec *Record) error {
	switch {
	case rec == nil:
		return errors.New("no migration record")
	case !idPattern.MatchString(rec.ID):
		return fmt.Errorf("migration ID %q: want 1 to 128 letters, digits, '_', '.' or '-'", rec.ID)
	case rec.Phase != PhaseAborted && order[rec.Phase] == 0:
		return fmt.Errorf("migration %s: unknown phase %q in its record", rec.ID, rec.Phase)
	case rec.Started == nil:
		return fmt.Errorf("migration %s: its record has no phase times", rec.ID)
	}
	return nil
}

// driver carries one migration through its phases, keeping its record.
type driver struct {
	rec  *Record
	src  Source
	dst  Destination
	opts DriveOptions
	log  *slog.Logger

	// prepared is set once the destination may hold something for the
	// migration (Prepare was or may have been called), so that an abort
	// must reach it.
	prepared bool
	// mayBeStopped is set once the source's Dump was or may have been
	// called: its copy may be stopped, and an abort must resume it.
	mayBeStopped bool
	// commitAcked is set once the destination acknowledged a Commit: a
	// commit learned otherwise (an abort refused with ErrCommitted, a
	// resumed record) is repeated before the finish, so that the
	// destination runs its copy.
	// destinationUnacked is set once an abort went on without the
	// destination's acknowledgement (FenceDestination).
	destinationUnacked bool
	commitAcked        bool
	// preDumped is set once the source's PreDump was or may have been
	// called: an abort must have the source drop its pre-dump images,
	// even while the container still runs.
	preDumped bool
	// rootfsFormat is the format of the writable layer's sync that the
	// destination chose in Prepare; empty: no sync. rootfsSynced is set
	// once the sync was or may have been started: an abort must have the
	// source forget it, even while the container still runs.
	rootfsFormat string
	rootfsSynced bool
	// transferChecksum is the checksum of the checkpoint's transfer the
	// destination takes ("" for sha256; beforeSync). A driver that
	// resumes a migration does not know it, and sends with sha256.
	transferChecksum string

	mu    sync.Mutex // serialises OnEvent; guards bytes
	bytes int64
	// layerBytes and syncBytes count the image layers and the writable
	// layer sent before the freeze in this call.
	layerBytes, syncBytes int64
	warnings              []string
}

func newDriver(rec *Record, src Source, dst Destination, opts DriveOptions) *driver {
	return &driver{rec: rec, src: src, dst: dst, opts: opts,
		log: opts.Logger.With("migration", rec.ID, "strategy", rec.Strategy)}
}

// prepare describes the container on the source and prepares the
// destination, then goes on.
func (d *driver) prepare(ctx context.Context) (*Result, error) {
	name := d.rec.Container
	d.emit(Event{Phase: PhasePrepare, Message: "preparing the destination"})
	var c Container
	err := d.call(ctx, func(ctx context.Context) (err error) { // driver_timeout.go
		c, err = d.src.Describe(ctx, d.rec.ID, name, d.rec.Strategy)
		return err
	})
	if err != nil {
		return d.fail(ctx, fmt.Errorf("describe container %s on the source: %w", name, err))
	}
	if err := d.call(ctx, d.checkChannel); err != nil { // channel.go
		return d.fail(ctx, err)
	}
	d.prepared = true
	var p Prepared
	err = d.call(ctx, func(ctx context.Context) (err error) {
		p, err = d.dst.Prepare(ctx, d.rec.ID, c, d.rec.Strategy)
		return err
	})
	if err != nil {
		return d.fail(ctx, fmt.Errorf("prepare the destination: %w", err))
	}
	if err := d.beforeSync(ctx, p); err != nil { // driver_rootfs.go
		return d.fail(ctx, err)
	}
	return d.forward(ctx)
}

// forward takes a migration from any phase from PhaseDump on to the end.
func (d *driver) forward(ctx context.Context) (*Result, error) {
	steps := []struct {
		phase   Phase
		message string
		run     func(context.Context) error
	}{
		{PhaseSync, "syncing while the container runs", d.sync},
		{PhaseDump, "freezing and dumping the container: the downtime starts", d.dump},
		{PhaseTransfer, "sending the checkpoint", d.transfer},
		{PhaseRestore, "restoring on the destination, held stopped", d.restore},
	}
	for _, s := range steps {
		if order[d.rec.Phase] > order[s.phase] || (s.phase == PhaseSync && !d.syncs()) {
			continue
		}
		if err := d.enter(s.phase, s.message); err != nil {
			return d.fail(ctx, err)
		}
		if err := ctx.Err(); err != nil {
			return d.fail(ctx, fmt.Errorf("%s: %w", s.phase, err))
		}
		if err := s.run(ctx); err != nil {
			return d.fail(ctx, err)
		}
	}
	switch d.rec.Phase {
	case PhaseRestore, PhaseReady:
		if err := d.enter(PhaseReady, "the destination holds the restored container: committing"); err != nil {
			return d.fail(ctx, err)
		}
		return d.commit(ctx)
	case PhaseCommitted:
		return d.finish(ctx)
	}
	return d.result(), nil // PhaseDone
}

// syncs says whether the migration has a sync phase: something to copy
// while the container still runs.
func (d *driver) syncs() bool { return d.rec.Strategy == PreCopy || d.rootfsFormat != "" }

// sync copies what can be copied while the container runs. Each kind of
// sync is its own function: pre-copy's memory rounds (driver_precopy.go).
func (d *driver) sync(ctx context.Context) error {
	if d.rootfsFormat != "" {
		if err := d.syncRootfs(ctx); err != nil { // driver_rootfs.go
			return err
		}
	}
	if d.rec.Strategy == PreCopy {
		if err := d.preCopy(ctx); err != nil {
			return err
		}
	}
	return nil
}

func (d *driver) dump(ctx context.Context) error {
	d.mayBeStopped = true
	if d.rec.Strategy == Stream {
		return d.dumpStream(ctx) // driver_pages.go
	}
	if err := d.call(ctx, func(ctx context.Context) error {
		return d.src.Dump(ctx, d.rec.ID, DumpOptions{Strategy: d.rec.Strategy, PreDumps: d.preDumps()})
	}); err != nil {
		return fmt.Errorf("dump on the source: %w", err)
	}
	return nil
}

// transfer has the source send the checkpoint to the destination.
func (d *driver) transfer(ctx context.Context) error {
	addr := d.dst.Address()
	sent, _, err := d.send(ctx, PhaseTransfer, "sending the checkpoint",
		func(ctx context.Context, token string) error {
			if err := d.dst.Receive(ctx, d.rec.ID, token); err != nil {
				return fmt.Errorf("receive on the destination: %w", err)
			}
			return nil
		},
		func(ctx context.Context, token string, progress func(done, total int64)) error {
			if err := d.src.Send(ctx, d.rec.ID, addr, token, d.transferChecksum, progress); err != nil {
				return fmt.Errorf("send from the source to %s: %w", addr, err)
			}
			return nil
		})
	d.mu.Lock()
	d.bytes = sent
	d.mu.Unlock()
	return err
}

// send runs one exchange of bytes from the source to the destination
// with a fresh token: receive and send together; when either fails, the
// other is cancelled, and the first failure is the exchange's. It reports
// the sender's progress as events of phase and returns the bytes sent and
// how long the exchange took.
func (d *driver) send(ctx context.Context, phase Phase, message string,
	receive func(ctx context.Context, token string) error,
	send func(ctx context.Context, token string, progress func(done, total int64)) error,
) (sent int64, took time.Duration, err error) {
	token, err := d.opts.NewToken()
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", message, err)
	}
	start := d.opts.Now()
	progress := func(done, total int64) {
		ev := Event{Phase: phase, BytesDone: done, BytesTotal: total, Message: message}
		if elapsed := d.opts.Now().Sub(start); elapsed > 0 && done > 0 {
			ev.Throughput = float64(done) / elapsed.Seconds()
			if total > done {
				ev.ETA = time.Duration(float64(total-done) / ev.Throughput * float64(time.Second))
			}
		}
		d.mu.Lock()
		sent = done
		d.mu.Unlock()
		d.emit(ev)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- receive(ctx, token) }()
	go func() { errs <- send(ctx, token, progress) }()
	for range 2 {
		e := <-errs
		switch {
		case e == nil:
		case err == nil:
			err = e
			cancel()
		default:
			d.log.Debug("other side of the exchange stopped", "err", e)
		}
	}
	took = d.opts.Now().Sub(start)
	d.mu.Lock()
	defer d.mu.Unlock()
	return sent, took, err
}

func (d *driver) restore(ctx context.Context) error {
	if d.rec.Strategy == PostCopy {
		return d.restoreLazy(ctx) // driver_pages.go
	}
	if err := d.call(ctx, func(ctx context.Context) error {
		return d.dst.Restore(ctx, d.rec.ID, RestoreOptions{Strategy: d.rec.Strategy, PreDumps: d.preDumps()})
	}); err != nil {
		return fmt.Errorf("restore on the destination: %w", err)
	}
	return nil
}

// commit has the destination run its copy. A failed Commit leaves the
// outcome unknown; fail settles it by asking the destination to abort.
// With DriveOptions.Decide the caller's decision is the commit point
// instead (decide).
func (d *driver) commit(ctx context.Context) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return d.fail(ctx, fmt.Errorf("commit: %w", err))
	}
	if d.opts.Decide != nil {
		return d.decide(ctx)
	}
	if err := d.call(ctx, func(ctx context.Context) error { return d.dst.Commit(ctx, d.rec.ID) }); err != nil {
		d.log.Warn("commit not acknowledged: asking the destination to abort to learn whether it committed", "err", err)
		return d.fail(ctx, fmt.Errorf("commit on the destination: %w", err))
	}
	d.commitAcked = true
	d.enterAfterCommit(PhaseCommitted, "committed: the container runs on the destination")
	return d.finish(ctx)
}

// decide asks the caller to make the move durable, then finishes it.
func (d *driver) decide(ctx context.Context) (*Result, error) {
	err := d.opts.Decide(ctx, d.rec)
	switch {
	case errors.Is(err, ErrDecisionUnknown):
		d.log.Error("the move's decision is unknown: holding both copies stopped", "err", err)
		return d.result(), &DecisionError{ID: d.rec.ID, Err: err}
	case err != nil:
		return d.fail(ctx, fmt.Errorf("decide: %w", err))
	}
	d.enterAfterCommit(PhaseCommitted, "committed: the container is the destination's")
	return d.finish(ctx)
}

// finish has the source drop its stopped copy. The move is made whatever
// happens here, so a failure is a warning.
func (d *driver) finish(ctx context.Context) (*Result, error) {
	if !d.commitAcked {
		// Committed, but the destination may have failed before it ran
		// its copy (Commit is idempotent: a done one returns at once).
		err := d.retry(ctx, "commit on the destination", func(ctx context.Context) error {
			return d.call(ctx, func(ctx context.Context) error { return d.dst.Commit(ctx, d.rec.ID) })
		}, nil)
		if err != nil {
			// The source keeps its stopped copy and images until the
			// destination confirms: nothing is dropped on a guess.
			d.warn(fmt.Sprintf("the move is committed, but the destination did not confirm that it runs the container (%v): run `godwit migrate --resume %s`", err, d.rec.ID))
			return d.result(), nil
		}
		d.commitAcked = true
	}
	d.announceFinish() // driver_pages.go
	if err := d.call(ctx, func(ctx context.Context) error { return d.src.Finish(ctx, d.rec.ID, d.dst.Address()) }); err != nil {
		d.warn(fmt.Sprintf("the container runs on the destination, but the source could not remove its stopped copy and images (%v): run `godwit migrate --resume %s` to finish", err, d.rec.ID))
		return d.result(), nil
	}
	d.enterAfterCommit(PhaseDone, "done: the source removed its stopped copy")
	return d.result(), nil
}

// fail ends a migration that failed with cause before its commit (or
// whose commit is unknown): it undoes it, or, when the destination
// reports it committed, finishes it.
func (d *driver) fail(ctx context.Context, cause error) (*Result, error) {
	d.log.Warn("migration failed: aborting", "phase", d.rec.Phase, "err", cause)
	committed, err := d.undo(ctx, cause)
	switch {
	case committed && d.rec.Phase == PhaseReady:
		d.enterAfterCommit(PhaseCommitted, "committed: the container runs on the destination")
		return d.finish(ctx)
	case committed:
		return d.result(), fmt.Errorf("migration %s: %w; the destination reports it committed while the driver's record is in %s: run `godwit migrate --resume %s` to finish",
			d.rec.ID, cause, d.rec.Phase, d.rec.ID)
	case err != nil:
		return d.result(), err
	}
	return d.result(), fmt.Errorf("migration %s aborted, the container runs on the source: %w", d.rec.ID, cause)
}

// undo aborts the migration: the destination discards its copy and
// acknowledges, then the source runs its own again. It reports committed
// when the destination refuses with ErrCommitted. It runs even when ctx is
// cancelled (an interrupted driver still gives the container back to the
// source), bounded by AbortTimeout. Without the destination's
// acknowledgement the source is never resumed.
func (d *driver) undo(ctx context.Context, cause error) (committed bool, err error) {
	id, why := d.rec.ID, cause.Error()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.opts.AbortTimeout)
	defer cancel()
	if d.prepared {
		d.emit(Event{Phase: d.rec.Phase, Message: "aborting: " + why})
		err := d.retry(ctx, "abort on the destination", func(ctx context.Context) error {
			return d.call(ctx, func(ctx context.Context) error { return d.dst.Abort(ctx, id, why) })
		}, func(err error) bool { return errors.Is(err, ErrCommitted) })
		if err != nil && !errors.Is(err, ErrCommitted) && d.opts.FenceDestination != nil && d.opts.Decide != nil {
			if ferr := d.opts.FenceDestination(ctx, d.rec, err); ferr == nil {
				d.warn(fmt.Sprintf("the destination did not acknowledge the abort (%v); the move can no longer commit, so the source runs the container again, and the destination is asked to drop what it holds once it answers", err))
				d.mu.Lock()
				d.destinationUnacked = true
				d.mu.Unlock()
				err = nil
			} else {
				err = errors.Join(err, fmt.Errorf("fence the move: %w", ferr))
			}
		}
		switch {
		case errors.Is(err, ErrCommitted):
			return true, nil
		case err != nil && d.mayBeStopped:
			return false, d.held(&HeldError{ID: id, Phase: d.rec.Phase, Cause: cause, Err: fmt.Errorf("abort on the destination: %w", err)})
		case err != nil:
			return false, fmt.Errorf("migration %s: %w; the container still runs on the source, but the destination did not acknowledge the abort (%w) and may hold what it prepared: run `godwit migrate --abort %s` once it is reachable",
				id, cause, err, id)
		}
	}
	if d.mayBeStopped {
		err := d.retry(ctx, "resume on the source", func(ctx context.Context) error {
			return d.call(ctx, func(ctx context.Context) error { return d.src.Resume(ctx, id) })
		}, nil)
		if err != nil {
			return false, d.held(&HeldError{ID: id, Phase: d.rec.Phase, Cause: cause, Err: fmt.Errorf("resume on the source: %w", err), DestinationAborted: true})
		}
	} else if d.preDumped {
		d.dropPreDumps(ctx)
	} else if d.rootfsSynced {
		d.dropRootfsSync(ctx)
	}
	if _, err := d.rec.Abort(why, d.opts.Now()); err != nil {
		return false, err // callers never undo a committed record
	}
	if err := d.persist(); err != nil {
		d.warn(fmt.Sprintf("the migration is aborted, but its record was not saved (%v): a later `godwit migrate --abort %s` repeats it harmlessly", err, id))
	}
	d.emit(Event{Phase: PhaseAborted, Message: "aborted, the container runs on the source: " + why})
	return false, nil
}

// retry calls f until it succeeds, fails with an error final accepts, or
// the attempts or ctx run out, pausing AbortBackoff, doubled each time,
// between attempts.
func (d *driver) retry(ctx context.Context, what string, f func(context.Context) error, final func(error) bool) error {
	pause := d.opts.AbortBackoff
	for attempt := 1; ; attempt++ {
		err := f(ctx)
		if err == nil || (final != nil && final(err)) || attempt >= d.opts.AbortAttempts {
			return err
		}
		d.log.Warn("retrying", "step", what, "attempt", attempt, "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (gave up: %w)", err, ctx.Err())
		case <-t.C:
		}
		pause = min(2*pause, maxAbortBackoff)
	}
}

func (d *driver) held(e *HeldError) error {
	d.log.Error("migration held: the source keeps the container stopped", "phase", e.Phase, "err", e.Err)
	d.emit(Event{Phase: e.Phase, Message: e.Error()})
	return e
}

func (d *driver) committedError() error {
	return fmt.Errorf("migration %s: %w: the container runs on the destination; run `godwit migrate --resume %s` to finish the move", d.rec.ID, ErrCommitted, d.rec.ID)
}

// enter moves the record to p before the commit, persists it and tells
// OnEvent. An error (a refused move, a record not saved) fails the
// migration.
func (d *driver) enter(p Phase, message string) error {
	changed, err := d.rec.Advance(p, d.opts.Now())
	if err != nil {
		return err
	}
	if changed {
		if err := d.persist(); err != nil {
			return err
		}
	}
	d.emit(Event{Phase: p, Message: message})
	return nil
}

// enterAfterCommit is enter from the commit on, where the move can only
// finish: a failure is a warning.
func (d *driver) enterAfterCommit(p Phase, message string) {
	if err := d.enter(p, message); err != nil {
		d.warn(fmt.Sprintf("the move is committed, but %v: run `godwit migrate --resume %s` if it is not done", err, d.rec.ID))
	}
}

func (d *driver) persist() error {
	if d.opts.OnRecord == nil {
		return nil
	}
	if err := d.opts.OnRecord(d.rec); err != nil {
		return fmt.Errorf("save the record of migration %s in %s: %w", d.rec.ID, d.rec.Phase, err)
	}
	return nil
}

func (d *driver) warn(msg string) {
	d.log.Warn(msg)
	d.mu.Lock()
	d.warnings = append(d.warnings, msg)
	d.mu.Unlock()
	d.emit(Event{Phase: d.rec.Phase, Message: "warning: " + msg})
}

func (d *driver) emit(ev Event) {
	if d.opts.OnEvent == nil {
		return
	}
	ev.ID = d.rec.ID
	d.mu.Lock()
	defer d.mu.Unlock()
	d.opts.OnEvent(ev)
}

func (d *driver) result() *Result {
	d.mu.Lock()
	defer d.mu.Unlock()
	res := &Result{
		ID:        d.rec.ID,
		Strategy:  d.rec.Strategy,
		Record:    d.rec,
		Downtime:  downtime(d.rec),
		BytesSent: d.bytes,
		Phases:    d.rec.PhaseDurations(),
		Warnings:  slices.Clone(d.warnings),
		PreCopy:   d.rec.PreCopy.clone(),

		LayerBytes: d.layerBytes,
		SyncBytes:  d.syncBytes,

		DestinationUnacked: d.destinationUnacked,
	}
	if start, ok := d.rec.Started[PhasePrepare]; ok {
		res.Total = d.opts.Now().Sub(start)
	}
	return res
}

// downtime runs from the dump to the commit (the destination runs the
// container when Commit returns) or to the source running it again.
func downtime(r *Record) time.Duration {
	frozen, ok := r.Started[PhaseDump]
	if !ok {
		return 0
	}
	for _, end := range []Phase{PhaseCommitted, PhaseAborted} {
		if t, ok := r.Started[end]; ok {
			return t.Sub(frozen)
		}
	}
	return 0
}
