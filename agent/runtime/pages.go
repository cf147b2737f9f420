package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	criu "github.com/checkpoint-restore/go-criu/v7"
	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Memory pages that leave a dump through CRIU's page-server protocol
// instead of image files: the destination's page server of a stream
// migration, the source's lazy dump and the destination's lazy-pages
// daemon of a post-copy one. Each listens on or connects to the loopback
// address: the caller runs them in a network namespace of their own
// (the functions that start a process start it from the calling thread,
// so that it inherits that thread's namespace; see netnsutil.Run) and
// carries the bytes between the agents itself.

// Log files of the page-server processes, in their work directories.
const (
	PageServerLog = "page-server.log"
	LazyPagesLog  = "lazy-pages.log"
	// LazyPagesSocket is where CRIU's lazy-pages daemon listens for the
	// restore, relative to its work directory: the restore must run in
	// the same work directory (CRIUConfig.WorkDir) to find it.
	LazyPagesSocket = "lazy-pages.socket"
)

const (
	defaultCRIUBinary = "criu"
	// pagesLogLevel keeps CRIU's errors and warnings: enough to say why a
	// page server failed, little enough not to slow it down.
	pagesLogLevel = 2
	// pagesStartTimeout bounds waiting for a lazy dump to be ready to
	// serve (the whole dump but the memory) or a lazy-pages daemon to
	// listen.
	pagesStartTimeout = 5 * time.Minute
	// pagesPoll is how often a wait for a process or a file looks.
	pagesPoll = 20 * time.Millisecond
	// statusReady is what runc writes to its --status-fd once a lazy dump
	// serves its pages.
	statusReady = 0
)

// criuBinary resolves CRIU's executable ("" means "criu" from PATH).
func criuBinary(path string) string {
	if path == "" {
		return defaultCRIUBinary
	}
	return path
}

// PageServer is a CRIU page server that receives one dump's memory pages
// (pagemap-*.img and pages-*.img) into a directory. It ends by itself
// once its one session is over.
type PageServer struct {
	// Pid is the page server's process; it is not this process's child
	// (CRIU forks it and exits), so Wait watches it rather than reaping.
	Pid int
	// Port is where it listens, on 127.0.0.1 of the namespace it was
	// started in.
	Port int
	log  string
}

// StartPageServer starts a CRIU page server with go-criu
// (PAGE_SERVER_CHLD) that writes the pages of one dump into imagesDir and
// its log (PageServerLog) into logDir, listening on 127.0.0.1 on a port
// CRIU picks. criuPath "" means "criu" from PATH. Call it on a thread in
// the namespace the server is to listen in: go-criu starts CRIU from the
// calling thread.
func StartPageServer(criuPath, imagesDir, logDir string) (*PageServer, error) {
	images, err := os.Open(imagesDir)
	if err != nil {
		return nil, fmt.Errorf("page server: %w", err)
	}
	defer images.Close()
	if err := os.MkdirAll(logDir, criuWorkDirPerm); err != nil {
		return nil, fmt.Errorf("page server: %w", err)
	}
	work, err := os.Open(logDir)
	if err != nil {
		return nil, fmt.Errorf("page server: %w", err)
	}
	defer work.Close()
	c := criu.MakeCriu()
	c.SetCriuPath(criuBinary(criuPath))
	pid, port, err := c.StartPageServerChld(&rpc.CriuOpts{
		ImagesDirFd: proto.Int32(int32(images.Fd())),
		WorkDirFd:   proto.Int32(int32(work.Fd())),
		LogFile:     proto.String(PageServerLog),
		LogLevel:    proto.Int32(pagesLogLevel),
		Ps:          &rpc.CriuPageServerInfo{Address: proto.String("127.0.0.1"), Port: proto.Int32(0)},
	})
	logPath := filepath.Join(logDir, PageServerLog)
	if err != nil {
		return nil, fmt.Errorf("start a CRIU page server: %s", withCRIULog(err.Error(), logPath))
	}
	return &PageServer{Pid: pid, Port: port, log: logPath}, nil
}

// Wait waits until the page server has ended, or ctx ends, and reports
// an error when its log holds one: its exit status is its parent's, which
// exited.
func (p *PageServer) Wait(ctx context.Context) error {
	if err := waitGone(ctx, p.Pid); err != nil {
		return err
	}
	if msg := criuErrors(p.log); msg != "" {
		return fmt.Errorf("CRIU page server: %s", withCRIULog(msg, p.log))
	}
	return nil
}

// Kill ends the page server at once, for an abort.
func (p *PageServer) Kill() {
	_ = unix.Kill(p.Pid, unix.SIGKILL)
}

