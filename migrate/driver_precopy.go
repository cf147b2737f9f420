package migrate

import (
	"context"
	"fmt"
	"time"
)

// preCopy runs pre-copy's rounds in PhaseSync, the container running:
// each round pre-dumps on the source what the container dirtied since the
// round before (its whole memory first) and sends it to the destination,
// until the convergence policy stops them. The record keeps every round
// and the rule that stopped them, persisted after each round, so that a
// resumed driver goes on after the last one; the final dump (PhaseDump)
// then takes the last round as its parent.
func (d *driver) preCopy(ctx context.Context) error {
	if d.rec.PreCopy == nil {
		d.rec.PreCopy = &PreCopyOutcome{}
	}
	out := d.rec.PreCopy
	for !out.Stopped() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("pre-copy: %w", err)
		}
		round := len(out.Rounds) + 1
		d.preDumped = true
		d.emit(Event{Phase: PhaseSync, Message: fmt.Sprintf("pre-copy round %d: copying memory while the container runs", round)})
		var it PreCopyIteration
		err := d.call(ctx, func(ctx context.Context) (err error) {
			it, err = d.src.PreDump(ctx, d.rec.ID, round)
			return err
		})
		if err != nil {
			return fmt.Errorf("pre-copy round %d on the source: %w", round, err)
		}
		if it.Sent, it.Transfer, err = d.sendPreDump(ctx, round); err != nil {
			return err
		}
		out.Rounds = append(out.Rounds, it)
		dec := d.opts.Convergence.Decide(out.Rounds, out.Bandwidth())
		if dec.Stop {
			out.Rule, out.Detail, out.PredictedFreeze = dec.Rule, dec.Detail, dec.PredictedFreeze
		}
		if err := d.persist(); err != nil {
			return err
		}
		d.log.Info("pre-copy round", "round", round, "dirty_pages", it.DirtyPages, "sent", it.Sent,
			"took", it.Duration+it.Transfer, "stop", dec.Stop, "rule", dec.Rule)
		next := "another round"
		if dec.Stop {
			next = "stopping (" + dec.Rule + ")"
		}
		d.emit(Event{Phase: PhaseSync, Message: fmt.Sprintf("pre-copy round %d: %d dirty pages; %s: %s", round, it.DirtyPages, next, dec.Detail)})
	}
	return nil
}

// sendPreDump sends pre-copy round round from the source to the
// destination, and returns the bytes sent and how long it took: the
// bandwidth the convergence rules predict the final freeze with.
func (d *driver) sendPreDump(ctx context.Context, round int) (sent int64, took time.Duration, err error) {
	addr := d.dst.Address()
	return d.send(ctx, PhaseSync, fmt.Sprintf("sending pre-copy round %d", round),
		func(ctx context.Context, token string) error {
			if err := d.dst.ReceivePreDump(ctx, d.rec.ID, round, token); err != nil {
				return fmt.Errorf("receive pre-copy round %d on the destination: %w", round, err)
			}
			return nil
		},
		func(ctx context.Context, token string, progress func(done, total int64)) error {
			if err := d.src.SendPreDump(ctx, d.rec.ID, round, addr, token, progress); err != nil {
				return fmt.Errorf("send pre-copy round %d from the source to %s: %w", round, addr, err)
			}
			return nil
		})
}

func (d *driver) preDumps() int {
	if d.rec.PreCopy == nil {
		return 0
	}
	return len(d.rec.PreCopy.Rounds)
}

// mayHavePreDumped tells, from a record, whether the source may hold
// pre-dump images of the migration: a pre-copy that reached PhaseSync.
func mayHavePreDumped(rec *Record) bool {
	return rec.Strategy == PreCopy && (order[rec.Phase] >= order[PhaseSync] || rec.PreCopy != nil)
}

// dropPreDumps has the source drop its pre-dump images after an abort that
// left the container running (Source.Resume). The container never
// stopped, so a failure only leaves disk space taken: a warning.
func (d *driver) dropPreDumps(ctx context.Context) {
	err := d.retry(ctx, "drop the pre-dumps on the source", func(ctx context.Context) error {
		return d.call(ctx, func(ctx context.Context) error { return d.src.Resume(ctx, d.rec.ID) })
	}, nil)
	if err != nil {
		d.warn(fmt.Sprintf("the container runs on the source, but the source could not drop the pre-copy images of migration %s (%v): run `godwit migrate --abort %s` to remove them",
			d.rec.ID, err, d.rec.ID))
	}
}

// clone copies o, so that a Result does not change with the record.
func (o *PreCopyOutcome) clone() *PreCopyOutcome {
	if o == nil {
		return nil
	}
	c := *o
	c.Rounds = append([]PreCopyIteration(nil), o.Rounds...)
	return &c
}
