package runtime

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/agent/internal/mountinfo"
	"github.com/godwit/godwit/internal/testutil"
)

const (
	busyboxPath = "/bin/busybox"
	// shimRSSLimit is the shim's memory budget (issue 2: at most 8 MiB
	// resident per shim).
	shimRSSLimit = 8 << 20
	// exitWait bounds how long a test waits for a container's exit to be
	// recorded.
	exitWait = 15 * time.Second
)

// busyboxRootfs builds a minimal busybox root filesystem for one test.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	testutil.BusyboxRootfs(t, rootfs)
	return rootfs
}

// testContainer is one container started through the shim, with cleanup
// that kills and deletes it and removes its cgroups.
type testContainer struct {
	id       string
	runc     *Runc
	cfg      ShimConfig
	cgroup   string
	shimPid  int
	stateDir string
}

// uniqueID returns a runc id no other test (or package) on this kernel uses.
func uniqueID(t *testing.T) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 30 {
		name = name[:30]
	}
	return "gwrt-" + name + "-" + hex.EncodeToString(b)
}

// newTestContainer writes the bundle of a busybox container running args.
// spec and cfg may adjust the options before anything is written.
func newTestContainer(t *testing.T, args []string, spec func(*SpecOptions), cfg func(*ShimConfig)) *testContainer {
	t.Helper()
	requireIntegrationHost(t)
	id := uniqueID(t)
	dir := t.TempDir()
	c := &testContainer{
		id:     id,
		runc:   &Runc{Root: filepath.Join(dir, "runc")},
		cgroup: testCgroupParent + "/" + id,
	}
	o := SpecOptions{ID: id, Name: "test", Args: args, RootfsPath: busyboxRootfs(t), CgroupsPath: c.cgroup}
	if spec != nil {
		spec(&o)
	}
	s, err := GenerateSpec(o)
	if err != nil {
		t.Fatalf("GenerateSpec: %v", err)
	}
	bundle := filepath.Join(dir, "bundle")
	if err := WriteBundle(bundle, s); err != nil {
		t.Fatal(err)
	}
	c.cfg = ShimConfig{
		ID:       id,
		Bundle:   bundle,
		RuncRoot: c.runc.Root,
		StateDir: filepath.Join(dir, "state"),
		Cgroup:   testCgroupParent + "/" + id + "-shim",
	}
	if cfg != nil {
		cfg(&c.cfg)
	}
	c.stateDir = c.cfg.StateDir
	t.Cleanup(func() { c.cleanup(t) })
	return c
}

func (c *testContainer) start(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pid, err := StartShim(ctx, godwitBinary(t), c.cfg)
	if err != nil {
		t.Fatalf("StartShim: %v", err)
	}
	c.shimPid = pid
}

