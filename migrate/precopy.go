package migrate

import (
	"fmt"
	"time"
)

// PreCopyIteration is what one pre-dump round measured.
type PreCopyIteration struct {
	// DirtyPages is how many pages the round copied: the whole memory in
	// the first round, what was dirtied since the previous one after it.
	DirtyPages int64 `json:"dirty_pages"`
	// Duration is how long the round's pre-dump took, container running.
	Duration time.Duration `json:"duration"`
	// Bytes is the size of the round's images, as the source reports it.
	Bytes int64 `json:"bytes"`
	// Sent is how many bytes went to the destination for the round, and
	// Transfer how long that took: together the measured bandwidth, which
	// predicts the final dump's freeze. The driver fills them in.
	Sent     int64         `json:"sent"`
	Transfer time.Duration `json:"transfer"`
}

// PreCopyOutcome is how pre-copy went, as the migration's record keeps
// it: the rounds so far and, once it stopped, the rule that stopped it.
type PreCopyOutcome struct {
	Rounds []PreCopyIteration `json:"rounds"`
	// Rule is the convergence rule that stopped the rounds (RuleFewDirtyPages,
	// ...); empty while they go on.
	Rule string `json:"rule,omitempty"`
	// Detail is the stopping decision in words, with the numbers.
	Detail string `json:"detail,omitempty"`
	// PredictedFreeze is the final dump's freeze the decision predicted.
	PredictedFreeze time.Duration `json:"predicted_freeze,omitempty"`
}

// Stopped reports whether the rounds are over: the final dump is next.
func (o *PreCopyOutcome) Stopped() bool { return o != nil && o.Rule != "" }

// Bandwidth is the rate the rounds went to the destination at, in bytes
// per second; zero when unknown (no round measured).
func (o *PreCopyOutcome) Bandwidth() float64 {
	if o == nil {
		return 0
	}
	var sent int64
	var took time.Duration
	for _, r := range o.Rounds {
		sent += r.Sent
		took += r.Transfer
	}
	if sent <= 0 || took <= 0 {
		return 0
	}
	return float64(sent) / took.Seconds()
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
