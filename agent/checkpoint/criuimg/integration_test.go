package criuimg

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	criu "github.com/checkpoint-restore/go-criu/v7"
	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/godwit/godwit/internal/testutil"
)

// Limits of the integration test.
const (
	readyTimeout = 10 * time.Second
	reapTimeout  = 5 * time.Second
	pollInterval = 20 * time.Millisecond
	// criuLogLevel is CRIU's most verbose level: the log is what tells
	// why a dump failed.
	criuLogLevel = 4
	// logTail is how much of a CRIU log a failure shows.
	logTail = 3000
)

// workloadName is the test program's file name, and so its comm.
const workloadName = "criuimg-wl"

// workload is a running instance of testdata/workload.
type workload struct {
	bin, openFile string
	port          int
	pid, childPID int
	cmd           *exec.Cmd
}

// startWorkload builds testdata/workload and starts it in a session of its
// own with no terminal (CRIU refuses to dump a tty it does not own).
func startWorkload(t *testing.T) *workload {
	t.Helper()
	dir := t.TempDir()
	w := &workload{bin: filepath.Join(dir, workloadName), openFile: filepath.Join(dir, "open-file.txt")}
	build := exec.Command("go", "build", "-o", w.bin, "./testdata/workload")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build workload: %v\n%s", err, out)
	}
	ready := filepath.Join(dir, "ready")
	w.cmd = exec.Command(w.bin, "-file", w.openFile, "-ready", ready)
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.pid = w.cmd.Process.Pid
	t.Cleanup(func() { w.kill(t) })

	deadline := time.Now().Add(readyTimeout)
	for {
		data, err := os.ReadFile(ready)
		if err == nil {
			if w.port, err = strconv.Atoi(strings.TrimSpace(string(data))); err != nil {
				t.Fatalf("ready file %q: %v", data, err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("workload not ready after %s", readyTimeout)
		}
		time.Sleep(pollInterval)
	}
	w.childPID = childOf(t, w.pid)
	return w
}

// childOf returns pid's only child. /proc lists children per thread, and
// any of a Go program's threads may have forked it.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	if err != nil {
		t.Fatal(err)
	}
	var children []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		children = append(children, strings.Fields(string(data))...)
	}
	if len(children) != 1 {
		t.Fatalf("workload %d has children %q, want one", pid, children)
	}
	child, err := strconv.Atoi(children[0])
	if err != nil {
		t.Fatal(err)
	}
	return child
}

// kill kills the workload's session and reaps both processes, so that
// their PIDs are free for a restore. The test process is a child
// subreaper (see becomeSubreaper), so the orphaned child is ours to reap.
func (w *workload) kill(t *testing.T) {
	t.Helper()
	_ = unix.Kill(-w.pid, unix.SIGKILL)
	for _, pid := range []int{w.pid, w.childPID} {
		if pid != 0 {
			reap(t, pid)
		}
	}
}

// reap waits for pid, a child of the test process, to exit.
func reap(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(reapTimeout)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if got == pid || errors.Is(err, unix.ECHILD) {
			return
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			t.Errorf("wait for %d: %v", pid, err)
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("process %d did not exit within %s", pid, reapTimeout)
			return
		}
		time.Sleep(pollInterval)
	}
}

// becomeSubreaper makes the test process adopt its orphaned descendants:
// PID 1 does not reap them on every host, and a zombie keeps the PID a
// restore needs.
func becomeSubreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// criuDump dumps pid's tree into dir with CRIU through go-criu (criu swrk).
func criuDump(t *testing.T, dir string, pid int, leaveRunning bool) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	opts := &rpc.CriuOpts{
		ImagesDirFd:    proto.Int32(int32(d.Fd())),
		Pid:            proto.Int32(int32(pid)),
		LeaveRunning:   proto.Bool(leaveRunning),
		TcpEstablished: proto.Bool(true),
		LogLevel:       proto.Int32(criuLogLevel),
		LogFile:        proto.String("dump.log"),
	}
	if err := criu.MakeCriu().Dump(opts, nil); err != nil {
		t.Fatalf("criu dump: %v\n%s", err, tail(filepath.Join(dir, "dump.log")))
	}
}