// waitGone waits until process pid no longer exists.
func waitGone(ctx context.Context, pid int) error {
	t := time.NewTicker(pagesPoll)
	defer t.Stop()
	for {
		// A child (when this process is its subreaper) is reaped here;
		// anyone else's is reaped by its parent.
		var ws unix.WaitStatus
		_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if !Alive(pid) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Alive says whether process pid exists and has not exited (a zombie has).
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and
	// may itself hold spaces or parentheses.
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
}

// criuErrors returns the error lines of the CRIU log at path, "" when it
// has none (or cannot be read).
func criuErrors(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var errs []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "Error (") {
			errs = append(errs, strings.TrimSpace(line))
		}
	}
	return strings.Join(errs, "; ")
}

// LazyCheckpointOptions is how StartLazyCheckpoint dumps a container for
// post-copy.
type LazyCheckpointOptions struct {
	// ImagePath and WorkPath are as for Checkpoint.
	ImagePath, WorkPath string
	// Port is where CRIU serves the pages once the dump is done. CRIU
	// listens on every address of its network namespace (whatever address
	// it is given), so the caller runs it in one of its own.
	Port int
}

// LazyCheckpoint is a running `runc checkpoint --lazy-pages`: the
// container is dumped but for its memory, which CRIU serves on its port
// until the lazy-pages daemon that restores it has fetched every page.
// The container is left running (paused, when it was paused: CRIU puts
// the freezer back as it found it), so that an abort can resume it.
type LazyCheckpoint struct {
	Pid  int
	cmd  *exec.Cmd
	work string
	done chan struct{}
	err  error
}

