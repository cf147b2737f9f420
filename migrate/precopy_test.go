package migrate

import (
	"testing"
	"time"
)

// TestConvergence runs the pre-copy rules against scripted workloads: a
// fake stands in for soft-dirty tracking, which this kernel lacks.
func TestConvergence(t *testing.T) {
	p := DefaultConvergence
	const gigabit = 125e6 // bytes per second
	round := func(pages int64) PreCopyIteration {
		return PreCopyIteration{DirtyPages: pages, Duration: 100 * time.Millisecond}
	}
	tests := []struct {
		name      string
		history   []PreCopyIteration
		bandwidth float64
		stop      bool
		rule      string
	}{
		{name: "a nearly idle container stops at once", history: []PreCopyIteration{round(100)}, bandwidth: gigabit,
			stop: true, rule: RuleFewDirtyPages},
		{name: "first round of a big container continues", history: []PreCopyIteration{round(131072)}, bandwidth: gigabit,
			rule: RuleContinue},
		{name: "shrinking dirty set, freeze predicted on target", history: []PreCopyIteration{round(131072), round(4000)}, bandwidth: gigabit,
			stop: true, rule: RuleFreezeOnTarget},
		{name: "shrinking but not yet on target", history: []PreCopyIteration{round(131072), round(60000)}, bandwidth: gigabit,
			rule: RuleContinue},
		{name: "a workload dirtying faster than the link", history: []PreCopyIteration{round(131072), round(60000), round(70000)}, bandwidth: gigabit,
			stop: true, rule: RuleGrowing},
		{name: "slow convergence hits the limit", history: []PreCopyIteration{round(131072), round(120000), round(110000), round(100000),
			round(90000), round(80000), round(70000), round(60000)}, bandwidth: gigabit, stop: true, rule: RuleMaxIterations},
		{name: "unknown bandwidth never counts as on target", history: []PreCopyIteration{round(131072), round(4000)}, bandwidth: 0,
			rule: RuleContinue},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Decide(tt.history, tt.bandwidth)
			if d.Stop != tt.stop || d.Rule != tt.rule {
				t.Errorf("Decide = stop %v by %q (%s), want stop %v by %q", d.Stop, d.Rule, d.Detail, tt.stop, tt.rule)
			}
			if d.Detail == "" {
				t.Error("the decision gives no detail")
			}
		})
	}
}

func TestPredictedFreeze(t *testing.T) {
	p := ConvergencePolicy{PageSize: 4096, FreezeOverhead: 100 * time.Millisecond}
	// 25,600 pages = 100 MiB at 100 MiB/s: one second plus the overhead.
	if got, want := p.predictFreeze(25600, 100<<20), 1100*time.Millisecond; got != want {
		t.Errorf("predictFreeze = %v, want %v", got, want)
	}
}
