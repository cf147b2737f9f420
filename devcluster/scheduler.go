package devcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	// DefaultSchedulerPort is the port a scheduler's API listens on at its
	// host's address; its raft transport listens on the next port and its
	// gossip on the one after (`godwit scheduler`'s defaults). It is
	// clear of the agent's ports, so one host can run both.
	DefaultSchedulerPort = 7710
	// schedulerGossipOffset is how far a scheduler's gossip port is from
	// its API port, as `godwit scheduler` places it by default.
	schedulerGossipOffset = 2
	// SchedulerStopTimeout is how long Stop lets a scheduler leave the
	// gossip pool and exit on SIGTERM before it kills it.
	SchedulerStopTimeout = 10 * time.Second
	// SchedulerReadyTimeout bounds StartScheduler's wait for the
	// scheduler's API to answer. Generous: tests of other packages share
	// the CPUs.
	SchedulerReadyTimeout = 30 * time.Second
	// LeaderTimeout bounds WaitLeader beyond its context: with
	// --test-timings an election takes well under a second, so this is
	// room for a loaded machine, not for a cluster without quorum.
	LeaderTimeout = 30 * time.Second

	// schedulerDirName is a scheduler's data dir (raft's log, stable store
	// and snapshots) in its host's dir, kept across restarts so that a
	// scheduler started again rejoins with its log.
	schedulerDirName = "scheduler"
	// schedulerLogName is the file in the host's dir that a scheduler's
	// output is appended to.
	schedulerLogName = "scheduler.log"
	// schedulerTLSDirName holds a scheduler's certificate in its host's
	// dir, beside the agent's (hostTLSDirName).
	schedulerTLSDirName = "scheduler-tls"
	// schedulerNameSuffix makes a scheduler's name from its host's node
	// name. Host names cannot contain a dot, so no agent's node name ever
	// equals a scheduler's: both are members of one gossip pool, where
	// names must be unique.
	schedulerNameSuffix = ".sched"
	// gossipKeyName is the cluster's gossip key in its TLS dir.
	gossipKeyName = "gossip.key"
)

var (
	// ErrSchedulerRunning means StartScheduler was called on a host whose
	// scheduler runs.
	ErrSchedulerRunning = errors.New("scheduler already running")
	// ErrNoLeader means the schedulers did not agree on a leader in time.
	ErrNoLeader = errors.New("no leader")
)

// SchedulerOptions are how StartScheduler runs a scheduler beyond what the
// cluster fixes (--name CLUSTER-HOST.sched, --data-dir, --listen
// HOSTADDR:PORT, --cluster-cidr, --test-timings, and --tls-ca, --tls-cert,
// --tls-key with a scheduler certificate of the cluster's CA naming the
// host's address and --gossip-key-file with the cluster's key, or
// --insecure).
type SchedulerOptions struct {
	// BootstrapExpect is --bootstrap-expect: how many schedulers form the
	// first raft configuration once they have met in the gossip pool. 0
	// starts a scheduler that waits for the leader to add it.
	BootstrapExpect int
	// Join are gossip addresses of members to join (Scheduler.GossipAddr,
	// an agent's gossip address); empty joins none, and the scheduler
	// waits for others to join it.
	Join []string
	// Insecure runs the scheduler with --insecure: plaintext API and raft
	// without authentication, unencrypted gossip, and its client in
	// plaintext too. Agents and schedulers of one pool must agree.
	Insecure bool
	// Port is the API's port on the host's address; 0 means
	// DefaultSchedulerPort. Raft takes the next port, gossip the one
	// after.
	Port int
	// Args are further `godwit scheduler` flags, such as --log-level.
	Args []string
	// Env is added to the scheduler's environment (KEY=VALUE).
	Env []string
}

// Scheduler is a `godwit scheduler` replica running inside a host's
// network namespace, started by StartScheduler.
type Scheduler struct {
	host       *Host
	name       string
	addr       string
	gossipAddr string
	logPath    string
	insecure   bool
	cmd        *exec.Cmd
	conn       *grpc.ClientConn
	client     pb.ClusterServiceClient

	// done is closed once the process has exited and been reaped.
	done    chan struct{}
	waitErr error
	stop    sync.Once
}

