package coordinator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/migrate"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// goDrive drives m in the background for the leadership term lead.
func (c *Coordinator) goDrive(lead context.Context, m *state.Migration) {
	c.goRun(lead, m, func(ctx context.Context, f *feed) { c.drive(ctx, lead, m, f) })
}

// goRun runs work for migration m in the background, unless something
// already runs for it: one run per migration at a time, whose context
// carries the leadership term (Fence) and ends with it, and whose feed
// its watchers follow.
func (c *Coordinator) goRun(lead context.Context, m *state.Migration, work func(ctx context.Context, f *feed)) {
	ctx, cancel := context.WithCancel(withLeadership(lead, lead))
	r := &run{cancel: cancel, feed: newFeed()}
	c.mu.Lock()
	if _, running := c.runs[m.ID]; running {
		c.mu.Unlock()
		cancel()
		return
	}
	c.runs[m.ID] = r
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		defer cancel()
		defer func() {
			c.mu.Lock()
			delete(c.runs, m.ID)
			c.mu.Unlock()
			r.feed.close()
		}()
		work(ctx, r.feed)
	}()
}

// drive moves the container of m, recording each phase, and settles the
// record with the outcome. A term that ends while it drives leaves the
// record as it stands, for the next leader.
func (c *Coordinator) drive(ctx, lead context.Context, m *state.Migration, f *feed) {
	log := c.log.With("migration", m.ID, "container", m.ContainerName, "source", m.Source, "destination", m.Dest)
	src, dst, err := c.sides(m)
	if err != nil {
		c.abortRecord(lead, m.ID, fmt.Sprintf("reach the agents: %v", err), state.MigrationStats{}, false)
		return
	}
	opts := c.options(m, f)
	var res *migrate.Result
	note := ""
	if m.Committed() {
		// A previous driver got as far as the decision: only finishing
		// is left.
		log.Info("finishing a committed migration from its record", "phase", m.Phase)
		note = fmt.Sprintf("finished from its record: the move had committed when its driver stopped (the leader changed, or %s did not answer)", m.Dest)
		res, err = migrate.Resume(ctx, engineRecord(m), src, dst, opts)
	} else {
		log.Info("migration starting", "strategy", m.Strategy)
		res, err = migrate.Drive(ctx, migrate.Migration{ID: m.ID, Container: m.Container, Strategy: migrate.Strategy(m.Strategy)}, src, dst, opts)
	}
	c.settle(lead, m.ID, res, err, note, log)
}

// settle records how a drive ended: done (with note in its event),
// aborted, or still open (held, undecided, or committed without the
// destination's word) for the next settleOpen.
func (c *Coordinator) settle(lead context.Context, id string, res *migrate.Result, err error, note string, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) {
	if lead.Err() != nil {
		log.Warn("leadership lost while driving: the next leader settles the migration from its record", "err", err)
		return
	}
	stats := statsOf(res)
	switch {
	case res != nil && res.Record != nil && res.Record.Phase == migrate.PhaseDone:
		if _, aerr := c.cfg.Apply.Apply(lead, &fsm.FinishMigration{ID: id, Stats: &stats, Note: note, At: time.Now()}); aerr != nil {
			log.Warn("record a finished migration", "err", aerr)
			return
		}
		log.Info("migration done", "downtime", stats.Downtime, "total", stats.Total, "bytes", stats.Bytes)
	case res != nil && res.Record != nil && res.Record.Phase == migrate.PhaseAborted:
		c.abortRecord(lead, id, errText(err), stats, res.DestinationUnacked)
		log.Info("migration aborted: the container runs on its source", "err", err, "destination_unacked", res.DestinationUnacked)
	default:
		log.Warn("migration left open: it is settled again shortly", "err", err)
	}
}

// abortRecord records that migration id was aborted; unacked: without
// its destination's acknowledgement, which cleanDestinations obtains
// later.
func (c *Coordinator) abortRecord(ctx context.Context, id, why string, stats state.MigrationStats, unacked bool) {
	cmd := &fsm.AbortMigration{ID: id, Error: why, Stats: &stats, DestinationCleanup: unacked, At: time.Now()}
	if _, err := c.cfg.Apply.Apply(ctx, cmd); err != nil {
		c.log.Warn("record an aborted migration", "migration", id, "err", err)
	}
}

