package main

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/scheduler/server"
)

// Issue 5's targets (item 12).
const (
	// throughputTarget is the placements a second committed through three
	// voters with durable storage, batching allowed.
	throughputTarget = 5000
	// memoryTarget bounds one scheduler's resident memory holding the
	// simulated cluster.
	memoryTarget = 500 << 20
)

// conditions are what the numbers depend on.
type conditions struct {
	date      time.Time
	cpu       string
	cores     int
	memory    int64
	kernel    string
	goVersion string
	// gogc is the collector's target the replicas ran with
	// (server.TuneGC).
	gogc     string
	revision string
	workDir  string
	workFS   string
	// loadStart and loadEnd are /proc/loadavg's three averages when the
	// benchmark started and ended: the machine is shared.
	loadStart, loadEnd string
	// productionTiming: the throughput clusters ran DefaultRaftTiming.
	productionTiming bool
}

func hostConditions(work string, o options) conditions {
	return conditions{
		date:             time.Now().UTC(),
		cpu:              benchutil.CPUModel(),
		cores:            runtime.NumCPU(),
		memory:           benchutil.MemoryTotal(),
		kernel:           benchutil.Kernel(),
		goVersion:        runtime.Version(),
		gogc:             o.gogc,
		revision:         benchutil.Revision(),
		workDir:          work,
		workFS:           benchutil.Filesystem(work),
		loadStart:        benchutil.LoadAverage(),
		productionTiming: o.timing == server.DefaultRaftTiming(),
	}
}

// report is the whole benchmark's outcome.
type report struct {
	cond       conditions
	opts       options
	throughput map[throughputKey][]throughputSample
	memory     []memoryResult
	placement  map[placementKey][]placementSample
}

// median is the median of xs (the lower middle for an even count).
func median[T int64 | uint64 | float64 | time.Duration](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// of maps each sample to a value.
func of[S, T any](samples []S, f func(S) T) []T {
	out := make([]T, len(samples))
	for i, s := range samples {
		out[i] = f(s)
	}
	return out
}

// ms writes a duration in milliseconds, with a decimal under 10 ms.
func ms(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// throughputCells are a throughput row's common cells: placements/s, its
// range over the runs, the commit latency's median and 99th percentile,
// and the CPU per placement (medians over the runs).
func throughputCells(ss []throughputSample) string {
	rates := of(ss, throughputSample.rate)
	return fmt.Sprintf("%.0f | %.0f–%.0f | %s | %s | %s", median(rates), slices.Min(rates), slices.Max(rates),
		ms(median(of(ss, func(s throughputSample) time.Duration { return percentile(s.latencies, 50) }))),
		ms(median(of(ss, func(s throughputSample) time.Duration { return percentile(s.latencies, 99) }))),
		us(median(of(ss, func(s throughputSample) time.Duration { return s.cpu / time.Duration(s.placements) }))))
}

// placingShare is the median share of a measurement's time that the
// leader spent deciding, in percent.
func placingShare(ss []throughputSample) float64 {
	return median(of(ss, func(s throughputSample) float64 { return 100 * s.placing.Seconds() / s.elapsed.Seconds() }))
}

// kib writes bytes as KiB.
func kib(n uint64) string { return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10)) }

// us writes a duration in microseconds.
func us(d time.Duration) string { return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond)) }

