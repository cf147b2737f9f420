package server

import (
	"os"
	"runtime/debug"
	"strconv"
)

// DefaultGCPercent is the garbage collector's target (GOGC) a scheduler
// process runs with unless the GOGC environment variable says otherwise.
// Every replica applies every raft entry, and placing a container
// allocates in the state's radix trees, so at Go's default of 100 the
// collector took about a third of a replica's CPU while placements
// streamed in (bench/scheduler). At 400 the heap may grow to five times
// what is live before a collection, not twice: on 1,000 nodes and 30,000
// containers a replica's resident memory went from about 190 MiB to about
// 280 MiB, well under the 500 MiB the scheduler is sized for, and
// placements through three voters rose by about a quarter
// (docs/benchmarks.md).
const DefaultGCPercent = 400

// TuneGC sets the collector's target to DefaultGCPercent unless the GOGC
// environment variable sets one, which wins; it returns the target in
// force, as GOGC spells it.
func TuneGC() string {
	if v := os.Getenv("GOGC"); v != "" {
		return v
	}
	debug.SetGCPercent(DefaultGCPercent)
	return strconv.Itoa(DefaultGCPercent)
}