func (c *testContainer) cleanup(t *testing.T) {
	ctx := context.Background()
	if st, err := c.runc.State(ctx, c.id); err == nil && st.Status != StatusStopped {
		_ = c.runc.Kill(ctx, c.id, syscall.SIGKILL, true)
	}
	// The shim exits once the container is gone; wait so that its
	// cgroup can be removed and it writes nothing into a removed dir.
	deadline := time.Now().Add(exitWait)
	for {
		if _, alive := ShimAlive(c.stateDir); !alive {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("shim of %s still running after cleanup; killing it", c.id)
			if pid, _ := ShimAlive(c.stateDir); pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.runc.Delete(ctx, c.id, true); err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, cg := range []string{c.cgroup, c.cfg.Cgroup} {
		if cg == "" {
			continue
		}
		if err := removeCgroupEventually(cg); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

// removeCgroupEventually retries while the kernel finishes tearing down
// the cgroup's last processes.
func removeCgroupEventually(path string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := RemoveCgroup(path)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits for the shim to record the container's exit.
func (c *testContainer) waitExit(t *testing.T) *ExitStatus {
	t.Helper()
	deadline := time.Now().Add(exitWait)
	for {
		st, ok, err := ReadExit(c.stateDir)
		if err != nil {
			t.Fatalf("ReadExit: %v", err)
		}
		if ok {
			return st
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(c.stateDir, shimLogFile))
			t.Fatalf("no exit recorded for %s within %s; shim log:\n%s", c.id, exitWait, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *testContainer) logs(t *testing.T) string {
	t.Helper()
	var out bytes.Buffer
	if err := ReadLogs(context.Background(), c.stateDir, false, &out); err != nil {
		t.Fatalf("ReadLogs: %v", err)
	}
	return out.String()
}

func TestShimLogsOutput(t *testing.T) {
	c := newTestContainer(t, []string{"sh", "-c", "echo out-1; echo err-1 >&2; echo out-2; hostname"}, nil, nil)
	c.start(t)
	if st := c.waitExit(t); st.Code != 0 || st.Signal != "" {
		t.Errorf("exit = %+v, want code 0", st)
	}
	got := c.logs(t)
	for _, want := range []string{"out-1\n", "err-1\n", "out-2\n", "test\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("logs %q lack %q", got, want)
		}
	}
	if strings.Index(got, "out-1") > strings.Index(got, "out-2") {
		t.Errorf("logs %q out of order", got)
	}
	raw, err := os.ReadFile(filepath.Join(c.stateDir, LogFileName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(" stderr err-1\n")) || !bytes.Contains(raw, []byte(" stdout out-1\n")) {
		t.Errorf("log file does not tag the streams:\n%s", raw)
	}
	if _, alive := ShimAlive(c.stateDir); alive {
		// The shim exits right after recording; give it a moment.
		time.Sleep(200 * time.Millisecond)
		if _, alive := ShimAlive(c.stateDir); alive {
			t.Error("shim still alive after the container exited")
		}
	}
}

func TestShimRestartsInSameStateDir(t *testing.T) {
	c := newTestContainer(t, []string{"sh", "-c", "echo run"}, nil, nil)
	c.start(t)
	first := c.waitExit(t)
	if err := c.runc.Delete(context.Background(), c.id, false); err != nil {
		t.Fatalf("Delete after exit: %v", err)
	}
	c.start(t) // waits for the first shim to be gone
	second := c.waitExit(t)
	if !second.At.After(first.At) {
		t.Errorf("exit status %+v is the first run's (%+v), want the second's", second, first)
	}
	if got := c.logs(t); got != "run\nrun\n" {
		t.Errorf("logs = %q, want both runs' output", got)
	}
}

func TestShimRecordsExitCode(t *testing.T) {
	tests := []struct {
		name     string
		script   string
		wantCode int
	}{
		{"success", "exit 0", 0},
		{"exit 3", "exit 3", 3},
		{"command not found", "nonexistent-command", 127},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestContainer(t, []string{"sh", "-c", tc.script}, nil, nil)
			c.start(t)
			st := c.waitExit(t)
			if st.Code != tc.wantCode || st.Signal != "" || st.At.IsZero() {
				t.Errorf("exit = %+v, want code %d", st, tc.wantCode)
			}
			rs, err := c.runc.State(context.Background(), c.id)
			if err != nil || rs.Status != StatusStopped {
				t.Errorf("runc state = %+v, %v; want stopped (kept for the agent to delete)", rs, err)
			}
		})
	}
}

func TestStartShimReportsFailure(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		cfg      func(*ShimConfig)
		wantText string
	}{
		{name: "program missing in the image", args: []string{"/no/such/program"}, wantText: "/no/such/program"},
		{name: "no bundle", args: []string{"true"}, cfg: func(c *ShimConfig) { c.Bundle += "-missing" }, wantText: "bundle-missing"},
		{name: "shim cgroup cannot be made", args: []string{"true"}, cfg: func(c *ShimConfig) { c.Cgroup = "/cgroup.procs/nope" }, wantText: "cgroup"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTestContainer(t, tc.args, nil, tc.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := StartShim(ctx, godwitBinary(t), c.cfg)
			if !errors.Is(err, ErrShimFailed) {
				t.Fatalf("StartShim = %v, want ErrShimFailed", err)
			}
			if !strings.Contains(err.Error(), tc.wantText) || !strings.Contains(err.Error(), c.id) {
				t.Errorf("err = %q, want the reason (%q) and the container id", err, tc.wantText)
			}
			if _, err := c.runc.State(ctx, c.id); !errors.Is(err, ErrNotExist) {
				t.Errorf("runc state after a failed start = %v, want ErrNotExist", err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for {
				if _, alive := ShimAlive(c.stateDir); !alive {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("shim still running after reporting failure")
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestShimOutlivesAgent starts the shim from a helper "agent" process,
// kills that process with SIGKILL, and checks that the container and its
// shim carry on and can still be stopped, with the exit recorded.
func TestShimOutlivesAgent(t *testing.T) {
	c := newTestContainer(t, []string{"sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done"}, nil, nil)
	cfgJSON, err := json.Marshal(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(os.Args[0])
	agent.Env = append(os.Environ(), testHelperEnv+"="+helperAgent, helperConfigEnv+"="+string(cfgJSON),
		testBinaryEnv+"="+godwitBinary(t))
	agent.Stderr = os.Stderr
	stdout, err := agent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = agent.Process.Kill()
		_ = agent.Wait()
		t.Fatalf("helper agent did not report the shim pid: %v", err)
	}
	shimPid, _ := strconv.Atoi(strings.TrimSpace(line))
	if err := agent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = agent.Wait()

	ctx := context.Background()
	pid, alive := ShimAlive(c.stateDir)
	if !alive || pid != shimPid {
		t.Fatalf("ShimAlive = %d, %v after the agent was killed; want %d, true", pid, alive, shimPid)
	}
	st, err := c.runc.State(ctx, c.id)
	if err != nil || st.Status != StatusRunning {
		t.Fatalf("runc state = %+v, %v; want running", st, err)
	}

	t.Run("detached from the agent", func(t *testing.T) {
		fields := procStatFields(t, shimPid)
		ppid, _ := strconv.Atoi(fields[1])
		sid, _ := strconv.Atoi(fields[3])
		if ppid == agent.Process.Pid || ppid == os.Getpid() {
			t.Errorf("shim's parent is %d: it must not be the agent's child", ppid)
		}
		if sid != shimPid {
			t.Errorf("shim's session is %d, want its own (%d)", sid, shimPid)
		}
		ours, theirs := procCgroups(t, os.Getpid()), procCgroups(t, shimPid)
		for hierarchy, path := range theirs {
			if path != c.cfg.Cgroup {
				t.Errorf("shim is in cgroup %q of hierarchy %q, want %q", path, hierarchy, c.cfg.Cgroup)
			}
			if ours[hierarchy] == path {
				t.Errorf("shim shares the agent's cgroup %q", path)
			}
		}
	})

	t.Run("container stdio is pipes only", func(t *testing.T) {
		// CRIU treats the pipes as external descriptors; a host file
		// here would make a checkpoint fail.
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", st.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, fd := range fds {
			target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", st.Pid, fd.Name()))
			if !strings.HasPrefix(target, "pipe:") {
				t.Errorf("container init fd %s -> %s, want only pipes", fd.Name(), target)
			}
		}
	})

	t.Run("logs keep coming without the agent", func(t *testing.T) {
		deadline := time.Now().Add(exitWait)
		for !strings.Contains(c.logs(t), "tick-5\n") {
			if time.Now().After(deadline) {
				t.Fatalf("logs stopped after the agent was killed: %q", c.logs(t))
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("shim memory", func(t *testing.T) {
		status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", shimPid))
		if err != nil {
			t.Fatal(err)
		}
		rss := procStatusKB(status, "VmRSS")
		t.Logf("shim pid %d: VmRSS %d KiB (RssAnon %d KiB, RssFile %d KiB), threads %d",
			shimPid, rss, procStatusKB(status, "RssAnon"), procStatusKB(status, "RssFile"), procStatusKB(status, "Threads"))
		if rss*1024 > shimRSSLimit {
			t.Errorf("shim resident memory %d KiB is over the %d KiB budget", rss, shimRSSLimit/1024)
		}
	})

	if err := c.runc.Kill(ctx, c.id, syscall.SIGKILL, false); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	exit := c.waitExit(t)
	if exit.Signal != "SIGKILL" || exit.Code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit = %+v, want killed by SIGKILL (code 137)", exit)
	}
}

func TestShimLogRotation(t *testing.T) {
	const maxBytes, maxFiles, lines = 2048, 2, 500
	c := newTestContainer(t, []string{"sh", "-c", fmt.Sprintf("seq 1 %d", lines)}, nil, func(cfg *ShimConfig) {
		cfg.LogMaxBytes, cfg.LogMaxFiles = maxBytes, maxFiles
	})
	c.start(t)
	c.waitExit(t)

	names, err := filepath.Glob(filepath.Join(c.stateDir, LogFileName+"*"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{LogFileName, LogFileName + ".1", LogFileName + ".2"}
	var got []string
	for _, n := range names {
		got = append(got, filepath.Base(n))
		if st, err := os.Stat(n); err == nil && st.Size() > maxBytes {
			t.Errorf("%s is %d bytes, over %d", filepath.Base(n), st.Size(), maxBytes)
		}
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("log files = %v, want %v", got, want)
	}
	out := strings.Fields(c.logs(t))
	if len(out) == 0 || out[len(out)-1] != strconv.Itoa(lines) {
		t.Fatalf("logs end with %v, want %d", out[len(out)-1:], lines)
	}
	first, _ := strconv.Atoi(out[0])
	if first <= 1 {
		t.Errorf("logs start at %d: the oldest lines should have been rotated away", first)
	}
	for i, s := range out {
		if s != strconv.Itoa(first+i) {
			t.Fatalf("logs line %d = %s, want %d: lines lost across rotation", i, s, first+i)
		}
	}
}

func TestReadLogsFollowsRunningContainer(t *testing.T) {
	c := newTestContainer(t, []string{"sh", "-c", "for i in 1 2 3 4 5; do echo follow-$i; sleep 0.2; done"}, nil,
		func(cfg *ShimConfig) { cfg.LogMaxBytes = 128; cfg.LogMaxFiles = 10 })
	c.start(t)
	ctx, cancel := context.WithTimeout(context.Background(), exitWait)
	defer cancel()
	var out bytes.Buffer
	if err := ReadLogs(ctx, c.stateDir, true, &out); err != nil {
		t.Fatalf("ReadLogs follow: %v", err)
	}
	want := "follow-1\nfollow-2\nfollow-3\nfollow-4\nfollow-5\n"
	if out.String() != want {
		t.Errorf("followed %q, want %q", out.String(), want)
	}
}

func TestCgroupLimits(t *testing.T) {
	const memory, cpus = 64 << 20, 0.5
	c := newTestContainer(t, []string{"sleep", "1000"}, func(o *SpecOptions) {
		o.MemoryBytes, o.CPUs = memory, cpus
	}, nil)
	c.start(t)
	st, err := c.runc.State(context.Background(), c.id)
	if err != nil {
		t.Fatal(err)
	}
	groups := procCgroups(t, st.Pid)
	if path, ok := groups[""]; ok && len(groups) == 1 {
		// cgroup v2 only.
		dir := filepath.Join(unifiedMount(t), path)
		assertFile(t, filepath.Join(dir, "memory.max"), strconv.Itoa(memory))
		assertFile(t, filepath.Join(dir, "cpu.max"), "50000 100000")
		return
	}
	if groups["memory"] != c.cgroup || groups["cpu"] != c.cgroup {
		t.Errorf("container cgroups = %v, want %s", groups, c.cgroup)
	}
	assertFile(t, filepath.Join(v1Mount(t, "memory"), groups["memory"], "memory.limit_in_bytes"), strconv.Itoa(memory))
	assertFile(t, filepath.Join(v1Mount(t, "cpu"), groups["cpu"], "cpu.cfs_quota_us"), "50000")
	assertFile(t, filepath.Join(v1Mount(t, "cpu"), groups["cpu"], "cpu.cfs_period_us"), "100000")
}

func TestRuncExecAndState(t *testing.T) {
	c := newTestContainer(t, []string{"sleep", "1000"}, func(o *SpecOptions) {
		o.Env = []string{"GREETING=hello"}
		o.Labels = map[string]string{"tier": "test"}
	}, nil)
	c.start(t)
	ctx := context.Background()

	tests := []struct {
		name     string
		p        ExecProcess
		wantCode int
		wantOut  string
	}{
		{"echo", ExecProcess{Args: []string{"echo", "hi"}}, 0, "hi\n"},
		{"container env and extra env", ExecProcess{Args: []string{"sh", "-c", "echo $GREETING $EXTRA"}, Env: []string{"EXTRA=there"}}, 0, "hello there\n"},
		{"working dir", ExecProcess{Args: []string{"sh", "-c", "pwd"}, Cwd: "/tmp"}, 0, "/tmp\n"},
		{"exit code", ExecProcess{Args: []string{"sh", "-c", "exit 7"}}, 7, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code, err := c.runc.Exec(ctx, c.id, tc.p, &out, &errOut)
			if err != nil {
				t.Fatalf("Exec: %v (stderr %q)", err, errOut.String())
			}
			if code != tc.wantCode || out.String() != tc.wantOut {
				t.Errorf("Exec = %d, %q; want %d, %q", code, out.String(), tc.wantCode, tc.wantOut)
			}
		})
	}

	t.Run("program missing in the container", func(t *testing.T) {
		code, err := c.runc.Exec(ctx, c.id, ExecProcess{Args: []string{"/no/such/program"}}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.id) || code != -1 {
			t.Errorf("Exec = %d, %v; want runc's error naming the container", code, err)
		}
	})

	t.Run("state and list", func(t *testing.T) {
		st, err := c.runc.State(ctx, c.id)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status != StatusRunning || st.Pid <= 0 || st.Bundle != c.cfg.Bundle || st.Created.IsZero() {
			t.Errorf("State = %+v", st)
		}
		if LabelsFromAnnotations(st.Annotations)["tier"] != "test" || st.Annotations[AnnotationID] != c.id {
			t.Errorf("annotations = %v, want the id and labels", st.Annotations)
		}
		list, err := c.runc.List(ctx)
		if err != nil || len(list) != 1 || list[0].ID != c.id {
			t.Errorf("List = %+v, %v; want only %s", list, err, c.id)
		}
	})

	t.Run("unknown container", func(t *testing.T) {
		_, err := c.runc.State(ctx, c.id+"-nope")
		if !errors.Is(err, ErrNotExist) || !strings.Contains(err.Error(), c.id+"-nope") {
			t.Errorf("State = %v, want ErrNotExist naming the id", err)
		}
		if err := c.runc.Delete(ctx, c.id+"-nope", false); err != nil {
			t.Errorf("Delete of an unknown container = %v, want nil", err)
		}
	})
}

// procStatFields returns /proc/<pid>/stat's fields after the command name:
// state, ppid, pgrp, session, ...
func procStatFields(t *testing.T, pid int) []string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndexByte(data, ')')
	return strings.Fields(string(data[i+1:]))
}

// procCgroups maps each hierarchy's controllers ("memory", "cpu,cpuacct",
// "name=systemd", "" for v2) to pid's cgroup path in it; a hierarchy with
// several controllers is also listed under each one.
func procCgroups(t *testing.T, pid int) map[string]string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string)
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		out[parts[1]] = parts[2]
		for _, ctrl := range strings.Split(parts[1], ",") {
			out[ctrl] = parts[2]
		}
	}
	return out
}

func procStatusKB(status []byte, key string) int {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

func v1Mount(t *testing.T, controller string) string {
	t.Helper()
	mounts, err := mountinfo.Read()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.FSType == "cgroup" && slices.Contains(strings.Split(m.SuperOptions, ","), controller) {
			return m.MountPoint
		}
	}
	t.Fatalf("no cgroup v1 mount with %s", controller)
	return ""
}

func unifiedMount(t *testing.T) string {
	t.Helper()
	mounts, err := cgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		if m.v2 {
			return m.dir
		}
	}
	t.Fatal("no cgroup v2 mount")
	return ""
}

func assertFile(t *testing.T, path, want string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("read %s: %v", path, err)
		return
	}
	if got := strings.TrimSpace(string(data)); got != want {
		t.Errorf("%s = %q, want %q", path, got, want)
	}
}
