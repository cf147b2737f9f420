package memreserve

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// Command is the godwit binary's hidden command that runs Serve: `godwit
// reserve-memory BYTES`.
const Command = "reserve-memory"

// readyLine is what Serve writes once the memory is faulted in.
const readyLine = "ready"

// Serve holds a Reserve of n bytes for the process that started this
// one: it takes it, writes a line saying so to out, and frees it when in
// ends (the parent closed its end of the pipe, or died).
func Serve(n int64, in io.Reader, out io.Writer) error {
	r, err := Take(n)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, err := fmt.Fprintln(out, readyLine); err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, in)
	return nil
}

// Process is a reserve held by a child process. It is not safe for
// concurrent use.
type Process struct {
	n     int64
	cmd   *exec.Cmd
	stdin io.WriteCloser
	ready chan error // receives once: nil when the memory is faulted in
	err   error      // what ready said, once Wait has read it
	read  bool
}

// Start runs `bin reserve-memory n`, which faults n bytes in; Wait tells
// when it has. The child ends when Release closes its input, or when this
// process dies, which closes it too.
func Start(bin string, n int64) (*Process, error) {
	cmd := exec.Command(bin, Command, strconv.FormatInt(n, 10))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr // the agent's log: why it failed, if it does
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s %s: %w", bin, Command, err)
	}
	p := &Process{n: n, cmd: cmd, stdin: stdin, ready: make(chan error, 1)}
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if strings.TrimSpace(line) != readyLine {
			err = errors.Join(errors.New("the reserve process ended before its memory was in (its error, if any, is in the agent's log)"), err)
		}
		p.ready <- err
	}()
	return p, nil
}

// Wait returns once p's memory is faulted in, or why it will not be.
func (p *Process) Wait(ctx context.Context) error {
	if p.read {
		return p.err
	}
	select {
	case p.err = <-p.ready:
		p.read = true
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Bytes is how much p holds once ready.
func (p *Process) Bytes() int64 { return p.n }

// Pid is the child's process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Release frees p's memory: it ends the child and waits until it has
// exited, its memory back in the kernel's free lists.
func (p *Process) Release() error {
	p.stdin.Close()
	// Its line first: Wait closes the pipe it comes on.
	ready := p.Wait(context.Background())
	err := p.cmd.Wait()
	if ready != nil {
		return nil // it had nothing to free
	}
	return err
}
