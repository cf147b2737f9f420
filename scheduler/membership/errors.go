package membership

import "errors"

var (
	// ErrInvalidConfig: Start was given a configuration it cannot use;
	// the message says which setting and what to give instead.
	ErrInvalidConfig = errors.New("invalid gossip configuration")
	// ErrMetaTooLarge: a member's tags do not fit in memberlist's node
	// metadata (memberlist.MetaMaxSize bytes).
	ErrMetaTooLarge = errors.New("gossip tags too large")
	// ErrJoin: Join reached none of the addresses it was given.
	ErrJoin = errors.New("cannot join the gossip pool")
	// ErrShutdown: the pool was shut down.
	ErrShutdown = errors.New("gossip pool is shut down")

	// errBadMeta: another member's metadata cannot be read; that member
	// is listed without role or tags.
	errBadMeta = errors.New("unreadable gossip tags")
)
