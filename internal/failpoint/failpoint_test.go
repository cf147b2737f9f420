package failpoint

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestHitKillsWhenArmed runs this test binary again with a point armed:
// the child must die of SIGKILL at the point, and an unarmed run must not.
func TestHitKillsWhenArmed(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Hit("test/point")
		os.Exit(0)
	}
	for _, tt := range []struct {
		name   string
		env    string
		killed bool
	}{
		{"armed", Arm("test/point", ActionKill), true},
		{"another point armed", Arm("test/other", ActionKill), false},
		{"nothing armed", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=TestHitKillsWhenArmed")
			cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", tt.env)
			err := cmd.Run()
			killed := err != nil && cmd.ProcessState.String() == "signal: killed"
			if killed != tt.killed {
				t.Errorf("child: %v (state %v), want killed %v", err, cmd.ProcessState, tt.killed)
			}
		})
	}
}

// TestHitPausesUntilContinued runs this test binary again with a point
// armed to pause: the child must stop at the point, and go on past it, to
// a clean exit, only once it is sent SIGCONT. The stop is learned from
// the kernel (wait4 with WUNTRACED), not by polling its state.
func TestHitPausesUntilContinued(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Hit("test/pause")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=TestHitPausesUntilContinued")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Arm("test/pause", ActionPause))
	// A process group of its own: when the test runs in an orphaned
	// process group (no member's parent in another group of the
	// session, as under some CI runners), the kernel sends SIGCONT to
	// every stopped member each time a member exits, such as another
	// package's test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	reaped := false
	t.Cleanup(func() {
		if !reaped { // a failed test leaves the child: end it
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_, _ = syscall.Wait4(pid, nil, 0, nil)
		}
	})
	var ws syscall.WaitStatus
	if _, err := syscall.Wait4(pid, &ws, syscall.WUNTRACED, nil); err != nil {
		t.Fatal(err)
	}
	if !ws.Stopped() {
		reaped = true
		t.Fatalf("the child ended (%v) instead of stopping at the point", ws)
	}
	// Stopped: it must stay so until continued.
	time.Sleep(200 * time.Millisecond)
	if st := procState(pid); st != "T" {
		t.Fatalf("the stopped child is in state %q before SIGCONT, want T", st)
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := syscall.Wait4(pid, &ws, syscall.WCONTINUED, nil); err != nil {
			t.Fatal(err)
		}
		if ws.Exited() || ws.Signaled() {
			reaped = true
			break
		}
	}
	if !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the continued child ended %v, want a clean exit past the point", ws)
	}
}

// procState is the state letter (R, S, T, ...) of process pid, or "" once
// it is gone.
func procState(pid int) string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	// The command name may hold spaces; the state follows its ")".
	rest := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	if len(rest) == 0 {
		return ""
	}
	return rest[0]
}
