package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit/godwit/internal/pki"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// TestBalanceAPI runs the balance API on a real scheduler: four burners
// started on n1 with run --node, their samples brought by n1's
// heartbeats; the plan spreads them, the policy changes all or nothing,
// a viewer reads but does not write, and every write is audited.
func TestBalanceAPI(t *testing.T) {
	c := newSchedCluster(t)
	s := c.start("solo", 1)
	c.leader()
	addr, _ := c.startFakeAgent("n1")
	epochs := map[string]uint64{}
	agents := map[string]pb.NodeServiceClient{}
	for _, n := range []string{"n1", "n2", "n3"} {
		agents[n] = pb.NewNodeServiceClient(c.dial(s, n, pki.RoleAgent))
		a := "127.0.0.1:1"
		if n == "n1" {
			a = addr
		}
		resp, err := agents[n].Register(callCtx(t), &pb.RegisterRequest{Name: n, Address: a,
			Capacity: &pb.Resources{MilliCpu: 4000, MemoryBytes: 8 << 30}, Images: []*pb.Image{{Name: "busybox", Id: "sha256:1"}}})
		if err != nil {
			t.Fatalf("register %s: %v", n, err)
		}
		epochs[n] = resp.GetEpoch()
	}
	// Every node beats, so that none turns suspect (and out of the plan)
	// during the test.
	ctx, cancel := context.WithCancel(context.Background())
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		for ctx.Err() == nil {
			for n, a := range agents {
				_, _ = a.Heartbeat(ctx, &pb.HeartbeatRequest{Name: n, Epoch: epochs[n]})
			}
			select {
			case <-ctx.Done():
			case <-time.After(TestTiming.Heartbeat):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-beating
	})

	ops := pb.NewClusterServiceClient(c.dial(s, "alice", pki.RoleOperator))
	viewer := pb.NewClusterServiceClient(c.dial(s, "bob", pki.RoleViewer))
	var ids []string
	for _, name := range []string{"b1", "b2", "b3", "b4"} {
		resp, err := ops.Run(callCtx(t), &pb.RunRequest{Node: "n1", Container: &pb.RunContainerRequest{Name: name, Image: "busybox", Cpus: 0.5}})
		if err != nil {
			t.Fatalf("run %s on n1: %v", name, err)
		}
		ids = append(ids, resp.GetContainer().GetId())
	}
	// Three minutes of steady burning, as n1's agent sampled it.
	now := time.Now()
	for at := now.Add(-3 * time.Minute); !at.After(now); at = at.Add(10 * time.Second) {
		load := &pb.NodeLoad{Sampled: timestamppb.New(at)}
		for _, id := range ids {
			load.Containers = append(load.Containers, &pb.ContainerLoad{Id: id, CpuMillis: 900, MemoryBytes: 256 << 20})
		}
		if _, err := agents["n1"].Heartbeat(callCtx(t), &pb.HeartbeatRequest{Name: "n1", Epoch: epochs["n1"], Load: load}); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("status: disabled, imbalanced, the default policy", func(t *testing.T) {
		st, err := viewer.BalanceStatus(callCtx(t), &pb.BalanceStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetEnabled() || st.GetBalancing() || st.GetImbalance() <= st.GetTrigger() || st.GetNodes() != 3 || st.GetSamples() != 4 {
			t.Errorf("status %v: want disabled, not balancing, above the trigger, over 3 nodes, with samples of 4 containers", st)
		}
		if len(st.GetPolicy()) == 0 || st.GetPolicy()[0].GetKey() != "enabled" || st.GetPolicy()[0].GetHelp() == "" || st.GetPolicyUpdated() != nil {
			t.Errorf("policy %v: want every key with its help, first enabled, and no update recorded", st.GetPolicy())
		}
	})

	t.Run("plan: a dry run spreads what run --node put on n1", func(t *testing.T) {
		d, err := viewer.BalancePlan(callCtx(t), &pb.BalancePlanRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !d.GetTriggered() || len(d.GetMoves()) == 0 {
			t.Fatalf("plan %v: want moves off n1", d)
		}
		for _, mv := range d.GetMoves() {
			if mv.GetFrom() != "n1" || mv.GetTo() == "n1" || !strings.HasPrefix(mv.GetContainer(), "b") || mv.GetGain() <= 0 || mv.GetCost() <= 0 {
				t.Errorf("move %v: want a burner from n1 elsewhere, with its gain and cost", mv)
			}
		}
		if len(d.GetMoves())+len(d.GetRejected()) != 4 {
			t.Errorf("%d moves and %d rejections, want the 4 burners accounted for", len(d.GetMoves()), len(d.GetRejected()))
		}
		if got := s.store.Snapshot().Migrations(state.MigrationFilter{}); len(got) != 0 {
			t.Errorf("a dry run started %d migrations", len(got))
		}
	})

	t.Run("set: all or nothing, in any order, audited", func(t *testing.T) {
		set := func(client pb.ClusterServiceClient, kv ...string) (*pb.SetBalanceResponse, error) {
			req := &pb.SetBalanceRequest{}
			for _, p := range kv {
				k, v, _ := strings.Cut(p, "=")
				req.Settings = append(req.Settings, &pb.BalanceSetting{Key: k, Value: v})
			}
			return client.SetBalance(callCtx(t), req)
		}
		if _, err := set(viewer, "enabled=true"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("a viewer enabled the balancer: %v, want PermissionDenied", err)
		}
		// From the defaults (trigger 0.25, target 0.15), the trigger can
		// only go under 0.15 once the target has.
		resp, err := set(ops, "trigger=0.1", "target=5%", "interval=1h")
		if err != nil {
			t.Fatalf("set: %v", err)
		}
		if strings.Join(resp.GetChanged(), " ") != "interval=1h0m0s trigger=0.1 target=0.05" {
			t.Errorf("changed %v, want interval, trigger and target", resp.GetChanged())
		}
		for _, bad := range []struct {
			kv   []string
			want string
		}{
			{[]string{"target=0.01", "bogus=1"}, "the keys are"},
			{[]string{"target=0.01", "cooldown=soon"}, "want a duration"},
			{[]string{"target=0.5"}, "godwit balance set"},
		} {
			_, err := set(ops, bad.kv...)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), bad.want) {
				t.Errorf("set %v: %v, want InvalidArgument saying %q", bad.kv, err, bad.want)
			}
		}
		pol := s.balancer.policy(s.store.Snapshot())
		if pol.Target != 0.05 || pol.Trigger != 0.1 || pol.Interval != time.Hour || pol.Enabled {
			t.Errorf("policy %+v: want only the first set applied (a refused set changes nothing)", pol)
		}
		if _, err := set(ops, "enabled=true"); err != nil {
			t.Fatal(err)
		}
		st, err := viewer.BalanceStatus(callCtx(t), &pb.BalanceStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if !st.GetEnabled() || st.GetPolicyUpdatedBy() != "alice (operator)" || st.GetTrigger() != 0.1 {
			t.Errorf("status %v: want enabled by alice, trigger 0.1", st)
		}
		audit, err := ops.Audit(callCtx(t), &pb.AuditRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, r := range audit.GetRecords() {
			if strings.HasPrefix(r.GetAction(), "balance") {
				actions = append(actions, r.GetAction()+" "+r.GetOutcome())
			}
		}
		if len(actions) != 5 || actions[0] != "balance set ok" || actions[4] != "balance enable ok" || actions[1] == "balance set ok" {
			t.Errorf("audit %q: want the set, the three refused and the enable", actions)
		}
	})

	t.Run("history: each move joined with its migration", func(t *testing.T) {
		// The loop's decisions need migrations the fake agents cannot
		// carry; record one as the loop would, with a move of b1 that
		// has a migration record.
		snap := s.store.Snapshot()
		b1, _ := snap.ContainerByName("b1")
		if _, err := s.apply(callCtx(t), &fsm.CreateMigration{ID: "m-b1", Container: b1.ID, Source: "n1", Dest: "n2", Strategy: "stream",
			Reason: "balancer", Requested: balancerRequester, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.apply(callCtx(t), &fsm.AbortMigration{ID: "m-b1", Error: "destination unreachable", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		rec := state.BalanceDecision{Time: time.Now(), Imbalance: 0.8, Predicted: 0.1, Target: 0.05, Nodes: 3, Stop: "target",
			Moves: []state.BalanceMove{
				{Container: b1.ID, Name: "b1", From: "n1", To: "n2", Gain: 20, Cost: 1.5, Downtime: 1500 * time.Millisecond, Migration: "m-b1"},
				{Container: "x", Name: "b2", From: "n1", To: "n3", Refused: "already moving"},
			}}
		if _, err := s.apply(callCtx(t), &fsm.RecordBalanceDecision{Decision: rec, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		h, err := viewer.BalanceHistory(callCtx(t), &pb.BalanceHistoryRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(h.GetDecisions()) != 1 || len(h.GetDecisions()[0].GetMoves()) != 2 {
			t.Fatalf("history %v: want the decision with its two moves", h)
		}
		mv := h.GetDecisions()[0].GetMoves()
		if mv[0].GetMigrationId() != "m-b1" || mv[0].GetMigrationPhase() != "aborted" || mv[0].GetMigrationError() != "destination unreachable" ||
			mv[0].GetDowntimeMs() != 1500 {
			t.Errorf("move %v: want m-b1, aborted with its error, 1.5 s predicted", mv[0])
		}
		if mv[1].GetRefused() != "already moving" || mv[1].GetMigrationPhase() != "" {
			t.Errorf("move %v: want the refusal, no migration", mv[1])
		}
		if _, err := viewer.BalanceHistory(callCtx(t), &pb.BalanceHistoryRequest{Limit: -1}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("a negative limit: %v, want InvalidArgument", err)
		}
	})
}
