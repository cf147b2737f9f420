// Command scheduler measures the raft-backed scheduler (issue 5, item 12)
// in one process, with the scheduler's own packages and no agents:
//
//   - placements per second committed through three voters with durable
//     storage: three scheduler raft nodes (server.OpenRaft: bolt stores
//     that fsync, mutual TLS over loopback, production timing) with the
//     real FSM and 1,000 nodes registered, and several proposers, each
//     committing one fsm.PlaceContainers entry per batch of containers.
//     First with the nodes chosen ahead (what raft and the FSM sustain),
//     on that cluster, on raft with in-memory stores (what durability
//     costs) and on the FSM alone without raft (the ceiling); then the
//     leader's whole loop, each container placed by placement.Place on
//     the leader's state.Snapshot (one decision at a time, what is placed
//     but not committed yet reserved) before its batch is committed; and
//     the scheduler's own placement queue (server.Placer, what Run calls)
//     with callers in parallel, one container per call;
//   - the resident memory of one scheduler replica holding a simulated
//     1,000-node, 30,000-container cluster, filled through raft and
//     snapshotted, measured in a child process of its own, against the
//     same process before the fill;
//   - placement alone, per decision, on that state (binpack and spread),
//     on a placement.Table of a fresh state.Snapshot per decision, on one
//     per 256 decisions (a full batch of the Placer, each decision
//     reserved on it), and on plain Go maps holding the same state (every
//     node evaluated anew, reading the state costing next to nothing),
//     against the time a placement may take at the target rate.
//
// It needs neither root nor a godwit binary, and removes what it wrote:
//
//	go run ./bench/scheduler [--batches 1,16,64,256] [--placements 20000] [--proposers 8]
//		[--callers 16,256] [--whole-duration 10s] [--runs 3] [--paths raft-bolt,raft-memory,fsm] [--nodes 1000]
//		[--containers 30000] [--decisions 500] [--work-dir DIR] [--cpuprofile FILE] [--out FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/scheduler/server"
)

const (
	// defaultBatches are the containers per raft entry measured.
	defaultBatches = "1,16,64,256"
	// defaultPlacements is how many containers one throughput
	// measurement places: enough for a few dozen entries at the largest
	// batch, and seconds at the smallest.
	defaultPlacements = 20000
	// defaultProposers is how many goroutines propose at once, as
	// concurrent API calls would on a leader.
	defaultProposers = 8
	// defaultRuns is how many times each figure is measured; the report
	// shows the medians.
	defaultRuns = 3
	// defaultNodes and defaultContainers are issue 5's simulated cluster.
	defaultNodes      = 1000
	defaultContainers = 30000
	// defaultDecisions is how many placements one run of the
	// placement-alone measurement times.
	defaultDecisions = 500
	// defaultWholeDuration bounds each measurement of the leader's whole
	// loop (placement and commit), which places far fewer containers a
	// second than raft commits.
	defaultWholeDuration = 10 * time.Second
)

type options struct {
	// gogc is the collector's target in force (server.TuneGC).
	gogc    string
	batches []int
	// callers are the numbers of concurrent callers of the Placer.
	callers    []int
	paths      []path
	placements int
	// wholeDuration bounds each measurement of the whole loop.
	wholeDuration time.Duration
	proposers     int
	runs          int
	nodes         int
	containers    int
	decisions     int
	workDir       string
	cpuProfile    string
	out           string
	// timing is raft's timing in the throughput clusters: production's
	// (DefaultRaftTiming) unless a test makes elections fast.
	timing server.RaftTiming
}

