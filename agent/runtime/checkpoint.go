package runtime

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CRIU's own logs, written into the work directory of a dump or restore.
const (
	CRIUDumpLog    = "dump.log"
	CRIURestoreLog = "restore.log"
)

const (
	// criuLogTailLines is how many of CRIU's last log lines an error
	// carries: CRIU states the cause near the end, after a long trace.
	criuLogTailLines = 10
	// criuLogTailMaxBytes bounds how much of a (possibly huge) CRIU log is
	// read for those lines.
	criuLogTailMaxBytes = 64 << 10
	// criuWorkDirPerm keeps CRIU's logs, which name the container's files
	// and sockets, to root.
	criuWorkDirPerm = 0o700
	// restoreWorkDir is the default CRIU work directory of a restore,
	// inside the container's state directory, so that the (possibly
	// verified, read-only) image directory is not written to.
	restoreWorkDir = "criu-restore"
)

// CheckpointOptions is how Checkpoint dumps a container with CRIU.
type CheckpointOptions struct {
	// ImagePath is the absolute directory that receives CRIU's images; it
	// is created if needed.
	ImagePath string
	// WorkPath is the absolute directory for CRIU's log (CRIUDumpLog) and
	// work files; "" uses ImagePath.
	WorkPath string
	// LeaveRunning keeps the container running after the dump; otherwise
	// its processes are killed and runc forgets it.
	LeaveRunning bool
	// TCPEstablished dumps established TCP connections (the container's
	// network namespace must then be restored with the same addresses).
	TCPEstablished bool
	// ExtraArgs are passed to `runc checkpoint` before the container id,
	// as they are (for example "--manage-cgroups-mode", "ignore").
	ExtraArgs []string
}

func (o CheckpointOptions) workPath() string {
	if o.WorkPath == "" {
		return o.ImagePath
	}
	return o.WorkPath
}

// checkpointCancelGrace is how long a cancelled Checkpoint waits for
// CRIU to end on its own before runc is killed.
const checkpointCancelGrace = 2 * time.Minute

// dumpContext is the context a dump runs under when the caller's is ctx:
// it ends grace after ctx does, not with it. Killing runc in the middle
// of a dump does not stop CRIU, runc's child: CRIU goes on with the
// container's processes seized and, when it ends, puts the cgroup's
// freezer back as it found it, so a caller that thawed the container in
// the meantime finds it frozen again (a stream dump, whose container was
// paused before the dump, was left paused that way by a leader that
// lost its leadership). A caller that must end a dump early cuts what
// CRIU depends on instead (a stream dump's page-server connection
// closes with the caller's context), and CRIU fails and cleans up
// itself.
func dumpContext(ctx context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	dump, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(grace, cancel) })
	return dump, func() { stop(); cancel() }
}

// Checkpoint dumps container id with CRIU through `runc checkpoint`. The
// container's standard streams (the shim's pipes) are recorded by runc as
// external descriptors, so a shim restoring the images (ShimConfig.
// RestoreFrom) gives the restored container new pipes. Without
// LeaveRunning the container's processes are gone and runc no longer knows
// it once Checkpoint returns; its shim then records the exit.
//
// A cancelled ctx does not interrupt the dump at once: see
// dumpContext.
//
// An unknown container gives an error wrapping ErrNotExist. Any other
// failure is a *RuncError naming the container, runc's message, the path
// of CRIU's dump log and its last lines.
func (r *Runc) Checkpoint(ctx context.Context, id string, o CheckpointOptions) error {
	switch {
	case id == "":
		return &RuncError{Op: "checkpoint", Message: "container id is empty"}
	case !filepath.IsAbs(o.ImagePath):
		return &RuncError{Op: "checkpoint", ID: id, Message: fmt.Sprintf("image path %q is not an absolute path", o.ImagePath)}
	case o.WorkPath != "" && !filepath.IsAbs(o.WorkPath):
		return &RuncError{Op: "checkpoint", ID: id, Message: fmt.Sprintf("work path %q is not an absolute path", o.WorkPath)}
	}
	// Ask runc first, so that an unknown container is reported as such
	// rather than as a CRIU failure, and nothing is created for it.
	if _, err := r.State(ctx, id); err != nil {
		if errors.Is(err, ErrNotExist) {
			return &RuncError{Op: "checkpoint", ID: id, Message: runcNotExistText, Err: ErrNotExist, notExist: true}
		}
		return err
	}
	for _, dir := range []string{o.ImagePath, o.workPath()} {
		if err := os.MkdirAll(dir, criuWorkDirPerm); err != nil {
			return &RuncError{Op: "checkpoint", ID: id, Message: "create checkpoint directory: " + err.Error(), Err: err}
		}
	}
	args := []string{"checkpoint", "--image-path", o.ImagePath, "--work-path", o.workPath()}
	if o.LeaveRunning {
		args = append(args, "--leave-running")
	}
	if o.TCPEstablished {
		args = append(args, "--tcp-established")
	}
	args = append(args, o.ExtraArgs...)
	args = append(args, id)
	dumpCtx, stop := dumpContext(ctx, checkpointCancelGrace)
	defer stop()
	_, err := r.run(dumpCtx, "checkpoint", id, args...)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && dumpCtx.Err() == nil {
			err = fmt.Errorf("%w (%w)", ctxErr, err)
		}
		var re *RuncError
		if errors.As(err, &re) && !re.notExist {
			re.Message = withCRIULog(re.Message, filepath.Join(o.workPath(), CRIUDumpLog))
		}
		return err
	}
	return nil
}

