package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// softDirtyMissing is why this project's machine cannot pre-copy, as its
// agents report it.
const softDirtyMissing = "needs soft-dirty: the kernel does not mark written pages soft-dirty (needs CONFIG_MEM_SOFT_DIRTY)"

// thisMachineStrategies is what an agent on this project's machine
// reports while it carries out only stop-copy and pre-copy: no
// soft-dirty, stream and post-copy not implemented.
func thisMachineStrategies() []*pb.StrategySupport {
	return []*pb.StrategySupport{
		{Name: "stop-copy", Supported: true},
		{Name: "stream", Reason: "not implemented yet by this agent: use stop-copy"},
		{Name: "pre-copy", Reason: softDirtyMissing},
		{Name: "post-copy", Reason: "not implemented yet by this agent: use stop-copy"},
	}
}

func allStrategies() []*pb.StrategySupport {
	return []*pb.StrategySupport{
		{Name: "stop-copy", Supported: true}, {Name: "stream", Supported: true},
		{Name: "pre-copy", Supported: true}, {Name: "post-copy", Supported: true},
	}
}

// streamNoSoftDirty is this machine once the agents stream.
func streamNoSoftDirty() []*pb.StrategySupport {
	s := thisMachineStrategies()
	s[1] = &pb.StrategySupport{Name: "stream", Supported: true}
	return s
}

func (a *fakeAgent) MigratePreDump(_ context.Context, req *pb.MigratePreDumpRequest) (*pb.MigratePreDumpReply, error) {
	if err := a.call("pre-dump"); err != nil {
		return nil, err
	}
	a.mu.Lock()
	dirty := a.preCopyDirty[min(int(req.GetRound()), len(a.preCopyDirty))-1]
	a.mu.Unlock()
	return &pb.MigratePreDumpReply{DirtyPages: dirty, DurationUs: 1000, Bytes: dirty * 4096}, nil
}

func (a *fakeAgent) MigrateSendPreDump(req *pb.MigrateSendPreDumpRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	if err := a.call("send pre-dump to " + req.GetAddress()); err != nil {
		return err
	}
	return stream.Send(&pb.MigrateProgress{DoneBytes: 1 << 20, TotalBytes: 1 << 20})
}

func (a *fakeAgent) MigrateReceivePreDump(context.Context, *pb.MigrateReceivePreDumpRequest) (*pb.MigrateReply, error) {
	return a.reply("receive pre-dump")
}

