package server

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// The balance API: the leader's balancer (balancer.go) plans from its
// soft state, so every call runs on the leader (the forwarder sends them
// there): the status and the dry run read the samples only the leader
// holds.

func (a *clusterAPI) BalanceStatus(context.Context, *pb.BalanceStatusRequest) (*pb.BalanceStatusResponse, error) {
	b := a.s.balancer
	snap := a.s.store.Snapshot()
	pol := b.policy(snap)
	d, err := b.decide(snap, pol, time.Now())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	balancing, lastRound := b.state()
	out := &pb.BalanceStatusResponse{
		Enabled: pol.Enabled, Imbalance: d.Imbalance, Cpu: d.CPU, Memory: d.Memory, Target: d.Target, Trigger: d.Trigger,
		Balancing: pol.Enabled && balancing, Nodes: int32(len(d.Nodes)), Stop: d.Stop, Reason: d.Reason,
		Policy: settingsToProto(pol), Samples: int32(b.samples.count()),
	}
	if pol.Enabled {
		out.LastRound = timestamp(lastRound)
	}
	for _, m := range snap.Migrations(state.MigrationFilter{Open: true}) {
		if m.Reason == balanceReason {
			out.InFlight = append(out.InFlight, &pb.BalanceInFlight{MigrationId: m.ID, Container: m.ContainerName, ContainerId: m.Container,
				From: m.Source, To: m.Dest, Phase: string(m.Phase), Created: timestamp(m.Created)})
		}
	}
	slices.SortFunc(out.InFlight, func(x, y *pb.BalanceInFlight) int { return strings.Compare(x.GetMigrationId(), y.GetMigrationId()) })
	if last := snap.BalanceDecisions(1); len(last) == 1 {
		out.LastDecision = timestamp(last[0].Time)
	}
	if rec, ok := snap.BalancePolicy(); ok {
		out.PolicyUpdated = timestamp(rec.Updated)
		out.PolicyUpdatedBy = rec.Requested.Who
		if rec.Requested.Role != "" {
			out.PolicyUpdatedBy += " (" + rec.Requested.Role + ")"
		}
	}
	return out, nil
}

// BalancePlan is a dry run: the plan the leader would execute now, on
// its state and samples, whether the balancer is enabled or not.
func (a *clusterAPI) BalancePlan(context.Context, *pb.BalancePlanRequest) (*pb.BalanceDecision, error) {
	b := a.s.balancer
	snap := a.s.store.Snapshot()
	d, err := b.decide(snap, b.policy(snap), time.Now())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return decisionToProto(d), nil
}

// SetBalance applies every setting to the policy, or none: an unknown key
// or a value that would make the policy invalid refuses the whole
// request with balance's message. Audited as "balance enable", "balance
// disable" or "balance set".
func (a *clusterAPI) SetBalance(ctx context.Context, req *pb.SetBalanceRequest) (*pb.SetBalanceResponse, error) {
	b := a.s.balancer
	action, target := balanceAction(req.GetSettings())
	if len(req.GetSettings()) == 0 {
		return nil, a.audited(ctx, action, target, status.Errorf(codes.InvalidArgument,
			"no setting given: give KEY=VALUE (the keys are %s)", strings.Join(balance.Keys(), ", ")))
	}
	b.setMu.Lock()
	defer b.setMu.Unlock()
	snap := a.s.store.Snapshot()
	before := b.policy(snap)
	next, err := applySettings(before, req.GetSettings())
	if err != nil {
		return nil, a.audited(ctx, action, target, balanceError(err))
	}
	out := &pb.SetBalanceResponse{Changed: changedSettings(before, next), Policy: settingsToProto(next), Enabled: next.Enabled}
	if len(out.Changed) > 0 {
		who := callerOf(ctx)
		if _, err := a.s.apply(ctx, &fsm.SetBalancePolicy{Policy: next, Change: strings.Join(out.Changed, " "),
			Requested: state.Requester{Who: who.Name, Role: string(who.Role)}, At: time.Now()}); err != nil {
			return nil, a.audited(ctx, action, target, balanceError(err))
		}
	}
	a.audit(ctx, action, target, nil)
	return out, nil
}

// applySettings applies every setting to p, in whatever order makes
// each step valid: balance.Policy.Set checks the whole policy after each
// key, so `trigger=0.1 target=0.05` from the defaults must set the
// target first. Settings that fail are tried again after the others
// until a pass applies none; then the errors of those left are the
// answer, and p is unchanged. An unknown key fails at once.
func applySettings(p balance.Policy, settings []*pb.BalanceSetting) (balance.Policy, error) {
	next := p
	left := settings
	for len(left) > 0 {
		var again []*pb.BalanceSetting
		var errs []error
		for _, s := range left {
			err := next.Set(s.GetKey(), s.GetValue())
			switch {
			case err == nil:
			case errors.Is(err, balance.ErrUnknownKey) || !errors.Is(err, balance.ErrInvalidPolicy):
				return p, err
			default:
				again = append(again, s)
				errs = append(errs, err)
			}
		}
		if len(again) == len(left) {
			return p, errors.Join(errs...)
		}
		left = again
	}
	return next, nil
}

// balanceAction names a SetBalance for the audit trail.
func balanceAction(settings []*pb.BalanceSetting) (action, target string) {
	if len(settings) == 1 && strings.EqualFold(settings[0].GetKey(), "enabled") {
		switch strings.ToLower(strings.TrimSpace(settings[0].GetValue())) {
		case "true":
			return "balance enable", "balancer"
		case "false":
			return "balance disable", "balancer"
		}
	}
	pairs := make([]string, len(settings))
	for i, s := range settings {
		pairs[i] = s.GetKey() + "=" + s.GetValue()
	}
	return "balance set", strings.Join(pairs, " ")
}

