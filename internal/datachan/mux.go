package datachan

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

const (
	// magic opens every data connection, followed by the token and a
	// newline. It cannot be mistaken for the start of HTTP/2 ("PRI * ")
	// or of TLS (a 0x16 byte).
	magic = "GODWIT-DATA/1 "
	// lineLen is the length of a data connection's first line: fixed, so
	// that the server reads exactly the line and nothing of the data
	// behind it.
	lineLen = len(magic) + TokenLen + 1

	// DefaultWait is how long a claimed token waits for its connection,
	// and a connection for the call that claims its token: the client
	// dials as soon as it has sent its request, so the other side is
	// normally there within a round trip.
	DefaultWait = 30 * time.Second
	// DefaultHandshakeTimeout bounds how long a new connection, of either
	// kind, may take to send its first bytes, so that a silent client
	// holds nothing for long.
	DefaultHandshakeTimeout = 10 * time.Second

	// maxEarly bounds the connections that presented a token no call has
	// claimed yet, so that strangers cannot pile them up.
	maxEarly = 256
	// usedTTL is how long a claimed token is remembered, so that a second
	// connection or call presenting it is refused at once rather than
	// after Wait.
	usedTTL = 10 * time.Minute
	// replyTimeout bounds writing the one-line answer to a data
	// connection.
	replyTimeout = 5 * time.Second
	// maxAcceptDelay caps the back-off after the listener fails to
	// accept (out of file descriptors, say).
	maxAcceptDelay = time.Second
	// firstAcceptDelay is the first such back-off.
	firstAcceptDelay = 5 * time.Millisecond

	// reasonUnknown is the answer to a token no call claimed in time.
	reasonUnknown = "unknown or expired data token"
)

var (
	// ErrClosed: the Mux was closed.
	ErrClosed = errors.New("data channel closed")
	// ErrTimeout: no connection presented the token within Config.Wait.
	ErrTimeout = errors.New("no data connection presented the token in time")
	// ErrInvalidToken: the token does not have a token's form (TokenLen
	// lowercase hex digits).
	ErrInvalidToken = errors.New("invalid data token")
	// ErrTokenUsed: the token was already claimed, or is being claimed by
	// another call.
	ErrTokenUsed = errors.New("data token already used")
)

// Config tunes a Mux; zero fields take the defaults.
type Config struct {
	// Wait bounds how long Accept waits for a connection presenting its
	// token, and how long a connection waits for a call to claim its
	// token (default DefaultWait).
	Wait time.Duration
	// HandshakeTimeout bounds how long a new connection may take to send
	// its first bytes (default DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// StallTimeout is how long a data connection that Accept or Dial
	// returns may move no byte while this side waits on it before it
	// fails with a *StallError (default DefaultStallTimeout); a context
	// given WithStallTimeout overrides it for its call.
	StallTimeout time.Duration
	// Log receives refused connections and accept errors (default:
	// discarded).
	Log *slog.Logger
	// TLS, when set, is the server's TLS configuration: every connection,
	// gRPC and data alike, must complete a TLS handshake (within
	// HandshakeTimeout) before its first bytes are read, and a plaintext
	// one is refused. Require client certificates in it for mutual TLS
	// (internal/pki's ServerConfig does). Nil serves plaintext.
	TLS *tls.Config
	// ClientTLS is what Mux.Dial and Mux.Probe present to other Muxes: the
	// client side of the same identity. Needed when TLS is set.
	ClientTLS *tls.Config
}

// Mux splits one listener between a gRPC server and data connections.
// Listen starts it; Close stops both sides.
type Mux struct {
	l         net.Listener
	wait      time.Duration
	handshake time.Duration
	stall     time.Duration
	log       *slog.Logger
	tls       *tls.Config // nil: plaintext
	dialer    Dialer

	rpcConns chan net.Conn // connections for RPCListener
	done     chan struct{} // closed by Close
	wg       sync.WaitGroup

	mu          sync.Mutex
	closed      bool
	closeErr    error                      // what RPCListener's Accept returns once closed
	handshaking map[net.Conn]struct{}      // closed by Close
	waiting     map[tokenKey]chan net.Conn // tokens claimed by Accept, no connection yet
	early       map[tokenKey]*earlyConn    // connections whose token no Accept claimed yet
	used        map[tokenKey]time.Time     // claimed tokens and when
}