func main() {
	// The replicas' collector runs as a scheduler process's does.
	gogc := server.TuneGC()
	// The memory measurement runs in a child process: this same binary.
	if code, ok := runChild(); ok {
		os.Exit(code)
	}
	o := options{timing: server.DefaultRaftTiming(), gogc: gogc}
	var batches, callers, paths string
	flag.StringVar(&batches, "batches", defaultBatches, "containers per raft entry, comma-separated")
	flag.StringVar(&callers, "callers", defaultCallers, "concurrent callers of the scheduler's placement queue (server.Placer), comma-separated")
	flag.StringVar(&paths, "paths", string(pathRaftBolt)+","+string(pathRaftMemory)+","+string(pathFSM),
		"what commits the placements, comma-separated: raft-bolt (three voters, bolt stores, fsync), raft-memory (three voters, in-memory stores), fsm (the FSM alone)")
	flag.IntVar(&o.placements, "placements", defaultPlacements, "containers placed by one throughput measurement")
	flag.DurationVar(&o.wholeDuration, "whole-duration", defaultWholeDuration, "how long each measurement of the leader's whole loop (placement, then commit) proposes")
	flag.IntVar(&o.proposers, "proposers", defaultProposers, "goroutines proposing batches at once")
	flag.IntVar(&o.runs, "runs", defaultRuns, "measurements of each figure (the report shows the medians)")
	flag.IntVar(&o.nodes, "nodes", defaultNodes, "nodes registered in every simulated cluster")
	flag.IntVar(&o.containers, "containers", defaultContainers, "containers of the memory and placement-alone measurements")
	flag.IntVar(&o.decisions, "decisions", defaultDecisions, "placements timed by one run of the placement-alone measurement")
	flag.StringVar(&o.workDir, "work-dir", "", "directory for the raft data dirs (default: a new one in $TMPDIR); not a tmpfs: durable storage is the point, and its filesystem is reported")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the throughput and placement measurements to this file (go tool pprof)")
	flag.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	if o.batches, err = benchutil.ParseSizes(batches); err != nil {
		log.Error("bad --batches: want positive batch sizes such as 1,16,64,256", "err", err)
		os.Exit(2)
	}
	if o.callers, err = benchutil.ParseSizes(callers); err != nil {
		log.Error("bad --callers: want positive numbers of callers such as 16,256", "err", err)
		os.Exit(2)
	}
	if o.paths, err = benchutil.ParseChoices(paths, pathRaftBolt, pathRaftMemory, pathFSM); err != nil {
		log.Error("bad --paths", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("scheduler benchmark failed", "err", err)
		os.Exit(1)
	}
}

func (o options) check() error {
	switch {
	case o.runs < 1:
		return fmt.Errorf("--runs %d: measure at least once", o.runs)
	case o.placements < 1:
		return fmt.Errorf("--placements %d: place at least one container", o.placements)
	case o.wholeDuration <= 0:
		return fmt.Errorf("--whole-duration %s: give the whole loop some time", o.wholeDuration)
	case o.proposers < 1:
		return fmt.Errorf("--proposers %d: propose from at least one goroutine", o.proposers)
	case o.nodes < 1:
		return fmt.Errorf("--nodes %d: register at least one node", o.nodes)
	case o.containers < 1:
		return fmt.Errorf("--containers %d: hold at least one container", o.containers)
	case o.decisions < 1:
		return fmt.Errorf("--decisions %d: time at least one placement", o.decisions)
	}
	// Round robin gives every node the same share, which the smallest
	// node must hold.
	room := roundRobinCapacity(o.nodes)
	if o.placements > room {
		return fmt.Errorf("--placements %d do not fit on %d nodes round robin (room for %d): place fewer or register more nodes", o.placements, o.nodes, room)
	}
	if o.containers > room {
		return fmt.Errorf("--containers %d do not fit on %d nodes round robin (room for %d): hold fewer or register more nodes", o.containers, o.nodes, room)
	}
	return nil
}

// run measures throughput, memory and placement alone, in that order, and
// reports.
func run(ctx context.Context, o options, log *slog.Logger) (err error) {
	if err := o.check(); err != nil {
		return err
	}
	work, err := os.MkdirTemp(o.workDir, "godwit-bench-scheduler-")
	if err != nil {
		return fmt.Errorf("work dir: %w: give a writable --work-dir", err)
	}
	defer func() { err = errors.Join(err, os.RemoveAll(work)) }()
	cond := hostConditions(work, o)
	if cond.workFS == "tmpfs" {
		log.Warn("the work dir is on a tmpfs: fsync costs nothing there, so raft-bolt does not measure durable storage; give --work-dir on a disk", "dir", work)
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}

	rep := report{cond: cond, opts: o}
	if rep.throughput, err = measureAllThroughput(ctx, o, work, log); err != nil {
		return err
	}
	for i := range o.runs {
		log.Info("measuring memory", "nodes", o.nodes, "containers", o.containers, "run", i+1, "of", o.runs)
		m, err := measureMemory(ctx, memoryConfig{Nodes: o.nodes, Containers: o.containers, Dir: work}, log)
		if err != nil {
			return fmt.Errorf("memory, run %d: %w", i+1, err)
		}
		log.Info("measured memory", "rss_before", m.Before.RSS, "rss_after", m.After.RSS, "peak", m.Peak, "heap_after", m.After.HeapInuse)
		rep.memory = append(rep.memory, m)
	}
	if rep.placement, err = measureAllPlacement(ctx, o, log); err != nil {
		return err
	}
	rep.cond.loadEnd = benchutil.LoadAverage()

	text := rep.render()
	fmt.Print(text)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}
