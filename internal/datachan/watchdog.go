package datachan

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	// DefaultStallTimeout is how long a data connection may move no byte
	// while one side waits to read or write before it fails (StallError):
	// far longer than any pause of a healthy transfer (a checkpoint's
	// files are read as they are sent), short enough that a stopped peer
	// or a cut network does not hold a frozen container for long.
	DefaultStallTimeout = 30 * time.Second
	// MaxStallTimeout caps a stall timeout asked for through the context
	// (WithStallTimeout): a watchdog must watch.
	MaxStallTimeout = 24 * time.Hour

	// watchChunk bounds what one write hands to the connection beneath,
	// so that the watchdog sees a large Write progress: a link slower than
	// watchChunk per stall timeout (about 8 KiB/s at the default) counts
	// as stalled.
	watchChunk = 256 << 10

	// The TCP keepalive of every data connection (and, on a Mux's
	// listener, of gRPC's too): a peer whose host vanished (powered off,
	// cut off) is noticed on an idle connection after keepAliveIdle plus
	// keepAliveCount probes keepAliveInterval apart. It cannot notice a
	// stopped process, whose kernel still answers: the watchdog does.
	keepAliveIdle     = 15 * time.Second
	keepAliveInterval = 5 * time.Second
	keepAliveCount    = 3
)

// keepAlive is the TCP keepalive configuration of data connections.
var keepAlive = net.KeepAliveConfig{Enable: true, Idle: keepAliveIdle, Interval: keepAliveInterval, Count: keepAliveCount}

// ErrStalled: no byte moved on a data connection for its stall timeout
// while this side waited to read or write. Errors matching it are
// *StallError.
var ErrStalled = errors.New("data transfer stalled")

// StallError says which data connection stalled and for how long nothing
// moved. It matches ErrStalled.
type StallError struct {
	// Peer is the other end's address.
	Peer string
	// Timeout is the stall timeout that ran out.
	Timeout time.Duration
}

func (e *StallError) Error() string {
	return fmt.Sprintf("data transfer with %s stalled: no byte moved for %s; the peer's process may be stopped or hung, or the network to it cut", e.Peer, e.Timeout)
}

// Is makes a StallError match ErrStalled.
func (e *StallError) Is(target error) bool { return target == ErrStalled }

type stallKey struct{}

// WithStallTimeout returns a context that asks for a stall timeout of d
// on the data connections opened or accepted with it (Dial, Dialer.Dial,
// Mux.Dial, Mux.Accept), in place of the Dialer's or the Mux's own. A d
// of zero or less leaves ctx as it is; one above MaxStallTimeout is
// capped. internal/rpc carries it from a gRPC client's context to the
// server's handler, so that the caller of an agent's call sets the stall
// timeout of the data connections that the agent opens for it.
func WithStallTimeout(ctx context.Context, d time.Duration) context.Context {
	if d <= 0 {
		return ctx
	}
	return context.WithValue(ctx, stallKey{}, min(d, MaxStallTimeout))
}

// StallTimeout returns the stall timeout ctx asks for (WithStallTimeout),
// or zero.
func StallTimeout(ctx context.Context) time.Duration {
	d, _ := ctx.Value(stallKey{}).(time.Duration)
	return d
}

// stallTimeout picks a connection's stall timeout: ctx's, else the
// configured one, else the default.
func stallTimeout(ctx context.Context, configured time.Duration) time.Duration {
	if d := StallTimeout(ctx); d > 0 {
		return d
	}
	if configured > 0 {
		return configured
	}
	return DefaultStallTimeout
}

// Watch returns c watched for stalls: once a Read or Write has waited
// timeout with no byte moving either way, every pending and later call
// fails with a *StallError naming c's peer, so that whoever waits on the
// connection (a transfer to a stopped or cut-off peer) is not held for
// ever. Time in which nobody reads or writes does not count: a side that
// is busy with what it read stalls nothing. Closing the connection is
// still the caller's. Mux and Dialer watch their data connections
// already; Watch is for connections made otherwise.
func Watch(c net.Conn, timeout time.Duration) net.Conn {
	if timeout <= 0 {
		timeout = DefaultStallTimeout
	}
	w := &stallConn{Conn: c, timeout: timeout, peer: c.RemoteAddr().String()}
	w.mu.Lock() // check reads the timer
	w.timer = time.AfterFunc(timeout, w.check)
	w.mu.Unlock()
	switch c.(type) {
	case tlsStateConn:
		return &stallTLSConn{w}
	case io.ReaderFrom:
		return &stallReaderFrom{w}
	}
	return w
}