// earlyConn is a data connection waiting for a call to claim its token.
type earlyConn struct {
	conn  net.Conn
	timer *time.Timer // refuses it after Wait
}

// Listen serves l: it accepts every connection and routes it, by its
// first bytes, to RPCListener or to Accept. The Mux owns l from now on.
func Listen(l net.Listener, cfg Config) *Mux {
	m := &Mux{
		l:           l,
		wait:        cfg.Wait,
		handshake:   cfg.HandshakeTimeout,
		stall:       cfg.StallTimeout,
		log:         cfg.Log,
		dialer:      Dialer{TLS: cfg.ClientTLS, StallTimeout: cfg.StallTimeout},
		rpcConns:    make(chan net.Conn),
		done:        make(chan struct{}),
		handshaking: make(map[net.Conn]struct{}),
		waiting:     make(map[tokenKey]chan net.Conn),
		early:       make(map[tokenKey]*earlyConn),
		used:        make(map[tokenKey]time.Time),
	}
	if m.wait <= 0 {
		m.wait = DefaultWait
	}
	if m.handshake <= 0 {
		m.handshake = DefaultHandshakeTimeout
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if cfg.TLS != nil {
		m.tls = serverTLS(cfg.TLS)
	}
	m.wg.Add(1)
	go m.acceptLoop()
	return m
}

// Dial opens a data connection to another Mux at addr presenting token,
// as Dial does, with the credentials this Mux serves with
// (Config.ClientTLS).
func (m *Mux) Dial(ctx context.Context, addr, token string) (net.Conn, error) {
	if err := m.checkClientTLS(); err != nil {
		return nil, err
	}
	return m.dialer.Dial(ctx, addr, token)
}

// Probe checks, as Dialer.Probe does, that this Mux's credentials open a
// data connection to the Mux at addr.
func (m *Mux) Probe(ctx context.Context, addr string) error {
	if err := m.checkClientTLS(); err != nil {
		return err
	}
	return m.dialer.Probe(ctx, addr)
}

func (m *Mux) checkClientTLS() error {
	if m.tls != nil && m.dialer.TLS == nil {
		return errors.New("datachan: this Mux serves TLS but has no client credentials (Config.ClientTLS) to dial with")
	}
	return nil
}

// Addr is the address the Mux listens on, for gRPC and data alike.
func (m *Mux) Addr() net.Addr { return m.l.Addr() }

// RPCListener returns the listener that yields every connection that is
// not a data connection, with its first bytes intact; give it to
// grpc.Server.Serve. Closing it closes the Mux.
func (m *Mux) RPCListener() net.Listener { return rpcListener{m} }

// Close stops accepting, refuses what waits, makes RPCListener's Accept
// and every waiting Accept return, and waits for the Mux's goroutines.
// Connections already handed out are their owners' to close. Close may be
// called more than once.
func (m *Mux) Close() error {
	err := m.shutdown(net.ErrClosed)
	m.wg.Wait()
	return err
}

// shutdown closes the listener and everything the Mux still holds, and
// makes RPCListener's Accept return why. Only the first call does
// anything.
func (m *Mux) shutdown(why error) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed, m.closeErr = true, why
	close(m.done)
	for c := range m.handshaking {
		c.Close()
	}
	early := m.early
	m.early = nil
	m.mu.Unlock()
	for _, e := range early {
		e.timer.Stop()
		e.conn.Close()
	}
	return m.l.Close()
}

func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	var delay time.Duration
	for {
		c, err := m.l.Accept()
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			// As net/http and gRPC do: back off on a temporary error
			// (out of file descriptors), give up on any other.
			if te, ok := err.(interface{ Temporary() bool }); ok && te.Temporary() {
				delay = min(max(2*delay, firstAcceptDelay), maxAcceptDelay)
				m.log.Warn("accept failed; retrying", "error", err, "delay", delay)
				select {
				case <-time.After(delay):
					continue
				case <-m.done:
					return
				}
			}
			m.log.Error("accept failed; the listener stops", "error", err)
			m.shutdown(fmt.Errorf("accept: %w", err))
			return
		}
		delay = 0
		keepAliveOn(c) // watchdog.go
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			c.Close()
			return
		}
		m.handshaking[c] = struct{}{}
		m.wg.Add(1)
		m.mu.Unlock()
		go m.route(c)
	}
}

