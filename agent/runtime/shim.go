package runtime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ShimCommand is the name of the hidden subcommand that runs RunShim; the
// flags it takes are the ShimFlag* names.
const ShimCommand = "shim"

// Flag names of `godwit shim`; ShimConfig.Args produces them.
const (
	ShimFlagID          = "id"
	ShimFlagBundle      = "bundle"
	ShimFlagRuncRoot    = "runc-root"
	ShimFlagRuncBinary  = "runc-binary"
	ShimFlagStateDir    = "state-dir"
	ShimFlagLogMaxBytes = "log-max-bytes"
	ShimFlagLogMaxFiles = "log-max-files"
	ShimFlagCgroup      = "cgroup"

	ShimFlagRestoreFrom           = "restore-from"
	ShimFlagRestoreWorkPath       = "restore-work-path"
	ShimFlagRestoreTCPEstablished = "restore-tcp-established"
)

// Files in a container's state directory.
const (
	shimPidFile  = "shim.pid"
	initPidFile  = "init.pid"
	exitFile     = "exit.json"
	runcLogFile  = "runc.log"
	shimLogFile  = "shim.log"
	stateDirPerm = 0o700
)

const (
	// Environment of the detached shim: which stage it is, and which fd
	// carries the start report to the agent. Both are removed from the
	// shim's environment once read, so runc never sees them.
	shimStageEnv     = "GODWIT_SHIM_STAGE"
	shimStageDaemon  = "daemon"
	shimReportFdEnv  = "GODWIT_SHIM_REPORT_FD"
	shimReportFd     = 3
	maxShimReportLen = 64 << 10

	// shimGCPercent trades a little CPU for a smaller heap: a shim's heap is
	// a few buffers, and 8 MiB of resident memory is its budget.
	shimGCPercent = 20
	// shimDrainTimeout bounds how long the shim reads the container's pipes
	// after its init exited. Every process in the container's PID
	// namespace dies with init, so the pipes close at once unless a
	// process outside still holds them.
	shimDrainTimeout = 2 * time.Second

	// previousShimWait is how long StartShim waits for the shim of the
	// container's previous run to finish exiting; previousShimPoll how
	// often it looks.
	previousShimWait = 5 * time.Second
	previousShimPoll = 20 * time.Millisecond

	reportOK    = "ok"
	reportError = "error"
)

// ShimConfig is what one container's shim needs. The agent passes it as
// flags to `godwit shim` (see Args).
type ShimConfig struct {
	// ID is runc's container id.
	ID string
	// Bundle is the absolute bundle directory (see WriteBundle).
	Bundle string
	// RuncRoot is runc's --root for the node; RuncBinary "" means "runc".
	RuncRoot, RuncBinary string
	// StateDir is the container's own absolute directory for the shim's
	// files: pid files, exit status, logs. It is created if needed.
	StateDir string
	// LogMaxBytes and LogMaxFiles bound the container log: the current file
	// rotates when it would exceed LogMaxBytes, and LogMaxFiles rotated
	// files are kept. Zero means DefaultLogMaxBytes and DefaultLogMaxFiles.
	LogMaxBytes int64
	LogMaxFiles int
	// Cgroup is a cgroup path (cgroupfs, like SpecOptions.CgroupsPath) that
	// the shim moves itself into, in every mounted hierarchy, before it
	// starts the container, so that it does not stay in the agent's cgroup
	// and survives the agent's service being stopped. It must be a leaf:
	// neither a container's cgroup nor an ancestor of one (cgroup v2 allows
	// no processes in inner cgroups). Shims of one node may share it. ""
	// leaves the shim where the agent is.
	Cgroup string
	// RestoreFrom is the absolute directory of CRIU images (see
	// Runc.Checkpoint) to restore the container from instead of creating
	// and starting it; "" starts it afresh. runc must not know the id.
	RestoreFrom string
	// RestoreWorkPath is the absolute directory for CRIU's restore log
	// (CRIURestoreLog); "" uses a directory in StateDir.
	RestoreWorkPath string
	// RestoreTCPEstablished restores the established TCP connections that
	// were dumped with CheckpointOptions.TCPEstablished.
	RestoreTCPEstablished bool
}

// restoreWorkPath returns the directory CRIU's restore log goes to for c.
func (c ShimConfig) restoreWorkPath() string {
	if c.RestoreWorkPath != "" {
		return c.RestoreWorkPath
	}
	return filepath.Join(c.StateDir, restoreWorkDir)
}

