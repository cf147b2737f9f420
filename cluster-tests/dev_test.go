package clustertests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
)

// The dev cluster test's name and ranges are its own among godwit's
// tests.
const (
	devName          = "ctdev"
	devSubnet        = "10.77.50.0/24"
	devContainerCIDR = "10.78.50.0/24"
	// devCommandTimeout bounds one godwit command: dev up starts five
	// processes and waits for an election and two registrations.
	devCommandTimeout = 3 * time.Minute
	// devRouteTimeout bounds the wait for a container's route.
	devRouteTimeout = 10 * time.Second
)

// TestDevUpDown builds a cluster of three schedulers and two nodes with
// `godwit dev up`, as a user would, talks to it through the context it
// saved, reaches a container it runs from this machine, and removes it
// with `godwit dev down`, which must leave no process, namespace, bridge,
// route, work dir or context behind.
func TestDevUpDown(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc", "nsenter")
	bin := testutil.Godwit(t)
	contexts := filepath.Join(t.TempDir(), "contexts.json")
	// A dev up that failed half way, or a test that failed before dev
	// down, must not leave the cluster running.
	t.Cleanup(func() {
		if err := devcluster.Remove(context.Background(), devName, nil); err != nil {
			t.Errorf("remove cluster %s: %v", devName, err)
		}
	})
	godwit := func(t *testing.T, args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), devCommandTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = devEnv(contexts)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("godwit %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}

	out := godwit(t, "dev", "up", "--name", devName, "--nodes", "2", "--schedulers", "3",
		"--subnet", devSubnet, "--container-cidr", devContainerCIDR)
	t.Logf("dev up:\n%s", out)
	workDir := filepath.Join(os.TempDir(), "gwd-"+devName)

	t.Run("node ls through the saved context lists every node ready", func(t *testing.T) {
		var nodes []struct{ Name, Address, Status string }
		if err := json.Unmarshal([]byte(godwit(t, "node", "ls", "-o", "json")), &nodes); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, n := range nodes {
			got[n.Name] = n.Address + " " + n.Status
		}
		// Schedulers s1-s3 take .2 to .4, the nodes the next addresses.
		want := map[string]string{
			devName + "-n1": "10.77.50.5:7701 ready",
			devName + "-n2": "10.77.50.6:7701 ready",
		}
		if len(got) != len(want) {
			t.Errorf("node ls lists %v, want %v", got, want)
		}
		for n, w := range want {
			if got[n] != w {
				t.Errorf("node %s: %q, want %q (all: %v)", n, got[n], w, got)
			}
		}
	})

	t.Run("cluster status shows three voters and a leader", func(t *testing.T) {
		var st struct {
			Leader string
			Peers  []struct {
				ID     string
				Voter  bool
				Leader bool
			}
		}
		if err := json.Unmarshal([]byte(godwit(t, "cluster", "status", "-o", "json")), &st); err != nil {
			t.Fatal(err)
		}
		var voters []string
		for _, p := range st.Peers {
			if p.Voter {
				voters = append(voters, p.ID)
			}
		}
		slices.Sort(voters)
		want := []string{devName + "-s1.sched", devName + "-s2.sched", devName + "-s3.sched"}
		if !slices.Equal(voters, want) || !slices.Contains(want, st.Leader) {
			t.Errorf("cluster status: leader %q, voters %v; want a leader among %v, all voters", st.Leader, voters, want)
		}
	})

	t.Run("this machine reaches a container at its address", func(t *testing.T) {
		tarball := filepath.Join(t.TempDir(), "busybox.tar")
		testutil.BusyboxTar(t, tarball)
		godwit(t, "image", "import", tarball, "--name", "busybox")
		godwit(t, "run", "--name", "web", "busybox", "--", "httpd", "-f", "-p", "80")
		var ps []struct{ Name, IP, Node string }
		if err := json.Unmarshal([]byte(godwit(t, "ps", "-o", "json")), &ps); err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].IP == "" {
			t.Fatalf("ps lists %+v, want the one container with its address", ps)
		}
		// The route follower sets the route within an event's round trip.
		addr := net.JoinHostPort(ps[0].IP, "80")
		deadline := time.Now().Add(devRouteTimeout)
		for {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				routes, _ := exec.Command("ip", "route").CombinedOutput()
				log, _ := os.ReadFile(filepath.Join(workDir, "routes.log"))
				t.Fatalf("container %s on %s is not reachable at %s from this machine within %s: %v\nroutes:\n%s\nroute follower's log:\n%s",
					ps[0].Name, ps[0].Node, addr, devRouteTimeout, err, routes, log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("a second dev up of the name is refused, the cluster stays", func(t *testing.T) {
		cmd := exec.Command(bin, "dev", "up", "--name", devName, "--subnet", "10.77.51.0/24", "--container-cidr", "10.78.51.0/24")
		cmd.Env = devEnv(contexts)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "dev down --name "+devName) {
			t.Errorf("second dev up: err = %v, want a refusal that says to run dev down:\n%s", err, out)
		}
		if _, err := os.Stat("/sys/class/net/gwd-" + devName); err != nil {
			t.Errorf("the refused dev up removed the cluster's bridge: %v", err)
		}
	})

	processes := devProcesses(t)
	if len(processes) < 6 {
		t.Errorf("found %d processes of cluster %s (%v), want its 3 schedulers, 2 agents and route follower at least", len(processes), devName, processes)
	}
	out = godwit(t, "dev", "down", "--name", devName)
	t.Logf("dev down:\n%s", out)

	t.Run("dev down leaves nothing behind", func(t *testing.T) {
		for _, pid := range processes {
			if isRunning(pid) {
				t.Errorf("process %d of the cluster runs after dev down", pid)
			}
		}
		if routes, err := exec.Command("ip", "route").CombinedOutput(); err != nil || strings.Contains(string(routes), "10.78.50.") {
			t.Errorf("routes to the cluster's containers left (%v):\n%s", err, routes)
		}
		pins, _ := filepath.Glob("/run/netns/gwd-" + devName + "-*")
		if len(pins) > 0 {
			t.Errorf("network namespaces left: %v", pins)
		}
		for _, path := range []string{"/sys/class/net/gwd-" + devName, workDir, "/run/godwit-devcluster/" + devName + ".json"} {
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s after dev down: %v, want it gone", path, err)
			}
		}
		data, err := os.ReadFile(contexts)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), `"`+devName+`"`) {
			t.Errorf("the contexts file still names %s:\n%s", devName, data)
		}
	})
}

// devEnv is the environment of the test's godwit commands: its own
// contexts file, and none of the caller's GODWIT_ settings, which would
// pick another target.
func devEnv(contexts string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GODWIT_") })
	return append(env, "GODWIT_CONFIG="+contexts)
}

// devProcesses lists the processes of the dev cluster's schedulers,
// agents and route follower: those whose command line names the cluster,
// a node or a scheduler of it.
func devProcesses(t *testing.T) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		if slices.ContainsFunc(bytes.Split(cmdline, []byte{0}), func(arg []byte) bool {
			return bytes.HasPrefix(arg, []byte(devName+"-")) || string(arg) == devName
		}) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isRunning reports whether pid is a process that has not exited.
func isRunning(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || (stat[i+2] != 'Z' && stat[i+2] != 'X')
}
