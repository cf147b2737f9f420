package main

import (
	"encoding/xml"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/balance"
)

// tinyOptions simulate a dozen nodes for a few rounds: the tests check
// what the simulation reports, not how well it balances (which, on so
// few nodes, is luck as much as policy).
func tinyOptions() options {
	o := options{
		sizes: []int{12}, perNode: 30, phases: 4, phaseRounds: 12, warmup: 10, interval: 30 * time.Second, seed: 3,
		policy: balance.Default(), baseline: defaultBaseline,
	}
	o.policy.Enabled = true
	return o
}

func TestSimulation(t *testing.T) {
	o := tinyOptions()
	rs, err := simulate(o, o.sizes[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || rs[0].policy != policyGodwit || rs[1].policy != policyBaseline {
		t.Fatalf("simulated %d policies, want godwit then the baseline", len(rs))
	}
	rounds := o.phases * o.phaseRounds
	for _, r := range rs {
		t.Run(r.policy, func(t *testing.T) {
			switch {
			case len(r.series) != rounds || len(r.planTimes) != rounds || len(r.planCPU) != rounds:
				t.Errorf("%d imbalances and %d plan times for %d rounds", len(r.series), len(r.planTimes), rounds)
			case r.nodes != 12 || r.joined != 1:
				t.Errorf("%d nodes and %d joined, want 12 and 1", r.nodes, r.joined)
			case r.containers == 0 || r.migrations == 0 || r.bytes <= 0 || r.downtime <= 0:
				t.Errorf("nothing moved: %d containers, %d migrations, %d bytes, %.1f s downtime", r.containers, r.migrations, r.bytes, r.downtime)
			case r.drainMoves == 0:
				t.Errorf("the drain moved nothing")
			case len(r.phases) != o.phases:
				t.Errorf("%d phase results, want %d", len(r.phases), o.phases)
			}
			total := 0
			for _, p := range r.phases {
				total += p.migrations
				if p.toTarget > p.migrations {
					t.Errorf("phase %+v: more migrations before the target than in all", p)
				}
			}
			if total != r.migrations {
				t.Errorf("phases count %d migrations, the run %d", total, r.migrations)
			}
		})
	}
	g, base := rs[0], rs[1]
	if g.pingPong != 0 {
		t.Errorf("godwit's balancer moved %d containers back within the cooldown", g.pingPong)
	}
	if g.series[0] != base.series[0] {
		t.Errorf("the policies started from different clusters: imbalance %v and %v", g.series[0], base.series[0])
	}

	again, err := simulate(o, o.sizes[0])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again[0].series, g.series) || again[0].migrations != g.migrations || again[1].migrations != base.migrations {
		t.Errorf("the same seed simulated differently")
	}
}

func TestReportAndChart(t *testing.T) {
	o := tinyOptions()
	rs, err := simulate(o, o.sizes[0])
	if err != nil {
		t.Fatal(err)
	}
	report := markdown(o, hostConditions(), [][]result{rs})
	for _, want := range []string{
		"## 12 nodes (1 more join),", "| godwit | baseline (LowNodeUtilization) |", "ping-pong moves", "phase 4: time to the target",
		"planning per round, p50 / max (CPU time)", "zero ping-pong: **met**", "at most 70% of the baseline's migrations",
		"planning under 1s per round at 1000 nodes: **not measured",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	svg := chart(o, [][]result{rs})
	if err := xml.Unmarshal([]byte(svg), new(struct{})); err != nil {
		t.Errorf("the chart is not well-formed XML: %v", err)
	}
	if n := strings.Count(svg, "<polyline"); n != 2 {
		t.Errorf("the chart has %d lines, want one per policy", n)
	}
	for _, want := range []string{"godwit (", "LowNodeUtilization (", "target 0.15"} {
		if !strings.Contains(svg, want) {
			t.Errorf("the chart's legend lacks %q", want)
		}
	}
}

func TestVerdicts(t *testing.T) {
	phases := func(reached ...time.Duration) []phaseResult {
		var ps []phaseResult
		for _, r := range reached {
			ps = append(ps, phaseResult{reached: r})
		}
		return ps
	}
	big := func(policy string, migrations, pingPong int, reached []phaseResult, plan time.Duration) result {
		return result{policy: policy, nodes: 1000, migrations: migrations, pingPong: pingPong, phases: reached,
			planTimes: []time.Duration{plan}, planCPU: []time.Duration{plan}}
	}
	tests := []struct {
		name string
		g    result
		// met are the three verdicts: ping-pong, migrations, planning.
		met [3]bool
	}{
		{"all met", big(policyGodwit, 69, 0, phases(time.Minute, time.Minute), 100*time.Millisecond), [3]bool{true, true, true}},
		{"ping-pong", big(policyGodwit, 69, 1, phases(time.Minute, time.Minute), 100*time.Millisecond), [3]bool{false, true, true}},
		{"too many migrations", big(policyGodwit, 71, 0, phases(time.Minute, time.Minute), 100*time.Millisecond), [3]bool{true, false, true}},
		{"a phase not reached", big(policyGodwit, 10, 0, phases(time.Minute, -1), 100*time.Millisecond), [3]bool{true, false, true}},
		{"planning too slow", big(policyGodwit, 69, 0, phases(time.Minute, time.Minute), 1500*time.Millisecond), [3]bool{true, true, false}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := big(policyBaseline, 100, 5, phases(-1, -1), time.Millisecond)
			vs := verdicts([][]result{{tc.g, base}})
			for i, v := range vs {
				if got := strings.Contains(v, "**met**"); got != tc.met[i] {
					t.Errorf("verdict %d = %q, want met %v", i, v, tc.met[i])
				}
			}
		})
	}
}