// StartLazyCheckpoint starts a lazy dump of container id and returns once
// CRIU serves the pages (runc's --status-fd), or with the dump's error.
// The dump goes on in the background, independent of ctx and of this
// process's process group: Wait says when it has ended. Call it on a
// thread in the network namespace CRIU is to serve from; the container
// should be paused, so that it never runs while its memory is served.
func (r *Runc) StartLazyCheckpoint(ctx context.Context, id string, o LazyCheckpointOptions) (*LazyCheckpoint, error) {
	for _, dir := range []string{o.ImagePath, o.WorkPath} {
		if !filepath.IsAbs(dir) {
			return nil, &RuncError{Op: "checkpoint", ID: id, Message: fmt.Sprintf("path %q is not an absolute path", dir)}
		}
		if err := os.MkdirAll(dir, criuWorkDirPerm); err != nil {
			return nil, &RuncError{Op: "checkpoint", ID: id, Message: "create checkpoint directory: " + err.Error(), Err: err}
		}
	}
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer statusR.Close()
	args := []string{"checkpoint", "--image-path", o.ImagePath, "--work-path", o.WorkPath,
		"--lazy-pages", "--leave-running", "--tcp-established",
		"--page-server", net.JoinHostPort("127.0.0.1", strconv.Itoa(o.Port)),
		"--status-fd", "3", id}
	// Not CommandContext: serving outlives the call that started it.
	cmd := r.command(context.Background(), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	statusW.Close()
	if err != nil {
		return nil, &RuncError{Op: "checkpoint", ID: id, Message: err.Error(), Err: err}
	}
	lc := &LazyCheckpoint{Pid: cmd.Process.Pid, cmd: cmd, work: o.WorkPath, done: make(chan struct{})}
	go func() {
		defer close(lc.done)
		if err := cmd.Wait(); err != nil {
			lc.err = newRuncError("checkpoint", id, withCRIULog(runcMessages(stderr.Bytes()), filepath.Join(o.WorkPath, CRIUDumpLog)), err)
		}
	}()
	ready := make(chan error, 1)
	go func() {
		b := make([]byte, 1)
		_, err := statusR.Read(b)
		if err == nil && b[0] != statusReady {
			err = fmt.Errorf("runc reported status %d", b[0])
		}
		ready <- err
	}()
	timeout := time.NewTimer(pagesStartTimeout)
	defer timeout.Stop()
	select {
	case err := <-ready:
		if err == nil {
			r.log().Debug("lazy dump serves its pages", "container", id, "pid", lc.Pid)
			return lc, nil
		}
		<-lc.done // runc closed the status pipe: it is ending
	case <-lc.done:
	case <-ctx.Done():
		lc.Kill()
		<-lc.done
		return nil, ctx.Err()
	case <-timeout.C:
		lc.Kill()
		<-lc.done
		return nil, &RuncError{Op: "checkpoint", ID: id, Message: fmt.Sprintf("the lazy dump was not ready within %s", pagesStartTimeout)}
	}
	if lc.err != nil {
		return nil, lc.err
	}
	return nil, &RuncError{Op: "checkpoint", ID: id, Message: withCRIULog("the lazy dump ended before serving its pages", filepath.Join(o.WorkPath, CRIUDumpLog))}
}

// Wait waits until the lazy dump has ended (every page served, or the
// destination gone) or ctx ends, and returns runc's error.
func (l *LazyCheckpoint) Wait(ctx context.Context) error {
	select {
	case <-l.done:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed once the lazy dump has ended.
func (l *LazyCheckpoint) Done() <-chan struct{} { return l.done }

// Kill ends runc at once; CRIU, its child, then ends its service when its
// connection closes.
func (l *LazyCheckpoint) Kill() {
	_ = l.cmd.Process.Kill()
}

// LazyPagesOptions is how StartLazyPages runs CRIU's lazy-pages daemon.
type LazyPagesOptions struct {
	// CRIU is CRIU's executable; "" means "criu" from PATH.
	CRIU string
	// ImagesDir holds the checkpoint's CRIU images (the pagemaps say
	// which pages are lazy); WorkDir is the daemon's work directory, where
	// it listens (LazyPagesSocket) and logs (LazyPagesLog). The restore
	// must use WorkDir as its work directory.
	ImagesDir, WorkDir string
	// Port is the lazy dump's page server, on 127.0.0.1 of the namespace
	// the daemon is started in.
	Port int
}

// LazyPages is a running `criu lazy-pages` daemon: it hands a restored
// container the pages it faults in, and fetches the rest in the
// background, from a lazy dump's page server; it ends once it has every
// page.
type LazyPages struct {
	Pid  int
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// StartLazyPages starts CRIU's lazy-pages daemon and returns once it
// listens for the restore. go-criu has no call for this daemon (its RPC
// has none), so the binary is run. The daemon runs on in the background,
// independent of ctx and of this process's process group. Call it on a
// thread in the namespace where the page server's port is reached.
func StartLazyPages(ctx context.Context, o LazyPagesOptions) (*LazyPages, error) {
	if err := os.MkdirAll(o.WorkDir, criuWorkDirPerm); err != nil {
		return nil, fmt.Errorf("lazy-pages daemon: %w", err)
	}
	sock := filepath.Join(o.WorkDir, LazyPagesSocket)
	if err := os.Remove(sock); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("lazy-pages daemon: %w", err)
	}
	logPath := filepath.Join(o.WorkDir, LazyPagesLog)
	cmd := exec.Command(criuBinary(o.CRIU), "lazy-pages", "--page-server",
		"--address", "127.0.0.1", "--port", strconv.Itoa(o.Port),
		"--images-dir", o.ImagesDir, "--work-dir", o.WorkDir,
		"--log-file", logPath, "-v"+strconv.Itoa(pagesLogLevel))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start CRIU's lazy-pages daemon: %w", err)
	}
	lp := &LazyPages{Pid: cmd.Process.Pid, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		defer close(lp.done)
		if err := cmd.Wait(); err != nil {
			msg := strings.TrimSpace(stderr.String())
			if e := criuErrors(logPath); e != "" {
				msg = e
			}
			lp.err = fmt.Errorf("CRIU lazy-pages daemon: %w: %s", err, withCRIULog(msg, logPath))
		}
	}()
	deadline := time.NewTimer(pagesStartTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(pagesPoll)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			return lp, nil
		}
		select {
		case <-lp.done:
			if lp.err != nil {
				return nil, lp.err
			}
			return nil, fmt.Errorf("CRIU lazy-pages daemon ended before it listened: %s", withCRIULog("", logPath))
		case <-ctx.Done():
			lp.Kill()
			<-lp.done
			return nil, ctx.Err()
		case <-deadline.C:
			lp.Kill()
			<-lp.done
			return nil, fmt.Errorf("CRIU lazy-pages daemon did not listen within %s: %s", pagesStartTimeout, withCRIULog("", logPath))
		case <-tick.C:
		}
	}
}

// Wait waits until the daemon has ended (every page fetched, or the page
// server gone) or ctx ends, and returns its error.
func (l *LazyPages) Wait(ctx context.Context) error {
	select {
	case <-l.done:
		return l.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Done is closed once the daemon has ended.
func (l *LazyPages) Done() <-chan struct{} { return l.done }

// Kill ends the daemon at once: a restored container still missing pages
// then dies on its next fault, so only an abort does this.
func (l *LazyPages) Kill() {
	_ = l.cmd.Process.Kill()
}

// Pause freezes every process of container id (`runc pause`, the cgroup
// freezer): unlike a stop signal it cannot be caught or seen.
func (r *Runc) Pause(ctx context.Context, id string) error {
	_, err := r.run(ctx, "pause", id, "pause", id)
	return err
}

// Unpause thaws a container that Pause froze (`runc resume`; not Resume,
// which continues processes a restore left stopped).
func (r *Runc) Unpause(ctx context.Context, id string) error {
	_, err := r.run(ctx, "resume", id, "resume", id)
	return err
}
