package clustertests

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// Moves whose destination stops answering in the middle of the transfer:
// its agent stopped (SIGSTOP, as a hung host would be), or the network
// between the two agents cut while the driver still reaches both. Nothing
// may wait for ever: the data connection's watchdog fails the transfer,
// each call has its step timeout, and the move then aborts, or is held
// with the container stopped on the source when the destination cannot
// acknowledge the abort.

// The timeouts of these moves: short, so that the tests are, yet long
// enough that a dump or a prepare on a loaded machine never runs into
// them.
const (
	stallTestStall = 3 * time.Second
	stallTestStep  = 4 * time.Second
	stallTestAbort = 10 * time.Second
	// stallHeldBound bounds how long after the transfer starts a move to
	// a stopped destination may take to be held: the stall, two abort
	// attempts of a step timeout each, and slack. gRPC's keepalive alone
	// would take longer (about 20 s before the receive call fails, then
	// the abort), so a move that is held in time was ended by the
	// watchdog and the step timeout.
	stallHeldBound = stallTestStall + 2*stallTestStep + 5*time.Second
	// stallEndBound bounds the wait for a move whose link was cut to end
	// once the destination runs again.
	stallEndBound = 60 * time.Second
	// agentPauseWait bounds the wait for the destination's agent to stop
	// at its failpoint.
	agentPauseWait = 60 * time.Second
)

// stallOptions are the driver's options for these moves; onEvent, if
// set, sees the driver's events.
func stallOptions(onEvent func(migrate.Event)) migrate.DriveOptions {
	return migrate.DriveOptions{
		OnEvent:       onEvent,
		StallTimeout:  stallTestStall,
		StepTimeout:   stallTestStep,
		AbortTimeout:  stallTestAbort,
		AbortAttempts: 2,
		AbortBackoff:  100 * time.Millisecond,
	}
}

// pausedAtReceive starts an agent that stops itself (SIGSTOP) as the
// checkpoint reaches it, its data connection accepted and unread.
var pausedAtReceive = devcluster.AgentOptions{
	Env: []string{failpoint.Arm(agent.FailpointDestinationReceive, failpoint.ActionPause)},
}

// continueOnCleanup makes sure h's agent is not left stopped, so that the
// cluster's Close can stop it.
func continueOnCleanup(t *testing.T, h *devcluster.Host) {
	daemon := h.Agent()
	t.Cleanup(func() { _ = daemon.Signal(syscall.SIGCONT) })
}

