package runtime

import (
	"bufio"
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
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Container states as runc reports them.
const (
	StatusCreated = "created"
	StatusRunning = "running"
	StatusPaused  = "paused"
	StatusStopped = "stopped"
)

const (
	defaultRuncBinary = "runc"
	// execCancelGrace is how long a cancelled Exec gives runc, which passes
	// the SIGTERM on to the process, before runc is killed.
	execCancelGrace = 5 * time.Second
	// runcNotExistText is how runc words an unknown container id.
	runcNotExistText = "container does not exist"
)

// Runc drives the runc binary for one node: every call uses the node's own
// --root, so several nodes on one kernel never see each other's
// containers. The zero value uses "runc" from PATH and runc's default root.
type Runc struct {
	// Binary is the runc executable; "" means "runc" from PATH.
	Binary string
	// Root is runc's --root, the node's own state directory for runc.
	Root string
	// Log receives one debug record per runc invocation; nil discards.
	Log *slog.Logger
}

// State is runc's view of one container.
type State struct {
	ID string
	// Pid is the container's init process on the host; 0 once stopped.
	Pid int
	// Status is one of StatusCreated, StatusRunning, StatusPaused and
	// StatusStopped.
	Status  string
	Bundle  string
	Created time.Time
	// Annotations are the spec's annotations (see AnnotationID and
	// LabelsFromAnnotations).
	Annotations map[string]string
}

// ExecProcess is a process to start in a running container. It inherits
// the container's user, capabilities and environment; Env adds to (and
// overrides) the container's environment; Cwd "" keeps the container's.
type ExecProcess struct {
	Args []string
	Env  []string
	Cwd  string
}

// RuncError is a failed runc invocation: the operation, the container id
// and runc's own message. errors.Is(err, ErrNotExist) is true when runc did
// not know the container.
type RuncError struct {
	Op, ID string
	// Message is what runc wrote about the failure (its error log lines).
	Message  string
	Err      error
	notExist bool
}

func (e *RuncError) Error() string {
	msg := e.Message
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if e.ID == "" {
		return fmt.Sprintf("runc %s: %s", e.Op, msg)
	}
	return fmt.Sprintf("runc %s %s: %s", e.Op, e.ID, msg)
}

func (e *RuncError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotExist) work for unknown containers.
func (e *RuncError) Is(target error) bool { return target == ErrNotExist && e.notExist }

// runcState is the JSON of `runc state` and of each `runc list` entry.
type runcState struct {
	ID          string            `json:"id"`
	Pid         int               `json:"pid"`
	Status      string            `json:"status"`
	Bundle      string            `json:"bundle"`
	Created     time.Time         `json:"created"`
	Annotations map[string]string `json:"annotations"`
}

func (s runcState) state() State {
	return State{ID: s.ID, Pid: s.Pid, Status: s.Status, Bundle: s.Bundle, Created: s.Created, Annotations: s.Annotations}
}

// State returns runc's state of container id, or an error wrapping
// ErrNotExist when runc does not know it.
func (r *Runc) State(ctx context.Context, id string) (*State, error) {
	out, err := r.run(ctx, "state", id, "state", id)
	if err != nil {
		return nil, err
	}
	var s runcState
	if err := json.Unmarshal(out, &s); err != nil {
		return nil, &RuncError{Op: "state", ID: id, Message: "unreadable state: " + err.Error(), Err: err}
	}
	st := s.state()
	return &st, nil
}

// List returns every container under the driver's root; an empty or not
// yet created root has none.
func (r *Runc) List(ctx context.Context) ([]State, error) {
	if r.Root != "" {
		if _, err := os.Stat(r.Root); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
	}
	out, err := r.run(ctx, "list", "", "list", "--format", "json")
	if err != nil {
		return nil, err
	}
	var list []runcState
	if err := json.Unmarshal(bytes.TrimSpace(out), &list); err != nil {
		return nil, &RuncError{Op: "list", Message: "unreadable list: " + err.Error(), Err: err}
	}
	states := make([]State, 0, len(list))
	for _, s := range list {
		states = append(states, s.state())
	}
	return states, nil
}

// Kill sends sig to the container's init process, or with all to every
// process in the container. An unknown container gives ErrNotExist.
func (r *Runc) Kill(ctx context.Context, id string, sig syscall.Signal, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	args = append(args, id, strconv.Itoa(int(sig)))
	_, err := r.run(ctx, "kill", id, args...)
	return err
}

// Delete removes the container from runc and its cgroup. With force a
// running container is killed first; without it only a created or stopped
// container can be deleted. Deleting a container runc does not know
// succeeds, so that cleanup can be repeated.
func (r *Runc) Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	args = append(args, id)
	_, err := r.run(ctx, "delete", id, args...)
	if errors.Is(err, ErrNotExist) {
		return nil
	}
	return err
}

