// Command balance simulates the balancer (issue 7) against synthetic
// clusters and compares it, in the same run, with a baseline modelled on
// the Kubernetes descheduler's LowNodeUtilization:
//
//   - clusters of 100 and 1,000 nodes with about 30 containers per node,
//     placed unevenly, with CPU and memory sizes drawn log-normally;
//   - phases: in each, a tenth of the groups of containers (those first
//     placed together on one node) run hot, at three times their CPU, and
//     the next phase another tenth does (hot spots move); a few nodes join
//     empty at the start of the third phase, and a few are drained at the
//     start of the fourth (the same drain for both policies);
//   - each round (30 s): moves whose time is up land, every container is
//     sampled (its demand with noise, shared out on a node whose demand
//     passes its CPUs), the imbalance is measured from the actual use,
//     the policy plans (godwit: the real balance.Plan on the cluster's
//     state, timed) and its moves start; a move takes the time its memory
//     needs at the pair's bandwidth, and its container runs on the source
//     until it lands.
//
// It reports, per size and policy, the imbalance over time, how long
// each phase took to reach the target, migrations, bytes moved, downtime,
// ping-pong moves (back to a node the container left within the
// cooldown) and planning time per round, against issue 7's targets; and
// draws the imbalance over time as an SVG.
//
//	go run ./bench/balance [--sizes 100,1000] [--containers 30] [--phases 4] [--phase-rounds 40]
//		[--interval 30s] [--seed 1] [--set KEY=VALUE ...] [--out FILE.md] [--svg FILE.svg] [--cpuprofile FILE]
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/scheduler/balance"
)

const (
	defaultSizes      = "100,1000"
	defaultContainers = 30
	// defaultPhases and defaultPhaseRounds: four phases of 20 minutes at
	// 30 s rounds, enough for each hot spot to be balanced away and for
	// a misbehaving policy to show ping-pong.
	defaultPhases      = 4
	defaultPhaseRounds = 40
	// defaultWarmup rounds are sampled before the first plan, so that the
	// planner starts with a full window, as on a cluster that was running.
	defaultWarmup = 10
	defaultSeed   = 1
)

type options struct {
	sizes       []int
	perNode     int
	phases      int
	phaseRounds int
	warmup      int
	interval    time.Duration
	seed        uint64
	// policy is godwit's; baseline the descheduler's settings.
	policy   balance.Policy
	baseline lowNodeUtilization
	out, svg string
	// cpuProfile, when set, is where the simulations' CPU profile goes.
	cpuProfile string
}

func main() {
	o := options{policy: balance.Default(), baseline: defaultBaseline}
	o.policy.Enabled = true
	var sizes string
	flag.StringVar(&sizes, "sizes", defaultSizes, "cluster sizes (nodes), comma-separated")
	flag.IntVar(&o.perNode, "containers", defaultContainers, "mean containers per node")
	flag.IntVar(&o.phases, "phases", defaultPhases, "phases (each with its own hot spots)")
	flag.IntVar(&o.phaseRounds, "phase-rounds", defaultPhaseRounds, "rounds per phase")
	flag.IntVar(&o.warmup, "warmup", defaultWarmup, "rounds sampled before the first plan")
	flag.DurationVar(&o.interval, "interval", balance.DefaultInterval, "time between rounds (the balancer's interval)")
	flag.Uint64Var(&o.seed, "seed", defaultSeed, "seed of the workload and the noise")
	flag.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	flag.StringVar(&o.svg, "svg", "", "write the imbalance-over-time chart (SVG) to this file")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the simulations to this file (go tool pprof)")
	flag.Func("set", "change godwit's policy: KEY=VALUE as `godwit balance set` takes it (repeatable)", func(kv string) error {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("%q: want KEY=VALUE", kv)
		}
		return o.policy.Set(k, v)
	})
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	if o.sizes, err = benchutil.ParseSizes(sizes); err != nil {
		log.Error("bad --sizes: want node counts such as 100,1000", "err", err)
		os.Exit(2)
	}
	if err := o.check(); err != nil {
		log.Error("bad options", "err", err)
		os.Exit(2)
	}
	if err := run(o, log); err != nil {
		log.Error("balance simulation failed", "err", err)
		os.Exit(1)
	}
}

func (o options) check() error {
	switch {
	case o.perNode < 1:
		return fmt.Errorf("--containers %d: at least one per node", o.perNode)
	case o.phases < 1 || o.phaseRounds < 1:
		return fmt.Errorf("--phases %d --phase-rounds %d: at least one of each", o.phases, o.phaseRounds)
	case o.warmup < 0:
		return fmt.Errorf("--warmup %d: zero or more", o.warmup)
	case o.interval <= 0:
		return fmt.Errorf("--interval %s: a positive interval", o.interval)
	}
	if err := o.policy.Validate(); err != nil {
		return fmt.Errorf("godwit's policy: %w", err)
	}
	return nil
}

func run(o options, log *slog.Logger) error {
	c := hostConditions()
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return fmt.Errorf("create the CPU profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("start the CPU profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	var all [][]result
	for _, n := range o.sizes {
		log.Info("simulating", "nodes", n, "containers per node", o.perNode, "rounds", o.phases*o.phaseRounds)
		begin := time.Now()
		rs, err := simulate(o, n)
		if err != nil {
			return err
		}
		log.Info("simulated", "nodes", n, "took", time.Since(begin).Round(time.Millisecond))
		all = append(all, rs)
	}
	c.loadEnd = benchutil.LoadAverage()
	report := markdown(o, c, all)
	fmt.Print(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return fmt.Errorf("write the report: %w", err)
		}
	}
	if o.svg != "" {
		if err := os.WriteFile(o.svg, []byte(chart(o, all)), 0o644); err != nil {
			return fmt.Errorf("write the chart: %w", err)
		}
	}
	return nil
}
