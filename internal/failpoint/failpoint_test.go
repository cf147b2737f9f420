package failpoint

import (
	"os"
	"os/exec"
	"testing"
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