// StartScheduler starts a scheduler on the host and returns once its API
// answers ClusterStatus from the root namespace at HOSTADDR:PORT, with or
// without a leader: use WaitLeader for one. Its data dir is
// HOSTDIR/scheduler, kept across restarts, so a scheduler started after
// another was killed rejoins with its raft log; its standard output and
// error are appended to HOSTDIR/scheduler.log. It runs with
// --test-timings (short leases, elections and gossip probes), in a
// session of its own, and lives until Stop, Kill or Close, not until
// ctx ends: ctx bounds only the wait. A host may run a scheduler and an
// agent at once. Starts are serialized within a cluster; each waits only
// for the API, well under a second on an idle machine.
func (h *Host) StartScheduler(ctx context.Context, opts SchedulerOptions) (_ *Scheduler, err error) {
	c := h.cluster
	c.schedMu.Lock()
	defer c.schedMu.Unlock()
	c.mu.Lock()
	closed, prev := c.closed, c.schedulers[h.name]
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if prev != nil && prev.Running() {
		return nil, fmt.Errorf("host %s: %w (pid %d): stop or kill it first", h.name, ErrSchedulerRunning, prev.Pid())
	}
	if prev != nil {
		prev.closeConn()
	}
	if opts.BootstrapExpect < 0 {
		return nil, fmt.Errorf("host %s: bootstrap-expect %d: give the number of schedulers that form the cluster, or 0 to join one", h.name, opts.BootstrapExpect)
	}
	port := opts.Port
	if port == 0 {
		port = DefaultSchedulerPort
	}
	if port < 0 || port+schedulerGossipOffset > 65535 {
		return nil, fmt.Errorf("host %s: scheduler port %d: give a port up to %d (raft and gossip take the next two)", h.name, port, 65535-schedulerGossipOffset)
	}
	s := &Scheduler{
		host:       h,
		name:       schedulerName(c.name, h.name),
		addr:       netip.AddrPortFrom(h.addr, uint16(port)).String(),
		gossipAddr: netip.AddrPortFrom(h.addr, uint16(port+schedulerGossipOffset)).String(),
		logPath:    filepath.Join(h.dir, schedulerLogName),
		insecure:   opts.Insecure,
		done:       make(chan struct{}),
	}
	logFile, err := os.OpenFile(s.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, logFileMode)
	if err != nil {
		return nil, fmt.Errorf("host %s: open scheduler log: %w", h.name, err)
	}
	defer logFile.Close() // the scheduler holds its own descriptor
	fmt.Fprintf(logFile, "=== devcluster: scheduler %s starting at %s ===\n", s.name, time.Now().Format(time.RFC3339Nano))

	var tlsFiles pki.Files
	if !opts.Insecure {
		if tlsFiles, err = c.tls.ca.IssueTo(filepath.Join(h.dir, schedulerTLSDirName), pki.CertRequest{
			Name: s.name, Role: pki.RoleScheduler, Hosts: []string{h.addr.String()},
		}); err != nil {
			return nil, fmt.Errorf("host %s: scheduler certificate: %w", h.name, err)
		}
	}
	args := schedulerArgs(schedulerFlags{
		name:            s.name,
		dataDir:         filepath.Join(h.dir, schedulerDirName),
		listen:          s.addr,
		clusterCIDR:     c.containerCIDR,
		bootstrapExpect: opts.BootstrapExpect,
		join:            opts.Join,
		tls:             tlsFiles,
		gossipKeyFile:   c.gossipKeyFile,
		extra:           opts.Args,
	})
	s.cmd = exec.Command(c.nsenter, append([]string{"--net=" + h.netns, "--", c.bin}, args...)...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.Env = append(os.Environ(), opts.Env...)
	// A session of its own: neither a ^C meant for the caller nor the
	// hangup of the caller's terminal reaches it, which a detached
	// cluster (`godwit dev up`) needs.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("host %s: start scheduler: %w", h.name, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.done)
	}()
	c.mu.Lock()
	c.schedulers[h.name] = s
	c.mu.Unlock()
	defer func() {
		if err != nil {
			s.Kill()
		}
	}()

	creds := insecure.NewCredentials()
	if !opts.Insecure {
		creds = credentials.NewTLS(c.tls.client.Clone())
	}
	s.conn, err = grpc.NewClient(s.addr, append(rpc.DialOptions(), grpc.WithTransportCredentials(creds))...)
	if err != nil {
		return nil, fmt.Errorf("host %s: scheduler address %s: %w", h.name, s.addr, err)
	}
	s.client = pb.NewClusterServiceClient(s.conn)
	if err := s.waitReady(ctx); err != nil {
		return nil, fmt.Errorf("host %s: %w\nscheduler log:\n%s", h.name, err, s.LogTail())
	}
	c.log.Info("scheduler started", "host", h.name, "scheduler", s.name, "addr", s.addr, "gossip", s.gossipAddr, "pid", s.Pid())
	return s, nil
}

