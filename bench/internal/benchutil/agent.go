package benchutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/agent/runtime"
)

const (
	// AgentStopTimeout is how long Stop lets an agent exit on SIGTERM
	// before it kills it.
	AgentStopTimeout = 10 * time.Second
	// CgroupRemoveTimeout covers shims still draining their container's
	// pipes after `rm -f` returned (see runtime's shimDrainTimeout): until
	// they exit, the node's cgroups cannot be removed.
	CgroupRemoveTimeout = 5 * time.Second
	// AgentLogTail is how much of an agent's log LogTail returns, enough
	// for the errors that explain a failed request without flooding the
	// benchmark's own.
	AgentLogTail = 4 << 10

	cgroupPollInterval = 100 * time.Millisecond
)

// AgentConfig is how a benchmark starts an agent of its own.
type AgentConfig struct {
	// Binary is the godwit binary to run.
	Binary string
	// Node is the agent's --name. The agent's cgroups are named after it
	// (/godwit/NODE, /godwit/NODE.shims), so it must be unique to the
	// benchmark among every node and test on this kernel.
	Node string
	// Dir holds the agent's data dir (Dir/data) and its log
	// (Dir/agent.log); StartAgent creates it.
	Dir string
	// ContainerCIDR is the agent's --container-cidr; it must hold as many
	// addresses as the benchmark runs containers.
	ContainerCIDR string
	// Args are further `godwit agent` flags, such as --runc.
	Args []string
}

// Agent is a `godwit agent --insecure` that a benchmark started and must
// Stop.
type Agent struct {
	// Node is the agent's node name.
	Node string
	// Addr is the loopback host:port its API listens on, for
	// `godwit --agent` and gRPC clients.
	Addr string
	// DataDir is its --data-dir.
	DataDir string
	// LogPath is the file its standard output and error go to.
	LogPath string

	cmd *exec.Cmd
}

// StartAgent starts an agent as c says on a free loopback port and returns
// without waiting for it to answer: the benchmark waits in its own way (a
// CLI call or a gRPC one). The agent runs in a process group of its own,
// so a ^C meant for the benchmark does not stop it before the benchmark
// has removed its containers; it takes no context for the same reason,
// and lives until Stop.
func StartAgent(c AgentConfig) (*Agent, error) {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	a := &Agent{Node: c.Node, Addr: addr, DataDir: filepath.Join(c.Dir, "data"), LogPath: filepath.Join(c.Dir, "agent.log")}
	logFile, err := os.Create(a.LogPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the agent holds its own descriptor
	args := append([]string{"agent", "--insecure", "--name", c.Node, "--data-dir", a.DataDir,
		"--listen", addr, "--container-cidr", c.ContainerCIDR}, c.Args...)
	a.cmd = exec.Command(c.Binary, args...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent %s: %w", c.Node, err)
	}
	return a, nil
}

// Pid is the agent's process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// LogTail returns the last AgentLogTail bytes of the agent's log, for an
// error to quote.
func (a *Agent) LogTail() string { return Tail(a.LogPath, AgentLogTail) }

// Stop stops the agent as its service manager would (SIGTERM, then
// SIGKILL after AgentStopTimeout), then removes the node's cgroups, which
// an agent keeps for its next start. The benchmark must have removed the
// node's containers first: their shims keep the cgroups busy, and Stop
// gives them only CgroupRemoveTimeout to exit. It takes no context: it is
// cleanup, which must run to the end after the benchmark was interrupted
// too, and each of its waits is bounded. Call it once.
func (a *Agent) Stop() error {
	done := make(chan error, 1)
	go func() { done <- a.cmd.Wait() }()
	// The exit status after SIGTERM says nothing the benchmark needs.
	_ = a.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(AgentStopTimeout):
		_ = a.cmd.Process.Kill()
		<-done
	}
	// The agent's cgroup layout (agent.Config's cgroupsPath and
	// shimCgroup): the shims' first, then the containers' parent.
	for _, cg := range agent.NodeCgroups(a.Node) {
		if err := removeCgroup(cg); err != nil {
			return fmt.Errorf("agent %s: %w", a.Node, err)
		}
	}
	return nil
}

// removeCgroup removes cgroup path, retrying for CgroupRemoveTimeout while
// processes are still leaving it.
func removeCgroup(path string) error {
	deadline := time.Now().Add(CgroupRemoveTimeout)
	for {
		err := runtime.RemoveCgroup(path)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(cgroupPollInterval)
	}
}

// freeLoopbackAddr finds a free loopback port for an agent. Another
// process could take it before the agent listens; on a benchmark host
// that is rare enough to fail the run over.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Tail returns the last n bytes of the file at path, or why it cannot be
// read: it is for error messages, which should not fail in turn.
func Tail(path string, n int64) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(data)) > n {
		data = data[int64(len(data))-n:]
	}
	return string(data)
}
