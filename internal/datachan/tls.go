package datachan

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

const (
	// alpnHTTP2 is the application protocol gRPC's TLS clients insist the
	// server selects; a Mux serving TLS offers it beside alpnData.
	alpnHTTP2 = "h2"
	// alpnData is what a data connection's client offers, so that a
	// capture or a server log tells the two kinds apart.
	alpnData = "godwit-data/1"

	// tlsRecordHandshake and tlsMajorVersion open every TLS ClientHello:
	// a handshake record, protocol version 3.x.
	tlsRecordHandshake = 0x16
	tlsMajorVersion    = 0x03

	// mismatchDrain bounds what is read from a client that speaks the
	// wrong protocol after it has been answered, and mismatchWait how
	// long: the rest of its first message, so that closing the connection
	// does not reset it before the client has read the answer.
	mismatchDrain = 16 << 10
	mismatchWait  = time.Second

	// reasonTLSRequired answers a plaintext data connection to a Mux that
	// serves TLS, and reasonPlaintext a TLS client of one that does not.
	reasonTLSRequired = "this agent requires TLS: the client connected in plaintext"
	reasonPlaintext   = "this agent serves plaintext (started with --insecure): the client connected with TLS"
)

var (
	// ErrTLSRequired: the server serves TLS and the client connected in
	// plaintext.
	ErrTLSRequired = errors.New("the server requires TLS")
	// ErrPlaintextServer: the client connected with TLS and the server
	// serves plaintext (an agent started with --insecure).
	ErrPlaintextServer = errors.New("the server serves plaintext, not TLS")
	// ErrHandshake: the TLS handshake failed: one side did not accept the
	// other's certificate. The error says which.
	ErrHandshake = errors.New("TLS handshake failed")
)

// Dialer opens data connections, over TLS when TLS is set. The zero
// Dialer opens them in plaintext, for a Mux that serves none.
type Dialer struct {
	// TLS is the client's configuration (its certificate, the CA it
	// verifies the server against); nil means plaintext. An empty
	// ServerName is taken from the address dialled, so the server's
	// certificate must name that address.
	TLS *tls.Config
	// StallTimeout bounds connecting (TCP and TLS), and is how long a
	// data connection that Dial returns may move no byte while this side
	// waits on it before it fails with a *StallError (default
	// DefaultStallTimeout); a context given WithStallTimeout overrides it
	// for its call.
	StallTimeout time.Duration
}

// Dial opens a data connection to the server at addr presenting token, as
// the package's Dial does, over TLS when d.TLS is set. The connection is
// watched for stalls (Watch).
func (d Dialer) Dial(ctx context.Context, addr, token string) (net.Conn, error) {
	if !validToken(token) {
		return nil, fmt.Errorf("%w: want %d lowercase hex digits", ErrInvalidToken, TokenLen)
	}
	c, err := d.connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	if err := Handshake(ctx, c, token); err != nil {
		c.Close()
		return nil, fmt.Errorf("data connection to %s: %w", addr, explainTLS(err, d.TLS != nil))
	}
	return Watch(c, stallTimeout(ctx, d.StallTimeout)), nil
}

// Probe checks that a data connection to the server at addr can be
// opened with d's credentials, and that the server accepts them, without
// a call to claim it: the server answers a probe at once. It moves no
// data: a migration's source calls it before it freezes the container,
// so that credentials the destination refuses fail the move while the
// container still runs.
func (d Dialer) Probe(ctx context.Context, addr string) error {
	c, err := d.connect(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := Handshake(ctx, c, probeToken); err != nil {
		return fmt.Errorf("data connection to %s: %w", addr, explainTLS(err, d.TLS != nil))
	}
	return nil
}

// connect dials addr and, with TLS, completes the handshake, within the
// stall timeout: a peer cut off or stopped fails it with a *StallError.
func (d Dialer) connect(ctx context.Context, addr string) (_ net.Conn, err error) {
	stall := stallTimeout(ctx, d.StallTimeout)
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, stall)
	defer cancel()
	defer func() {
		if err != nil && parent.Err() == nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = fmt.Errorf("data connection to %s: connect: %w", addr, &StallError{Peer: addr, Timeout: stall})
		}
	}()
	nd := net.Dialer{KeepAliveConfig: keepAlive}
	c, err := nd.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("data connection to %s: %w", addr, err)
	}
	if d.TLS == nil {
		return c, nil
	}
	cfg := d.TLS.Clone()
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("data connection to %s: %w", addr, err)
		}
		cfg.ServerName = host
	}
	cfg.NextProtos = []string{alpnData}
	batch := newBatchConn(c)
	tc := tls.Client(batch, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("data connection to %s: %w", addr, explainTLS(err, true))
	}
	return &tlsConn{Conn: tc, batch: batch}, nil
}

