package main

import (
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/scheduler/balance"
)

// Issue 7's targets.
const (
	// migrationShare: reach the target with at most this share of the
	// baseline's migrations.
	migrationShare = 0.70
	// planningBudget bounds one round's planning at the largest size.
	planningBudget = time.Second
	// planningTargetNodes is the size the planning budget is for.
	planningTargetNodes = 1000
)

// conditions are what the numbers depend on.
type conditions struct {
	date               time.Time
	cpu                string
	cores              int
	goVersion          string
	revision           string
	loadStart, loadEnd string
}

func hostConditions() conditions {
	return conditions{
		date: time.Now().UTC(), cpu: benchutil.CPUModel(), cores: runtime.NumCPU(),
		goVersion: runtime.Version(), revision: benchutil.Revision(), loadStart: benchutil.LoadAverage(),
	}
}

// markdown is the report: conditions, one table per size, the targets.
func markdown(o options, c conditions, all [][]result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Balancer simulation (issue 7)\n\n")
	fmt.Fprintf(&b, "Conditions: %s, %s (%d CPUs), %s, %s; load average %s at the start, %s at the end.\n\n",
		c.date.Format("2006-01-02 15:04 UTC"), c.cpu, c.cores, c.goVersion, c.revision, c.loadStart, c.loadEnd)
	fmt.Fprintf(&b, "Workload: seed %d; %d phases of %d rounds of %s (%s simulated), %d rounds sampled first; about %d containers per node.\n\n",
		o.seed, o.phases, o.phaseRounds, o.interval, time.Duration(o.phases*o.phaseRounds)*o.interval, o.warmup, o.perNode)
	fmt.Fprintf(&b, "godwit: `balance.Plan` with the default policy (%s).\n\n", policySummary(o.policy))
	fmt.Fprintf(&b, "baseline: LowNodeUtilization with useDeviationThresholds and actual use: thresholds %g/%g and targetThresholds %g/%g points (CPU/memory) around the mean; evicted containers placed on the least used node placement accepts.\n\n",
		o.baseline.Thresholds.CPU, o.baseline.Thresholds.Memory, o.baseline.Targets.CPU, o.baseline.Targets.Memory)

	for _, rs := range all {
		g, base := rs[0], rs[1]
		fmt.Fprintf(&b, "## %d nodes (%d more join), %d containers\n\n", g.nodes, g.joined, g.containers)
		fmt.Fprintf(&b, "|  | godwit | baseline (LowNodeUtilization) |\n|---|---:|---:|\n")
		row := func(name string, f func(r result) string) {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", name, f(g), f(base))
		}
		row("imbalance at the start", func(r result) string { return fmt.Sprintf("%.3f", r.series[0]) })
		row("imbalance at the end", func(r result) string { return fmt.Sprintf("%.3f", r.series[len(r.series)-1]) })
		row("imbalance, mean over the run", func(r result) string { return fmt.Sprintf("%.3f", mean(r.series)) })
		row(fmt.Sprintf("rounds at or under the target (%.2f)", g.target), func(r result) string {
			return fmt.Sprintf("%.0f%%", 100*share(r.series, r.target))
		})
		for i := range g.phases {
			row(fmt.Sprintf("phase %d: time to the target (migrations until then)", i+1), func(r result) string {
				ph := r.phases[i]
				if ph.reached < 0 {
					return fmt.Sprintf("not reached (%d)", ph.toTarget)
				}
				return fmt.Sprintf("%s (%d)", ph.reached, ph.toTarget)
			})
		}
		row("migrations (the balancer's)", func(r result) string { return fmt.Sprint(r.migrations) })
		row("bytes moved", func(r result) string { return gib(r.bytes) })
		row("containers' downtime, in all", func(r result) string { return fmt.Sprintf("%.0f s", r.downtime) })
		row("ping-pong moves (back within the cooldown)", func(r result) string { return fmt.Sprint(r.pingPong) })
		row("drain moves (the same drain for both)", func(r result) string { return fmt.Sprint(r.drainMoves) })
		row("rounds that planned moves", func(r result) string { return fmt.Sprintf("%d of %d", r.planned, len(r.series)) })
		row("planning per round, p50 / max (wall clock)", func(r result) string {
			return fmt.Sprintf("%s / %s", ms(percentile(r.planTimes, 0.5)), ms(slices.Max(r.planTimes)))
		})
		row("planning per round, p50 / max (CPU time)", func(r result) string {
			return fmt.Sprintf("%s / %s", ms(percentile(r.planCPU, 0.5)), ms(slices.Max(r.planCPU)))
		})
		b.WriteString("\n")
	}
	b.WriteString("## Targets (issue 7)\n\n")
	for _, v := range verdicts(all) {
		fmt.Fprintf(&b, "- %s\n", v)
	}
	return b.String()
}

