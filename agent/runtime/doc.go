// Package runtime runs one node's containers with runc.
//
// It owns three things:
//
//   - OCI spec generation (GenerateSpec, WriteBundle): a pure translation of
//     what the agent was asked to run (args, env, user, limits, labels,
//     network namespace, cgroup path) into a runtime-spec config that runc
//     runs as root without a terminal.
//   - The runc driver (Runc): state, list, kill, delete, exec and CRIU
//     checkpoint by shelling out to the runc binary, which is runc's
//     interface. Errors carry runc's own message and the container id, and
//     for CRIU the path and last lines of CRIU's log.
//   - The per-container shim (StartShim on the agent's side, RunShim as the
//     entry of the hidden `godwit shim` command). The shim creates and starts
//     the container (or restores it from CRIU images, ShimConfig.
//     RestoreFrom), owns its stdout and stderr pipes, writes its log with
//     size-based rotation, reaps it as a child subreaper and records its exit
//     status. It lives in its own session (and, when told, its own cgroup),
//     so it outlives the agent; a restarted agent finds it again through the
//     files in the container's state directory (ShimAlive, ReadExit,
//     ReadLogs).
//
// The container's standard streams are always pipes whose other ends the
// shim holds, and no host file is passed into the container: CRIU can then
// treat the streams as external descriptors when the container is
// checkpointed.
package runtime