// options are the engine's hooks for m: every phase is a raft entry, the
// decision is fsm.CommitMove, progress goes to the watchers.
func (c *Coordinator) options(m *state.Migration, f *feed) migrate.DriveOptions {
	opts := c.cfg.Drive
	opts.OnEvent = f.publish
	opts.OnRecord = func(rec *migrate.Record) error {
		phase := state.MigrationPhase(rec.Phase)
		if phase.Order() == 0 || phase.Order() >= state.MigrationCommitted.Order() {
			return nil // the decision, the end and an abort have their own entries
		}
		if _, err := c.cfg.Apply.Apply(context.Background(), &fsm.RecordMigrationPhase{ID: m.ID, Phase: phase, At: time.Now()}); err != nil {
			return err
		}
		failpoint.Hit(FailpointAfterPhase + string(phase))
		return nil
	}
	// Raft is the commit point, so an abort the destination cannot
	// acknowledge is made safe there: once fenced, the move cannot
	// commit, and the source may run the container again.
	opts.FenceDestination = func(ctx context.Context, _ *migrate.Record, why error) error {
		_, err := c.cfg.Apply.Apply(ctx, &fsm.FenceMigration{ID: m.ID, Why: fmt.Sprintf("destination %s did not acknowledge the abort: %v", m.Dest, why), At: time.Now()})
		return err
	}
	opts.Decide = func(ctx context.Context, rec *migrate.Record) error {
		_, err := c.cfg.Apply.Apply(ctx, &fsm.CommitMove{ID: m.ID, At: time.Now()})
		if err != nil && c.cfg.Unknown(err) {
			return fmt.Errorf("%w: %w", migrate.ErrDecisionUnknown, err)
		}
		if err == nil {
			failpoint.Hit(FailpointAfterCommit)
		}
		return err
	}
	return opts
}

// sides are the agents of m's source and destination.
func (c *Coordinator) sides(m *state.Migration) (src, dst Side, err error) {
	snap := c.cfg.Store.Snapshot()
	for _, end := range []struct {
		node string
		side *Side
	}{{m.Source, &src}, {m.Dest, &dst}} {
		n, ok := snap.Node(end.node)
		if !ok {
			return nil, nil, fmt.Errorf("node %s is no longer registered", end.node)
		}
		if *end.side, err = c.cfg.Sides.Side(n.Address, m.Generation); err != nil {
			return nil, nil, fmt.Errorf("node %s: %w", end.node, err)
		}
	}
	return src, dst, nil
}

// settleOpen settles every open migration no driver of this leader runs:
// one whose move committed finishes; any other is aborted, the source
// running the container again (a move the previous leader did not decide
// is not decided by a new one on a guess). Each outcome is an entry, so
// the events say which and why.
func (c *Coordinator) settleOpen(lead context.Context) {
	for _, m := range c.cfg.Store.Snapshot().Migrations(state.MigrationFilter{Open: true}) {
		c.mu.Lock()
		_, running := c.runs[m.ID]
		c.mu.Unlock()
		if running || lead.Err() != nil {
			continue
		}
		if m.Committed() {
			c.goDrive(lead, m)
			continue
		}
		c.goAbort(lead, m, fmt.Sprintf("its driver stopped in %s (the leader changed, or a side was unreachable) before the move was decided: aborted, the container runs on %s", m.Phase, m.Source))
	}
}

