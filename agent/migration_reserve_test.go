package agent

import (
	"context"
	"errors"
	"log/slog"
	"syscall"
	"testing"

	"github.com/godwit/godwit/internal/memreserve"
	"github.com/godwit/godwit/internal/testutil"
)

func gone(pid int) bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) }

// A migration's reserve (a stop-copy source's for its dump, a
// destination's for its restore) is held, faulted in, by a child process
// of the godwit binary until it is released, and none is taken where the
// balloon does not report free pages.
func TestAMigrationsMemoryIsHeldByAChildUntilReleased(t *testing.T) {
	a := &Agent{cfg: Config{Self: testutil.Godwit(t)}, log: slog.New(slog.DiscardHandler)}
	reporting := true
	balloon := balloonReportsFreePages
	balloonReportsFreePages = func() bool { return reporting }
	t.Cleanup(func() { balloonReportsFreePages = balloon })
	ctx := context.Background()

	const n = 48 << 20
	a.reserveMemory(ctx, "m1", reserveRestore, n)
	p := a.mig.reserves[reserveKey{"m1", reserveRestore}]
	if p == nil {
		t.Fatal("no reserve taken")
	}
	if got := a.reservedMemory("m1", reserveRestore); got != n {
		t.Errorf("reservedMemory = %d, want %d", got, n)
	}
	if got := testutil.StatusBytes(t, p.Pid(), "VmRSS"); got < n {
		t.Errorf("the reserve's process holds %d MiB resident, want at least %d", got>>20, n>>20)
	}
	a.reserveMemory(ctx, "m1", reserveRestore, n) // a repeated Prepare
	if again := a.mig.reserves[reserveKey{"m1", reserveRestore}]; again != p {
		t.Errorf("a repeated reserve started process %d beside %d", again.Pid(), p.Pid())
	}

	a.releaseMemory("m1", reserveRestore)
	if !gone(p.Pid()) || len(a.mig.reserves) != 0 {
		t.Errorf("after the release: the process gone %v (want true), reserves left %v", gone(p.Pid()), a.mig.reserves)
	}
	if got := a.reservedMemory("m1", reserveRestore); got != 0 {
		t.Errorf("reservedMemory after the release = %d, want 0", got)
	}
	a.releaseMemory("m1") // nothing left: nothing to do

	// An abort releases every step's.
	a.reserveMemory(ctx, "m1", reserveReceive, n)
	a.reserveMemory(ctx, "m1", reserveRestore, n)
	held := []*memreserve.Process{a.mig.reserves[reserveKey{"m1", reserveReceive}], a.mig.reserves[reserveKey{"m1", reserveRestore}]}
	if held[0] == nil || held[1] == nil || held[0] == held[1] {
		t.Fatalf("reserves for the receive and the restore: %v, want two", held)
	}
	a.releaseMemory("m1")
	if !gone(held[0].Pid()) || !gone(held[1].Pid()) || len(a.mig.reserves) != 0 {
		t.Errorf("after releasing every step: processes gone %v, %v (want true), reserves left %v", gone(held[0].Pid()), gone(held[1].Pid()), a.mig.reserves)
	}

	reporting = false
	a.reserveMemory(ctx, "m2", reserveDump, n)
	if len(a.mig.reserves) != 0 {
		t.Errorf("memory reserved without free page reporting: %v", a.mig.reserves)
	}
}
