package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/devcluster"
)

// copyMethod is how the hand-scripted baseline carries the images from
// host a to host b.
type copyMethod string

const (
	// copyTCP has tar write the archive straight into a TCP connection
	// from host a and tar on host b read it straight from the accepted
	// one: `tar -cf - . > /dev/tcp/B/PORT` into a listener that hands the
	// connection to `tar -xf -` (socat, tcpsvd or a socket unit would).
	// Nothing copies between the two tars but the kernel.
	copyTCP copyMethod = "tcp"
	// copyNC is `tar -cf - . | busybox nc B PORT` into `busybox nc -l -p
	// PORT | tar -xf -`, the usual idiom, with the only netcat this host
	// has: busybox's moves 1 KiB per system call.
	copyNC copyMethod = "nc"
)

// tool names the baseline that copies with m in the report.
func (m copyMethod) tool() string {
	if m == copyNC {
		return "runc + tar + busybox nc"
	}
	return "runc + tar over TCP"
}

// parseCopyMethods reads --baselines: "tcp,nc" in any order, each at
// most once.
func parseCopyMethods(s string) ([]copyMethod, error) {
	return benchutil.ParseChoices(s, copyTCP, copyNC)
}

const (
	// busybox provides the baseline's nc.
	busybox = "/bin/busybox"
	// baselinePort is where host b's nc listens for the images.
	baselinePort = 17020
	// listenTimeout bounds the wait for host b's nc to listen;
	// listenPoll is how often it is checked.
	listenTimeout = 10 * time.Second
	listenPoll    = 5 * time.Millisecond
	// outputLimit bounds how much of a command's output an error quotes.
	outputLimit = 4 << 10
	// drainBuffer is the size of the reads that drain a restored
	// container's output.
	drainBuffer = 32 << 10
	// drainWait bounds the wait for runc's messages after a failed
	// restore.
	drainWait = time.Second
)