// Args returns the `godwit shim` flags that carry c.
func (c ShimConfig) Args() []string {
	args := []string{
		"--" + ShimFlagID, c.ID,
		"--" + ShimFlagBundle, c.Bundle,
		"--" + ShimFlagStateDir, c.StateDir,
	}
	add := func(flag, v string) {
		if v != "" {
			args = append(args, "--"+flag, v)
		}
	}
	add(ShimFlagRuncRoot, c.RuncRoot)
	add(ShimFlagRuncBinary, c.RuncBinary)
	if c.LogMaxBytes != 0 {
		add(ShimFlagLogMaxBytes, strconv.FormatInt(c.LogMaxBytes, 10))
	}
	if c.LogMaxFiles != 0 {
		add(ShimFlagLogMaxFiles, strconv.Itoa(c.LogMaxFiles))
	}
	add(ShimFlagCgroup, c.Cgroup)
	add(ShimFlagRestoreFrom, c.RestoreFrom)
	add(ShimFlagRestoreWorkPath, c.RestoreWorkPath)
	if c.RestoreTCPEstablished {
		args = append(args, "--"+ShimFlagRestoreTCPEstablished)
	}
	return args
}

func (c ShimConfig) validate() error {
	switch {
	case c.ID == "":
		return errors.New("shim config: container id is empty")
	case !filepath.IsAbs(c.Bundle):
		return fmt.Errorf("shim config for %s: bundle %q is not an absolute path", c.ID, c.Bundle)
	case !filepath.IsAbs(c.StateDir):
		return fmt.Errorf("shim config for %s: state dir %q is not an absolute path", c.ID, c.StateDir)
	case c.RuncRoot != "" && !filepath.IsAbs(c.RuncRoot):
		return fmt.Errorf("shim config for %s: runc root %q is not an absolute path", c.ID, c.RuncRoot)
	case c.Cgroup != "" && !filepath.IsAbs(c.Cgroup):
		return fmt.Errorf("shim config for %s: cgroup %q is not an absolute path", c.ID, c.Cgroup)
	case c.RestoreFrom != "" && !filepath.IsAbs(c.RestoreFrom):
		return fmt.Errorf("shim config for %s: restore image path %q is not an absolute path", c.ID, c.RestoreFrom)
	case c.RestoreWorkPath != "" && !filepath.IsAbs(c.RestoreWorkPath):
		return fmt.Errorf("shim config for %s: restore work path %q is not an absolute path", c.ID, c.RestoreWorkPath)
	case c.RestoreFrom == "" && (c.RestoreWorkPath != "" || c.RestoreTCPEstablished):
		return fmt.Errorf("shim config for %s: restore options given without an image path to restore from", c.ID)
	}
	return nil
}

// ExitStatus is how a container's init process ended.
type ExitStatus struct {
	// Code is the exit code, or 128+n when signal n killed the process.
	Code int `json:"code"`
	// Signal names the signal that killed the process ("SIGKILL"); empty
	// when it exited by itself.
	Signal string `json:"signal,omitempty"`
	// At is when the shim reaped the process.
	At time.Time `json:"at"`
}

// StartShim launches the shim for c (running `<self> shim <flags>`) and
// returns once the shim reports that the container was started (or, with
// RestoreFrom, restored and running), with the shim's pid; or with the shim's error (runc's message) wrapped in
// ErrShimFailed. The shim is detached: its own session, no terminal or
// agent stream (stdin /dev/null, its own output to shim.log), optionally
// its own cgroup (ShimConfig.Cgroup), and not a child of the caller (it is
// started through a short-lived intermediate process that the caller
// reaps), so an agent need not wait for it and may exit or be killed while
// it runs. A stale exit status in the state directory is removed before the
// container starts.
//
// If ctx ends first StartShim returns ctx's error and the shim carries on;
// the caller then finds the container by its id.
func StartShim(ctx context.Context, self string, c ShimConfig) (int, error) {
	if err := c.validate(); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(c.StateDir, stateDirPerm); err != nil {
		return 0, fmt.Errorf("start shim for %s: create state dir: %w", c.ID, err)
	}
	if err := waitShimGone(ctx, c); err != nil {
		return 0, err
	}
	reportR, reportW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("start shim for %s: %w", c.ID, err)
	}
	defer reportR.Close()

	var stderr bytes.Buffer
	cmd := exec.Command(self, append([]string{ShimCommand}, c.Args()...)...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), shimReportFdEnv+"="+strconv.Itoa(shimReportFd))
	cmd.ExtraFiles = []*os.File{reportW} // becomes fd 3 (shimReportFd)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	reportW.Close()
	if err != nil {
		return 0, fmt.Errorf("start shim for %s: %w", c.ID, err)
	}
	// The first stage only re-executes itself detached and exits at once.
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%w: container %s: shim launcher: %w: %s",
			ErrShimFailed, c.ID, err, strings.TrimSpace(stderr.String()))
	}

	stop := context.AfterFunc(ctx, func() { _ = reportR.SetReadDeadline(time.Now()) })
	defer stop()
	report, err := io.ReadAll(io.LimitReader(reportR, maxShimReportLen))
	if ctxErr := ctx.Err(); ctxErr != nil {
		return 0, fmt.Errorf("start shim for %s: %w", c.ID, ctxErr)
	}
	if err != nil {
		return 0, fmt.Errorf("start shim for %s: read its report: %w", c.ID, err)
	}
	return parseShimReport(c, string(report))
}

