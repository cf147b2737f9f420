// Package migrate is godwit's live-migration engine: the source and the
// destination side of moving one running container between two agents,
// the strategies (stop-copy, stream, pre-copy, post-copy), and the rules
// that keep exactly one copy running whatever fails.
//
// This package holds the parts that are pure logic and shared by both
// sides and the driver: the phases of a migration and which moves between
// them are allowed (phase.go), choosing a strategy from what both hosts
// support (strategy.go), and pre-copy's convergence rules (precopy.go).
// Each side reaches the runtime, snapshots and network only through small
// interfaces this package defines, so that the engine is tested with fakes
// and the agent wires in the real parts. README.md draws the phases and
// what each side holds at each of them.
package migrate