// criuRestore restores the tree dumped in dir as a sibling of CRIU, that
// is a child of the test process.
func criuRestore(t *testing.T, dir string) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	opts := &rpc.CriuOpts{
		ImagesDirFd:    proto.Int32(int32(d.Fd())),
		TcpEstablished: proto.Bool(true),
		RstSibling:     proto.Bool(true),
		LogLevel:       proto.Int32(criuLogLevel),
		LogFile:        proto.String("restore.log"),
	}
	if err := criu.MakeCriu().Restore(opts, nil); err != nil {
		t.Fatalf("criu restore: %v\n%s", err, tail(filepath.Join(dir, "restore.log")))
	}
}

func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(data[max(0, len(data)-logTail):])
}

func requireCRIU(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	// iptables: CRIU locks the network of --tcp-established dumps with it.
	testutil.RequireTools(t, "criu", "iptables", "go")
}

// TestInspectRealDump dumps a live process tree with CRIU and checks that
// Inspect and ReadStats describe what an operator knows is there.
func TestInspectRealDump(t *testing.T) {
	requireCRIU(t)
	becomeSubreaper(t)
	w := startWorkload(t)
	dir := t.TempDir()
	criuDump(t, dir, w.pid, true)

	t.Run("stats", func(t *testing.T) {
		s, err := ReadStats(dir)
		if err != nil {
			t.Fatal(err)
		}
		if s.Dump == nil {
			t.Fatal("no dump stats")
		}
		if s.Dump.FrozenTime <= 0 || s.Dump.FreezingTime <= 0 {
			t.Errorf("frozen %s, freezing %s: want both > 0", s.Dump.FrozenTime, s.Dump.FreezingTime)
		}
		if s.Dump.PagesWritten <= 0 || s.Dump.PagesScanned < s.Dump.PagesWritten {
			t.Errorf("pages written %d, scanned %d: want 0 < written <= scanned", s.Dump.PagesWritten, s.Dump.PagesScanned)
		}
		if s.Restore != nil {
			t.Errorf("restore stats %+v before any restore", s.Restore)
		}
		if want := sumFiles(t, dir); s.ImageBytes != want {
			t.Errorf("image bytes %d, files in dir sum to %d", s.ImageBytes, want)
		}
	})

	r, err := Inspect(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings: %q", r.Warnings)
	}
	root, child := findProcess(t, r, w.pid), findProcess(t, r, w.childPID)

	t.Run("process tree", func(t *testing.T) {
		for _, p := range []*Process{root, child} {
			if p.Comm != workloadName || p.Exe != w.bin || p.State != "running" {
				t.Errorf("pid %d: comm %q exe %q state %q, want %q %q running", p.PID, p.Comm, p.Exe, p.State, workloadName, w.bin)
			}
		}
		if child.PPID != root.PID {
			t.Errorf("child's ppid %d, want %d", child.PPID, root.PID)
		}
		if want := []string{w.bin, "-file", w.openFile, "-ready", filepath.Join(filepath.Dir(w.openFile), "ready")}; !slices.Equal(root.Cmdline, want) {
			t.Errorf("root cmdline %q, want %q", root.Cmdline, want)
		}
		if want := []string{w.bin, "-child"}; !slices.Equal(child.Cmdline, want) {
			t.Errorf("child cmdline %q, want %q", child.Cmdline, want)
		}
		if root.Threads < 1 {
			t.Errorf("root has %d threads", root.Threads)
		}
	})

	t.Run("files", func(t *testing.T) {
		if !slices.ContainsFunc(root.Files, func(f File) bool { return f.Type == "REG" && f.Path == w.openFile }) {
			t.Errorf("open file %s not among %+v", w.openFile, root.Files)
		}
		for _, f := range append(slices.Clone(root.Files), child.Files...) {
			if _, err := strconv.Atoi(f.Type); err == nil {
				t.Errorf("fd %d has a type CRIU knows and we do not: %s", f.FD, f.Type)
			}
		}
	})

	t.Run("sockets", func(t *testing.T) {
		var listen, client, server bool
		for _, s := range root.Sockets {
			if s.Family != "IPv4" || s.Protocol != "TCP" || s.LocalAddr != "127.0.0.1" {
				continue
			}
			switch {
			case s.State == "LISTEN" && s.LocalPort == w.port && s.RemotePort == 0:
				listen = true
			case s.State == "ESTABLISHED" && s.RemotePort == w.port && s.RemoteAddr == "127.0.0.1":
				client = true
			case s.State == "ESTABLISHED" && s.LocalPort == w.port && s.RemotePort != 0:
				server = true
			}
		}
		if !listen || !client || !server {
			t.Errorf("listener on %d %v, client end %v, server end %v; sockets %+v", w.port, listen, client, server, root.Sockets)
		}
	})

	t.Run("memory", func(t *testing.T) {
		if root.MemoryBytes <= 0 || child.MemoryBytes <= 0 {
			t.Errorf("memory root %d child %d, want > 0", root.MemoryBytes, child.MemoryBytes)
		}
		if r.MemoryBytes != root.MemoryBytes+child.MemoryBytes {
			t.Errorf("total memory %d, processes sum to %d", r.MemoryBytes, root.MemoryBytes+child.MemoryBytes)
		}
		// Everything dumped was written here: no parent, no lazy pages.
		if written := r.Stats.Dump.PagesWritten * int64(os.Getpagesize()); r.MemoryBytes != written {
			t.Errorf("memory %d bytes, CRIU wrote %d", r.MemoryBytes, written)
		}
	})

	t.Run("text", func(t *testing.T) {
		var buf bytes.Buffer
		if err := r.WriteText(&buf); err != nil {
			t.Fatal(err)
		}
		out := buf.String()
		for _, want := range []string{
			strconv.Itoa(w.pid) + " " + w.bin + " -file " + w.openFile,
			"└─ " + strconv.Itoa(w.childPID) + " " + w.bin + " -child",
			w.openFile,
			"127.0.0.1:" + strconv.Itoa(w.port) + " LISTEN",
			"-> 127.0.0.1:" + strconv.Itoa(w.port) + " ESTABLISHED",
			"frozen time",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("text lacks %q:\n%s", want, out)
			}
		}
	})
}

