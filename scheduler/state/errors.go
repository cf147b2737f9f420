package state

import "errors"

// Sentinel errors. Callers match them with errors.Is; the messages that
// wrap them name the object and say what to do next.
var (
	// ErrNotFound: no node, container or image answers to the name.
	ErrNotFound = errors.New("not found")
	// ErrAmbiguous: a container ID prefix matches more than one container.
	ErrAmbiguous = errors.New("is ambiguous")
	// ErrNameTaken: another container already has the name.
	ErrNameTaken = errors.New("name is already in use")
	// ErrAddressTaken: another container already holds the IP address.
	ErrAddressTaken = errors.New("address is already in use")
	// ErrNoClusterCIDR: the cluster CIDR is not set, so no container
	// address can be allocated.
	ErrNoClusterCIDR = errors.New("cluster CIDR is not set")
	// ErrCIDRFull: every usable address of the cluster CIDR is held by a
	// container.
	ErrCIDRFull = errors.New("cluster CIDR has no free address")
	// ErrMigrationOpen: the container has an open migration already (at
	// most one per container), or cannot be deleted while it has one.
	ErrMigrationOpen = errors.New("has an open migration")
	// ErrEventsLost: a watcher asked for events the ring no longer holds
	// (it fell behind, or the state was restored from a snapshot); it
	// should re-read the state and watch from the store's index.
	ErrEventsLost = errors.New("events were lost")
)
