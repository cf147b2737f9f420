package main

import (
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// capabilitiesOf is what an agent's NodeInfo says it supports, as
// migrate.Choose takes it. An agent that reports no strategies at all
// predates the report and carries out stop-copy only; Choose then says
// that it "did not report" the others.
func capabilitiesOf(info *pb.NodeInfoResponse) migrate.Capabilities {
	reported := info.GetStrategies()
	if len(reported) == 0 {
		return migrate.Capabilities{migrate.StopCopy: {Supported: true}}
	}
	caps := make(migrate.Capabilities, len(reported))
	for _, s := range reported {
		caps[migrate.Strategy(s.GetName())] = migrate.Support{Supported: s.GetSupported(), Reason: s.GetReason()}
	}
	return caps
}

// preCopyView is how pre-copy's rounds went, as -o json prints it.
type preCopyView struct {
	Rounds []preCopyRoundView `json:"rounds"`
	// Rule is the convergence rule that stopped the rounds; Detail the
	// decision with its numbers.
	Rule              string `json:"rule"`
	Detail            string `json:"detail"`
	PredictedFreezeMs int64  `json:"predicted_freeze_ms"`
}

// preCopyRoundView is one pre-copy round.
type preCopyRoundView struct {
	DirtyPages int64 `json:"dirty_pages"`
	PreDumpMs  int64 `json:"pre_dump_ms"`
	BytesSent  int64 `json:"bytes_sent"`
	TransferMs int64 `json:"transfer_ms"`
}

func newPreCopyView(o *migrate.PreCopyOutcome) *preCopyView {
	if o == nil {
		return nil
	}
	v := &preCopyView{Rule: o.Rule, Detail: o.Detail, PredictedFreezeMs: o.PredictedFreeze.Milliseconds(),
		Rounds: make([]preCopyRoundView, 0, len(o.Rounds))}
	for _, r := range o.Rounds {
		v.Rounds = append(v.Rounds, preCopyRoundView{DirtyPages: r.DirtyPages, PreDumpMs: r.Duration.Milliseconds(),
			BytesSent: r.Sent, TransferMs: r.Transfer.Milliseconds()})
	}
	return v
}

// bytesSent is what the rounds sent in all.
func (v *preCopyView) bytesSent() int64 {
	var n int64
	for _, r := range v.Rounds {
		n += r.BytesSent
	}
	return n
}
