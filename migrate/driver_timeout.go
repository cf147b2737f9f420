package migrate

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultStepTimeout bounds each call of a migration to an agent that
// reports no progress while it works (DriveOptions.StepTimeout). It is
// generous, since a dump or a restore of a large container takes its
// time (about 16 s for 2 GiB here); what it is for is a peer that stopped
// answering, which gRPC's keepalive does not always notice (an agent that
// is alive but hung, a connection still being set up to a stopped one).
const DefaultStepTimeout = 10 * time.Minute

// ErrStepTimeout: a call to an agent had no answer within the step
// timeout (DriveOptions.StepTimeout). The driver then treats the call as
// failed with an unknown outcome, as it treats a lost reply: before the
// commit it aborts the migration.
var ErrStepTimeout = errors.New("no answer within the step timeout")

// call runs f, one call to an agent that reports no progress (Describe,
// Prepare, Dump, Restore, Commit, Finish, one attempt of Abort or
// Resume), bounded by the step timeout. A call that runs out of it fails
// with ErrStepTimeout, saying how long it waited, rather than with a bare
// deadline: the operator learns which agent did not answer and that the
// timeout is a flag.
func (d *driver) call(ctx context.Context, f func(context.Context) error) error {
	stepCtx, cancel := context.WithTimeout(ctx, d.opts.StepTimeout)
	defer cancel()
	err := f(stepCtx)
	if err != nil && ranOut(ctx, stepCtx) {
		return fmt.Errorf("%w of %s: the agent may be stopped, hung or cut off from this host (%w)", ErrStepTimeout, d.opts.StepTimeout, err)
	}
	return err
}

// ranOut reports whether step, a call's context made from parent, has
// reached its own deadline, which came before any of parent's. It looks
// at the clock, not only at step.Err(): a gRPC server that gives up at
// the deadline it was sent can answer an instant before the client's own
// timer marks its context done.
func ranOut(parent, step context.Context) bool {
	deadline, _ := step.Deadline()
	if pd, ok := parent.Deadline(); ok && !pd.After(deadline) {
		return false // the caller's bound, not the step's
	}
	return parent.Err() == nil && (errors.Is(step.Err(), context.DeadlineExceeded) || !time.Now().Before(deadline))
}