// explainTLS turns what a client saw of a TLS mismatch into the
// package's errors; others it returns as they are. Under TLS 1.3 the
// server's verdict on the client's certificate arrives after the client's
// handshake has ended, with the first read, so it is looked for in every
// error of the exchange.
func explainTLS(err error, withTLS bool) error {
	var header tls.RecordHeaderError
	var verify *tls.CertificateVerificationError
	var op *net.OpError
	switch {
	case !withTLS:
		return err // ErrTLSRequired comes as the server's answer
	case errors.As(err, &header):
		return fmt.Errorf("%w: it answered a TLS handshake in plaintext; is it an agent started with --insecure? (%v)", ErrPlaintextServer, err)
	case errors.As(err, &verify):
		return fmt.Errorf("%w: the server's certificate is not trusted (%v): it must be signed by this side's CA and name the address dialled", ErrHandshake, verify.Err)
	case errors.As(err, &op) && op.Op == "remote error":
		return fmt.Errorf("%w: the server refused this side's certificate (%v): it must be signed by the server's CA", ErrHandshake, op.Err)
	}
	return err
}

// serverTLS is cfg as a Mux serves it: gRPC's and the data connections'
// application protocols are offered, so that gRPC's clients, which insist
// on ALPN, are content.
func serverTLS(cfg *tls.Config) *tls.Config {
	cfg = cfg.Clone()
	for _, p := range []string{alpnHTTP2, alpnData} {
		if !slices.Contains(cfg.NextProtos, p) {
			cfg.NextProtos = append(cfg.NextProtos, p)
		}
	}
	return cfg
}

// secure runs the server's TLS handshake on a new connection, under the
// deadline route set. A client that spoke plaintext is answered, if it is
// a data connection, with why it is refused, and logged either way.
func (m *Mux) secure(conn net.Conn) (net.Conn, error) {
	if m.tls == nil {
		return conn, nil
	}
	batch := newBatchConn(conn)
	tc := tls.Server(batch, m.tls)
	err := tc.Handshake()
	if err == nil {
		return &tlsConn{Conn: tc, batch: batch}, nil
	}
	remote := conn.RemoteAddr().String()
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &header) && header.Conn != nil:
		client := "unknown"
		switch head := string(header.RecordHeader[:]); {
		case head == magic[:len(head)]:
			client = "data connection"
			answerMismatch(conn, "ERR "+reasonTLSRequired+"\n")
		case head == http2Preface[:len(head)]:
			client = "gRPC"
			answerMismatch(conn, "")
		}
		m.log.Warn("plaintext connection refused: this agent requires TLS; give the client the cluster's CA, a certificate and its key (godwit --tls-ca, --tls-cert, --tls-key)",
			"remote", remote, "client", client)
	case errors.Is(err, io.EOF) || isTimeout(err):
		m.log.Debug("connection dropped during the TLS handshake", "remote", remote, "error", err)
	default:
		m.log.Warn("TLS handshake failed: the client's certificate is refused, or it refused this agent's", "remote", remote, "error", err)
	}
	return nil, err
}

// http2Preface opens every gRPC connection in plaintext.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// looksLikeTLS reports whether a connection's first bytes are a TLS
// handshake record.
func looksLikeTLS(head []byte) bool {
	return len(head) >= 2 && head[0] == tlsRecordHandshake && head[1] == tlsMajorVersion
}