// moveBaseline does what an operator would script by hand to move the
// container, with the same workload on the same hosts, timing each step
// while the probe on host c asks the container every 10 ms:
//
//  1. on host a, `runc checkpoint --tcp-established` of the container the
//     agent runs (its runc root and id), into a directory of images;
//  2. tar of the images from host a's network namespace to host b's, by
//     method, unpacked into a directory on b's side; the receiver listens
//     before the checkpoint;
//  3. `runc restore --detach --tcp-established` from the images that came
//     through b, with the agent's bundle, back on host a, where the
//     container's network namespace and address are. Restoring it on b
//     would need its network identity rebuilt there by hand; the timed
//     steps are the same, since CRIU's restore does not depend on the host
//     it runs on, and the route change it would add is the same for both.
//
// The agent is not told: it takes the container for exited once CRIU
// killed it, and removing it afterwards (`rm -f`) deletes the restored
// one through runc.
func (b *bench) moveBaseline(ctx context.Context, method copyMethod, sizeMiB, run int) (s sample, err error) {
	name := fmt.Sprintf("r%s%d-%d", method, sizeMiB, run)
	dir, err := os.MkdirTemp(b.work, "baseline-"+name+"-")
	if err != nil {
		return s, err
	}
	defer func() {
		if rmErr := os.RemoveAll(dir); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
	}()
	// The restored container writes to the benchmark's pipes until it is
	// removed: they are closed after.
	var restored *restoredContainer
	defer func() {
		err = errors.Join(err, b.remove(name))
		if restored != nil {
			restored.close()
		}
	}()
	imagesA, workA := filepath.Join(dir, "a-images"), filepath.Join(dir, "a-work")
	imagesB, workB := filepath.Join(dir, "b-images"), filepath.Join(dir, "b-work")
	for _, d := range []string{imagesA, workA, imagesB, workB} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return s, err
		}
	}

	w, conn, err := b.runWorkload(ctx, name, sizeMiB)
	if err != nil {
		return s, err
	}
	defer conn.Close()
	runcRoot := filepath.Join(b.a.DataDir(), "run", "runc")
	bundle := filepath.Join(b.a.DataDir(), "containers", w.id, "bundle")
	for _, p := range []string{filepath.Join(runcRoot, w.id), filepath.Join(bundle, "config.json")} {
		if _, err := os.Stat(p); err != nil {
			return s, fmt.Errorf("the baseline drives runc with the agent's runc root and bundle, and the agent's layout changed: %w", err)
		}
	}
	cl := newClient(conn)
	if err := cl.checkMemory(); err != nil {
		return s, fmt.Errorf("before the move: %w", err)
	}
	var recv receiver
	if method == copyNC {
		recv, err = b.startNCReceiver(ctx, imagesB)
	} else {
		recv, err = b.startTCPReceiver(ctx, imagesB)
	}
	if err != nil {
		return s, err
	}
	defer recv.close()
	if err := benchutil.Sleep(ctx, b.cool); err != nil {
		return s, err
	}
	p := startProbe(cl, probeInterval)
	defer p.Abort()
	if err := benchutil.Sleep(ctx, probeWarmup); err != nil {
		return s, err
	}

	start := time.Now()
	if out, err := b.a.Command(ctx, b.runc, "--root", runcRoot, "checkpoint", "--tcp-established",
		"--image-path", imagesA, "--work-path", workA, w.id).CombinedOutput(); err != nil {
		return s, fmt.Errorf("runc checkpoint on host a: %w: %s%s", err, tail(out), criuLog(workA, "dump.log"))
	}
	checkpointed := time.Now()
	if err := recv.send(ctx, imagesA); err != nil {
		return s, err
	}
	copied := time.Now()
	if restored, err = b.restore(ctx, runcRoot, bundle, imagesB, workB, w.id); err != nil {
		return s, err
	}
	end := time.Now()

	if s.probeDowntime, err = b.verify(ctx, p, cl, start, end); err != nil {
		return s, err
	}
	sent, err := dirBytes(imagesA)
	if err != nil {
		return s, err
	}
	if got, err := dirBytes(imagesB); err != nil || got != sent {
		return s, fmt.Errorf("host a's images hold %d bytes, their copy on b %d (%v): the copy is incomplete", sent, got, err)
	}
	s.total = end.Sub(start)
	s.checkpoint = checkpointed.Sub(start)
	s.transfer = copied.Sub(checkpointed)
	s.restore = end.Sub(copied)
	s.bytes, s.moved = sent, sent
	return s, nil
}

// receiver unpacks on host b what host a sends it. It listens from its
// start, so that the timed copy waits for nothing else.
type receiver interface {
	// send archives dir on host a, sends it, and returns once host b has
	// unpacked all of it.
	send(ctx context.Context, dir string) error
	// close stops the receiver if it still runs, and releases it.
	close()
}

// ncReceiver is host b's `busybox nc -l | tar -x`.
type ncReceiver struct {
	b   *bench
	cmd *exec.Cmd
	// hold keeps nc's standard input open: on its end of file nc would
	// shut its side of the connection, and the sender's nc would take
	// that for the end and quit before it sent everything.
	hold *os.File
	out  *cappedBuffer
	done chan error
}

// startNCReceiver starts `busybox nc -l -p PORT | tar -C dir -xf -` in
// host b's network namespace and returns once it listens.
func (b *bench) startNCReceiver(ctx context.Context, dir string) (*ncReceiver, error) {
	script := fmt.Sprintf("%s nc -l -p %d | tar -C %s -xf -", busybox, baselinePort, shellQuote(dir))
	r := &ncReceiver{b: b, cmd: b.b.Command(ctx, "sh", "-c", script), out: &cappedBuffer{limit: outputLimit}, done: make(chan error, 1)}
	stdin, hold, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	r.hold = hold
	r.cmd.Stdin, r.cmd.Stdout, r.cmd.Stderr = stdin, r.out, r.out
	// The shell's nc and tar go with it: in a group of their own, killed
	// together, nc never outlives a failed run still holding the port.
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r.cmd.Cancel = r.killGroup
	err = r.cmd.Start()
	stdin.Close() // the receiver has its own
	if err != nil {
		hold.Close()
		return nil, fmt.Errorf("%s on host b: %w", script, err)
	}
	go func() {
		err := r.cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%s on host b: %w: %s", script, err, tail(r.out.Bytes()))
		}
		r.done <- err
	}()
	if err := waitListening(ctx, b.b, baselinePort, r.done); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// send runs `tar -C dir -cf - . | busybox nc HOST_B PORT` on host a and