// TestMigrateChoosesTheStrategy: migrate asks both agents what they
// support, refuses a strategy one lacks before anything stops (naming
// the host and the reason), and says which strategy auto took and why,
// before the progress and in the result.
func TestMigrateChoosesTheStrategy(t *testing.T) {
	tests := []struct {
		name     string
		src, dst []*pb.StrategySupport
		dirty    []int64
		args     []string
		// errFrags: the refusal names these, and nothing was called.
		errFrags []string
		// chosen is the strategy moved with, reason what its reason says,
		// stderr what else standard error says.
		chosen     migrate.Strategy
		reason     []string
		stderr     []string
		srcCalls   []string
		prepareArg string
	}{
		{
			name: "pre-copy without soft-dirty is refused before anything stops", src: thisMachineStrategies(), dst: thisMachineStrategies(),
			args:     []string{"--strategy", "pre-copy"},
			errFrags: []string{"cannot migrate c1 from node n-src to node n-dst", "pre-copy: both hosts: " + softDirtyMissing, "nothing was stopped"},
		},
		{
			name: "a strategy the destination lacks names the destination", src: allStrategies(), dst: thisMachineStrategies(),
			args:     []string{"--strategy", "stream"},
			errFrags: []string{"stream: destination: not implemented yet"},
		},
		{
			name: "auto without soft-dirty falls back, saying why not pre-copy", src: thisMachineStrategies(), dst: thisMachineStrategies(),
			chosen: migrate.StopCopy,
			reason: []string{"auto: the first that both hosts support", "not pre-copy: both hosts: " + softDirtyMissing, "not stream: both hosts: not implemented yet"},
		},
		{
			name: "auto skips what one host lacks", src: allStrategies(), dst: thisMachineStrategies(),
			chosen: migrate.StopCopy, reason: []string{"not pre-copy: destination: " + softDirtyMissing, "not stream: destination: not implemented yet"},
		},
		{
			name: "auto takes stream when both have it but not soft-dirty", src: allStrategies(), dst: streamNoSoftDirty(),
			chosen: migrate.Stream, reason: []string{"not pre-copy: destination: " + softDirtyMissing},
		},
		{
			name: "auto with --minimize-downtime takes post-copy, with the warning", src: allStrategies(), dst: allStrategies(),
			args: []string{"--minimize-downtime"}, chosen: migrate.PostCopy, reason: []string{"auto"},
			stderr: []string{"warning: post-copy runs the container on node n-dst before all its memory has arrived", "losing either node (n-src or n-dst) loses the container"},
		},
		{
			name: "auto never takes post-copy unasked", src: allStrategies(), dst: allStrategies(),
			dirty: []int64{131072, 100}, chosen: migrate.PreCopy,
			srcCalls: []string{"describe c1", "pre-dump", "send pre-dump to DST", "pre-dump", "send pre-dump to DST", "dump on pre-copy round 2", "send to DST", "finish"},
		},
		{
			name: "an agent that reports no strategies moves by stop-copy", src: nil, dst: allStrategies(),
			chosen: migrate.StopCopy, reason: []string{"not pre-copy: source did not report it"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src, dst := startFakeAgent(t, "n-src"), startFakeAgent(t, "n-dst")
			src.strategies, dst.strategies = tt.src, tt.dst
			src.preCopyDirty = tt.dirty
			journal := t.TempDir()
			args := append([]string{"migrate", "c1", "--journal", journal, "--id", "m-choice", "--from-agent", src.addr, "--to-agent", dst.addr, "-o", "json"}, tt.args...)
			stdout, stderr, err := runGodwit(t, args...)
			if len(tt.errFrags) > 0 {
				for _, f := range tt.errFrags {
					if err == nil || !strings.Contains(err.Error(), f) {
						t.Errorf("error %v, want one naming %q", err, f)
					}
				}
				if calls := append(src.migrateCalls(), dst.migrateCalls()...); len(calls) > 0 {
					t.Errorf("a refused strategy made migration calls %v", calls)
				}
				assertNoRecords(t, journal)
				return
			}
			if err != nil {
				t.Fatalf("migrate: %v\n%s", err, stderr)
			}
			var v migrationView
			if err := json.Unmarshal([]byte(stdout), &v); err != nil {
				t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
			}
			if v.Strategy != string(tt.chosen) || v.Phase != "done" {
				t.Errorf("moved by %s (%s), phase %s; want %s, done", v.Strategy, v.StrategyReason, v.Phase, tt.chosen)
			}
			for _, f := range tt.reason {
				if !strings.Contains(v.StrategyReason, f) {
					t.Errorf("strategy_reason %q does not say %q", v.StrategyReason, f)
				}
			}
			// Which strategy and why come before the progress.
			announce := "strategy " + string(tt.chosen) + ": " + v.StrategyReason
			if i, j := strings.Index(stderr, announce), strings.Index(stderr, "migrate c1: prepare"); i < 0 || (j >= 0 && j < i) {
				t.Errorf("stderr does not say %q before the progress:\n%s", announce, stderr)
			}
			for _, f := range tt.stderr {
				if !strings.Contains(stderr, f) {
					t.Errorf("stderr lacks %q:\n%s", f, stderr)
				}
			}
			if got := dst.migrateCalls(); len(got) == 0 || got[0] != "prepare c1 "+string(tt.chosen) {
				t.Errorf("destination calls %v, want a prepare for %s first", got, tt.chosen)
			}
			if tt.srcCalls != nil {
				var want []string
				for _, c := range tt.srcCalls {
					want = append(want, strings.ReplaceAll(c, "DST", dst.addr))
				}
				if got := src.migrateCalls(); !slices.Equal(got, want) {
					t.Errorf("source calls %v, want %v", got, want)
				}
			}
			if tt.chosen == migrate.PreCopy {
				if v.PreCopy == nil || len(v.PreCopy.Rounds) != 2 || v.PreCopy.Rule != migrate.RuleFewDirtyPages {
					t.Errorf("pre_copy %+v, want 2 rounds stopped by %q", v.PreCopy, migrate.RuleFewDirtyPages)
				}
				if !slices.Contains(dst.migrateCalls(), "restore on pre-copy round 2") {
					t.Errorf("destination calls %v: the restore was not told of the rounds", dst.migrateCalls())
				}
			}
		})
	}
}

func TestWriteMigrationSummaryPreCopy(t *testing.T) {
	v := migrationView{ID: "m-1", Container: "c1", From: "a:1", To: "b:1", Strategy: "pre-copy", Phase: "done",
		DowntimeMs: 120, TotalMs: 4000, BytesSent: 300 << 20,
		PreCopy: &preCopyView{Rule: migrate.RuleFewDirtyPages, Detail: "round 3 copied 100 pages, under 256", Rounds: []preCopyRoundView{
			{DirtyPages: 65536, BytesSent: 256 << 20}, {DirtyPages: 9000, BytesSent: 35 << 20}, {DirtyPages: 100, BytesSent: 400 << 10},
		}}}
	var b strings.Builder
	writeMigrationSummary(&b, v, migrationAgents{}, "auto: the first that both hosts support")
	want := `pre-copy: 3 rounds, 291.4 MiB sent while the container ran; stopped by "few dirty pages": round 3 copied 100 pages, under 256`
	if !strings.Contains(b.String(), want) {
		t.Errorf("summary:\n%s\nlacks %q", b.String(), want)
	}
}
