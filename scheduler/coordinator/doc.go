// Package coordinator drives live migrations for the scheduler leader,
// as raft-persisted state machines: it chooses the destination (placement)
// and the strategy (migrate.Choose), records the migration in raft, drives
// the two agents with the migrate engine, records every phase, and makes
// the move's decision a raft entry (fsm.CommitMove: the container's new
// node and its bumped generation, in one entry) before the destination is
// told to run its copy.
//
// Only the leader drives. When it stops leading, every move it drives is
// cut off at once: the agents' calls fail (fencedSide), so the engine
// cannot abort or commit anything on its own; the next leader settles each
// open migration from its record alone (Lead): a move that committed
// finishes, one that did not is aborted and the source runs the container
// again, and the event says which and why.
package coordinator