// waits for host b's side to finish.
func (r *ncReceiver) send(ctx context.Context, dir string) error {
	script := fmt.Sprintf("tar -C %s -cf - . | %s nc %s %d", shellQuote(dir), busybox, r.b.b.Addr(), baselinePort)
	if out, err := r.b.a.Command(ctx, "sh", "-c", script).CombinedOutput(); err != nil {
		return fmt.Errorf("%s on host a: %w: %s", script, err, tail(out))
	}
	err := <-r.done
	r.done <- err // for close
	return err
}

func (r *ncReceiver) close() {
	select {
	case err := <-r.done:
		r.done <- err // the shell waited for its pipeline: all are gone
	default:
		_ = r.killGroup() // it may be exiting
		r.done <- <-r.done
	}
	r.hold.Close()
}

// killGroup kills the receiver's shell, nc and tar. nsenter became the
// shell, so the group is its process's.
func (r *ncReceiver) killGroup() error {
	return syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
}

// tcpReceiver is a listener in host b that hands the connection it
// accepts to `tar -xf -` as its standard input.
type tcpReceiver struct {
	b    *bench
	ln   net.Listener
	done chan error
}

// startTCPReceiver listens in host b's network namespace and unpacks
// into dir what the first connection brings.
func (b *bench) startTCPReceiver(ctx context.Context, dir string) (*tcpReceiver, error) {
	ln, err := listenIn(ctx, b.b)
	if err != nil {
		return nil, err
	}
	r := &tcpReceiver{b: b, ln: ln, done: make(chan error, 1)}
	go func() { r.done <- r.unpack(ctx, dir) }()
	return r, nil
}

// unpack accepts one connection and runs tar on host b with it as its
// standard input.
func (r *tcpReceiver) unpack(ctx context.Context, dir string) error {
	conn, err := r.ln.Accept()
	if err != nil {
		return fmt.Errorf("accept in host b: %w", err)
	}
	f, err := socketFile(conn)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := r.b.b.Command(ctx, "tar", "-C", dir, "-xBf", "-")
	out := &cappedBuffer{limit: outputLimit}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("tar -xf - on host b: %w: %s", err, tail(out.Bytes()))
	}
	return nil
}

// send runs `tar -C dir -cf - .` on host a with a connection to the
// receiver as its standard output, and waits for host b's tar to finish.
func (r *tcpReceiver) send(ctx context.Context, dir string) error {
	conn, err := r.b.a.Dial(ctx, "tcp4", r.ln.Addr().String())
	if err != nil {
		return err
	}
	f, err := socketFile(conn)
	if err != nil {
		return err
	}
	cmd := r.b.a.Command(ctx, "tar", "-C", dir, "-cf", "-", ".")
	stderr := &cappedBuffer{limit: outputLimit}
	cmd.Stdout, cmd.Stderr = f, stderr
	err = cmd.Run()
	f.Close() // the end of the archive for host b's tar
	if err != nil {
		return fmt.Errorf("tar -cf - on host a: %w: %s", err, tail(stderr.Bytes()))
	}
	err = <-r.done
	r.done <- err // for close
	return err
}

func (r *tcpReceiver) close() {
	r.ln.Close() // ends an Accept still waiting
	r.done <- <-r.done
}

