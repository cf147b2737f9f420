package migrate

import (
	"fmt"
	"time"
)

// PreCopyIteration is what one pre-dump round measured.
type PreCopyIteration struct {
	// DirtyPages is how many pages the round copied: the whole memory in
	// the first round, what was dirtied since the previous one after it.
	DirtyPages int64
	// Duration is how long the round took, container running.
	Duration time.Duration
}

// ConvergencePolicy bounds pre-copy: when to stop iterating and freeze
// for the final dump. The zero value is not usable; DefaultConvergence is.
type ConvergencePolicy struct {
	// MaxIterations caps the rounds: a workload that dirties memory as
	// fast as it is copied never converges.
	MaxIterations int
	// DirtyPagesBelow stops as soon as a round copied fewer pages: the
	// final dump will be short.
	DirtyPagesBelow int64
	// TargetFreeze stops when the final dump's predicted freeze is under
	// it.
	TargetFreeze time.Duration
	// Growth stops when a round copied more than Growth times the pages of
	// the round before: the workload dirties faster than pre-copy gains,
	// and more rounds only send more bytes.
	Growth float64
	// PageSize is the size of a page in bytes.
	PageSize int64
	// FreezeOverhead is the part of a freeze that does not depend on
	// memory (freezing, the process tree, sockets, restore), added to the
	// predicted copy time.
	FreezeOverhead time.Duration
}

// DefaultConvergence is the policy pre-copy uses unless told otherwise.
var DefaultConvergence = ConvergencePolicy{
	MaxIterations:   8,
	DirtyPagesBelow: 256, // 1 MiB of 4 KiB pages
	TargetFreeze:    300 * time.Millisecond,
	Growth:          1.0,
	PageSize:        4096,
	FreezeOverhead:  150 * time.Millisecond,
}

// Convergence rules, named in the decision so that a migration's record
// says why pre-copy stopped.
const (
	RuleFewDirtyPages  = "few dirty pages"
	RuleFreezeOnTarget = "predicted freeze under target"
	RuleGrowing        = "dirty set not shrinking"
	RuleMaxIterations  = "iteration limit"
	RuleContinue       = "continue"
)

// ConvergenceDecision says whether to run another pre-dump round.
type ConvergenceDecision struct {
	Stop bool
	// Rule is the rule that decided (RuleContinue when none stopped it).
	Rule string
	// PredictedFreeze is the final dump's expected freeze if it ran now.
	PredictedFreeze time.Duration
	// Detail is the decision in words, with the numbers.
	Detail string
}

// Decide applies the policy after the rounds in history (at least one),
// given the measured bandwidth to the destination in bytes per second. The
// rules are checked in order: few dirty pages, predicted freeze on target,
// dirty set growing, iteration limit.
func (p ConvergencePolicy) Decide(history []PreCopyIteration, bandwidth float64) ConvergenceDecision {
	if len(history) == 0 {
		return ConvergenceDecision{Rule: RuleContinue, Detail: "no round yet"}
	}
	last := history[len(history)-1]
	d := ConvergenceDecision{PredictedFreeze: p.predictFreeze(last.DirtyPages, bandwidth)}
	switch {
	case last.DirtyPages < p.DirtyPagesBelow:
		d.Stop, d.Rule = true, RuleFewDirtyPages
		d.Detail = fmt.Sprintf("round %d copied %d pages, under %d", len(history), last.DirtyPages, p.DirtyPagesBelow)
	case len(history) > 1 && d.PredictedFreeze <= p.TargetFreeze:
		d.Stop, d.Rule = true, RuleFreezeOnTarget
		d.Detail = fmt.Sprintf("the final dump would freeze about %s, target %s", d.PredictedFreeze.Round(time.Millisecond), p.TargetFreeze)
	case len(history) > 1 && float64(last.DirtyPages) > p.Growth*float64(history[len(history)-2].DirtyPages):
		d.Stop, d.Rule = true, RuleGrowing
		d.Detail = fmt.Sprintf("round %d copied %d pages after %d: the workload dirties memory faster than pre-copy sends it",
			len(history), last.DirtyPages, history[len(history)-2].DirtyPages)
	case len(history) >= p.MaxIterations:
		d.Stop, d.Rule = true, RuleMaxIterations
		d.Detail = fmt.Sprintf("%d rounds, the limit", len(history))
	default:
		d.Rule = RuleContinue
		d.Detail = fmt.Sprintf("round %d copied %d pages; the final dump would freeze about %s", len(history), last.DirtyPages, d.PredictedFreeze.Round(time.Millisecond))
	}
	return d
}

// predictFreeze is the freeze of a final dump of dirty pages over a link
// of bandwidth bytes per second.
func (p ConvergencePolicy) predictFreeze(dirty int64, bandwidth float64) time.Duration {
	if bandwidth <= 0 {
		return time.Duration(1<<63 - 1) // unknown link: never "on target"
	}
	copyTime := float64(dirty*p.PageSize) / bandwidth
	return p.FreezeOverhead + time.Duration(copyTime*float64(time.Second))
}
