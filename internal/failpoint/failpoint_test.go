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
// armed to pause: the child must stop (state T) at the point, and go on
// past it, to a clean exit, only once it is sent SIGCONT.
func TestHitPausesUntilContinued(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Hit("test/pause")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=TestHitPausesUntilContinued")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", Arm("test/pause", ActionPause))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for procState(pid) != "T" {
		select {
		case err := <-exited:
			t.Fatalf("the child exited (%v) instead of stopping at the point", err)
		default:
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			t.Fatalf("the child never stopped at the point (state %q)", procState(pid))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Stopped: it must stay so until continued.
	select {
	case err := <-exited:
		t.Fatalf("the stopped child exited (%v) before SIGCONT", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("the continued child: %v, want a clean exit past the point", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("the child did not go on after SIGCONT")
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