// socketFile turns a TCP connection into the file a command takes as
// its standard input or output, and closes the connection: the file then
// holds the only descriptor of the socket.
func socketFile(conn net.Conn) (*os.File, error) {
	defer conn.Close()
	tcp, ok := conn.(*net.TCPConn)
	if !ok {
		return nil, fmt.Errorf("connection %s is a %T, not TCP", conn.RemoteAddr(), conn)
	}
	f, err := tcp.File()
	if err != nil {
		return nil, fmt.Errorf("socket of %s: %w", conn.RemoteAddr(), err)
	}
	return f, nil
}

// waitListening polls `ss` in host h until a TCP socket listens on port,
// or exited says that the listener ended.
func waitListening(ctx context.Context, h *devcluster.Host, port int, exited chan error) error {
	deadline := time.Now().Add(listenTimeout)
	for {
		out, err := h.Exec(ctx, "ss", "-Hltn", "sport = :"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(out)) > 0 {
			return nil
		}
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("host b's nc exited before it listened: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(listenPoll):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("host b's nc did not listen on port %d within %s", port, listenTimeout)
		}
	}
}

// restoredContainer holds the standard streams of a container restored
// by the baseline: it writes to them until it is removed.
type restoredContainer struct {
	files []*os.File
}

// close releases the benchmark's ends of the container's streams, once
// the container is gone.
func (r *restoredContainer) close() {
	for _, f := range r.files {
		f.Close()
	}
}

// restore runs `runc restore --detach` in host a's network namespace. runc
// hands its standard streams to CRIU in place of the pipes the container
// had (the agent's shim's), so they are pipes here too, drained until the
// container is removed.
func (b *bench) restore(ctx context.Context, runcRoot, bundle, images, work, id string) (*restoredContainer, error) {
	// Standard input's write end, and the read ends of output and error,
	// stay with the benchmark; the container's ends go to runc.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		for _, f := range []*os.File{inR, inW, outR, outW} {
			f.Close()
		}
		return nil, err
	}
	kept := &restoredContainer{files: []*os.File{inW, outR, errR}}
	stderr := &cappedBuffer{limit: outputLimit}
	go drain(outR, io.Discard)
	errDrained := make(chan struct{})
	go func() {
		drain(errR, stderr)
		close(errDrained)
	}()

	cmd := b.a.Command(ctx, b.runc, "--root", runcRoot, "restore", "--detach", "--tcp-established",
		"--image-path", images, "--work-path", work, "--bundle", bundle, id)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	err = cmd.Run()
	// The container holds its own ends now.
	for _, f := range []*os.File{inR, outW, errW} {
		f.Close()
	}
	if err != nil {
		// runc's own messages go to its standard error, the container's,
		// which no process holds any more once runc failed.
		select {
		case <-errDrained:
		case <-time.After(drainWait):
		}
		kept.close()
		return nil, fmt.Errorf("runc restore on host a: %w: %s%s", err, tail(stderr.Bytes()), criuLog(work, "restore.log"))
	}
	return kept, nil
}

// drain reads r to its end into w.
func drain(r io.Reader, w io.Writer) {
	buf := make([]byte, drainBuffer)
	_, _ = io.CopyBuffer(w, r, buf) // ends when the writers are gone or r is closed
}

// cappedBuffer keeps the first limit bytes written to it and discards the
// rest, for an error to quote.
type cappedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	limit int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.limit - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

func (c *cappedBuffer) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// dirBytes is the size of the regular files under dir.
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err == nil {
			n += info.Size()
		}
		return err
	})
	return n, err
}

// criuLog quotes the end of CRIU's log in work, for an error.
func criuLog(work, name string) string {
	return "\nCRIU's " + name + " ends with:\n" + benchutil.Tail(filepath.Join(work, name), outputLimit)
}

// tail is the end of a command's output, for an error.
func tail(out []byte) string {
	out = bytes.TrimSpace(out)
	if len(out) > outputLimit {
		out = out[len(out)-outputLimit:]
	}
	return string(out)
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
