package clusterlink

import "errors"

var (
	// ErrLeaseExpired: the node holds no valid lease with the scheduler
	// (never registered, lapsed, or told to register again). Check's
	// error wraps it, in a message naming the node and since when.
	ErrLeaseExpired = errors.New("no valid lease")
	// ErrNoScheduler: no scheduler is known to be alive: none in the
	// gossip pool, or the pool could not be joined.
	ErrNoScheduler = errors.New("no scheduler found")
	// ErrInvalidConfig: Start was given a configuration it cannot use.
	ErrInvalidConfig = errors.New("invalid cluster link configuration")
)
