package agent_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/agent/network"
	"github.com/godwit/godwit/agent/snapshot/snapshottest"
	"github.com/godwit/godwit/internal/testutil"
)

// node is one `godwit agent` process started by a test, and the CLI
// pointed at it.
type node struct {
	bin     string
	name    string
	dataDir string
	addr    string
	cidr    string
	cmd     *exec.Cmd
	log     *bytes.Buffer
}

func startNode(t *testing.T, n *node) {
	t.Helper()
	n.log = &bytes.Buffer{}
	n.cmd = exec.Command(n.bin, "agent", "--name", n.name, "--data-dir", n.dataDir,
		"--listen", n.addr, "--container-cidr", n.cidr, "--insecure")
	n.cmd.Stdout, n.cmd.Stderr = n.log, n.log
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := n.run("ps"); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s did not come up:\n%s", n.name, n.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill stops the agent with SIGKILL, as a crash would.
func (n *node) kill() {
	_ = n.cmd.Process.Kill()
	_ = n.cmd.Wait()
}

func (n *node) run(args ...string) (string, error) {
	cmd := exec.Command(n.bin, append([]string{"--agent", n.addr}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("godwit %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (n *node) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.run(args...)
	if err != nil {
		t.Fatalf("%v\nagent log:\n%s", err, n.log)
	}
	return out
}

type containerJSON struct {
	Name  string `json:"name"`
	ID    string `json:"id"`
	State string `json:"state"`
	Image string `json:"image"`
	IP    string `json:"ip"`
	Node  string `json:"node"`
	Pid   int    `json:"pid"`

	Snapshotter string `json:"snapshotter"`
}

func (n *node) inspect(t *testing.T, name string) containerJSON {
	t.Helper()
	var c containerJSON
	if err := json.Unmarshal([]byte(n.must(t, "inspect", "-o", "json", name)), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// lines returns how many lines the container has written to /tmp/t.
func (n *node) lines(t *testing.T, name string) int {
	t.Helper()
	out := n.must(t, "exec", name, "--", "wc", "-l", "/tmp/t")
	fields := strings.Fields(out)
	if len(fields) == 0 {
		t.Fatalf("wc printed nothing")
	}
	v, err := strconv.Atoi(fields[0])
	if err != nil {
		t.Fatalf("wc printed %q", out)
	}
	return v
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// counterScript writes an increasing counter to /tmp/t and stdout, and
// serves /www over HTTP on port 8080.
const counterScript = `echo hello-from-godwit > /www/index.html; httpd -p 8080 -h /www; ` +
	`i=0; while true; do i=$((i+1)); echo $i >> /tmp/t; echo tick $i; sleep 0.2; done`

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

func TestAgentRunsContainersFromImportedImages(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc")
	tests := []struct {
		snapshotter string
		dataDir     func(t *testing.T) string
		cidr        string
	}{
		// overlay is the default; btrfs is detected from the data dir.
		{snapshotter: "overlay", dataDir: func(t *testing.T) string { return t.TempDir() }, cidr: "10.251.7.0/24"},
		{snapshotter: "btrfs", dataDir: func(t *testing.T) string { return snapshottest.NewLoopBtrfs(t) }, cidr: "10.251.8.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.snapshotter, func(t *testing.T) {
			n := &node{bin: testutil.Godwit(t), name: "it-" + tt.snapshotter, dataDir: tt.dataDir(t), addr: freeAddr(t), cidr: tt.cidr}
			testContainerLifecycle(t, n, tt.snapshotter)
		})
	}
}

// testContainerLifecycle runs a container on n through the CLI and checks
// what an operator would: it runs, answers on its IP, keeps its state
// across an agent crash and a stop/start, and rm leaves nothing behind.
func testContainerLifecycle(t *testing.T, n *node, snapshotter string) {
	startNode(t, n)
	t.Cleanup(func() {
		if n.cmd.ProcessState != nil { // killed by a failed step: rm needs it
			startNode(t, n)
		}
		_, _ = n.run("rm", "-f", "c1")
		n.kill()
	})

	var info struct {
		Name, Address, Snapshotter, Runc, CRIU string
	}
	if err := json.Unmarshal([]byte(n.must(t, "node", "info", "-o", "json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.Name != n.name || info.Address != n.addr || info.Snapshotter != snapshotter || info.Runc == "" || info.CRIU == "" {
		t.Fatalf("node info = %+v, want node %s at %s on %s with runc and CRIU versions", info, n.name, n.addr, snapshotter)
	}

	tarball := filepath.Join(t.TempDir(), "busybox.tar")
	testutil.BusyboxTar(t, tarball)
	n.must(t, "image", "import", tarball, "--name", "busybox")
	if out := n.must(t, "image", "ls", "-o", "json"); !strings.Contains(out, `"name": "busybox"`) {
		t.Fatalf("image ls does not list busybox:\n%s", out)
	}

	n.must(t, "run", "--name", "c1", "--memory", "64m", "--cpus", "0.5", "busybox", "--", "sh", "-c", counterScript)
	if got := n.inspect(t, "c1"); got.Snapshotter != snapshotter {
		t.Fatalf("c1 runs on the %q snapshotter, want %q", got.Snapshotter, snapshotter)
	}

	var ps []containerJSON
	if err := json.Unmarshal([]byte(n.must(t, "ps", "-o", "json")), &ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) != 1 || ps[0].Name != "c1" || ps[0].State != "running" || ps[0].Node != n.name || ps[0].Image != "busybox" {
		t.Fatalf("ps -o json = %+v, want c1 running on %s", ps, n.name)
	}
	c := ps[0]
	if _, cidr, _ := net.ParseCIDR(n.cidr); !cidr.Contains(net.ParseIP(c.IP)) {
		t.Fatalf("c1 has IP %q, want one from %s", c.IP, n.cidr)
	}

	t.Run("its IP answers from the host", func(t *testing.T) {
		body := httpGet(t, "http://"+c.IP+":8080/")
		if strings.TrimSpace(body) != "hello-from-godwit" {
			t.Fatalf("GET from c1 = %q", body)
		}
	})

	t.Run("it keeps writing its file", func(t *testing.T) {
		first := n.lines(t, "c1")
		time.Sleep(time.Second)
		if second := n.lines(t, "c1"); second <= first {
			t.Fatalf("counter file did not grow: %d then %d lines", first, second)
		}
	})

	t.Run("logs", func(t *testing.T) {
		if out := n.must(t, "logs", "c1"); !strings.Contains(out, "tick 1\n") {
			t.Fatalf("logs do not show the container's output:\n%s", out)
		}
	})

	t.Run("limits are in its cgroup", func(t *testing.T) {
		assertCgroupLimits(t, c.Pid, 64<<20, 50000, 100000)
	})

	t.Run("image in use cannot be removed", func(t *testing.T) {
		_, err := n.run("image", "rm", "busybox")
		if err == nil || !strings.Contains(err.Error(), "used by") {
			t.Fatalf("image rm of an image in use: err = %v, want a refusal naming its users", err)
		}
	})

	t.Run("a restarted agent re-adopts it", func(t *testing.T) {
		before := n.lines(t, "c1")
		n.kill()
		if err := syscall.Kill(c.Pid, 0); err != nil {
			t.Fatalf("container process %d died with its agent: %v", c.Pid, err)
		}
		time.Sleep(500 * time.Millisecond) // it keeps counting with no agent
		startNode(t, n)
		got := n.inspect(t, "c1")
		if got.State != "running" || got.Pid != c.Pid || got.IP != c.IP {
			t.Fatalf("after agent restart c1 = %+v, want running with pid %d and IP %s", got, c.Pid, c.IP)
		}
		time.Sleep(500 * time.Millisecond)
		if after := n.lines(t, "c1"); after <= before {
			t.Fatalf("counter stopped across the agent restart: %d then %d", before, after)
		}
		if out := n.must(t, "logs", "c1"); !strings.Contains(out, fmt.Sprintf("tick %d\n", before)) {
			t.Fatalf("logs lost output across the agent restart")
		}
	})

	t.Run("stop and start keep its filesystem and IP", func(t *testing.T) {
		n.must(t, "stop", "-t", "1", "c1")
		if got := n.inspect(t, "c1"); got.State != "stopped" {
			t.Fatalf("after stop c1 is %s", got.State)
		}
		if err := syscall.Kill(c.Pid, 0); err == nil {
			t.Fatalf("process %d still alive after stop", c.Pid)
		}
		n.must(t, "start", "c1")
		got := n.inspect(t, "c1")
		if got.State != "running" || got.IP != c.IP {
			t.Fatalf("after start c1 = %+v", got)
		}
		// The counter restarts at 1 but appends to the same file.
		time.Sleep(500 * time.Millisecond)
		if lines := n.lines(t, "c1"); lines < 5 {
			t.Fatalf("after restart /tmp/t has %d lines: the writable layer was lost", lines)
		}
		body := httpGet(t, "http://"+c.IP+":8080/")
		if strings.TrimSpace(body) != "hello-from-godwit" {
			t.Fatalf("GET after restart = %q", body)
		}
	})

	t.Run("rm leaves nothing behind", func(t *testing.T) {
		got := n.inspect(t, "c1")
		n.must(t, "rm", "-f", "c1")
		assertNothingLeft(t, n, got)
		if out := n.must(t, "ps", "-a", "-o", "json"); strings.TrimSpace(out) != "[]" {
			t.Fatalf("ps -a after rm = %s", out)
		}
		n.must(t, "image", "rm", "busybox")
	})
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	var lastErr error
	for range 20 { // httpd may still be starting
		resp, err := client.Get(url)
		if err == nil {
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		lastErr = err
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("GET %s: %v", url, lastErr)
	return ""
}

// cgroupDirs maps each controller (or "" for cgroup v2) to the cgroup of
// pid, from /proc/PID/cgroup.
func cgroupDirs(t *testing.T, pid int) map[string]string {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, ctrl := range strings.Split(parts[1], ",") {
			out[ctrl] = parts[2]
		}
	}
	return out
}

func readInt(t *testing.T, path string) int64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}

func assertCgroupLimits(t *testing.T, pid int, memory, quota, period int64) {
	t.Helper()
	dirs := cgroupDirs(t, pid)
	if mem, ok := dirs["memory"]; ok { // cgroup v1 or hybrid
		if got := readInt(t, filepath.Join("/sys/fs/cgroup/memory", mem, "memory.limit_in_bytes")); got != memory {
			t.Errorf("memory.limit_in_bytes = %d, want %d", got, memory)
		}
		cpu := dirs["cpu"]
		if got := readInt(t, filepath.Join("/sys/fs/cgroup/cpu", cpu, "cpu.cfs_quota_us")); got != quota {
			t.Errorf("cpu.cfs_quota_us = %d, want %d", got, quota)
		}
		if got := readInt(t, filepath.Join("/sys/fs/cgroup/cpu", cpu, "cpu.cfs_period_us")); got != period {
			t.Errorf("cpu.cfs_period_us = %d, want %d", got, period)
		}
		return
	}
	dir := filepath.Join("/sys/fs/cgroup", dirs[""])
	if got := readInt(t, filepath.Join(dir, "memory.max")); got != memory {
		t.Errorf("memory.max = %d, want %d", got, memory)
	}
	b, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d %d", quota, period); strings.TrimSpace(string(b)) != want {
		t.Errorf("cpu.max = %q, want %q", strings.TrimSpace(string(b)), want)
	}
}

func assertNothingLeft(t *testing.T, n *node, c containerJSON) {
	t.Helper()
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mountinfo), c.ID) {
		t.Errorf("a mount of container %s is left", c.ID)
	}
	if entries, _ := os.ReadDir(filepath.Join(n.dataDir, "run", "netns")); len(entries) != 0 {
		t.Errorf("netns mounts left: %v", entries)
	}
	veth := network.HostVethName(n.name, c.ID)
	if _, err := os.Stat(filepath.Join("/sys/class/net", veth)); err == nil {
		t.Errorf("host veth %s is left", veth)
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, "run", "runc", c.ID)); !os.IsNotExist(err) {
		t.Errorf("runc state of %s is left (stat: %v)", c.ID, err)
	}
	for _, root := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		p := filepath.Join(root, "godwit", n.name, c.ID)
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s is left", p)
		}
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, "containers", c.ID)); !os.IsNotExist(err) {
		t.Errorf("container directory left")
	}
	routes, err := exec.CommandContext(context.Background(), "ip", "-4", "route", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(routes), c.IP+" ") {
		t.Errorf("host route to %s left:\n%s", c.IP, routes)
	}
}

func TestImageImportRefusesHostileTarballs(t *testing.T) {
	testutil.RequireRoot(t)
	n := &node{bin: testutil.Godwit(t), name: "it-hostile", dataDir: t.TempDir(), addr: freeAddr(t), cidr: "10.251.9.0/24"}
	startNode(t, n)
	t.Cleanup(n.kill)

	tests := []struct {
		name   string
		member tar.Header
	}{
		{name: "parent path", member: tar.Header{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}},
		{name: "escaping symlink", member: tar.Header{Name: "bin/up", Typeflag: tar.TypeSymlink, Linkname: "../../../etc", Mode: 0o777}},
		{name: "device node", member: tar.Header{Name: "dev/sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o600}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "hostile.tar")
			f, err := os.Create(path)
			if err != nil {
				t.Fatal(err)
			}
			tw := tar.NewWriter(f)
			for _, h := range []tar.Header{{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755}, tt.member} {
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
			}
			if err := errors.Join(tw.Close(), f.Close()); err != nil {
				t.Fatal(err)
			}
			before := n.must(t, "image", "ls", "-o", "json")
			_, err = n.run("image", "import", path, "--name", "hostile")
			if err == nil || !strings.Contains(err.Error(), tt.member.Name) {
				t.Fatalf("import of a tarball with %s: err = %v, want a refusal naming %q", tt.name, err, tt.member.Name)
			}
			if after := n.must(t, "image", "ls", "-o", "json"); after != before {
				t.Fatalf("a refused import changed the store:\nbefore %s\nafter %s", before, after)
			}
		})
	}
}