// route runs a new connection's TLS handshake, when the Mux serves TLS,
// and reads its first bytes, both under one deadline, in its own
// goroutine so that a slow client delays nobody else, and hands it on.
func (m *Mux) route(conn net.Conn) {
	defer m.wg.Done()
	var (
		kind  connKind
		token string
	)
	c, err := conn, conn.SetDeadline(time.Now().Add(m.handshake))
	if err == nil {
		c, err = m.secure(conn)
	}
	if err == nil {
		kind, token, err = m.readHead(&c)
	}
	m.mu.Lock()
	delete(m.handshaking, conn)
	closed := m.closed
	m.mu.Unlock()
	switch {
	case closed:
		conn.Close()
	case err != nil && c == nil:
		conn.Close() // secure logged why
	case err != nil:
		m.log.Debug("connection dropped before it said what it is", "remote", c.RemoteAddr().String(), "error", err)
		c.Close()
	case kind == kindTLS:
		m.log.Warn("TLS connection refused: this agent serves plaintext (--insecure); give the client no TLS credentials, or start the agent with --tls-ca, --tls-cert and --tls-key",
			"remote", c.RemoteAddr().String())
		answerMismatch(c, "ERR "+reasonPlaintext+"\n")
	case kind == kindRPC:
		select {
		case m.rpcConns <- c:
		case <-m.done:
			c.Close()
		}
	case token == "":
		m.refuse(c, "malformed data token")
	case token == probeToken:
		m.answerProbe(c)
	default:
		m.present(c, token)
	}
}

type connKind int

const (
	kindRPC connKind = iota
	kindData
	// kindTLS is a TLS client of a Mux that serves plaintext.
	kindTLS
)

// readHead reads exactly as much as decides *cp's kind, under the
// deadline route set: the magic's length, then for a data connection the
// rest of its line. An RPC connection is replaced by one that reads its
// first bytes again. For a data connection whose line is malformed the
// token is empty.
func (m *Mux) readHead(cp *net.Conn) (connKind, string, error) {
	c := *cp
	head := make([]byte, len(magic))
	if _, err := io.ReadFull(c, head); err != nil {
		return 0, "", err
	}
	if m.tls == nil && looksLikeTLS(head) {
		return kindTLS, "", nil
	}
	if string(head) != magic {
		if err := c.SetDeadline(time.Time{}); err != nil {
			return 0, "", err
		}
		*cp = &replayConn{Conn: c, head: head}
		return kindRPC, "", nil
	}
	rest := make([]byte, lineLen-len(magic))
	if _, err := io.ReadFull(c, rest); err != nil {
		return 0, "", err
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		return 0, "", err
	}
	token := rest[:TokenLen]
	if rest[TokenLen] != '\n' || !validToken(token) {
		return kindData, "", nil
	}
	return kindData, string(token), nil
}

// present files a data connection under its token: it goes to the
// Accept waiting for that token, or waits for one until Wait passes.
func (m *Mux) present(c net.Conn, token string) {
	k := keyOf(token)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		c.Close()
		return
	}
	if ch, ok := m.waiting[k]; ok {
		delete(m.waiting, k)
		m.markUsedLocked(k)
		ch <- c // buffered: Accept takes it
		m.mu.Unlock()
		return
	}
	reason := ""
	switch _, used := m.used[k]; {
	case used:
		reason = "data token already used"
	case m.early[k] != nil:
		reason = "data token presented twice"
	case len(m.early) >= maxEarly:
		reason = "too many data connections waiting; retry"
	default:
		e := &earlyConn{conn: c}
		e.timer = time.AfterFunc(m.wait, func() { m.expire(k, e) })
		m.early[k] = e
	}
	m.mu.Unlock()
	if reason != "" {
		m.refuse(c, reason)
	}
}

// expire refuses an early connection that no call claimed in time.
func (m *Mux) expire(k tokenKey, e *earlyConn) {
	m.mu.Lock()
	mine := m.early[k] == e
	if mine {
		delete(m.early, k)
	}
	m.mu.Unlock()
	if mine {
		m.refuse(e.conn, reasonUnknown)
	}
}