// cleanDestinations asks the destination of every migration aborted
// without its acknowledgement, once its node is alive again, to drop
// what it holds, and records that it did. A destination that does not
// answer is asked again at the next settling.
func (c *Coordinator) cleanDestinations(lead context.Context) {
	snap := c.cfg.Store.Snapshot()
	for _, m := range snap.Migrations(state.MigrationFilter{}) {
		if !m.DestinationCleanup || lead.Err() != nil {
			continue
		}
		if n, ok := snap.Node(m.Dest); !ok || n.Health != state.HealthAlive {
			continue
		}
		c.goRun(lead, m, func(ctx context.Context, _ *feed) {
			log := c.log.With("migration", m.ID, "container", m.ContainerName, "destination", m.Dest)
			_, dst, err := c.sides(m)
			if err == nil {
				err = dst.Abort(ctx, m.ID, "the move was aborted while this node did not answer: "+m.Error)
			}
			if err != nil {
				log.Warn("destination of an aborted migration: drop what it holds (asked again shortly)", "err", err)
				return
			}
			if _, err := c.cfg.Apply.Apply(lead, &fsm.CleanedDestination{ID: m.ID, At: time.Now()}); err != nil {
				log.Warn("record a cleaned destination", "err", err)
				return
			}
			log.Info("destination of an aborted migration dropped what it held")
		})
	}
}

// goAbort aborts m in the background.
func (c *Coordinator) goAbort(lead context.Context, m *state.Migration, why string) {
	c.goRun(lead, m, func(ctx context.Context, f *feed) {
		log := c.log.With("migration", m.ID, "container", m.ContainerName)
		src, dst, err := c.sides(m)
		if err != nil {
			log.Warn("abort: reach the agents", "err", err)
			return
		}
		opts := c.options(m, f)
		res, err := migrate.AbortMigration(ctx, engineRecord(m), src, dst, opts)
		if errors.Is(err, migrate.ErrCommitted) {
			// The destination committed after all: only finishing is left.
			log.Warn("abort refused: the destination had committed; finishing", "err", err)
			return
		}
		if err == nil {
			c.abortRecord(lead, m.ID, why, statsOf(res), res.DestinationUnacked)
			log.Warn("migration aborted by the leader", "why", why, "destination_unacked", res.DestinationUnacked)
			return
		}
		c.settle(lead, m.ID, res, err, "", log)
	})
}

// Cancel aborts migration id unless it has committed.
func (c *Coordinator) Cancel(ctx context.Context, id string) (*state.Migration, error) {
	m, ok := c.cfg.Store.Snapshot().Migration(id)
	if !ok {
		return nil, fmt.Errorf("%w: no migration %s", state.ErrNotFound, id)
	}
	if !m.Open() {
		return m, nil
	}
	if m.Committed() {
		return nil, fmt.Errorf("%w: migration %s has committed: the container is %s's now, and the move can only finish", migrate.ErrCommitted, id, m.Dest)
	}
	c.mu.Lock()
	r, running := c.runs[id]
	lead := c.lead
	c.mu.Unlock()
	switch {
	case lead == nil:
		return nil, ErrNotLeading
	case running:
		r.cancel() // the engine aborts: the leadership still holds
	default:
		c.goAbort(lead, m, "cancelled by the operator")
	}
	return m, nil
}

// Watch returns the progress of migration id while this leader drives
// it, and a function that stops watching; nil when it drives it not.
func (c *Coordinator) Watch(id string) (<-chan migrate.Event, func()) {
	c.mu.Lock()
	r, ok := c.runs[id]
	c.mu.Unlock()
	if !ok {
		return nil, func() {}
	}
	return r.feed.subscribe()
}

// engineRecord is the engine's record of m, for Resume and
// AbortMigration.
func engineRecord(m *state.Migration) *migrate.Record {
	rec := &migrate.Record{
		ID:        m.ID,
		Container: m.Container,
		Strategy:  migrate.Strategy(m.Strategy),
		Phase:     migrate.Phase(m.Phase),
		Started:   map[migrate.Phase]time.Time{},
		Error:     m.Error,
	}
	for p, t := range m.Started {
		rec.Started[migrate.Phase(p)] = t
	}
	return rec
}

func statsOf(res *migrate.Result) state.MigrationStats {
	if res == nil {
		return state.MigrationStats{}
	}
	s := state.MigrationStats{Downtime: res.Downtime, Total: res.Total, Bytes: res.BytesSent, Phases: map[state.MigrationPhase]time.Duration{}}
	for p, d := range res.Phases {
		s.Phases[state.MigrationPhase(p)] = d
	}
	return s
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
