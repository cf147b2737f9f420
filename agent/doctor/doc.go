// Package doctor checks whether a host can run godwit's node agent and which
// migration strategies it supports.
//
// It owns the list of host requirements (root, CRIU, runc, cgroups,
// overlayfs, the network lock, ...), how each is probed, and the rule that
// derives the supported migration strategies from the checks. `godwit
// doctor` prints its Report; the migration engine reuses Run and
// DeriveStrategies to choose a strategy for a move.
//
// Every probe of the host goes through the function fields of host, so that
// unit tests feed fake hosts; Run uses the real one. Run never modifies the
// host's configuration: the only side effects are a throw-away overlay mount
// in a temporary directory, clearing this process's own soft-dirty bits,
// running `criu check`, and a CRIU page server on the loopback address that
// ends after the probe's one connection. Cache keeps one Report per process
// (the agent's NodeInfo reports the strategies from it).
package doctor