func (r report) render() string {
	var b strings.Builder
	o := r.opts
	c := r.cond
	fmt.Fprintf(&b, "## Scheduler (issue 5)\n\n")
	fmt.Fprintf(&b, "Conditions: %s, %s, %d CPUs, %.1f GiB, kernel %s, %s (GOGC %s, as a scheduler runs); godwit from %s;\n",
		c.date.Format("2006-01-02 15:04 MST"), c.cpu, c.cores, float64(c.memory)/(1<<30), c.kernel, c.goVersion, c.gogc, c.revision)
	fmt.Fprintf(&b, "raft data dirs on %s (%s); load average %s at the start, %s at the end.\n",
		c.workFS, c.workDir, c.loadStart, c.loadEnd)
	timing := "production's (DefaultRaftTiming)"
	if !c.productionTiming {
		timing = "fast (tests)"
	}
	fmt.Fprintf(&b, "%d nodes registered first; %d placements per measurement from %d proposers (the placement queue: from each number of callers); raft timing %s; medians of %d runs.\n\n",
		o.nodes, o.placements, o.proposers, timing, o.runs)

	fmt.Fprintf(&b, "Placements committed per second, the nodes chosen ahead (round robin; raft and the FSM alone), %d placements per measurement:\n\n", o.placements)
	b.WriteString("| batch | committed by | placements/s | runs (min–max) | commit p50 | commit p99 | CPU per placement | of FSM alone |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, batch := range o.batches {
		ceiling := median(of(r.throughput[throughputKey{decide: decideAhead, batch: batch, path: pathFSM}], throughputSample.rate))
		for _, p := range []path{pathRaftBolt, pathRaftMemory, pathFSM} {
			ss := r.throughput[throughputKey{decide: decideAhead, batch: batch, path: p}]
			if len(ss) == 0 {
				continue
			}
			share := "—"
			if p != pathFSM && ceiling > 0 {
				share = fmt.Sprintf("%.0f%%", 100*median(of(ss, throughputSample.rate))/ceiling)
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %s |\n", batch, p.title(), throughputCells(ss), share)
		}
	}
	fmt.Fprintf(&b, "\nThe benchmark's own leader loop: each container placed by placement.Place (binpack) on the leader's state, one decision at a time, then its batch committed; %s per measurement:\n\n", o.wholeDuration)
	b.WriteString("| batch | committed by | placements/s | runs (min–max) | commit p50 | commit p99 | CPU per placement | placing |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|\n")
	for _, batch := range o.batches {
		for _, p := range wholeLoopPaths {
			ss := r.throughput[throughputKey{decide: decidePlace, batch: batch, path: p}]
			if len(ss) == 0 {
				continue
			}
			fmt.Fprintf(&b, "| %d | %s | %s | %.0f%% |\n", batch, p.title(), throughputCells(ss), placingShare(ss))
		}
	}
	b.WriteString("\n")

	if len(o.callers) > 0 {
		fmt.Fprintf(&b, "The scheduler's placement queue (server.Placer, what Run calls): callers in parallel, one container per call; the Placer takes every waiting call (up to %d) into one entry, decided on one snapshot, each decision reserved before the next; %s per measurement. Latency is a call's, from Place to its answer; \"deciding\" and \"leader check\" are the shares of the time the Placer's one goroutine spent deciding and confirming its leadership before each batch (RaftNode.LeaderCaughtUp: it leads, and a barrier of its term has applied; one barrier per term):\n\n",
			server.DefaultMaxPlaceBatch, o.wholeDuration)
		b.WriteString("| callers | committed by | placements/s | runs (min–max) | call p50 | call p99 | CPU per placement | containers per entry | deciding | leader check |\n")
		b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, n := range o.callers {
			for _, p := range wholeLoopPaths {
				ss := r.throughput[throughputKey{decide: decideServer, callers: n, path: p}]
				if len(ss) == 0 {
					continue
				}
				fmt.Fprintf(&b, "| %d | %s | %s | %.1f | %.0f%% | %.0f%% |\n", n, p.title(), throughputCells(ss),
					median(of(ss, func(s throughputSample) float64 { return float64(s.placements) / float64(max(s.entries, 1)) })), placingShare(ss),
					median(of(ss, func(s throughputSample) float64 { return 100 * s.verifying.Seconds() / s.elapsed.Seconds() })))
			}
		}
		b.WriteString("\n")
	}

	if len(r.memory) > 0 {
		m0 := r.memory[0]
		fmt.Fprintf(&b, "One replica's memory, %d nodes and %d containers (a single voter with bolt stores and TLS, filled through raft, then a raft snapshot; in a process of its own):\n\n",
			m0.Nodes, m0.Containers)
		b.WriteString("|  | before the fill | after fill, snapshot, GC | settled (free pages returned) |\n")
		b.WriteString("|---|---:|---:|---:|\n")
		row := func(name string, f func(memoryState) int64) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name,
				benchutil.MiB(median(of(r.memory, func(m memoryResult) int64 { return f(m.Before) }))),
				benchutil.MiB(median(of(r.memory, func(m memoryResult) int64 { return f(m.After) }))),
				benchutil.MiB(median(of(r.memory, func(m memoryResult) int64 { return f(m.Settled) }))))
		}
		row("resident (VmRSS)", func(m memoryState) int64 { return m.RSS })
		row("anonymous (RssAnon)", func(m memoryState) int64 { return m.RSSAnon })
		row("file-backed (RssFile: bolt's map, the binary)", func(m memoryState) int64 { return m.RSSFile })
		row("Go heap in use", func(m memoryState) int64 { return int64(m.HeapInuse) })
		row("Go heap, live objects", func(m memoryState) int64 { return int64(m.HeapAlloc) })
		row("runtime total (Sys)", func(m memoryState) int64 { return int64(m.Sys) })
		peak := median(of(r.memory, func(m memoryResult) int64 { return m.Peak }))
		fmt.Fprintf(&b, "\nPeak resident (VmHWM, fill and snapshot included): %s. Fill through raft: %.1f s; FSM snapshot %s; raft data dir %s.\n\n",
			benchutil.MiB(peak), median(of(r.memory, func(m memoryResult) time.Duration { return m.Fill })).Seconds(),
			benchutil.MiB(median(of(r.memory, func(m memoryResult) int64 { return m.SnapshotBytes }))),
			benchutil.MiB(median(of(r.memory, func(m memoryResult) int64 { return m.RaftDirBytes }))))
	}

	budget := time.Second / throughputTarget
	if len(r.placement) > 0 {
		fmt.Fprintf(&b, "Placement alone on %d nodes holding %d containers (placement.Place, one decision at a time, nothing committed; on a Table each decision is reserved before the next, as the Placer does); the target rate leaves %s per placement:\n\n",
			o.nodes, o.containers, us(budget))
		b.WriteString("| algorithm | state read through | per decision | decisions/s | of the budget | allocations per decision | bytes per decision |\n")
		b.WriteString("|---|---|---:|---:|---:|---:|---:|\n")
		for _, alg := range algorithms {
			for _, v := range views {
				ss := r.placement[placementKey{alg, v}]
				if len(ss) == 0 {
					continue
				}
				per := median(of(ss, placementSample.perDecision))
				fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %.0f%% | %d | %s |\n", alg, v, us(per), float64(time.Second)/float64(per),
					100*float64(per)/float64(budget),
					median(of(ss, func(s placementSample) uint64 { return s.allocs / uint64(s.decisions) })),
					kib(median(of(ss, func(s placementSample) uint64 { return s.bytes / uint64(s.decisions) }))))
			}
		}
		b.WriteString("\n")
	}

	b.WriteString(r.targets())
	return b.String()
}

