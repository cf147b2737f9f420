package clusterlink

import (
	"context"
	"fmt"
	"strings"

	"github.com/godwit/godwit/scheduler/membership"
)

// Finder finds the schedulers an agent may call.
type Finder interface {
	// Schedulers returns the gRPC addresses (host:port) of the
	// schedulers believed alive, in a stable order; never an empty list
	// without an error: knowing none, it fails with an error wrapping
	// ErrNoScheduler that says why. It may do I/O (join the gossip pool),
	// bounded by ctx.
	Schedulers(ctx context.Context) ([]string, error)
}

// gossipFinder finds the schedulers among the gossip pool's members: the
// alive ones with the scheduler role and an RPC address tag. When it
// sees none (no join yet, or every scheduler failed while this node was
// cut off, after which memberlist never contacts them again) it joins
// the pool again through the configured addresses.
type gossipFinder struct {
	pool *membership.Pool
	join []string
}

var _ Finder = (*gossipFinder)(nil)

func (f *gossipFinder) Schedulers(ctx context.Context) ([]string, error) {
	if addrs := f.alive(); len(addrs) > 0 {
		return addrs, nil
	}
	if _, err := f.pool.Join(ctx, f.join); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoScheduler, err)
	}
	if addrs := f.alive(); len(addrs) > 0 {
		return addrs, nil
	}
	return nil, fmt.Errorf("%w: the gossip pool joined via %s has %d members and no scheduler: start a scheduler (godwit scheduler), or check that --join names members of this cluster",
		ErrNoScheduler, strings.Join(f.join, ", "), f.pool.NumMembers())
}

// alive lists the RPC addresses of the alive schedulers, in the order of
// their names.
func (f *gossipFinder) alive() []string {
	var out []string
	for _, m := range f.pool.Members() {
		if m.Role == membership.RoleScheduler && m.State == membership.MemberAlive && m.Tags.RPCAddr != "" {
			out = append(out, m.Tags.RPCAddr)
		}
	}
	return out
}
