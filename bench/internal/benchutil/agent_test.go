package benchutil

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/testutil"
)

const (
	// testNode and testCIDR are this package's own, apart from every
	// other test's node and addresses on the shared kernel.
	testNode = "gwbench-benchutil-test"
	testCIDR = "10.249.1.0/24"
	// testAnswerTimeout bounds the wait for the test's agent to answer.
	testAnswerTimeout = 30 * time.Second
)

func TestTail(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "log", "first line\nsecond line\n")
	tests := []struct {
		name, path string
		n          int64
		// want is the whole answer, or with partial a part of it.
		want    string
		partial bool
	}{
		{"shorter than n", filepath.Join(dir, "log"), 100, "first line\nsecond line\n", false},
		{"the last n bytes", filepath.Join(dir, "log"), 12, "second line\n", false},
		{"unreadable says why", filepath.Join(dir, "missing"), 100, "no such file or directory", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Tail(tc.path, tc.n)
			if (!tc.partial && got != tc.want) || (tc.partial && !strings.Contains(got, tc.want)) {
				t.Errorf("Tail(%s, %d) = %q, want %q", tc.path, tc.n, got, tc.want)
			}
		})
	}
}

// TestAgentStopRemovesCgroups runs a container on an agent StartAgent
// started, removes it as a benchmark does, and checks that Stop leaves
// neither the agent's process nor the node's cgroups behind.
func TestAgentStopRemovesCgroups(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc", "criu")
	ctx := context.Background()
	dir := t.TempDir()
	bin, err := BuildGodwit(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	tarPath := filepath.Join(dir, "busybox.tar")
	testutil.BusyboxTar(t, tarPath)

	a, err := StartAgent(AgentConfig{Binary: bin, Node: testNode, Dir: filepath.Join(dir, "agent"), ContainerCIDR: testCIDR})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_, _ = cli(ctx, bin, a, "rm", "-f", testNode+"-c")
			if err := a.Stop(); err != nil {
				t.Errorf("stop agent: %v", err)
			}
		}
	})
	deadline := time.Now().Add(testAnswerTimeout)
	for _, err := cli(ctx, bin, a, "node", "info"); err != nil; _, err = cli(ctx, bin, a, "node", "info") {
		if time.Now().After(deadline) {
			t.Fatalf("the agent did not answer within %s: %v\n%s", testAnswerTimeout, err, a.LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if a.DataDir != filepath.Join(dir, "agent", "data") {
		t.Errorf("DataDir = %s, want Dir/data", a.DataDir)
	}
	// The agent serves TLS, as a benchmark must measure: a CLI without
	// its files is refused.
	plain := exec.CommandContext(ctx, bin, "--agent", a.Addr, "node", "info")
	plain.Env = append(os.Environ(), "GODWIT_TLS_CA=", "GODWIT_TLS_CERT=", "GODWIT_TLS_KEY=")
	if out, err := plain.CombinedOutput(); err == nil || !strings.Contains(string(out), "serves TLS") {
		t.Errorf("a plaintext CLI against the benchmark's agent: %v\n%s\nwant refused: the agent must serve TLS", err, out)
	}
	for _, args := range [][]string{
		{"image", "import", tarPath, "--name", "busybox"},
		{"run", "--name", testNode + "-c", "busybox", "--", "sleep", "1000"},
	} {
		if out, err := cli(ctx, bin, a, args...); err != nil {
			t.Fatalf("godwit %s: %v\n%s\nthe agent's log ends with:\n%s", strings.Join(args, " "), err, out, a.LogTail())
		}
	}
	cgroups := nodeCgroups(t)
	if len(cgroups) == 0 {
		t.Fatal("a container runs, yet no /godwit/" + testNode + " cgroup is there: the test would prove nothing")
	}
	if out, err := cli(ctx, bin, a, "rm", "-f", testNode+"-c"); err != nil {
		t.Fatalf("godwit rm -f: %v\n%s", err, out)
	}

	pid := a.Pid()
	stopped = true
	if err := a.Stop(); err != nil {
		t.Fatalf("Stop: %v\nthe agent's log ends with:\n%s", err, a.LogTail())
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("the agent (pid %d) still runs after Stop: %v", pid, err)
	}
	for _, cg := range cgroups {
		if _, err := os.Stat(cg); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s is still there after Stop: %v", cg, err)
		}
	}
	if !strings.Contains(Tail(a.LogPath, AgentLogTail), testNode) {
		t.Errorf("the agent's log at %s does not name its node: is it the agent's output?\n%s", a.LogPath, a.LogTail())
	}
}

// cli runs `godwit --agent ADDR ARGS...` with the agent's TLS files and
// returns its combined output.
func cli(ctx context.Context, bin string, a *Agent, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, append([]string{"--agent", a.Addr}, args...)...)
	cmd.Env = append(os.Environ(), a.CLIEnv()...)
	return cmd.CombinedOutput()
}

// nodeCgroups lists the test node's cgroup directories in every mounted
// hierarchy, v1 and v2.
func nodeCgroups(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, pattern := range []string{"/sys/fs/cgroup/godwit/" + testNode + "*", "/sys/fs/cgroup/*/godwit/" + testNode + "*"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m...)
	}
	return out
}
