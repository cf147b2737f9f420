package fsm

import "errors"

// Sentinel errors of the commands and of snapshot restore. Lookups that
// find nothing wrap state.ErrNotFound; names and addresses in use wrap
// state.ErrNameTaken and state.ErrAddressTaken; address exhaustion wraps
// state.ErrCIDRFull or state.ErrNoClusterCIDR.
var (
	// ErrUnknownCommand: the log entry's type byte names no command this
	// godwit knows: a newer version wrote it.
	ErrUnknownCommand = errors.New("unknown command type")
	// ErrBadCommand: the log entry's payload does not decode.
	ErrBadCommand = errors.New("malformed command")
	// ErrInvalid: a command's arguments are invalid (an empty name, an
	// unknown state word ...).
	ErrInvalid = errors.New("invalid argument")
	// ErrCIDRConflict: the cluster was initialised with another CIDR.
	ErrCIDRConflict = errors.New("cluster CIDR is already set to another network")
	// ErrNodeNotEmpty: a node cannot be removed while containers are on
	// it.
	ErrNodeNotEmpty = errors.New("node still has containers")
	// ErrNodeDown: the node is down; its agent must register again (a new
	// epoch) before anything is placed on it or taken from its reports.
	ErrNodeDown = errors.New("node is down")
	// ErrStaleEpoch: a report carries an epoch older than the node's
	// current registration.
	ErrStaleEpoch = errors.New("stale node epoch")
	// ErrContainerExists: a container with this ID exists already (a
	// placement retried after it committed).
	ErrContainerExists = errors.New("container ID already exists")
	// ErrMigrationExists: a migration with this ID exists already (a
	// proposal retried after it committed).
	ErrMigrationExists = errors.New("migration ID already exists")
	// ErrNodeNotReady: a migration's destination is not ready (it is
	// cordoned, draining, suspect or down): nothing may move to it.
	ErrNodeNotReady = errors.New("node is not ready")
	// ErrWrongNode: the container is not on the migration's source node.
	ErrWrongNode = errors.New("container is not on that node")
	// ErrStaleGeneration: the container's generation is no longer the one
	// the migration began at: another move committed since.
	ErrStaleGeneration = errors.New("stale container generation")
	// ErrNotReady: only a migration in phase ready commits.
	ErrNotReady = errors.New("migration is not ready to commit")
	// ErrNotCommitted: only a committed migration finishes.
	ErrNotCommitted = errors.New("migration is not committed")
	// ErrCommitted: a committed migration cannot be aborted (the
	// destination's copy is the container); it can only finish.
	ErrCommitted = errors.New("migration already committed")
	// ErrAborted: an aborted migration cannot move on.
	ErrAborted = errors.New("migration already aborted")
	// ErrBackwards: a migration's phase cannot go back.
	ErrBackwards = errors.New("migration phase cannot go back")
	// ErrDrainRunning: the node is being drained already.
	ErrDrainRunning = errors.New("a drain of the node is running")
	// ErrDrainNotRunning: the node has no running drain.
	ErrDrainNotRunning = errors.New("no drain of the node is running")
	// ErrDrainParallel: the drain already moves MaxParallel containers.
	ErrDrainParallel = errors.New("the drain moves as many containers as it may at once")
	// ErrPanic: applying the command panicked; the command changed
	// nothing. It is a bug: the log says where.
	ErrPanic = errors.New("command failed unexpectedly")
	// ErrSnapshotFormat: the snapshot is not a godwit state snapshot, or
	// a version this godwit does not read.
	ErrSnapshotFormat = errors.New("unsupported snapshot")
	// ErrSnapshotCorrupt: the snapshot is truncated or damaged.
	ErrSnapshotCorrupt = errors.New("corrupt snapshot")
)