// restore runs `runc restore --detach` of the images in c.RestoreFrom with
// the given stdio. runc hands its own stdin, stdout and stderr to CRIU as
// the inherited replacements of the descriptors that runc recorded as
// pipes at checkpoint time, so the restored container writes into the
// shim's new pipes. The restored init is runc's child and becomes the
// shim's (the subreaper's) when runc exits.
func (r *Runc) restore(ctx context.Context, c ShimConfig, pidFile, logPath string, stdin, stdout, stderr *os.File) error {
	work := c.restoreWorkPath()
	if err := os.MkdirAll(work, criuWorkDirPerm); err != nil {
		return fmt.Errorf("create restore work dir: %w", err)
	}
	args := []string{"--log", logPath, "restore", "--detach",
		"--image-path", c.RestoreFrom, "--work-path", work,
		"--bundle", c.Bundle, "--pid-file", pidFile}
	if c.RestoreTCPEstablished {
		args = append(args, "--tcp-established")
	}
	args = append(args, c.ID)
	cmd := r.command(ctx, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	err := cmd.Run()
	r.log().Debug("runc restore", "container", c.ID, "images", c.RestoreFrom, "err", err)
	if err != nil {
		return newRuncError("restore", c.ID, withCRIULog(runcLogErrors(logPath), filepath.Join(work, CRIURestoreLog)), err)
	}
	return nil
}

// withCRIULog appends where CRIU's log lies and its last lines to msg.
func withCRIULog(msg, logPath string) string {
	var b strings.Builder
	b.WriteString(msg)
	if b.Len() > 0 {
		b.WriteString("; ")
	}
	tail, err := criuLogTail(logPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		fmt.Fprintf(&b, "CRIU wrote no log at %s", logPath)
	case err != nil:
		fmt.Fprintf(&b, "CRIU log %s unreadable: %v", logPath, err)
	default:
		fmt.Fprintf(&b, "CRIU log %s ends:\n%s", logPath, tail)
	}
	return b.String()
}

// criuLogTail returns the last criuLogTailLines lines of the CRIU log at
// path.
func criuLogTail(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", err
	}
	if size := info.Size(); size > criuLogTailMaxBytes {
		if _, err := f.Seek(size-criuLogTailMaxBytes, 0); err != nil {
			return "", err
		}
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, bufio.MaxScanTokenSize), criuLogTailMaxBytes)
	for sc.Scan() {
		if line := bytes.TrimRight(sc.Bytes(), " \t"); len(line) > 0 {
			lines = append(lines, string(line))
		}
		if len(lines) > 2*criuLogTailLines {
			lines = lines[len(lines)-criuLogTailLines:]
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if len(lines) > criuLogTailLines {
		lines = lines[len(lines)-criuLogTailLines:]
	}
	return strings.Join(lines, "\n"), nil
}