// waitStopped waits until process pid is stopped (state T), or done is
// closed (the move ended without it stopping: the test fails).
func waitStopped(t *testing.T, pid int, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(agentPauseWait)
	for procState(t, pid) != "T" {
		select {
		case <-done:
			t.Fatal("the move ended before the destination's agent stopped at its failpoint")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the destination's agent (pid %d) did not stop at its failpoint within %s", pid, agentPauseWait)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitAnswers waits until h's agent answers again after it was stopped.
func waitAnswers(t *testing.T, h *devcluster.Host) {
	t.Helper()
	deadline := time.Now().Add(stallEndBound)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := h.Agent().Client().NodeInfo(ctx, &pb.NodeInfoRequest{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s does not answer after SIGCONT: %v", h.Agent(), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDestinationStoppedInTheTransferIsHeldThenAborted stops the
// destination's agent (SIGSTOP) as the checkpoint reaches it: the
// source's transfer stalls and fails by its watchdog, the destination
// cannot acknowledge the abort within the step timeouts, so the move is
// held, in bounded time, with the container stopped on the source and no
// copy running. Once the destination's agent runs again (SIGCONT), the
// abort is acknowledged and the container runs on the source from where
// it was: its counter went on, its memory is the same bytes, the client's
// TCP connection never broke, and exactly one copy runs.
func TestDestinationStoppedInTheTransferIsHeldThenAborted(t *testing.T) {
	m := startMoveCluster(t, "ctsstop", 40, devcluster.AgentOptions{}, pausedAtReceive)
	continueOnCleanup(t, m.b)
	hosts := []*devcluster.Host{m.a, m.b}
	before := m.client.Count()

	var transferAt time.Time
	res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-dst-stopped", Container: "w", Strategy: migrate.StopCopy},
		migrationAgent(m.a), migrationAgent(m.b), stallOptions(func(ev migrate.Event) {
			if ev.Phase == migrate.PhaseTransfer && transferAt.IsZero() {
				transferAt = time.Now()
			}
		}))
	took := time.Since(transferAt)
	if state := procState(t, m.b.Agent().Pid()); state != "T" {
		t.Fatalf("the destination's agent is in state %s, not stopped at its failpoint: the test tested nothing (move: %v)", state, err)
	}
	if !errors.Is(err, migrate.ErrHeld) {
		t.Fatalf("move to a stopped destination: err = %v, want it held", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "stalled") || !strings.Contains(msg, m.b.Agent().Addr()) {
		t.Errorf("err = %v, want it to say that the transfer to %s stalled", err, m.b.Agent().Addr())
	}
	if !errors.Is(err, migrate.ErrStepTimeout) {
		t.Errorf("err = %v, want the abort to have had no answer within the step timeout", err)
	}
	if transferAt.IsZero() || took > stallHeldBound {
		t.Errorf("the move was held %s after the transfer started, want within %s", took, stallHeldBound)
	}
	t.Logf("held %s after the transfer started: %v", took, err)
	assertNoCopy(t, "w", hosts)

	if err := m.b.Agent().Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitAnswers(t, m.b)
	if _, err := migrate.AbortMigration(context.Background(), res.Record, migrationAgent(m.a), migrationAgent(m.b), stallOptions(nil)); err != nil {
		t.Fatalf("abort of the held move once the destination runs again: %v", err)
	}
	assertOneCopy(t, "w", m.a, hosts)
	m.assertWentOn(t, before)
}

// TestLinkCutInTheTransferAborts cuts the network between the source's
// and the destination's hosts while the checkpoint is on its way (bytes
// sent, more to come), the driver still reaching both agents: the
// transfer stalls on both sides and fails by the watchdog, the
// destination acknowledges the abort, and the source runs the container
// on from where it was, with its client's connection, the only copy.
// The link is healed afterwards.
func TestLinkCutInTheTransferAborts(t *testing.T) {
	m := startMoveCluster(t, "ctscut", 43, devcluster.AgentOptions{}, pausedAtReceive)
	continueOnCleanup(t, m.b)
	t.Cleanup(func() {
		if err := m.c.Heal(context.Background(), m.a, m.b); err != nil {
			t.Errorf("heal the link: %v", err)
		}
	})
	hosts := []*devcluster.Host{m.a, m.b}
	before := m.client.Count()

	type outcome struct {
		res *migrate.Result
		err error
	}
	ended := make(chan outcome, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-link-cut", Container: "w", Strategy: migrate.StopCopy},
			migrationAgent(m.a), migrationAgent(m.b), stallOptions(nil))
		ended <- outcome{res, err}
	}()
	// The destination stops with its data connection accepted: what the
	// source sends piles up in the two hosts' buffers. Cut the link under
	// it, then let the destination read what got through.
	pid := m.b.Agent().Pid()
	waitStopped(t, pid, done)
	if err := m.c.Cut(context.Background(), m.a, m.b); err != nil {
		t.Fatal(err)
	}
	if err := m.b.Agent().Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	var o outcome
	select {
	case o = <-ended:
	case <-time.After(stallEndBound):
		t.Fatalf("the move across a cut link did not end within %s of the destination running again", stallEndBound)
	}
	if o.err == nil || errors.Is(o.err, migrate.ErrHeld) {
		t.Fatalf("move across a cut link: err = %v, want a clean abort", o.err)
	}
	if msg := o.err.Error(); !strings.Contains(msg, "stalled") ||
		(!strings.Contains(msg, m.a.Addr().String()) && !strings.Contains(msg, m.b.Addr().String())) {
		t.Errorf("err = %v, want it to say that the transfer stalled, naming the other host", o.err)
	}
	if o.res.Record.Phase != migrate.PhaseAborted {
		t.Errorf("record ends in %s, want aborted", o.res.Record.Phase)
	}
	t.Logf("aborted: %v", o.err)
	assertOneCopy(t, "w", m.a, hosts)
	m.assertWentOn(t, before)
	if entries, _ := os.ReadDir(filepath.Join(m.b.DataDir(), "checkpoints")); len(entries) != 0 {
		t.Errorf("the destination kept %v of the cut transfer", entries)
	}
	if err := m.c.Heal(context.Background(), m.a, m.b); err != nil {
		t.Fatal(err)
	}
}