// Exec runs p in the running container id with its output written to
// stdout and stderr (nil discards), and returns the process's exit code
// (128+n when signal n killed it). err is non-nil only when the process
// could not be run; then runc's message is in it. Exec'd processes are not
// part of the container's process tree and do not survive a checkpoint.
// Cancelling ctx sends the process SIGTERM.
func (r *Runc) Exec(ctx context.Context, id string, p ExecProcess, stdout, stderr io.Writer) (int, error) {
	if len(p.Args) == 0 {
		return -1, &RuncError{Op: "exec", ID: id, Message: "no command given"}
	}
	logFile, err := os.CreateTemp("", "godwit-runc-exec-*.log")
	if err != nil {
		return -1, fmt.Errorf("runc exec %s: create runc log: %w", id, err)
	}
	logPath := logFile.Name()
	_ = logFile.Close()
	defer os.Remove(logPath)

	args := []string{"--log", logPath, "exec"}
	if p.Cwd != "" {
		args = append(args, "--cwd", p.Cwd)
	}
	for _, kv := range p.Env {
		args = append(args, "--env", kv)
	}
	args = append(args, id)
	args = append(args, p.Args...)

	cmd := r.command(ctx, args...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = execCancelGrace
	runErr := cmd.Run()
	r.log().Debug("runc exec", "container", id, "args", p.Args, "err", runErr)

	if msg := runcLogErrors(logPath); msg != "" {
		return -1, newRuncError("exec", id, msg, runErr)
	}
	var exitErr *exec.ExitError
	switch {
	case runErr == nil:
		return 0, nil
	case errors.As(runErr, &exitErr) && exitErr.ExitCode() >= 0:
		return exitErr.ExitCode(), nil
	default:
		return -1, newRuncError("exec", id, "", runErr)
	}
}

// create runs `runc create` with the given stdio passed through to the
// container's init process. runc's own messages go to logPath.
func (r *Runc) create(ctx context.Context, id, bundle, pidFile, logPath string, stdin, stdout, stderr *os.File) error {
	cmd := r.command(ctx, "--log", logPath, "create", "--bundle", bundle, "--pid-file", pidFile, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err := cmd.Run()
	r.log().Debug("runc create", "container", id, "err", err)
	if err != nil {
		return newRuncError("create", id, runcLogErrors(logPath), err)
	}
	return nil
}

// start runs `runc start`, which lets a created container's init exec the
// user's program.
func (r *Runc) start(ctx context.Context, id string) error {
	_, err := r.run(ctx, "start", id, "start", id)
	return err
}

// run executes runc with args and returns its standard output; a failure
// becomes a *RuncError carrying runc's error messages.
func (r *Runc) run(ctx context.Context, op, id string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := r.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r.log().Debug("runc", "op", op, "container", id, "took", time.Since(start), "err", err)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		return nil, newRuncError(op, id, runcMessages(stderr.Bytes()), err)
	}
	return stdout.Bytes(), nil
}

func (r *Runc) command(ctx context.Context, args ...string) *exec.Cmd {
	global := []string{"--log-format", "json"}
	if r.Root != "" {
		global = append(global, "--root", r.Root)
	}
	return exec.CommandContext(ctx, r.binary(), append(global, args...)...)
}

func (r *Runc) binary() string {
	if r.Binary == "" {
		return defaultRuncBinary
	}
	return r.Binary
}

func (r *Runc) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func newRuncError(op, id, msg string, err error) *RuncError {
	return &RuncError{Op: op, ID: id, Message: msg, Err: err, notExist: strings.Contains(msg, runcNotExistText)}
}

// runcLogLine is one line of runc's --log-format json output.
type runcLogLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
}

// runcMessages extracts runc's messages from its JSON log output: error
// lines when there are any, else every line as it is, so nothing runc said
// about a failure is lost.
func runcMessages(out []byte) string {
	var errs, all []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var l runcLogLine
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg != "" {
			if l.Level == "error" || l.Level == "fatal" {
				errs = append(errs, l.Msg)
			}
			all = append(all, l.Msg)
			continue
		}
		all = append(all, line)
	}
	if len(errs) > 0 {
		return strings.Join(errs, "; ")
	}
	return strings.Join(all, "; ")
}

// runcLogErrors returns the error messages in runc's --log file, "" when
// there are none.
func runcLogErrors(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var errs []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var l runcLogLine
		if json.Unmarshal(sc.Bytes(), &l) == nil && (l.Level == "error" || l.Level == "fatal") && l.Msg != "" {
			errs = append(errs, l.Msg)
		}
	}
	return strings.Join(errs, "; ")
}
