package doctor

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	criu "github.com/checkpoint-restore/go-criu/v7"
	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/godwit/godwit/agent/internal/version"
)

const (
	// pageServerProbeAddr is where the probe's page server listens: the
	// loopback address, on a port the kernel picks (CRIU reports it), so
	// that nothing outside the host ever sees it.
	pageServerProbeAddr = "127.0.0.1"
	// pageServerExitWait bounds waiting for the probe's page server to end
	// by itself once its one connection closed, before it is killed.
	pageServerExitWait = 2 * time.Second
	// pageServerExitPoll is how often that wait looks.
	pageServerExitPoll = 10 * time.Millisecond
	// pageServerLog is the probe page server's log, in its scratch
	// directory.
	pageServerLog = "page-server.log"
)

// pageServerProbe is what starting a page server showed.
type pageServerProbe struct {
	// version is CRIU's version as its RPC reports it
	// (major*10000 + minor*100 + sublevel).
	version int
	// port is where the page server listened.
	port int
}

// checkPageServer starts a CRIU page server the way the stream strategy
// does on a destination (go-criu's PAGE_SERVER_CHLD request over CRIU's
// RPC), connects to it and lets it go: stream and post-copy both move
// memory through one.
func (p *prober) checkPageServer() Check {
	bin, err := p.criu()
	if err != nil {
		return fail(CheckPageServer, false, fmt.Sprintf("%s not found: %v", p.opts.CRIU, err), installFix)
	}
	ctx, cancel := context.WithTimeout(p.ctx, commandTimeout)
	defer cancel()
	start := time.Now()
	got, err := p.host.pageServer(ctx, bin)
	p.log.Debug("doctor page server probe", "criu", bin, "port", got.port, "took", time.Since(start), "err", err)
	if err != nil {
		return fail(CheckPageServer, false, fmt.Sprintf("go-criu could not start a CRIU page server: %v", err),
			p.criuFix("run `criu page-server --address 127.0.0.1 --port 0 -D /tmp` as root and fix what it reports"))
	}
	v := version.Version{Major: got.version / 10000, Minor: got.version / 100 % 100, Patch: got.version % 100}
	if v.Less(minCRIU) {
		return fail(CheckPageServer, false, fmt.Sprintf("CRIU %s answers go-criu, older than %s", v, minCRIU), installFix)
	}
	return pass(CheckPageServer, false,
		fmt.Sprintf("go-criu started a CRIU %s page server on %s:%d and reached it", v, pageServerProbeAddr, got.port))
}

// startPageServer is the real host's page server probe: a page server in a
// scratch directory, listening on the loopback address, reached once and
// gone again (it ends after its first connection; killed if it does not).
func startPageServer(ctx context.Context, criuPath string) (pageServerProbe, error) {
	dir, err := os.MkdirTemp("", "godwit-doctor-page-server-")
	if err != nil {
		return pageServerProbe{}, fmt.Errorf("make scratch directory: %w", err)
	}
	defer os.RemoveAll(dir)
	images, err := os.Open(dir)
	if err != nil {
		return pageServerProbe{}, err
	}
	defer images.Close()

	type result struct {
		probe pageServerProbe
		pid   int
		err   error
	}
	done := make(chan result, 1)
	// go-criu takes no context; a CRIU that hangs leaves this goroutine
	// behind until it returns, and the check fails on the timeout.
	go func() {
		c := criu.MakeCriu()
		c.SetCriuPath(criuPath)
		var r result
		if r.probe.version, r.err = c.GetCriuVersion(); r.err != nil {
			r.err = fmt.Errorf("ask CRIU its version over RPC: %w", r.err)
			done <- r
			return
		}
		r.pid, r.probe.port, r.err = c.StartPageServerChld(&rpc.CriuOpts{
			ImagesDirFd: proto.Int32(int32(images.Fd())),
			LogFile:     proto.String(pageServerLog),
			LogLevel:    proto.Int32(2), // errors and warnings
			Ps:          &rpc.CriuPageServerInfo{Address: proto.String(pageServerProbeAddr), Port: proto.Int32(0)},
		})
		done <- r
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		return pageServerProbe{}, fmt.Errorf("start a page server: %w", ctx.Err())
	}
	if r.err != nil {
		if tail := logTail(dir); tail != "" {
			r.err = fmt.Errorf("%w; its log: %s", r.err, tail)
		}
		return r.probe, fmt.Errorf("start a page server: %w", r.err)
	}
	defer stopPageServer(r.pid)
	addr := net.JoinHostPort(pageServerProbeAddr, strconv.Itoa(r.probe.port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return r.probe, fmt.Errorf("page server started (pid %d) but does not accept connections on %s: %w", r.pid, addr, err)
	}
	// Closing without a word ends the page server's one session.
	conn.Close()
	return r.probe, nil
}

// stopPageServer waits for the probe's page server to end, and kills it
// when it does not. It is the child of a CRIU that already exited, so it
// is reaped by init, or here when this process is a subreaper.
func stopPageServer(pid int) {
	if pid <= 0 {
		return
	}
	deadline := time.Now().Add(pageServerExitWait)
	for time.Now().Before(deadline) {
		var ws unix.WaitStatus
		if wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil); wpid == pid || (err != nil && !errors.Is(err, unix.ECHILD)) {
			return
		}
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		time.Sleep(pageServerExitPoll)
	}
	_ = unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	_, _ = unix.Wait4(pid, &ws, unix.WNOHANG, nil)
}

// logTail is the last line of the probe page server's log, where CRIU
// says why it failed; "" when there is none.
func logTail(dir string) string {
	raw, err := os.ReadFile(dir + "/" + pageServerLog)
	if err != nil {
		return ""
	}
	lines := nonEmptyLines(string(raw))
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}