// waitShimGone waits, briefly, for a previous shim of the same state
// directory to exit: it records its exit status and exits just after its
// container is gone, and two shims must never write one state directory.
func waitShimGone(ctx context.Context, c ShimConfig) error {
	deadline := time.Now().Add(previousShimWait)
	for {
		pid, alive := ShimAlive(c.StateDir)
		if !alive {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: container %s: its previous shim (pid %d) still runs; stop the container (runc kill) and retry",
				ErrShimRunning, c.ID, pid)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("start shim for %s: %w", c.ID, ctx.Err())
		case <-time.After(previousShimPoll):
		}
	}
}

func parseShimReport(c ShimConfig, report string) (int, error) {
	kind, rest, _ := strings.Cut(strings.TrimSpace(report), " ")
	switch kind {
	case reportOK:
		pid, err := strconv.Atoi(rest)
		if err != nil {
			return 0, fmt.Errorf("start shim for %s: bad report %q", c.ID, report)
		}
		return pid, nil
	case reportError:
		return 0, fmt.Errorf("%w: container %s: %s", ErrShimFailed, c.ID, rest)
	default:
		return 0, fmt.Errorf("%w: container %s: the shim exited without reporting; see %s",
			ErrShimFailed, c.ID, filepath.Join(c.StateDir, shimLogFile))
	}
}

// RunShim is `godwit shim`. Run by StartShim, it first re-executes itself
// detached (new session, stdin /dev/null, stdout and stderr appended to
// shim.log in the state directory) and returns, so that the
// detached copy is nobody's child but init's (or a subreaper's). The
// detached copy creates and starts the container, reports to StartShim,
// logs the container's output and records its exit status, and returns
// once the container has exited and its output is drained.
func RunShim(ctx context.Context, c ShimConfig) error {
	if err := c.validate(); err != nil {
		return err
	}
	if os.Getenv(shimStageEnv) != shimStageDaemon {
		return relaunchDetached(c)
	}
	return runShimDaemon(ctx, c)
}

// relaunchDetached starts this same command again as the shim daemon and
// returns without waiting for it.
func relaunchDetached(c ShimConfig) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("shim for %s: find own executable: %w", c.ID, err)
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Dir = "/"
	// GOMAXPROCS is read at start-up only: one P keeps the shim's threads
	// and memory down.
	cmd.Env = append(os.Environ(), shimStageEnv+"="+shimStageDaemon, "GOMAXPROCS=1")
	if report := reportFile(); report != nil {
		cmd.ExtraFiles = []*os.File{report}
		defer report.Close()
	}
	// A panic of the detached shim lands in its log, not in /dev/null.
	if err := os.MkdirAll(c.StateDir, stateDirPerm); err != nil {
		return fmt.Errorf("shim for %s: create state dir: %w", c.ID, err)
	}
	shimLog, err := os.OpenFile(filepath.Join(c.StateDir, shimLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("shim for %s: open shim log: %w", c.ID, err)
	}
	defer shimLog.Close()
	cmd.Stdout, cmd.Stderr = shimLog, shimLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("shim for %s: start detached shim: %w", c.ID, err)
	}
	return cmd.Process.Release()
}

// reportFile returns the pipe to StartShim, or nil when the shim was not
// started by StartShim.
func reportFile() *os.File {
	if os.Getenv(shimReportFdEnv) != strconv.Itoa(shimReportFd) {
		return nil
	}
	// It was inherited without close-on-exec; runc must not inherit it.
	syscall.CloseOnExec(shimReportFd)
	return os.NewFile(shimReportFd, "shim-report")
}

// shimReporter sends StartShim the outcome of the start, once.
type shimReporter struct{ f *os.File }

func (r *shimReporter) send(err error) {
	if r.f == nil {
		return
	}
	msg := reportOK + " " + strconv.Itoa(os.Getpid())
	if err != nil {
		msg = reportError + " " + err.Error()
	}
	_, _ = io.WriteString(r.f, msg+"\n")
	_ = r.f.Close()
	r.f = nil
}