// verdicts say, per target, whether godwit met it.
func verdicts(all [][]result) []string {
	var pingPong, migrations, planning []string
	ppMet, migMet, planMet := true, true, true
	planMeasured := false
	for _, rs := range all {
		g, base := rs[0], rs[1]
		pingPong = append(pingPong, fmt.Sprintf("%d nodes: godwit %d, baseline %d", g.nodes, g.pingPong, base.pingPong))
		ppMet = ppMet && g.pingPong == 0
		reachedAll := !slices.ContainsFunc(g.phases, func(p phaseResult) bool { return p.reached < 0 })
		ratio := float64(g.migrations) / float64(max(base.migrations, 1))
		migMet = migMet && reachedAll && float64(g.migrations) <= migrationShare*float64(base.migrations)
		reached := "reached the target in every phase"
		if !reachedAll {
			reached = "did NOT reach the target in every phase"
		}
		baseReached := len(base.phases) - countFunc(base.phases, func(p phaseResult) bool { return p.reached < 0 })
		migrations = append(migrations, fmt.Sprintf("%d nodes: godwit %s with %d migrations, %.0f%% of the baseline's %d (which reached it in %d of %d phases)",
			g.nodes, reached, g.migrations, 100*ratio, base.migrations, baseReached, len(base.phases)))
		if g.nodes >= planningTargetNodes {
			planMeasured = true
			mx := slices.Max(g.planTimes)
			planMet = planMet && mx < planningBudget
			planning = append(planning, fmt.Sprintf("%d nodes, %d containers: wall clock p50 %s, max %s; CPU time p50 %s, max %s",
				g.nodes, g.containers, ms(percentile(g.planTimes, 0.5)), ms(mx), ms(percentile(g.planCPU, 0.5)), ms(slices.Max(g.planCPU))))
		}
	}
	planVerdict := benchutil.Verdict(planMet)
	if !planMeasured {
		planVerdict = "not measured (no size of 1,000 nodes or more in this run)"
	}
	return []string{
		fmt.Sprintf("zero ping-pong: **%s** (%s).", benchutil.Verdict(ppMet), strings.Join(pingPong, "; ")),
		fmt.Sprintf("reach the target imbalance with at most %.0f%% of the baseline's migrations: **%s** (%s).",
			100*migrationShare, benchutil.Verdict(migMet), strings.Join(migrations, "; ")),
		fmt.Sprintf("planning under %s per round at %d nodes: **%s** (%s).", planningBudget, planningTargetNodes, planVerdict, strings.Join(planning, "; ")),
	}
}

// policySummary lists the policy's settings that matter to the plan.
func policySummary(p balance.Policy) string {
	var kv []string
	for _, s := range p.Settings() {
		switch s.Key {
		case "enabled", "interval":
			continue
		}
		kv = append(kv, s.Key+"="+s.Value)
	}
	return strings.Join(kv, ", ")
}

func mean(xs []float64) float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(max(len(xs), 1))
}

func share(xs []float64, atMost float64) float64 {
	return float64(countFunc(xs, func(x float64) bool { return x <= atMost })) / float64(max(len(xs), 1))
}

func countFunc[T any](xs []T, f func(T) bool) int {
	n := 0
	for _, x := range xs {
		if f(x) {
			n++
		}
	}
	return n
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func gib(bytes int64) string { return fmt.Sprintf("%.1f GiB", float64(bytes)/(1<<30)) }
