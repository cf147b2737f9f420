package devcluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

const (
	// DefaultAgentPort is the port an agent listens on at its host's
	// address: every host has an address of its own, so every agent can
	// use the same port.
	DefaultAgentPort = 7701
	// AgentStopTimeout is how long Stop lets an agent exit on SIGTERM
	// before it kills it.
	AgentStopTimeout = 10 * time.Second
	// AgentReadyTimeout bounds StartAgent's wait for the agent's API to
	// answer. Generous: tests of other packages share the CPUs.
	AgentReadyTimeout = 30 * time.Second
	// AgentLogTail is how much of an agent's log LogTail returns: enough
	// for the errors that explain a failed request.
	AgentLogTail = 8 << 10

	// readyPoll is how often StartAgent tries the agent's API.
	readyPoll = 50 * time.Millisecond
	// readyCallTimeout bounds one try.
	readyCallTimeout = 2 * time.Second
	// logFileMode is the mode of an agent's log file.
	logFileMode = 0o600
)

// ErrAgentRunning means StartAgent was called on a host whose agent runs.
var ErrAgentRunning = errors.New("agent already running")

// AgentOptions are how StartAgent runs an agent beyond what the cluster
// fixes (--name CLUSTER-HOST, --data-dir, --listen HOSTADDR:PORT,
// --container-cidr, and --tls-ca, --tls-cert and --tls-key with the
// host's node certificate, or --insecure).
type AgentOptions struct {
	// Insecure runs the agent with --insecure: plaintext, without
	// authentication, and its clients in plaintext too. By default the
	// agent serves mutual TLS with a certificate of the cluster's CA that
	// names the host's address.
	Insecure bool
	// CA, when set and not the cluster's, signs the agent's certificate
	// instead, and its clients present a certificate of that CA: the
	// agents of the cluster's CA and this one refuse each other, as nodes
	// of two clusters would.
	CA *pki.CA
	// Port is the API's port on the host's address; 0 means
	// DefaultAgentPort.
	Port int
	// Join are gossip addresses of the cluster's members
	// (Scheduler.GossipAddr): the agent joins the gossip pool, registers
	// with the schedulers and holds a lease (--join, with the cluster's
	// --gossip-key-file unless Insecure). Empty: a standalone agent.
	Join []string
	// Args are further `godwit agent` flags, such as --runc, --snapshotter
	// or --log-level. Not --run-dir: the cluster finds an agent's runc
	// state and mounts under its data dir.
	Args []string
	// Env is added to the agent's environment (KEY=VALUE), such as the
	// failpoints of a fault test.
	Env []string
}

// Agent is a `godwit agent` running inside a host's network namespace,
// started by StartAgent.
type Agent struct {
	host    *Host
	addr    string
	logPath string
	cmd     *exec.Cmd
	conn    *grpc.ClientConn
	client  pb.AgentServiceClient
	// clientTLS is what the agent's clients present; nil: --insecure.
	clientTLS *tls.Config

	// done is closed once the process has exited and been reaped.
	done    chan struct{}
	waitErr error
	stop    sync.Once
}

// StartAgent starts the host's agent and returns once its API answers
// from the root namespace at HOSTADDR:PORT; with AgentOptions.Join it
// registers with the schedulers afterwards, on its own. The agent's data dir is the
// host's, so an agent started after another was killed re-adopts its
// containers; its standard output and error are appended to
// HOSTDIR/agent.log. It runs in a session of its own (a ^C meant for the
// test does not stop it before Close) and lives until Stop, Kill
// or Close, not until ctx ends: ctx bounds only the wait.
func (h *Host) StartAgent(ctx context.Context, opts AgentOptions) (_ *Agent, err error) {
	c := h.cluster
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.agent != nil && h.agent.Running() {
		return nil, fmt.Errorf("host %s: %w (pid %d): stop or kill it first", h.name, ErrAgentRunning, h.agent.Pid())
	}
	if h.agent != nil {
		h.agent.closeConn()
	}
	for _, arg := range opts.Args {
		if arg == "--run-dir" || strings.HasPrefix(arg, "--run-dir=") {
			return nil, fmt.Errorf("host %s: --run-dir is not for a cluster agent: its runc state and mounts must stay under its data dir, where Close finds them", h.name)
		}
	}
	port := opts.Port
	if port == 0 {
		port = DefaultAgentPort
	}
	a := &Agent{
		host:    h,
		addr:    netip.AddrPortFrom(h.addr, uint16(port)).String(),
		logPath: filepath.Join(h.dir, "agent.log"),
		done:    make(chan struct{}),
	}
	logFile, err := os.OpenFile(a.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, logFileMode)
	if err != nil {
		return nil, fmt.Errorf("host %s: open agent log: %w", h.name, err)
	}
	defer logFile.Close() // the agent holds its own descriptor
	fmt.Fprintf(logFile, "=== devcluster: agent %s starting at %s ===\n", h.Node(), time.Now().Format(time.RFC3339Nano))

	security := []string{"--insecure"}
	if !opts.Insecure {
		f, client, err := h.agentTLS(opts.CA)
		if err != nil {
			return nil, fmt.Errorf("host %s: %w", h.name, err)
		}
		security = []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
		a.clientTLS = client
	}
	args := append([]string{"--net=" + h.netns, "--", c.bin, "agent",
		"--name", h.Node(),
		"--data-dir", h.DataDir(),
		"--listen", a.addr,
		"--container-cidr", c.containerCIDR.String()}, security...)
	if len(opts.Join) > 0 {
		args = append(args, "--join", strings.Join(opts.Join, ","))
		if !opts.Insecure {
			args = append(args, "--gossip-key-file", c.gossipKeyFile)
		}
	}
	args = append(args, opts.Args...)
	a.cmd = exec.Command(c.nsenter, args...)
	a.cmd.Stdout, a.cmd.Stderr = logFile, logFile
	a.cmd.Env = append(os.Environ(), opts.Env...)
	// A session of its own: neither a ^C meant for the caller nor the
	// hangup of the caller's terminal reaches it, which a detached
	// cluster (`godwit dev up`) needs.
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := a.cmd.Start(); err != nil {
		return nil, fmt.Errorf("host %s: start agent: %w", h.name, err)
	}
	go func() {
		a.waitErr = a.cmd.Wait()
		close(a.done)
	}()
	h.agent = a
	defer func() {
		if err != nil {
			a.Kill()
		}
	}()

	creds := insecure.NewCredentials()
	if a.clientTLS != nil {
		creds = credentials.NewTLS(a.clientTLS)
	}
	a.conn, err = grpc.NewClient(a.addr, append(rpc.DialOptions(), grpc.WithTransportCredentials(creds))...)
	if err != nil {
		return nil, fmt.Errorf("host %s: agent address %s: %w", h.name, a.addr, err)
	}
	a.client = pb.NewAgentServiceClient(a.conn)
	if err := a.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("host %s: %w\nagent log:\n%s", h.name, err, a.LogTail())
	}
	c.log.Info("agent started", "host", h.name, "node", h.Node(), "addr", a.addr, "pid", a.Pid())
	return a, nil
}

