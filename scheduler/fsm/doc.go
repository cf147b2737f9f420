// Package fsm is the raft finite state machine of the scheduler: the
// typed commands that change the cluster state, one apply function each,
// and the snapshot format of that state.
//
// Contract:
//
//   - Who writes: only the leader proposes commands (raft.Apply with the
//     bytes of Encode); every replica's FSM applies the committed log in
//     order to its state.Store, the only writer of that store.
//   - Determinism: a command carries everything its apply needs,
//     including the leader's time (its At field; AppendAudit's
//     Record.Time), so applying reads no clock, no randomness and no map
//     order. Replicas that apply the same log hold the same state.
//   - Encoding: one type byte (CommandType, never renumbered) and the
//     command's JSON, or for PlaceContainers, most of the log, its
//     MessagePack (encoding.go: faster to decode; entries written as JSON
//     before still decode). An unknown type or a payload that does not decode
//     is refused loudly: Apply returns a Result whose Err wraps
//     ErrUnknownCommand or ErrBadCommand and logs at error level. Apply
//     never panics: a panic in a command is recovered, changes nothing and
//     returns ErrPanic.
//   - Migrations and drains (cmd_migration.go, cmd_drain.go) are
//     records that the leader moves one raft entry per step, so that a
//     new leader resumes or aborts each from its record alone. CommitMove
//     is the commit point of a move: the migration's phase, the
//     container's node and its generation change in one entry.
//   - Results: Apply returns a Result; Err is a refusal (the state did not
//     change), Value is the command's own result (see each command).
//     Refusals wrap this package's and scheduler/state's sentinel errors.
//   - Snapshots: Snapshot holds a state snapshot (O(1)); Persist streams
//     newline-separated JSON: a header {"format":"godwit-state",
//     "version":1,"index":N,"table_indexes":{...}}, one line per record
//     ({"table":T,"record":R}) for the tables config, nodes, containers,
//     images, audit, migrations, drains, balance_policy and
//     balance_decisions, in that order (a snapshot from before a table
//     existed simply has none of its records), and an end line
//     {"end":true,"records":COUNT}. Restore reads it into a fresh store
//     and swaps it in only when it read all of it; another format, a
//     newer version, a missing end line or a count that does not match is
//     refused with ErrSnapshotFormat or ErrSnapshotCorrupt, and the state
//     stays as it was.
package fsm
