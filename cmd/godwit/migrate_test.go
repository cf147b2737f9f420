package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// unreachableAgent2 is a second address where no agent listens.
const unreachableAgent2 = "127.0.0.1:2"

func TestMigrateRefusesBadFlagsBeforeDialling(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "no container", args: []string{"--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: "name one container to move"},
		{name: "two containers", args: []string{"c1", "c2", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: "name one container to move"},
		{name: "no --from-agent", args: []string{"c1", "--to-agent", unreachableAgent2}, want: "--from-agent ADDR is required"},
		{name: "no --to-agent", args: []string{"c1", "--from-agent", unreachableAgent}, want: "--to-agent ADDR is required"},
		{name: "same agent twice", args: []string{"c1", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent}, want: "are both " + unreachableAgent},
		{name: "unknown strategy", args: []string{"c1", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2, "--strategy", "teleport"}, want: `unknown strategy "teleport"`},
		{name: "--minimize-downtime with a named strategy", args: []string{"c1", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2, "--strategy", "stop-copy", "--minimize-downtime"}, want: "--minimize-downtime lets --strategy auto pick post-copy"},
		{name: "--resume with --minimize-downtime", args: []string{"--resume", "m-1", "--minimize-downtime", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: "--minimize-downtime applies to a new migration"},
		{name: "--resume and --abort", args: []string{"--resume", "m-1", "--abort", "m-1", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: "exclude each other"},
		{name: "--resume with a container", args: []string{"c1", "--resume", "m-1", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: `drop "c1"`},
		{name: "--abort with a container", args: []string{"c1", "--abort", "m-1", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: `drop "c1"`},
		{name: "--resume with --strategy", args: []string{"--resume", "m-1", "--strategy", "stop-copy", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: "--strategy applies to a new migration"},
		{name: "--abort with --id", args: []string{"--abort", "m-1", "--id", "m-2", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: "--id applies to a new migration"},
		{name: "--resume without agents", args: []string{"--resume", "m-1"}, want: "--from-agent ADDR is required"},
		{name: "bad --id", args: []string{"c1", "--id", "../x", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: `migration ID "../x"`},
		{name: "unknown --resume ID", args: []string{"--resume", "m-nowhere", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: "no migration m-nowhere in the journal"},
		{name: "zero --abort-timeout", args: []string{"c1", "--abort-timeout", "0s", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, want: "--abort-timeout 0s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			journal := t.TempDir()
			args := append([]string{"migrate", "--journal", journal}, tt.args...)
			_, _, err := runGodwit(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("godwit %s: error %v, want one containing %q", strings.Join(args, " "), err, tt.want)
			}
			if strings.Contains(err.Error(), "cannot reach") {
				t.Fatalf("the flags were not checked before the agents were dialled: %v", err)
			}
			assertNoRecords(t, journal)
		})
	}
}

func TestMigrateUnreachableAgentRecordsNothing(t *testing.T) {
	journal := t.TempDir()
	_, _, err := runGodwit(t, "migrate", "c1", "--journal", journal, "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2)
	if err == nil || !strings.Contains(err.Error(), "cannot reach the source agent at "+unreachableAgent) || !strings.Contains(err.Error(), "--from-agent") {
		t.Fatalf("error %v, want the unreachable source agent named with its flag", err)
	}
	assertNoRecords(t, journal)
}

func TestMigrateRefusesOneNodeUnderTwoAddresses(t *testing.T) {
	a := startFakeAgent(t, "n1")
	b := startFakeAgent(t, "n1")
	journal := t.TempDir()
	_, _, err := runGodwit(t, "migrate", "c1", "--journal", journal, "--from-agent", a.addr, "--to-agent", b.addr)
	if err == nil || !strings.Contains(err.Error(), "are the same node, n1") {
		t.Fatalf("error %v, want a refusal naming node n1", err)
	}
	if calls := append(a.migrateCalls(), b.migrateCalls()...); len(calls) > 0 {
		t.Fatalf("migration calls %v made between one node's two addresses", calls)
	}
	assertNoRecords(t, journal)
}

func TestMigrateMovesAndPrintsStatistics(t *testing.T) {
	tests := []struct {
		name     string
		strategy []string
		json     bool
		want     []string
	}{
		{name: "auto, text", want: []string{
			"migrated c1 from SRC to DST (m-test): downtime ", " sent, strategy stop-copy (auto)\n",
			"phases: prepare ", ", dump ", ", transfer ", ", restore ", ", committed ",
		}},
		{name: "stop-copy, text", strategy: []string{"--strategy", "stop-copy"}, want: []string{"3.0 MiB sent, strategy stop-copy (asked for)\n"}},
		{name: "json", json: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := startFakeAgent(t, "n-src"), startFakeAgent(t, "n-dst")
			journal := t.TempDir()
			args := append([]string{"migrate", "c1", "--journal", journal, "--id", "m-test", "--from-agent", src.addr, "--to-agent", dst.addr}, tt.strategy...)
			if tt.json {
				args = append(args, "-o", "json")
			}
			stdout, stderr, err := runGodwit(t, args...)
			if err != nil {
				t.Fatalf("migrate: %v\nstderr:\n%s", err, stderr)
			}
			if got, want := src.migrateCalls(), []string{"describe c1", "dump", "send to " + dst.addr, "finish"}; !slices.Equal(got, want) {
				t.Errorf("source calls %v, want %v", got, want)
			}
			if got, want := dst.migrateCalls(), []string{"prepare c1 stop-copy", "receive", "restore", "commit"}; !slices.Equal(got, want) {
				t.Errorf("destination calls %v, want %v", got, want)
			}
			if rec := journalRecord(t, journal, "m-test"); rec.Phase != migrate.PhaseDone || rec.Container != "c1" {
				t.Errorf("journal record in %s for %q, want done for c1", rec.Phase, rec.Container)
			}
			if !strings.Contains(stderr, "migrate c1: transfer") {
				t.Errorf("stderr has no progress for the transfer:\n%s", stderr)
			}
			if tt.json {
				var v migrationView
				if err := json.Unmarshal([]byte(stdout), &v); err != nil {
					t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
				}
				if v.ID != "m-test" || v.Container != "c1" || v.From != src.addr || v.To != dst.addr || v.Strategy != "stop-copy" ||
					v.Phase != "done" || v.BytesSent != fakeCheckpointBytes {
					t.Errorf("JSON view %+v", v)
				}
				for _, ph := range []string{"prepare", "dump", "transfer", "restore", "ready", "committed"} {
					if _, ok := v.Phases[ph]; !ok {
						t.Errorf("phases %v lack %s", v.Phases, ph)
					}
				}
				return
			}
			for _, want := range tt.want {
				want = strings.NewReplacer("SRC", src.addr, "DST", dst.addr).Replace(want)
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
		})
	}
}

func TestMigrateGeneratesAnID(t *testing.T) {
	src, dst := startFakeAgent(t, "n-src"), startFakeAgent(t, "n-dst")
	journal := t.TempDir()
	stdout, stderr, err := runGodwit(t, "migrate", "c1", "--journal", journal, "--from-agent", src.addr, "--to-agent", dst.addr, "-o", "json")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, stderr)
	}
	var v migrationView
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.ID) != len("m-")+2*migrationIDBytes || !strings.HasPrefix(v.ID, "m-") {
		t.Fatalf("generated ID %q, want m- and 12 hex digits", v.ID)
	}
	if rec := journalRecord(t, journal, v.ID); rec.Phase != migrate.PhaseDone {
		t.Fatalf("journal record of %s in %s, want done", v.ID, rec.Phase)
	}
	if _, _, err := runGodwit(t, "migrate", "c1", "--journal", journal, "--id", v.ID, "--from-agent", src.addr, "--to-agent", dst.addr); err == nil ||
		!strings.Contains(err.Error(), "already has migration "+v.ID) {
		t.Fatalf("reusing ID %s: %v, want a refusal", v.ID, err)
	}
}

func TestMigrateFailureRunsTheSourceAgain(t *testing.T) {
	src, dst := startFakeAgent(t, "n-src"), startFakeAgent(t, "n-dst")
	dst.fail("restore", status.Error(codes.Internal, "criu restore failed"))
	journal := t.TempDir()
	_, _, err := runGodwit(t, "migrate", "c1", "--journal", journal, "--id", "m-fail", "--from-agent", src.addr, "--to-agent", dst.addr)
	var exit exitError
	if err == nil || errors.As(err, &exit) || !strings.Contains(err.Error(), "the container runs on the source") {
		t.Fatalf("error %v, want an ordinary failure saying the container runs on the source", err)
	}
	if !slices.Contains(dst.migrateCalls(), "abort") || !slices.Contains(src.migrateCalls(), "resume") {
		t.Errorf("source calls %v, destination calls %v: want an abort, then a resume", src.migrateCalls(), dst.migrateCalls())
	}
	if rec := journalRecord(t, journal, "m-fail"); rec.Phase != migrate.PhaseAborted {
		t.Errorf("journal record in %s, want aborted", rec.Phase)
	}
}

// TestMigrateHeldThenFinished: a destination that cannot acknowledge the
// abort leaves the container stopped on the source (never resumed there),
// exit status 3 with the command to run; --resume then finishes the move,
// and only with the two agents it was started with.
func TestMigrateHeldThenFinished(t *testing.T) {
	tests := []struct {
		name       string
		flag       string
		wantSource []string // the source's calls made by the second run
		wantOut    string
		wantPhase  migrate.Phase
	}{
		{name: "resume", flag: "--resume", wantSource: []string{"send to DST", "finish"},
			wantOut: "migrated c1 from SRC to DST (m-held)", wantPhase: migrate.PhaseDone},
		{name: "abort", flag: "--abort", wantSource: []string{"resume"},
			wantOut: "aborted migration m-held: c1 runs on the source, SRC (node n-src)", wantPhase: migrate.PhaseAborted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := startFakeAgent(t, "n-src"), startFakeAgent(t, "n-dst")
			unavailable := status.Error(codes.Unavailable, "connection refused")
			dst.fail("receive", unavailable)
			dst.fail("abort", unavailable)
			journal := t.TempDir()
			_, stderr, err := runGodwit(t, "migrate", "c1", "--journal", journal, "--id", "m-held", "--abort-timeout", "200ms",
				"--from-agent", src.addr, "--to-agent", dst.addr)
			var exit exitError
			if !errors.As(err, &exit) || exit.code != exitMigrationHeld {
				t.Fatalf("error %v, want exit status %d", err, exitMigrationHeld)
			}
			if !strings.Contains(stderr, "godwit migrate --resume m-held") || !strings.Contains(stderr, "godwit migrate --abort m-held --from-agent "+src.addr+" --to-agent "+dst.addr+" --journal "+journal) {
				t.Errorf("stderr does not say how to finish the move:\n%s", stderr)
			}
			if slices.Contains(src.migrateCalls(), "resume") {
				t.Fatal("the source ran its copy again without the destination's acknowledgement")
			}
			if rec := journalRecord(t, journal, "m-held"); rec.Phase != migrate.PhaseTransfer {
				t.Fatalf("journal record in %s, want transfer", rec.Phase)
			}

			// Swapped agents are refused before anything is called.
			src.reset()
			dst.reset()
			if _, _, err := runGodwit(t, "migrate", tt.flag, "m-held", "--journal", journal, "--from-agent", dst.addr, "--to-agent", src.addr); err == nil ||
				!strings.Contains(err.Error(), "give the agents it was started with") {
				t.Fatalf("%s with the agents swapped: %v, want a refusal", tt.flag, err)
			}
			if calls := append(src.migrateCalls(), dst.migrateCalls()...); len(calls) > 0 {
				t.Fatalf("%s with the agents swapped made calls %v", tt.flag, calls)
			}

			stdout, stderr, err := runGodwit(t, "migrate", tt.flag, "m-held", "--journal", journal, "--from-agent", src.addr, "--to-agent", dst.addr)
			if err != nil {
				t.Fatalf("%s: %v\n%s", tt.flag, err, stderr)
			}
			repl := strings.NewReplacer("SRC", src.addr, "DST", dst.addr)
			if want := repl.Replace(tt.wantOut); !strings.Contains(stdout, want) {
				t.Errorf("stdout lacks %q:\n%s", want, stdout)
			}
			var wantSource []string
			for _, c := range tt.wantSource {
				wantSource = append(wantSource, repl.Replace(c))
			}
			if got := src.migrateCalls(); !slices.Equal(got, wantSource) {
				t.Errorf("source calls %v, want %v", got, wantSource)
			}
			if rec := journalRecord(t, journal, "m-held"); rec.Phase != tt.wantPhase {
				t.Errorf("journal record in %s, want %s", rec.Phase, tt.wantPhase)
			}
		})
	}
}

func TestMigrationViewJSON(t *testing.T) {
	start := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	rec := migrate.NewRecord("m-0123456789ab", migrate.StopCopy, start)
	rec.Container = "c1"
	for i, ph := range []migrate.Phase{migrate.PhaseDump, migrate.PhaseTransfer, migrate.PhaseRestore, migrate.PhaseReady, migrate.PhaseCommitted, migrate.PhaseDone} {
		if _, err := rec.Advance(ph, start.Add(time.Duration(i+1)*100*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	res := &migrate.Result{
		ID: rec.ID, Strategy: rec.Strategy, Record: rec,
		Downtime: 450 * time.Millisecond, Total: 1250 * time.Millisecond, BytesSent: 4 << 20,
		Phases: rec.PhaseDurations(), Warnings: []string{"something"},
	}
	var buf strings.Builder
	if err := printJSON(&buf, newMigrationView(res, "10.0.0.1:7701", "10.0.0.2:7701")); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(buf.String()), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"id": "m-0123456789ab", "container": "c1", "from": "10.0.0.1:7701", "to": "10.0.0.2:7701",
		"strategy": "stop-copy", "phase": "done", "downtime_ms": 450.0, "total_ms": 1250.0, "bytes_sent": float64(4 << 20),
		"phases":   map[string]any{"prepare": 100.0, "dump": 100.0, "transfer": 100.0, "restore": 100.0, "ready": 100.0, "committed": 100.0},
		"warnings": []any{"something"},
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("JSON view\n got %s\nwant %s", gotJSON, wantJSON)
	}

	// No warnings is an empty list, not null, for jq.
	res.Warnings = nil
	buf.Reset()
	if err := printJSON(&buf, newMigrationView(res, "a", "b")); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), `"warnings": []`) {
		t.Errorf("no warnings printed as %s", buf.String())
	}
}

func TestDefaultJournalDir(t *testing.T) {
	tests := []struct {
		name    string
		euid    int
		env     map[string]string
		want    string
		wantErr string
	}{
		{name: "root", euid: 0, env: map[string]string{"HOME": "/root", "XDG_STATE_HOME": "/root/.state"}, want: "/var/lib/godwit/migrations"},
		{name: "XDG state home", euid: 1000, env: map[string]string{"HOME": "/home/u", "XDG_STATE_HOME": "/home/u/state"}, want: "/home/u/state/godwit/migrations"},
		{name: "relative XDG state home ignored", euid: 1000, env: map[string]string{"HOME": "/home/u", "XDG_STATE_HOME": "state"}, want: "/home/u/.local/state/godwit/migrations"},
		{name: "home", euid: 1000, env: map[string]string{"HOME": "/home/u"}, want: "/home/u/.local/state/godwit/migrations"},
		{name: "no home", euid: 1000, env: map[string]string{}, wantErr: "give --journal DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := defaultJournalDir(tt.euid, func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("defaultJournalDir = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestDataAddress(t *testing.T) {
	tests := []struct {
		name, advertised, dialled, want string
	}{
		{name: "advertised", advertised: "10.0.0.2:7701", dialled: "127.0.0.1:7701", want: "10.0.0.2:7701"},
		{name: "all IPv4 addresses", advertised: "0.0.0.0:7701", dialled: "10.0.0.2:7701", want: "10.0.0.2:7701"},
		{name: "all IPv6 addresses", advertised: "[::]:7701", dialled: "10.0.0.2:7701", want: "10.0.0.2:7701"},
		{name: "no host", advertised: ":7701", dialled: "10.0.0.2:7701", want: "10.0.0.2:7701"},
		{name: "none", advertised: "", dialled: "10.0.0.2:7701", want: "10.0.0.2:7701"},
		{name: "host name", advertised: "node2:7701", dialled: "10.0.0.2:7701", want: "node2:7701"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := dataAddress(tt.advertised, tt.dialled); got != tt.want {
				t.Fatalf("dataAddress(%q, %q) = %q, want %q", tt.advertised, tt.dialled, got, tt.want)
			}
		})
	}
}

func assertNoRecords(t *testing.T, journal string) {
	t.Helper()
	j, err := migrate.OpenJournal(journal)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(journal)
	if err != nil {
		t.Fatal(err)
	}
	if open, err := j.Open(); err != nil || len(open) > 0 || len(entries) > 0 {
		t.Fatalf("the journal holds %d files (%d open records, err %v) after a refused migration", len(entries), len(open), err)
	}
}

func journalRecord(t *testing.T, dir, id string) *migrate.Record {
	t.Helper()
	j, err := migrate.OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := j.Get(id)
	if err != nil {
		t.Fatalf("journal %s: %v", filepath.Base(dir), err)
	}
	return rec
}

// fakeCheckpointBytes is what a fake source reports sending.
const fakeCheckpointBytes = 3 << 20

// fakeAgent answers the migration calls of the agent API as a healthy
// agent would, failing the methods told to, and records the calls.
type fakeAgent struct {
	pb.UnimplementedAgentServiceServer
	name, addr string

	mu    sync.Mutex
	calls []string
	fails map[string]error
	// strategies are what NodeInfo reports (default: this machine's,
	// thisMachineStrategies); preCopyDirty the dirty pages of each
	// pre-copy round (migrate_strategy_test.go).
	strategies   []*pb.StrategySupport
	preCopyDirty []int64
}

func startFakeAgent(t *testing.T, name string) *fakeAgent {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &fakeAgent{name: name, addr: lis.Addr().String(), fails: map[string]error{}, strategies: thisMachineStrategies()}
	srv := grpc.NewServer()
	pb.RegisterAgentServiceServer(srv, a)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return a
}

func (a *fakeAgent) fail(call string, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.fails[call] = err
}

// reset forgets the calls and the failures.
func (a *fakeAgent) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls, a.fails = nil, map[string]error{}
}

func (a *fakeAgent) migrateCalls() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// call records call (its first word names it for fail) and returns the
// failure set for it.
func (a *fakeAgent) call(call string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, call)
	return a.fails[strings.Fields(call)[0]]
}

func (a *fakeAgent) NodeInfo(_ context.Context, req *pb.NodeInfoRequest) (*pb.NodeInfoResponse, error) {
	r := &pb.NodeInfoResponse{Name: a.name, Address: a.addr}
	if req.GetStrategies() {
		a.mu.Lock()
		r.Strategies = a.strategies
		a.mu.Unlock()
	}
	return r, nil
}

func (a *fakeAgent) MigrateDescribe(_ context.Context, req *pb.MigrateDescribeRequest) (*pb.MigrateContainer, error) {
	if err := a.call("describe " + req.GetContainer()); err != nil {
		return nil, err
	}
	return &pb.MigrateContainer{Name: req.GetContainer(), Id: "0123", Image: "busybox", Ip: "10.79.0.5"}, nil
}

func (a *fakeAgent) reply(call string) (*pb.MigrateReply, error) {
	if err := a.call(call); err != nil {
		return nil, err
	}
	return &pb.MigrateReply{}, nil
}

func (a *fakeAgent) MigrateDump(_ context.Context, req *pb.MigrateDumpRequest) (*pb.MigrateReply, error) {
	if n := req.GetPreDumps(); n > 0 {
		return a.reply(fmt.Sprintf("dump on pre-copy round %d", n))
	}
	return a.reply("dump")
}

func (a *fakeAgent) MigrateSend(req *pb.MigrateSendRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	if err := a.call("send to " + req.GetAddress()); err != nil {
		return err
	}
	for _, done := range []int64{fakeCheckpointBytes / 2, fakeCheckpointBytes} {
		if err := stream.Send(&pb.MigrateProgress{DoneBytes: done, TotalBytes: fakeCheckpointBytes}); err != nil {
			return err
		}
	}
	return nil
}

func (a *fakeAgent) MigrateFinish(context.Context, *pb.MigrateFinishRequest) (*pb.MigrateReply, error) {
	return a.reply("finish")
}

func (a *fakeAgent) MigrateResume(context.Context, *pb.MigrateRef) (*pb.MigrateReply, error) {
	return a.reply("resume")
}

func (a *fakeAgent) MigratePrepare(_ context.Context, req *pb.MigratePrepareRequest) (*pb.MigrateReply, error) {
	return a.reply("prepare " + req.GetContainer().GetName() + " " + req.GetStrategy())
}

func (a *fakeAgent) MigrateReceive(context.Context, *pb.MigrateReceiveRequest) (*pb.MigrateReply, error) {
	return a.reply("receive")
}

func (a *fakeAgent) MigrateRestore(_ context.Context, req *pb.MigrateRestoreRequest) (*pb.MigrateReply, error) {
	if n := req.GetPreDumps(); n > 0 {
		return a.reply(fmt.Sprintf("restore on pre-copy round %d", n))
	}
	return a.reply("restore")
}

func (a *fakeAgent) MigrateCommit(context.Context, *pb.MigrateRef) (*pb.MigrateReply, error) {
	return a.reply("commit")
}

func (a *fakeAgent) MigrateAbort(context.Context, *pb.MigrateAbortRequest) (*pb.MigrateReply, error) {
	return a.reply("abort")
}