// answerMismatch writes answer (if any) to a client that speaks the other
// protocol, then reads the rest of what it sent for a moment before
// closing: closing with unread bytes would reset the connection, and the
// client could lose the answer.
func answerMismatch(c net.Conn, answer string) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(mismatchWait))
	if answer != "" {
		if _, err := io.WriteString(c, answer); err != nil {
			return
		}
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, mismatchDrain))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ServerCredentials are the transport credentials of the gRPC server that
// serves RPCListener: with TLS, the handshake is already done (the Mux
// does it before it reads a connection's first bytes), so they pass the
// connection through and report its TLS state, which makes the client's
// certificate visible to handlers (peer.FromContext); without TLS they
// are insecure.NewCredentials. Give them to grpc.NewServer with
// grpc.Creds.
func (m *Mux) ServerCredentials() credentials.TransportCredentials {
	if m.tls == nil {
		return insecure.NewCredentials()
	}
	return muxCredentials{}
}

// muxCredentials are ServerCredentials over TLS.
type muxCredentials struct{}

func (muxCredentials) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	inner := c
	if r, ok := c.(*replayConn); ok {
		inner = r.Conn
	}
	tc, ok := inner.(*tlsConn)
	if !ok {
		return nil, nil, errors.New("datachan: a connection reached gRPC without passing the Mux's TLS handshake")
	}
	return c, credentials.TLSInfo{
		State:          tc.ConnectionState(),
		CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
	}, nil
}

func (muxCredentials) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("datachan: the Mux's credentials serve; clients use credentials.NewTLS")
}

func (muxCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3"}
}

func (c muxCredentials) Clone() credentials.TransportCredentials { return c }

func (muxCredentials) OverrideServerName(string) error { return nil }

// batchBytes is how many bytes of TLS records a Write gathers before it
// hands them to the kernel. TLS cuts what it sends into records of at
// most 16 KiB and writes each with a system call of its own; gathering
// them saves most of those calls, which on a bulk transfer cost about as
// much as the encryption.
const batchBytes = 256 << 10

// readBytes is how many bytes of TLS records a read of the connection
// asks the kernel for: tls.Conn reads a record at a time, little more
// than 16 KiB, and on a bulk transfer those calls cost as much as the
// writes' did.
const readBytes = 256 << 10

// batchConn is the TCP connection under a tls.Conn: while a Write of the
// tls.Conn above it is in progress (begin, end), the records it writes
// gather in a buffer and go out in batchBytes; any other write (an alert,
// a post-handshake message) first sends what has gathered, so that
// records leave in the order TLS made them. Reads go through a buffer of
// readBytes, which the tls.Conn alone reads, so no byte is skipped.
type batchConn struct {
	net.Conn
	in      *bufio.Reader // reads in readBytes, the TLS records of a Read
	mu      sync.Mutex
	buf     []byte
	writing int // Writes of the tls.Conn in progress
}

func newBatchConn(c net.Conn) *batchConn {
	return &batchConn{Conn: c, in: bufio.NewReaderSize(c, readBytes)}
}

func (b *batchConn) Read(p []byte) (int, error) { return b.in.Read(p) }

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.writing == 0 {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		return b.Conn.Write(p)
	}
	if b.buf == nil {
		b.buf = make([]byte, 0, batchBytes+maxRecord)
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= batchBytes {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (b *batchConn) begin() {
	b.mu.Lock()
	b.writing++
	b.mu.Unlock()
}

// end sends what the Write gathered.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writing--
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// maxRecord bounds one TLS record with its header and AEAD overhead.
const maxRecord = 16<<10 + 256

// tlsConn is a connection after its TLS handshake, its Writes batched
// (batchConn). It is a net.Conn with the tls.Conn's ConnectionState.
type tlsConn struct {
	*tls.Conn
	batch *batchConn
}

func (c *tlsConn) Write(p []byte) (int, error) {
	c.batch.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.batch.end(); err == nil {
		err = ferr
	}
	return n, err
}
