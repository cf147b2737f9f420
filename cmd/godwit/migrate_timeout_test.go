package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func TestMigrateRefusesBadTimeouts(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"zero --step-timeout", []string{"--step-timeout", "0s"}, "--step-timeout 0s"},
		{"negative --step-timeout", []string{"--step-timeout", "-1s"}, "--step-timeout -1s"},
		{"zero --stall-timeout", []string{"--stall-timeout", "0s"}, "--stall-timeout 0s"},
		{"endless --stall-timeout", []string{"--stall-timeout", "1000h"}, "--stall-timeout 1000h0m0s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			journal := t.TempDir()
			args := append([]string{"migrate", "c1", "--journal", journal, "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2}, tt.args...)
			_, _, err := runGodwit(t, args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("godwit %s: error %v, want one containing %q", strings.Join(args, " "), err, tt.want)
			}
			assertNoRecords(t, journal)
		})
	}
}

func TestMigrateHelpShowsTheTimeouts(t *testing.T) {
	stdout, _, err := runGodwit(t, "migrate", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--step-timeout duration", "(default 10m0s)", "--stall-timeout duration", "(default 30s)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("migrate --help lacks %q:\n%s", want, stdout)
		}
	}
}

// abortHangs is a fake agent whose MigrateAbort never answers, as a
// stopped agent's would not.
type abortHangs struct{ *fakeAgent }

func (a abortHangs) MigrateAbort(ctx context.Context, _ *pb.MigrateAbortRequest) (*pb.MigrateReply, error) {
	_ = a.call("abort")
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestMigrateStepTimeoutEndsAHungAbort: a destination that fails the
// transfer and then never answers the abort holds the move (exit status
// 3) once each attempt has run out of --step-timeout, and the error says
// so; every attempt got its own timeout, so the abort was tried again.
func TestMigrateStepTimeoutEndsAHungAbort(t *testing.T) {
	src := startFakeAgent(t, "n-src")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dst := &fakeAgent{name: "n-dst", addr: lis.Addr().String(), fails: map[string]error{}, strategies: thisMachineStrategies()}
	srv := grpc.NewServer()
	pb.RegisterAgentServiceServer(srv, abortHangs{dst})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	dst.fail("receive", status.Error(codes.Unavailable, "connection reset"))

	_, stderr, err := runGodwit(t, "migrate", "c1", "--journal", t.TempDir(), "--id", "m-hung", "--strategy", "stop-copy",
		"--step-timeout", "100ms", "--abort-timeout", "3s", "--from-agent", src.addr, "--to-agent", dst.addr)
	var exit exitError
	if !errors.As(err, &exit) || exit.code != exitMigrationHeld {
		t.Fatalf("error %v, want exit status %d\n%s", err, exitMigrationHeld, stderr)
	}
	if !strings.Contains(stderr, "no answer within the step timeout of 100ms") {
		t.Errorf("stderr does not say that the abort had no answer within the step timeout:\n%s", stderr)
	}
	aborts := 0
	for _, c := range dst.migrateCalls() {
		if c == "abort" {
			aborts++
		}
	}
	if aborts < 2 {
		t.Errorf("the abort was tried %d times, want it tried again after a timed-out attempt", aborts)
	}
}