// changedSettings are the keys whose value differs, as "key=value" (the
// new value), in Settings' order.
func changedSettings(before, after balance.Policy) []string {
	was := before.Settings()
	var out []string
	for i, s := range after.Settings() {
		if s.Value != was[i].Value {
			out = append(out, s.Key+"="+s.Value)
		}
	}
	return out
}

// balanceError maps balance's refusals to InvalidArgument with their
// message, which names the key and what to set it to.
func balanceError(err error) error {
	if errors.Is(err, balance.ErrUnknownKey) || errors.Is(err, balance.ErrInvalidPolicy) || errors.Is(err, fsm.ErrInvalid) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return stateError(err)
}

// BalanceHistory lists the executed decisions, oldest first, each move
// joined with its migration's record (when the state still keeps it).
func (a *clusterAPI) BalanceHistory(_ context.Context, req *pb.BalanceHistoryRequest) (*pb.BalanceHistoryResponse, error) {
	if req.GetLimit() < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "limit %d: want 0 (all) or more", req.GetLimit())
	}
	snap := a.s.store.Snapshot()
	out := &pb.BalanceHistoryResponse{}
	for _, d := range snap.BalanceDecisions(int(req.GetLimit())) {
		out.Decisions = append(out.Decisions, historyToProto(snap, d))
	}
	return out, nil
}

func settingsToProto(p balance.Policy) []*pb.BalanceSetting {
	var out []*pb.BalanceSetting
	for _, s := range p.Settings() {
		out = append(out, &pb.BalanceSetting{Key: s.Key, Value: s.Value, Help: s.Help})
	}
	return out
}

func decisionToProto(d balance.Decision) *pb.BalanceDecision {
	out := &pb.BalanceDecision{
		Time: timestamp(d.Now), Imbalance: d.Imbalance, Cpu: d.CPU, Memory: d.Memory, Predicted: d.Predicted,
		Target: d.Target, Trigger: d.Trigger, Triggered: d.Triggered, Stop: d.Stop, Reason: d.Reason,
		InFlight: int32(d.InFlight), NodeCount: int32(len(d.Nodes)),
	}
	for _, m := range d.Moves {
		out.Moves = append(out.Moves, &pb.BalanceMove{
			ContainerId: m.Container, Container: m.Name, From: m.From, To: m.To,
			LoadMilliCpu: m.Load.MilliCPU, LoadMemoryBytes: m.Load.MemoryBytes,
			Gain: m.Gain, Stability: m.Stability, Cost: m.Cost, Bytes: m.Bytes,
			DowntimeMs: m.Downtime.Milliseconds(), DurationMs: m.Duration.Milliseconds(), Score: m.Score,
			ImbalanceBefore: m.ImbalanceBefore, ImbalanceAfter: m.ImbalanceAfter, Reason: m.Reason, CostBasis: m.CostBasis,
		})
	}
	for _, r := range d.Rejected {
		out.Rejected = append(out.Rejected, &pb.BalanceRejection{ContainerId: r.Container, Container: r.Name, Node: r.Node, Rule: r.Rule, Reason: r.Reason})
	}
	for _, n := range d.Nodes {
		out.Nodes = append(out.Nodes, &pb.BalanceNode{Node: n.Node,
			CapacityMilliCpu: n.Capacity.MilliCPU, CapacityMemoryBytes: n.Capacity.MemoryBytes,
			UsedMilliCpu: n.Used.MilliCPU, UsedMemoryBytes: n.Used.MemoryBytes,
			PredictedMilliCpu: n.Predicted.MilliCPU, PredictedMemoryBytes: n.Predicted.MemoryBytes, Loaded: n.Loaded})
	}
	for _, e := range d.Excluded {
		out.Excluded = append(out.Excluded, &pb.BalanceExclusion{Node: e.Node, Reason: e.Reason})
	}
	return out
}

// historyToProto is an executed decision, each move joined with its
// migration: its phase, measured downtime and bytes, and error.
func historyToProto(snap *state.Snapshot, d *state.BalanceDecision) *pb.BalanceDecision {
	out := &pb.BalanceDecision{
		Time: timestamp(d.Time), Imbalance: d.Imbalance, Cpu: d.CPU, Memory: d.Memory, Predicted: d.Predicted,
		Target: d.Target, Trigger: d.Trigger, Triggered: true, Stop: d.Stop, Reason: d.Reason,
		InFlight: int32(d.InFlight), NodeCount: int32(d.Nodes), Index: d.Index,
	}
	for _, m := range d.Moves {
		mv := &pb.BalanceMove{
			ContainerId: m.Container, Container: m.Name, From: m.From, To: m.To,
			LoadMilliCpu: m.Load.MilliCPU, LoadMemoryBytes: m.Load.MemoryBytes,
			Gain: m.Gain, Stability: m.Stability, Cost: m.Cost, Bytes: m.Bytes,
			DowntimeMs: m.Downtime.Milliseconds(), DurationMs: m.Duration.Milliseconds(),
			ImbalanceAfter: m.ImbalanceAfter, Reason: m.Reason, CostBasis: m.CostBasis,
			MigrationId: m.Migration, Refused: m.Refused,
		}
		if mig, ok := snap.Migration(m.Migration); ok && m.Migration != "" {
			mv.MigrationPhase = string(mig.Phase)
			mv.ActualDowntimeMs = mig.Stats.Downtime.Milliseconds()
			mv.ActualBytes = mig.Stats.Bytes
			mv.MigrationError = mig.Error
		}
		out.Moves = append(out.Moves, mv)
	}
	return out
}