// targets says whether issue 5's targets were met.
func (r report) targets() string {
	var b strings.Builder
	b.WriteString("Targets (issue 5, item 12):\n\n")
	// best is the row of d on the durable cluster with the most
	// placements a second, and that rate.
	best := func(d decide) (throughputKey, float64) {
		var bestKey throughputKey
		best := 0.0
		for key, ss := range r.throughput {
			if key.decide != d || key.path != pathRaftBolt {
				continue
			}
			if rate := median(of(ss, throughputSample.rate)); rate > best {
				bestKey, best = key, rate
			}
		}
		return bestKey, best
	}
	if key, rate := best(decideServer); key.callers > 0 {
		fmt.Fprintf(&b, "- at least %d placements a second through three voters with durable storage, through the scheduler's placement queue (what Run calls): %s, %.0f a second (%d callers).\n",
			throughputTarget, benchutil.Verdict(rate >= throughputTarget), rate, key.callers)
	}
	if key, rate := best(decidePlace); key.batch > 0 {
		fmt.Fprintf(&b, "- the same, the benchmark's own loop, placement included: %s, %.0f a second (batches of %d).\n",
			benchutil.Verdict(rate >= throughputTarget), rate, key.batch)
	}
	if key, rate := best(decideAhead); key.batch > 0 {
		fmt.Fprintf(&b, "- the same, the nodes chosen ahead (raft and the FSM alone): %s, %.0f a second (batches of %d).\n",
			benchutil.Verdict(rate >= throughputTarget), rate, key.batch)
	}
	if len(r.memory) > 0 {
		after := median(of(r.memory, func(m memoryResult) int64 { return m.After.RSS }))
		peak := median(of(r.memory, func(m memoryResult) int64 { return m.Peak }))
		fmt.Fprintf(&b, "- at most %s resident holding %d nodes and %d containers: %s, %s after the fill (%s at the peak).\n",
			benchutil.MiB(memoryTarget), r.memory[0].Nodes, r.memory[0].Containers,
			benchutil.Verdict(after <= memoryTarget && peak <= memoryTarget), benchutil.MiB(after), benchutil.MiB(peak))
	}
	return b.String()
}
