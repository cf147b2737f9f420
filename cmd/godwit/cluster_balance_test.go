package main

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// fakeBalance is the cluster fake with the balance API's canned answers.
type fakeBalance struct {
	*fakeCluster
	status  *pb.BalanceStatusResponse
	plan    *pb.BalanceDecision
	set     *pb.SetBalanceResponse
	history *pb.BalanceHistoryResponse
}

func (f *fakeBalance) BalanceStatus(_ context.Context, r *pb.BalanceStatusRequest) (*pb.BalanceStatusResponse, error) {
	return f.status, f.record("BalanceStatus", r)
}

func (f *fakeBalance) BalancePlan(_ context.Context, r *pb.BalancePlanRequest) (*pb.BalanceDecision, error) {
	return f.plan, f.record("BalancePlan", r)
}

func (f *fakeBalance) SetBalance(_ context.Context, r *pb.SetBalanceRequest) (*pb.SetBalanceResponse, error) {
	return f.set, f.record("SetBalance", r)
}

func (f *fakeBalance) BalanceHistory(_ context.Context, r *pb.BalanceHistoryRequest) (*pb.BalanceHistoryResponse, error) {
	return f.history, f.record("BalanceHistory", r)
}

// startBalanceCluster serves f on a loopback port picked by the kernel,
// in plaintext, for a CLI isolated from the environment.
func startBalanceCluster(t *testing.T, f *fakeBalance) string {
	t.Helper()
	isolateCLI(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterClusterServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func balanceSettings(kv ...string) []*pb.BalanceSetting {
	var out []*pb.BalanceSetting
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		out = append(out, &pb.BalanceSetting{Key: k, Value: v, Help: "what " + k + " means"})
	}
	return out
}

// sampleBalance is a balancer that plans to move web and api off n1,
// keeps db (pinned), and executed one decision before.
func sampleBalance() *fakeBalance {
	at := sampleDay.AsTime()
	move := func(name, to string, gain float64) *pb.BalanceMove {
		return &pb.BalanceMove{ContainerId: name + "-id", Container: name, From: "n1", To: to, LoadMilliCpu: 800, LoadMemoryBytes: 512 << 20,
			Gain: gain, Stability: 1, Cost: 2.5, Bytes: 512 << 20, DowntimeMs: 2000, DurationMs: 5000, Score: gain / 2.5,
			ImbalanceBefore: 0.8, ImbalanceAfter: 0.3, Reason: "n1 is the most loaded node that can give: gain " + name, CostBasis: "defaults"}
	}
	done := move("web", "n2", 30)
	done.MigrationId, done.MigrationPhase, done.ActualDowntimeMs, done.ActualBytes = "m-web", "done", 900, 600<<20
	refused := move("api", "n3", 10)
	refused.Refused = "container api is already moving"
	aborted := move("cache", "n3", 8)
	aborted.MigrationId, aborted.MigrationPhase, aborted.MigrationError = "m-cache", "aborted", "destination unreachable"
	return &fakeBalance{
		fakeCluster: sampleCluster(),
		status: &pb.BalanceStatusResponse{Enabled: true, Balancing: true, Imbalance: 0.412, Cpu: 0.5, Memory: 0.3, Target: 0.15, Trigger: 0.25,
			Nodes: 3, Samples: 6, Stop: "target", Reason: "2 moves planned bring the imbalance to 0.120",
			InFlight:  []*pb.BalanceInFlight{{MigrationId: "m-web", Container: "web", ContainerId: "web-id", From: "n1", To: "n2", Phase: "transfer", Created: sampleDay}},
			LastRound: timestamppb.New(at.Add(-10 * time.Second)), LastDecision: sampleDay,
			Policy:        balanceSettings("enabled=true", "interval=30s", "trigger=0.25"),
			PolicyUpdated: sampleDay, PolicyUpdatedBy: "alice (operator)"},
		plan: &pb.BalanceDecision{Time: sampleDay, Imbalance: 0.812, Cpu: 0.9, Memory: 0.7, Predicted: 0.12, Target: 0.15, Trigger: 0.25,
			Triggered: true, Stop: "target", Reason: "2 moves planned bring the imbalance to 0.120", NodeCount: 3,
			Moves:    []*pb.BalanceMove{move("web", "n2", 30), move("api", "n3", 10)},
			Rejected: []*pb.BalanceRejection{{ContainerId: "db-id", Container: "db", Node: "n1", Rule: "pinned", Reason: "pinned (run --pin): the balancer never moves it"}},
			Nodes:    []*pb.BalanceNode{{Node: "n1", CapacityMilliCpu: 4000, UsedMilliCpu: 3200, Loaded: true}},
			Excluded: []*pb.BalanceExclusion{{Node: "n4", Reason: "cordoned: what runs there stays, nothing new goes there"}}},
		set: &pb.SetBalanceResponse{Changed: []string{"trigger=0.3"}, Policy: balanceSettings("enabled=true", "interval=30s", "trigger=0.3"), Enabled: true},
		history: &pb.BalanceHistoryResponse{Decisions: []*pb.BalanceDecision{{Time: sampleDay, Imbalance: 0.6, Cpu: 0.7, Memory: 0.4,
			Predicted: 0.1, Target: 0.15, Trigger: 0.25, Triggered: true, Stop: "target", NodeCount: 3, Index: 42,
			Moves: []*pb.BalanceMove{done, refused, aborted}}}},
	}
}

func TestBalanceCommandsSendTheRightRequest(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		method string
		req    proto.Message
		// want are parts of standard output.
		want []string
	}{
		{name: "status", args: []string{"status"}, method: "BalanceStatus", req: &pb.BalanceStatusRequest{},
			want: []string{"enabled, balancing", "0.412 (CPU 0.500, memory 0.300) over 3 nodes: target 0.150, trigger 0.250",
				"m-web: web n1 to n2 (transfer)", "alice (operator)", "trigger   0.25   what trigger means"}},
		{name: "plan", args: []string{"plan"}, method: "BalancePlan", req: &pb.BalancePlanRequest{},
			want: []string{"imbalance 0.812 (CPU 0.900, memory 0.700) over 3 nodes; target 0.150, trigger 0.250",
				"predicted 0.120 after 2 planned moves and 0 in flight",
				"1  web        n1    n2  0.8 CPU, 512.0 MiB  30.00  1.00       2.50  2s        512.0 MiB  0.300",
				"1. web: n1 is the most loaded node that can give: gain web",
				"db     n1    pinned  pinned (run --pin): the balancer never moves it",
				"n1    80%  -       0%             -                 yes: above the mean",
				"node n4 is left out: cordoned"}},
		{name: "enable", args: []string{"enable"}, method: "SetBalance", req: &pb.SetBalanceRequest{Settings: []*pb.BalanceSetting{{Key: "enabled", Value: "true"}}},
			want: []string{"balancer enabled: the leader plans every 30s"}},
		{name: "disable", args: []string{"disable"}, method: "SetBalance", req: &pb.SetBalanceRequest{Settings: []*pb.BalanceSetting{{Key: "enabled", Value: "false"}}},
			want: []string{"balancer disabled: no new move starts"}},
		{name: "set", args: []string{"set", "trigger=0.3", "target=10%"}, method: "SetBalance",
			req:  &pb.SetBalanceRequest{Settings: []*pb.BalanceSetting{{Key: "trigger", Value: "0.3"}, {Key: "target", Value: "10%"}}},
			want: []string{"balance policy changed: trigger=0.3\n"}},
		{name: "history", args: []string{"history", "--limit", "5"}, method: "BalanceHistory", req: &pb.BalanceHistoryRequest{Limit: 5},
			want: []string{"imbalance 0.600 (CPU 0.700, memory 0.400), predicted 0.100, target 0.150, over 3 nodes",
				"web        n1    n2  30.00  2.50  2s        900ms   m-web      done",
				"api        n1    n3  10.00  2.50  2s        -       -          refused: container api is already moving",
				"m-cache    aborted: destination unreachable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleBalance()
			addr := startBalanceCluster(t, f)
			stdout, _, err := runCLI(t, append([]string{"--addr", addr, "balance"}, tt.args...)...)
			if err != nil {
				t.Fatalf("balance %v: %v", tt.args, err)
			}
			calls := f.requests()
			if got := methods(calls); !slices.Equal(got, []string{tt.method}) {
				t.Fatalf("calls %v, want %s", got, tt.method)
			}
			if !proto.Equal(calls[0].req, tt.req) {
				t.Errorf("request %v, want %v", calls[0].req, tt.req)
			}
			for _, w := range tt.want {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
}

// TestBalancePlanJSON checks the JSON the issue names: {"moves": [...],
// "rejected": [...]}, each move with container, from, to, gain and cost,
// each rejection with container and reason.
func TestBalancePlanJSON(t *testing.T) {
	tests := []struct {
		name                string
		plan                *pb.BalanceDecision
		wantMoves, wantRejs int
	}{
		{name: "moves and rejections", plan: sampleBalance().plan, wantMoves: 2, wantRejs: 1},
		{name: "nothing to do: empty lists, not null", plan: &pb.BalanceDecision{Imbalance: 0.1, Stop: "below-trigger", Reason: "balanced"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleBalance()
			f.plan = tt.plan
			addr := startBalanceCluster(t, f)
			stdout, _, err := runCLI(t, "--addr", addr, "balance", "plan", "-o", "json")
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Moves    []map[string]any `json:"moves"`
				Rejected []map[string]any `json:"rejected"`
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal([]byte(stdout), &raw); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, stdout)
			}
			if string(raw["moves"]) == "null" || string(raw["rejected"]) == "null" {
				t.Fatalf("moves or rejected is null:\n%s", stdout)
			}
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatal(err)
			}
			if len(got.Moves) != tt.wantMoves || len(got.Rejected) != tt.wantRejs {
				t.Fatalf("%d moves and %d rejections, want %d and %d", len(got.Moves), len(got.Rejected), tt.wantMoves, tt.wantRejs)
			}
			for _, m := range got.Moves {
				for _, k := range []string{"container", "from", "to", "gain", "cost"} {
					if _, ok := m[k]; !ok {
						t.Errorf("move %v lacks %q", m, k)
					}
				}
			}
			if tt.wantMoves > 0 && (got.Moves[0]["container"] != "web" || got.Moves[0]["gain"] != 30.0 || got.Moves[0]["cost"] != 2.5) {
				t.Errorf("first move %v: want web with gain 30 and cost 2.5", got.Moves[0])
			}
			for _, r := range got.Rejected {
				if r["container"] != "db" || r["reason"] == "" || r["rule"] != "pinned" {
					t.Errorf("rejection %v: want db, pinned, with its reason", r)
				}
			}
		})
	}
}

func TestBalanceStatusAndHistoryJSON(t *testing.T) {
	f := sampleBalance()
	addr := startBalanceCluster(t, f)
	stdout, _, err := runCLI(t, "--addr", addr, "balance", "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var st balanceStatusView
	if err := json.Unmarshal([]byte(stdout), &st); err != nil {
		t.Fatalf("status is not JSON: %v\n%s", err, stdout)
	}
	if !st.Enabled || st.Imbalance != 0.412 || st.Policy["trigger"] != "0.25" || len(st.InFlight) != 1 || st.InFlight[0].Migration != "m-web" {
		t.Errorf("status %+v: want enabled, 0.412, the policy by key and web in flight", st)
	}

	stdout, _, err = runCLI(t, "--addr", addr, "balance", "history", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var hist []balanceDecisionView
	if err := json.Unmarshal([]byte(stdout), &hist); err != nil {
		t.Fatalf("history is not JSON: %v\n%s", err, stdout)
	}
	if len(hist) != 1 || len(hist[0].Moves) != 3 {
		t.Fatalf("history %+v: want the decision with its three moves", hist)
	}
	web := hist[0].Moves[0]
	if web.Migration != "m-web" || web.DowntimeMs != 2000 || web.ActualDowntimeMs != 900 || web.Phase != "done" {
		t.Errorf("web %+v: want m-web, predicted 2000 ms, actual 900 ms, done", web)
	}
}

func TestBalanceCommandErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		// err is the scheduler's answer, if any.
		err  error
		want string
	}{
		{name: "set without =", args: []string{"set", "trigger"}, want: `"trigger": want KEY=VALUE, such as trigger=0.3 (the keys are enabled, interval`},
		{name: "set without a setting", args: []string{"set"}, want: "requires at least 1 arg"},
		{name: "history with a negative limit", args: []string{"history", "--limit", "-1"}, want: "--limit -1: want 0 (all) or more"},
		{name: "the scheduler's refusal, as it says it", args: []string{"set", "bogus=1"},
			err:  status.Error(codes.InvalidArgument, `unknown balance policy key "bogus": the keys are enabled, interval`),
			want: `unknown balance policy key "bogus": the keys are enabled, interval`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleBalance()
			f.err = tt.err
			addr := startBalanceCluster(t, f)
			_, _, err := runCLI(t, append([]string{"--addr", addr, "balance"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("balance %v: %v, want an error saying %q", tt.args, err, tt.want)
			}
		})
	}
}
