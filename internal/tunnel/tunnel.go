package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Tunnel is one splice between a local connection and a remote one.
// Wait returns once it has ended; Close cuts it.
type Tunnel struct {
	cancel context.CancelFunc
	done   chan struct{}

	// toRemote and toLocal count the bytes copied each way.
	toRemote, toLocal atomic.Int64

	mu  sync.Mutex
	err error
}

// Stats is what a tunnel carried, in bytes.
type Stats struct {
	// ToRemote is what the local side sent, ToLocal what it received.
	ToRemote, ToLocal int64
}

// halfCloser is a connection whose write half can be closed alone
// (*net.TCPConn, *tls.Conn).
type halfCloser interface {
	CloseWrite() error
}

func newTunnel(ctx context.Context) (*Tunnel, context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	return &Tunnel{cancel: cancel, done: make(chan struct{})}, ctx
}

// Splice joins local and remote: every byte read from one is written to
// the other, both ways, until both directions have ended or ctx ends. The
// tunnel owns both connections and closes them when it ends.
func Splice(ctx context.Context, local, remote net.Conn) *Tunnel {
	t, ctx := newTunnel(ctx)
	go func() {
		defer close(t.done)
		t.setErr(t.splice(ctx, local, remote))
	}()
	return t
}

// Accept serves l, the local end, on behalf of remote: the first
// connection l accepts is spliced to remote, and l is closed, so that no
// second process can reach remote through it. If ctx ends or Close is
// called before anyone connects, l and remote are closed and Wait
// returns the reason. The tunnel owns l and remote.
func Accept(ctx context.Context, l net.Listener, remote net.Conn) *Tunnel {
	t, ctx := newTunnel(ctx)
	stop := context.AfterFunc(ctx, func() { l.Close() })
	go func() {
		defer close(t.done)
		local, err := l.Accept()
		stop()
		l.Close()
		if err != nil {
			remote.Close()
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			t.setErr(fmt.Errorf("tunnel: wait for the local connection on %s: %w", l.Addr(), err))
			return
		}
		t.setErr(t.splice(ctx, local, remote))
	}()
	return t
}

// splice copies both ways between local and remote and closes both.
func (t *Tunnel) splice(ctx context.Context, local, remote net.Conn) error {
	stop := context.AfterFunc(ctx, func() {
		local.Close()
		remote.Close()
	})
	defer stop()
	errs := make(chan error, 2)
	go func() { errs <- pipe(remote, local, &t.toRemote, "from the local connection") }()
	go func() { errs <- pipe(local, remote, &t.toLocal, "from the remote connection") }()
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
			// One way failed: the other can never finish cleanly, and
			// must not wait for a peer that will not hear from it.
			local.Close()
			remote.Close()
		}
	}
	// Both ways ended: closing is tidying.
	local.Close()
	remote.Close()
	if first != nil && ctx.Err() != nil {
		return fmt.Errorf("tunnel: %w", ctx.Err())
	}
	return first
}

// copyBuffer is the size of each way's buffer: large enough that memory
// pages move in few system calls.
const copyBuffer = 256 << 10

// pipe copies src to dst until src ends, then closes dst's write half so
// that dst's peer sees the end too.
func pipe(dst, src net.Conn, n *atomic.Int64, from string) error {
	buf := make([]byte, copyBuffer)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			n.Add(int64(k))
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return fmt.Errorf("tunnel: copy %s: %w", from, werr)
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("tunnel: copy %s: %w", from, err)
		}
	}
	if hc, ok := dst.(halfCloser); ok {
		if err := hc.CloseWrite(); err != nil {
			return fmt.Errorf("tunnel: end the stream %s: %w", from, err)
		}
		return nil
	}
	// Without a half-close the only way to say "no more" is to close.
	return dst.Close()
}

func (t *Tunnel) setErr(err error) {
	t.mu.Lock()
	t.err = err
	t.mu.Unlock()
}

// Wait waits until the tunnel has ended, or ctx ends, and returns why it
// ended: nil when both directions ended cleanly.
func (t *Tunnel) Wait(ctx context.Context) error {
	select {
	case <-t.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.err
}

// Done is closed once the tunnel has ended.
func (t *Tunnel) Done() <-chan struct{} { return t.done }

// Stats says how many bytes went each way so far.
func (t *Tunnel) Stats() Stats {
	return Stats{ToRemote: t.toRemote.Load(), ToLocal: t.toLocal.Load()}
}

// Close cuts the tunnel (both connections, and the listener of Accept if
// nobody connected yet) and waits until it has ended.
func (t *Tunnel) Close() error {
	t.cancel()
	<-t.done
	return nil
}