func runShimDaemon(ctx context.Context, c ShimConfig) (err error) {
	reporter := &shimReporter{f: reportFile()}
	for _, k := range []string{shimStageEnv, shimReportFdEnv, "GOMAXPROCS"} {
		_ = os.Unsetenv(k)
	}
	debug.SetGCPercent(shimGCPercent)
	defer func() { reporter.send(err) }() // only reaches StartShim on early failures

	if err := os.MkdirAll(c.StateDir, stateDirPerm); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	logFile, err := os.OpenFile(filepath.Join(c.StateDir, shimLogFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open shim log: %w", err)
	}
	defer logFile.Close()
	log := slog.New(slog.NewTextHandler(logFile, nil)).With("container", c.ID, "shim", os.Getpid())
	defer func() {
		if err != nil {
			log.Error("shim failed", "err", err)
		}
	}()

	// As subreaper the shim inherits the container's init when `runc
	// create` exits, and can wait for it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper: %w", err)
	}
	if c.Cgroup != "" {
		if err := joinCgroup(c.Cgroup, os.Getpid()); err != nil {
			return err
		}
	}
	for _, f := range []string{exitFile, initPidFile} {
		if err := os.Remove(filepath.Join(c.StateDir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("remove stale %s: %w", f, err)
		}
	}
	if err := writeFileAtomic(filepath.Join(c.StateDir, shimPidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		return fmt.Errorf("write shim pid file: %w", err)
	}

	s := &shim{c: c, log: log, runc: &Runc{Binary: c.RuncBinary, Root: c.RuncRoot, Log: log}}
	initPid, err := s.start(ctx)
	if err != nil {
		return err
	}
	if c.RestoreFrom != "" {
		log.Info("container restored", "pid", initPid, "images", c.RestoreFrom)
	} else {
		log.Info("container started", "pid", initPid)
	}
	if err := releaseStartupPages(); err != nil {
		log.Warn("keep start-up pages", "err", err)
	}
	reporter.send(nil)

	status := s.wait(initPid)
	s.drain()
	if err := writeExit(c.StateDir, status); err != nil {
		return err
	}
	log.Info("container exited", "code", status.Code, "signal", status.Signal)
	return nil
}

// shim holds the container's output pipes while it runs.
type shim struct {
	c    ShimConfig
	log  *slog.Logger
	runc *Runc

	out     *rotatingLog
	readers []*os.File
	copying sync.WaitGroup
}

// start creates the container with its stdio on pipes, starts copying the
// pipes into the log and starts the container, or with RestoreFrom
// restores it onto those pipes. It returns the init pid.
func (s *shim) start(ctx context.Context) (int, error) {
	var err error
	s.out, err = openRotatingLog(s.c.StateDir, s.c.LogMaxBytes, s.c.LogMaxFiles)
	if err != nil {
		return 0, err
	}
	// stdin is a pipe whose write end is closed at once: reads see end of
	// file as from /dev/null, and the container holds no host file.
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return 0, fmt.Errorf("create stdin pipe: %w", err)
	}
	stdinW.Close()
	defer stdinR.Close()

	var writers []*os.File
	defer func() {
		for _, w := range writers {
			w.Close()
		}
	}()
	for _, stream := range []string{StreamStdout, StreamStderr} {
		r, w, err := os.Pipe()
		if err != nil {
			s.closeOutput()
			return 0, fmt.Errorf("create %s pipe: %w", stream, err)
		}
		writers = append(writers, w)
		s.readers = append(s.readers, r)
		s.copying.Add(1)
		go func() {
			defer s.copying.Done()
			copyStream(s.out, stream, r, func(err error) { s.log.Error("write container log", "err", err) })
		}()
	}

	runcLog := filepath.Join(s.c.StateDir, runcLogFile)
	if err := os.Truncate(runcLog, 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.closeOutput()
		return 0, fmt.Errorf("reset runc log: %w", err)
	}
	pidFile := filepath.Join(s.c.StateDir, initPidFile)
	if s.c.RestoreFrom != "" {
		err = s.runc.restore(ctx, s.c, pidFile, runcLog, stdinR, writers[0], writers[1])
	} else {
		err = s.runc.create(ctx, s.c.ID, s.c.Bundle, pidFile, runcLog, stdinR, writers[0], writers[1])
	}
	// Only the container may hold the write ends now, so the pipes end
	// when the container's processes are gone.
	for _, w := range writers {
		w.Close()
	}
	writers = nil
	if err != nil {
		// runc's own complaint also went to the container's stderr; keep
		// it in the log.
		s.drain()
		return 0, err
	}
	pid, err := readPidFile(pidFile)
	if err != nil {
		s.abort()
		return 0, fmt.Errorf("read init pid of %s: %w", s.c.ID, err)
	}
	if s.c.RestoreFrom != "" {
		return pid, nil // a restored container runs already
	}
	if err := s.runc.start(ctx, s.c.ID); err != nil {
		s.abort()
		return 0, err
	}
	return pid, nil
}

// abort removes a created container that could not be started.
func (s *shim) abort() {
	if err := s.runc.Delete(context.Background(), s.c.ID, true); err != nil {
		s.log.Error("delete container after failed start", "err", err)
	}
	s.drain()
}

// closeOutput stops the copying and closes the log.
func (s *shim) closeOutput() {
	for _, r := range s.readers {
		r.Close()
	}
	s.copying.Wait()
	s.readers = nil
	if s.out != nil {
		_ = s.out.Close()
	}
}

// wait reaps children until the container's init exits and returns how it
// ended. Other children (runc, processes orphaned in the container) are
// reaped on the way.
func (s *shim) wait(initPid int) ExitStatus {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// No children left: init is not ours to wait for (it was not
			// reparented), so its status is unknown.
			s.log.Error("wait for container init", "pid", initPid, "err", err)
			return ExitStatus{Code: -1, At: time.Now().UTC()}
		}
		if pid == initPid {
			return exitStatusFrom(ws, time.Now().UTC())
		}
	}
}