// waitReady waits until the agent answers NodeInfo with its own name. It
// first waits for the port to accept connections: a gRPC connection that
// failed backs off for a second or more before it tries again.
func (a *Agent) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, AgentReadyTimeout)
	defer cancel()
	var last error
	for {
		select {
		case <-a.done:
			return fmt.Errorf("agent exited before its API answered: %v", a.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("agent API at %s did not answer within %s: %w (last: %v)", a.addr, AgentReadyTimeout, ctx.Err(), last)
		default:
		}
		last = a.tryReady(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-a.done:
		case <-ctx.Done():
		case <-time.After(readyPoll):
		}
	}
}

func (a *Agent) tryReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyCallTimeout)
	defer cancel()
	var d net.Dialer
	probe, err := d.DialContext(ctx, "tcp", a.addr)
	if err != nil {
		return err
	}
	probe.Close()
	info, err := a.client.NodeInfo(ctx, &pb.NodeInfoRequest{})
	if err != nil {
		return err
	}
	if want := a.host.Node(); info.GetName() != want {
		return fmt.Errorf("%s answers as node %q, want %q", a.addr, info.GetName(), want)
	}
	return nil
}

// Addr is the agent's API address, HOSTADDR:PORT, for `godwit --agent`.
func (a *Agent) Addr() string { return a.addr }

// Node is the agent's node name.
func (a *Agent) Node() string { return a.host.Node() }

// Pid is the agent's process id.
func (a *Agent) Pid() int { return a.cmd.Process.Pid }

// Signal sends sig to the agent's process; once it has exited it sends
// nothing (and says so). Tests stop and continue agents with it rather
// than with kill(2) on Pid: the process handle cannot reach another
// process that reused the pid, which a late SIGCONT from a test's
// cleanup once did to an unrelated stopped process.
func (a *Agent) Signal(sig os.Signal) error { return a.cmd.Process.Signal(sig) }

// Client is a gRPC client of the agent's API, valid until the agent is
// stopped or killed: over mutual TLS with the operator's certificate
// (the cluster's, or AgentOptions.CA's), or in plaintext for an
// --insecure agent.
func (a *Agent) Client() pb.AgentServiceClient { return a.client }

// ClientTLS is a copy of the TLS configuration the agent's clients use
// (for data connections: datachan.Dialer), or nil for an --insecure
// agent.
func (a *Agent) ClientTLS() *tls.Config {
	if a.clientTLS == nil {
		return nil
	}
	return a.clientTLS.Clone()
}

// Insecure reports whether the agent runs with --insecure.
func (a *Agent) Insecure() bool { return a.clientTLS == nil }

// LogPath is the file the agent's output is appended to.
func (a *Agent) LogPath() string { return a.logPath }

// LogTail returns the last AgentLogTail bytes of the agent's log, or why
// it cannot be read: it is for error messages, which should not fail in
// turn.
func (a *Agent) LogTail() string { return logTail(a.logPath) }

// Running reports whether the agent's process has not exited.
func (a *Agent) Running() bool {
	return !exited(a.done)
}

// Exited is closed once the agent's process has exited.
func (a *Agent) Exited() <-chan struct{} { return a.done }

// Kill kills the agent with SIGKILL, as a crash would, and waits for it to
// exit. Its containers and their shims keep running, as they would on a
// real node.
func (a *Agent) Kill() {
	killProcess(a.cmd, a.done)
	a.closeConn()
}

// Stop stops the agent as a service manager would: SIGTERM, then SIGKILL
// if it has not exited after AgentStopTimeout, which it then reports as an
// error. Its containers keep running. Stopping an agent that has exited
// does nothing.
func (a *Agent) Stop() error {
	defer a.closeConn()
	if stopProcess(a.cmd, a.done, AgentStopTimeout) {
		return nil
	}
	return fmt.Errorf("agent %s did not exit within %s of SIGTERM and was killed; see %s", a.Node(), AgentStopTimeout, a.logPath)
}

func (a *Agent) closeConn() {
	a.stop.Do(func() {
		if a.conn != nil {
			_ = a.conn.Close()
		}
	})
}

// String names the agent for logs and test messages.
func (a *Agent) String() string {
	return a.Node() + "@" + a.addr + " (pid " + strconv.Itoa(a.Pid()) + ")"
}