// answerProbe answers a probe (Dialer.Probe): the connection got through,
// TLS and all, and nothing more is to come on it.
func (m *Mux) answerProbe(c net.Conn) {
	m.log.Debug("data channel probe answered", "remote", c.RemoteAddr().String())
	_ = c.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, _ = io.WriteString(c, "OK\n")
	c.Close()
}

// refuse answers a data connection with the reason and closes it.
func (m *Mux) refuse(c net.Conn, reason string) {
	m.log.Info("data connection refused", "remote", c.RemoteAddr().String(), "reason", reason)
	_ = c.SetWriteDeadline(time.Now().Add(replyTimeout))
	_, _ = io.WriteString(c, "ERR "+reason+"\n")
	c.Close()
}

// markUsedLocked remembers a claimed token and forgets those claimed
// more than usedTTL ago.
func (m *Mux) markUsedLocked(k tokenKey) {
	now := time.Now()
	for old, at := range m.used {
		if now.Sub(at) > usedTTL {
			delete(m.used, old)
		}
	}
	m.used[k] = now
}

// Accept returns the data connection that presents token, waiting for it
// until ctx ends or Config.Wait passes (ErrTimeout). The connection may
// have arrived before Accept was called. A token is accepted once: a
// second Accept of it, or a second connection presenting it, is refused
// (ErrTokenUsed). The connection has been answered "OK" and is the
// caller's to close; the bytes on it are the call's. It is watched for
// stalls (Watch), with the stall timeout of ctx (WithStallTimeout) or of
// the Mux's Config.
func (m *Mux) Accept(ctx context.Context, token string) (net.Conn, error) {
	if !validToken(token) || token == probeToken {
		return nil, fmt.Errorf("%w: want %d lowercase hex digits", ErrInvalidToken, TokenLen)
	}
	k := keyOf(token)
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if _, used := m.used[k]; used || m.waiting[k] != nil {
		m.mu.Unlock()
		return nil, ErrTokenUsed
	}
	if e := m.early[k]; e != nil {
		delete(m.early, k)
		e.timer.Stop() // expire finds it gone if it already fired
		m.markUsedLocked(k)
		m.mu.Unlock()
		return m.watched(ctx, e.conn)
	}
	ch := make(chan net.Conn, 1)
	m.waiting[k] = ch
	m.mu.Unlock()

	t := time.NewTimer(m.wait)
	defer t.Stop()
	var err error
	select {
	case c := <-ch:
		return m.watched(ctx, c)
	case <-ctx.Done():
		err = ctx.Err()
	case <-t.C:
		err = ErrTimeout
	case <-m.done:
		err = ErrClosed
	}
	m.mu.Lock()
	mine := m.waiting[k] == ch
	if mine {
		delete(m.waiting, k)
	}
	m.mu.Unlock()
	if !mine {
		// The connection arrived as we gave up: it is in ch, and
		// closing it tells its client that the call went away.
		(<-ch).Close()
	}
	return nil, err
}

// watched answers a claimed data connection and puts it under the stall
// watchdog.
func (m *Mux) watched(ctx context.Context, c net.Conn) (net.Conn, error) {
	c, err := greet(c)
	if err != nil {
		return nil, err
	}
	return Watch(c, stallTimeout(ctx, m.stall)), nil
}

// greet answers a claimed data connection.
func greet(c net.Conn) (net.Conn, error) {
	err := c.SetWriteDeadline(time.Now().Add(replyTimeout))
	if err == nil {
		_, err = io.WriteString(c, "OK\n")
	}
	if err == nil {
		err = c.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("answer data connection: %w", err)
	}
	return c, nil
}

// rpcListener is the Mux seen as a net.Listener by a gRPC server.
type rpcListener struct{ m *Mux }

func (l rpcListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.rpcConns:
		return c, nil
	case <-l.m.done:
		l.m.mu.Lock()
		defer l.m.mu.Unlock()
		return nil, l.m.closeErr
	}
}

func (l rpcListener) Close() error   { return l.m.Close() }
func (l rpcListener) Addr() net.Addr { return l.m.Addr() }

// replayConn gives back the bytes read to decide a connection's kind
// before reading on.
type replayConn struct {
	net.Conn
	head []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