// drain waits for the container's output to end, at most
// shimDrainTimeout, then closes the log.
func (s *shim) drain() {
	done := make(chan struct{})
	go func() { s.copying.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shimDrainTimeout):
		s.log.Warn("container output still open after init exited; closing it")
	}
	s.closeOutput()
	s.reapAll()
}

// reapAll collects any exited children without waiting.
func (s *shim) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
	}
}

func exitStatusFrom(ws unix.WaitStatus, at time.Time) ExitStatus {
	const signalExitBase = 128 // shells report death by signal n as 128+n
	switch {
	case ws.Signaled():
		return ExitStatus{Code: signalExitBase + int(ws.Signal()), Signal: unix.SignalName(ws.Signal()), At: at}
	default:
		return ExitStatus{Code: ws.ExitStatus(), At: at}
	}
}

func writeExit(stateDir string, st ExitStatus) error {
	data, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode exit status: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(stateDir, exitFile), data, 0o600); err != nil {
		return fmt.Errorf("record exit status: %w", err)
	}
	return nil
}

// ReadExit returns the recorded exit status of the container whose state
// directory is stateDir. ok is false while the container runs, or when no
// shim ever recorded one. The status is written only after the
// container's log is complete.
func ReadExit(stateDir string) (st *ExitStatus, ok bool, err error) {
	data, err := os.ReadFile(filepath.Join(stateDir, exitFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read exit status: %w", err)
	}
	st = &ExitStatus{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, false, fmt.Errorf("read exit status %s: %w", filepath.Join(stateDir, exitFile), err)
	}
	return st, true, nil
}

// ClearExit removes the recorded exit status of stateDir, so that ReadExit
// reports false until the next run of the container ends. StartShim's shim
// does this itself before starting the container; ClearExit lets a caller
// start from a clean slate earlier. A missing status is already cleared.
func ClearExit(stateDir string) error {
	if err := os.Remove(filepath.Join(stateDir, exitFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("clear exit status: %w", err)
	}
	return nil
}

// ShimAlive returns the pid the shim of stateDir recorded and whether that
// process still runs and is that shim (a recycled pid is not mistaken for
// it). pid is 0 when no shim ever started there.
func ShimAlive(stateDir string) (pid int, alive bool) {
	pid, err := readPidFile(filepath.Join(stateDir, shimPidFile))
	if err != nil {
		return 0, false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return pid, false
	}
	// The state follows the parenthesised command name, which may itself
	// contain parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return pid, false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return pid, false
	}
	want := filepath.Clean(stateDir)
	args := strings.Split(string(cmdline), "\x00")
	for i, a := range args {
		if a == "--"+ShimFlagStateDir && i+1 < len(args) && filepath.Clean(args[i+1]) == want {
			return pid, true
		}
		if v, ok := strings.CutPrefix(a, "--"+ShimFlagStateDir+"="); ok && filepath.Clean(v) == want {
			return pid, true
		}
	}
	return pid, false
}

func readPidFile(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", path, data)
	}
	return pid, nil
}
