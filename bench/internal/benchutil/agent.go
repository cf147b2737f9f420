package benchutil

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/internal/pki"
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
	// tlsDir holds an agent's throwaway CA and certificates under its
	// AgentConfig.Dir.
	tlsDir = "tls"
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
	// Insecure runs the agent with --insecure (plaintext, no
	// authentication). By default it serves mutual TLS, as a production
	// agent does, with a throwaway CA made in Dir/tls: a benchmark
	// measures the real configuration unless told otherwise.
	Insecure bool
}

// Agent is a `godwit agent` that a benchmark started and must Stop.
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
	// TLS are the CA and the client certificate and key that the
	// benchmark's clients present to the agent; zero for an --insecure
	// agent.
	TLS pki.Files

	clientTLS *tls.Config
	cmd       *exec.Cmd
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
	security := []string{"--insecure"}
	if !c.Insecure {
		node, err := a.issueTLS(filepath.Join(c.Dir, tlsDir))
		if err != nil {
			return nil, err
		}
		security = []string{"--tls-ca", node.CA, "--tls-cert", node.Cert, "--tls-key", node.Key}
	}
	logFile, err := os.Create(a.LogPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the agent holds its own descriptor
	args := append([]string{"agent", "--name", c.Node, "--data-dir", a.DataDir,
		"--listen", addr, "--container-cidr", c.ContainerCIDR}, security...)
	args = append(args, c.Args...)
	a.cmd = exec.Command(c.Binary, args...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start agent %s: %w", c.Node, err)
	}
	return a, nil
}

// issueTLS makes a throwaway CA in dir, issues the agent's node
// certificate for its loopback address into dir/node and a client's into
// dir/client, which the Agent's clients present, and returns the node's.
func (a *Agent) issueTLS(dir string) (pki.Files, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pki.Files{}, err
	}
	ca, err := pki.NewCA("godwit benchmark CA")
	if err != nil {
		return pki.Files{}, err
	}
	host, _, err := net.SplitHostPort(a.Addr)
	if err != nil {
		return pki.Files{}, err
	}
	node, err := ca.IssueTo(filepath.Join(dir, "node"), pki.CertRequest{Name: a.Node, Role: pki.RoleAgent, Hosts: []string{host}})
	if err != nil {
		return pki.Files{}, err
	}
	if a.TLS, err = ca.IssueTo(filepath.Join(dir, "client"), pki.CertRequest{Name: "benchmark", Role: pki.RoleOperator}); err != nil {
		return pki.Files{}, err
	}
	id, err := pki.Load(a.TLS)
	if err != nil {
		return pki.Files{}, err
	}
	a.clientTLS = id.ClientConfig()
	return node, nil
}

// Credentials are the gRPC transport credentials of the agent's clients:
// TLS with the benchmark's client certificate, or insecure for an
// --insecure agent.
func (a *Agent) Credentials() credentials.TransportCredentials {
	if a.clientTLS == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(a.clientTLS)
}

// CLIEnv is the environment that makes `godwit --agent ADDR` talk to the
// agent: GODWIT_TLS_CA, GODWIT_TLS_CERT and GODWIT_TLS_KEY as KEY=VALUE,
// none for an --insecure agent.
func (a *Agent) CLIEnv() []string {
	if a.TLS.IsZero() {
		return nil
	}
	return []string{"GODWIT_TLS_CA=" + a.TLS.CA, "GODWIT_TLS_CERT=" + a.TLS.Cert, "GODWIT_TLS_KEY=" + a.TLS.Key}
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
