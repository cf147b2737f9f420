package migrate

import "context"

// Container is what the driver tells the destination about the container
// it is to receive, so that it can prepare before any memory moves.
type Container struct {
	Name string
	ID   string
	// Image and ImageLayers are what the container's root filesystem is
	// built from; the destination must have every layer.
	Image       string
	ImageLayers []string
	// IP is the container's address, which it keeps.
	IP string
}

// Source is the source agent as the driver of a migration sees it. Every
// call is idempotent by migration ID: repeating a call that succeeded does
// nothing more and succeeds again.
type Source interface {
	// Describe returns the container to move, for Prepare.
	Describe(ctx context.Context, id, container string) (Container, error)
	// Dump freezes and dumps the container into the migration's
	// checkpoint and leaves it stopped, its images kept: the downtime
	// starts here.
	Dump(ctx context.Context, id string) error
	// Send streams the dumped checkpoint to the destination's data
	// connection at address with token, reporting bytes sent.
	Send(ctx context.Context, id, address, token string, progress func(done, total int64)) error
	// Finish drops the source's stopped copy and its images once the
	// destination runs the container (after the commit), and routes the
	// container's IP via the destination agent's host (destination is
	// that agent's address), so that clients still sending to the source
	// are forwarded.
	Finish(ctx context.Context, id, destination string) error
	// Resume runs the source's copy again from its images, after the
	// destination acknowledged an abort.
	Resume(ctx context.Context, id string) error
}

// Destination is the destination agent as the driver sees it; calls are
// idempotent by migration ID, like Source's.
type Destination interface {
	// Address is where the source sends the checkpoint (the agent's
	// address, which also serves data connections).
	Address() string
	// Prepare checks that the destination can take the container (image
	// layers, IP) and records the migration.
	Prepare(ctx context.Context, id string, c Container, s Strategy) error
	// Receive takes the checkpoint the source sends with token, checking
	// every digest; it returns once all of it is in.
	Receive(ctx context.Context, id, token string) error
	// Restore restores the container held stopped: it does not run until
	// Commit.
	Restore(ctx context.Context, id string) error
	// Commit runs the restored container. After a Commit, Abort fails
	// with ErrCommitted.
	Commit(ctx context.Context, id string) error
	// Abort discards everything the destination holds for the migration
	// and acknowledges; after it, Commit fails with ErrAborted.
	Abort(ctx context.Context, id, why string) error
}