// schedulerFlags is what schedulerArgs turns into a command line.
type schedulerFlags struct {
	name, dataDir, listen string
	clusterCIDR           netip.Prefix
	bootstrapExpect       int
	join                  []string
	// tls is zero for --insecure, which also drops the gossip key:
	// `godwit scheduler --insecure` gossips in plaintext and refuses one.
	tls           pki.Files
	gossipKeyFile string
	extra         []string
}

// schedulerArgs is the `godwit scheduler` command line for f.
func schedulerArgs(f schedulerFlags) []string {
	args := []string{"scheduler",
		"--name", f.name,
		"--data-dir", f.dataDir,
		"--listen", f.listen,
		"--bootstrap-expect", strconv.Itoa(f.bootstrapExpect),
		"--cluster-cidr", f.clusterCIDR.String(),
		"--test-timings"}
	if len(f.join) > 0 {
		args = append(args, "--join", strings.Join(f.join, ","))
	}
	if f.tls.IsZero() {
		args = append(args, "--insecure")
	} else {
		args = append(args, "--tls-ca", f.tls.CA, "--tls-cert", f.tls.Cert, "--tls-key", f.tls.Key,
			"--gossip-key-file", f.gossipKeyFile)
	}
	return append(args, f.extra...)
}

// waitReady waits until the scheduler answers ClusterStatus as itself.
// It first waits for the port to accept connections: a gRPC connection
// that failed backs off for a second or more before it tries again.
func (s *Scheduler) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, SchedulerReadyTimeout)
	defer cancel()
	var last error
	for {
		select {
		case <-s.done:
			return fmt.Errorf("scheduler exited before its API answered: %v", s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("scheduler API at %s did not answer within %s: %w (last: %v)", s.addr, SchedulerReadyTimeout, ctx.Err(), last)
		default:
		}
		last = s.tryReady(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-s.done:
		case <-ctx.Done():
		case <-time.After(readyPoll):
		}
	}
}

func (s *Scheduler) tryReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyCallTimeout)
	defer cancel()
	var d net.Dialer
	probe, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return err
	}
	probe.Close()
	st, err := s.client.ClusterStatus(ctx, &pb.ClusterStatusRequest{Local: true})
	if err != nil {
		return err
	}
	if st.GetAnsweredBy() != s.name {
		return fmt.Errorf("%s answers as scheduler %q, want %q", s.addr, st.GetAnsweredBy(), s.name)
	}
	return nil
}

// Scheduler returns the scheduler StartScheduler last started on the
// host, running or not, or nil.
func (h *Host) Scheduler() *Scheduler {
	c := h.cluster
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.schedulers[h.name]
}

// Schedulers returns the schedulers StartScheduler last started on each
// host, running or not, in the order of the hosts.
func (c *Cluster) Schedulers() []*Scheduler {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Scheduler
	for _, h := range c.hosts {
		if s := c.schedulers[h.name]; s != nil {
			out = append(out, s)
		}
	}
	return out
}

// GossipKeyFile is the cluster's gossip key (base64, mode 0600), created
// with the cluster: every scheduler and agent that is not --insecure
// gossips with it.
func (c *Cluster) GossipKeyFile() string { return c.gossipKeyFile }

// WaitLeader polls ClusterStatus on each of schedulers (each answering
// for itself) until all of them name the same leader, one of them, and
// returns it. It fails with ErrNoLeader, saying what each answered last,
// when ctx ends or LeaderTimeout passes first, and at once when they agree
// on a leader that is not among them (give them all) or one of them has
// exited.
func (c *Cluster) WaitLeader(ctx context.Context, schedulers ...*Scheduler) (*Scheduler, error) {
	if len(schedulers) == 0 {
		return nil, errors.New("wait for a leader: no schedulers given")
	}
	ctx, cancel := context.WithTimeout(ctx, LeaderTimeout)
	defer cancel()
	answers := make([]string, len(schedulers))
	for {
		leader, agreed := "", true
		for i, s := range schedulers {
			if !s.Running() {
				return nil, fmt.Errorf("wait for a leader: scheduler %s exited: %v\nscheduler log:\n%s", s.name, s.waitErr, s.LogTail())
			}
			l, err := s.localLeader(ctx)
			switch {
			case err != nil:
				answers[i] = fmt.Sprintf("%s: %v", s.name, err)
			case l == "":
				answers[i] = s.name + ": no leader"
			default:
				answers[i] = s.name + ": leader " + l
			}
			if err != nil || l == "" || (leader != "" && l != leader) {
				agreed = false
			}
			if leader == "" {
				leader = l
			}
		}
		if agreed {
			i := slices.IndexFunc(schedulers, func(s *Scheduler) bool { return s.name == leader })
			if i < 0 {
				return nil, fmt.Errorf("the schedulers agree on leader %s, which is not among those given (%s): give them all", leader, strings.Join(answers, "; "))
			}
			c.log.Info("schedulers agree on a leader", "leader", leader)
			return schedulers[i], nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w within %s: %v; the schedulers answered: %s", ErrNoLeader, LeaderTimeout, ctx.Err(), strings.Join(answers, "; "))
		case <-time.After(readyPoll):
		}
	}
}