// TestRestoreStats dumps a tree (stopping it), restores it and checks that
// ReadStats then reports the restore too.
func TestRestoreStats(t *testing.T) {
	requireCRIU(t)
	becomeSubreaper(t)
	w := startWorkload(t)
	dir := t.TempDir()
	criuDump(t, dir, w.pid, false)
	w.kill(t) // CRIU killed them; reap so their PIDs are free again

	criuRestore(t, dir)
	t.Cleanup(func() { w.kill(t) }) // the restored tree has the same PIDs
	if err := unix.Kill(w.pid, 0); err != nil {
		t.Fatalf("restored workload %d: %v", w.pid, err)
	}

	s, err := ReadStats(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Dump == nil || s.Restore == nil {
		t.Fatalf("dump stats %+v, restore stats %+v: want both", s.Dump, s.Restore)
	}
	if s.Restore.RestoreTime <= 0 || s.Restore.ForkingTime <= 0 {
		t.Errorf("restore time %s, forking time %s: want both > 0", s.Restore.RestoreTime, s.Restore.ForkingTime)
	}
	// CRIU does not count every page it wrote as restored (366 of 372
	// in one run here).
	if s.Restore.PagesRestored <= 0 || s.Restore.PagesRestored > s.Dump.PagesWritten {
		t.Errorf("%d pages restored, %d dumped: want 0 < restored <= dumped", s.Restore.PagesRestored, s.Dump.PagesWritten)
	}
}

func findProcess(t *testing.T, r *Report, pid int) *Process {
	t.Helper()
	for i := range r.Processes {
		if r.Processes[i].PID == pid {
			return &r.Processes[i]
		}
	}
	t.Fatalf("pid %d not in the report's processes %+v", pid, r.Processes)
	return nil
}

// sumFiles sums the sizes of the regular files directly in dir.
func sumFiles(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().IsRegular() {
			n += fi.Size()
		}
	}
	return n
}