// stallConn is a watched connection (Watch).
type stallConn struct {
	net.Conn
	timeout time.Duration
	peer    string

	mu    sync.Mutex
	timer *time.Timer
	// pending counts the Reads and Writes under way; last is when a byte
	// last moved, or when the oldest of them began if none moved since.
	pending int
	last    time.Time
	stalled *StallError // set once the watchdog fired
	closed  bool
}

// begin marks a Read or Write starting.
func (c *stallConn) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stalled != nil {
		return c.stalled
	}
	if c.pending == 0 {
		c.last = time.Now()
	}
	c.pending++
	return nil
}

// end marks one ending after moving n bytes with err; an error caused by
// the watchdog is reported as the stall.
func (c *stallConn) end(n int64, err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pending--
	if n > 0 {
		c.last = time.Now()
	}
	if err != nil && c.stalled != nil {
		return c.stalled
	}
	return err
}

// check is the watchdog: it fails the connection when a call has waited
// the stall timeout without a byte moving, and otherwise looks again when
// that could next be so.
func (c *stallConn) check() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.stalled != nil {
		return
	}
	next := c.timeout
	if c.pending > 0 {
		idle := time.Since(c.last)
		if idle >= c.timeout {
			c.stalled = &StallError{Peer: c.peer, Timeout: c.timeout}
			// A deadline in the past wakes every pending call, on TLS
			// too (tls.Conn passes it down), without closing what the
			// caller owns.
			_ = c.Conn.SetDeadline(time.Unix(1, 0))
			return
		}
		next = c.timeout - idle
	}
	c.timer.Reset(next)
}

func (c *stallConn) Read(p []byte) (int, error) {
	if err := c.begin(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	return n, c.end(int64(n), err)
}

// Write writes p in chunks of at most watchChunk, so that the watchdog
// sees a large write progress.
func (c *stallConn) Write(p []byte) (int, error) {
	done := 0
	for len(p) > 0 {
		if err := c.begin(); err != nil {
			return done, err
		}
		n, err := c.Conn.Write(p[:min(len(p), watchChunk)])
		done += n
		p = p[n:]
		if err := c.end(int64(n), err); err != nil {
			return done, err
		}
	}
	return done, nil
}

// The deadline setters keep a stalled connection failed: the caller's
// deadline must not clear the watchdog's.

func (c *stallConn) SetDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetDeadline)
}

func (c *stallConn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetReadDeadline)
}

func (c *stallConn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(t, c.Conn.SetWriteDeadline)
}

func (c *stallConn) setDeadline(t time.Time, set func(time.Time) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stalled != nil {
		return c.stalled
	}
	return set(t)
}

// CloseWrite half-closes the connection where the one beneath can.
func (c *stallConn) CloseWrite() error {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok {
		return errors.New("datachan: this connection cannot be half-closed")
	}
	return cw.CloseWrite()
}

func (c *stallConn) Close() error {
	c.mu.Lock()
	c.closed = true
	stalled := c.stalled != nil
	c.mu.Unlock()
	c.timer.Stop()
	if a, ok := c.Conn.(interface{ abort() error }); ok && stalled {
		return a.abort()
	}
	return c.Conn.Close()
}

// stallReaderFrom is a watched connection whose connection beneath reads
// from a reader itself (a plaintext *net.TCPConn, which sends a file with
// sendfile): ReadFrom keeps that path, a chunk at a time.
type stallReaderFrom struct{ *stallConn }

func (c *stallReaderFrom) ReadFrom(r io.Reader) (int64, error) {
	rf := c.Conn.(io.ReaderFrom)
	var total int64
	for {
		if err := c.begin(); err != nil {
			return total, err
		}
		// A LimitedReader over a file keeps the kernel's path open.
		n, err := rf.ReadFrom(&io.LimitedReader{R: r, N: watchChunk})
		total += n
		if err := c.end(n, err); err != nil {
			return total, err
		}
		if n < watchChunk {
			return total, nil // r is at its end
		}
	}
}

// tlsStateConn is a TLS connection: what Watch keeps visible of one.
type tlsStateConn interface{ ConnectionState() tls.ConnectionState }

// stallTLSConn is a watched TLS connection: its TLS state stays visible.
type stallTLSConn struct{ *stallConn }

func (c *stallTLSConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(tlsStateConn).ConnectionState()
}

// keepAliveOn turns on a TCP connection's keepalive with the data
// connections' settings; other connections are left as they are.
func keepAliveOn(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetKeepAliveConfig(keepAlive)
	}
}

// abort closes a TLS connection's TCP connection without the TLS
// close_notify alert, which tls.Conn.Close would try to send for up to
// five seconds: to a stalled peer it would never get through.
func (c *tlsConn) abort() error { return c.batch.Conn.Close() }