// localLeader is the leader that s knows of, without asking its peers.
func (s *Scheduler) localLeader(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, readyCallTimeout)
	defer cancel()
	st, err := s.client.ClusterStatus(ctx, &pb.ClusterStatusRequest{Local: true})
	if err != nil {
		return "", err
	}
	return st.GetLeader(), nil
}

// Name is the scheduler's name: its raft ID, gossip name and its
// certificate's common name, CLUSTER-HOST.sched.
func (s *Scheduler) Name() string { return s.name }

// Host is the host the scheduler runs on.
func (s *Scheduler) Host() *Host { return s.host }

// Addr is the scheduler's API address, HOSTADDR:PORT, for `godwit
// --addr`.
func (s *Scheduler) Addr() string { return s.addr }

// GossipAddr is the scheduler's gossip address, HOSTADDR:PORT+2, for
// the --join of agents and other schedulers.
func (s *Scheduler) GossipAddr() string { return s.gossipAddr }

// Pid is the scheduler's process id.
func (s *Scheduler) Pid() int { return s.cmd.Process.Pid }

// Signal sends sig to the scheduler's process, as Agent.Signal does.
func (s *Scheduler) Signal(sig os.Signal) error { return s.cmd.Process.Signal(sig) }

// Client is a gRPC client of the scheduler's API, valid until the
// scheduler is stopped or killed: over mutual TLS with the operator's
// certificate, or in plaintext for an --insecure scheduler.
func (s *Scheduler) Client() pb.ClusterServiceClient { return s.client }

// Insecure reports whether the scheduler runs with --insecure.
func (s *Scheduler) Insecure() bool { return s.insecure }

// LogPath is the file the scheduler's output is appended to.
func (s *Scheduler) LogPath() string { return s.logPath }

// LogTail returns the last AgentLogTail bytes of the scheduler's log, or
// why it cannot be read: it is for error messages, which should not fail
// in turn.
func (s *Scheduler) LogTail() string { return logTail(s.logPath) }

// Running reports whether the scheduler's process has not exited.
func (s *Scheduler) Running() bool {
	return !exited(s.done)
}

// Exited is closed once the scheduler's process has exited.
func (s *Scheduler) Exited() <-chan struct{} { return s.done }

// Kill kills the scheduler with SIGKILL, as a crash would, and waits for
// it to exit: it leaves the gossip pool and raft without a word, and the
// others find out by their timeouts.
func (s *Scheduler) Kill() {
	killProcess(s.cmd, s.done)
	s.closeConn()
}

// Stop stops the scheduler as a service manager would: SIGTERM, on which
// it leaves the gossip pool and exits, then SIGKILL if it has not exited
// after SchedulerStopTimeout, which it then reports as an error. It stays
// a raft voter: a stopped scheduler counts against the quorum until it is
// removed (`godwit cluster remove-peer`). Stopping a scheduler that has
// exited does nothing.
func (s *Scheduler) Stop() error {
	defer s.closeConn()
	if stopProcess(s.cmd, s.done, SchedulerStopTimeout) {
		return nil
	}
	return fmt.Errorf("scheduler %s did not exit within %s of SIGTERM and was killed; see %s", s.name, SchedulerStopTimeout, s.logPath)
}

func (s *Scheduler) closeConn() {
	s.stop.Do(func() {
		if s.conn != nil {
			_ = s.conn.Close()
		}
	})
}

// String names the scheduler for logs and test messages.
func (s *Scheduler) String() string {
	return s.name + "@" + s.addr + " (pid " + strconv.Itoa(s.Pid()) + ")"
}

// schedulerName is the name of the scheduler on host: its node name with
// schedulerNameSuffix.
func schedulerName(cluster, host string) string {
	return nodeName(cluster, host) + schedulerNameSuffix
}

// logTail returns the last AgentLogTail bytes of the file at path, or why
// it cannot be read.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(st.Size()-AgentLogTail, 0)
	buf := make([]byte, st.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && n == 0 {
		return err.Error()
	}
	return string(buf[:n])
}
