package datachan

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// testWait is the Config.Wait of tests that wait for a token to expire.
const testWait = 300 * time.Millisecond

// patience bounds how long a test waits for something that should happen
// at once: a hang fails the test instead of the test binary.
const patience = 10 * time.Second

func listen(t *testing.T, cfg Config) *Mux {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := Listen(l, cfg)
	t.Cleanup(func() { m.Close() })
	return m
}

// serveGRPC serves the standard health service on m's RPC side and
// returns a client of it.
func serveGRPC(t *testing.T, m *Mux) (healthpb.HealthClient, <-chan error) {
	t.Helper()
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(m.RPCListener()) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(m.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn), served
}

func checkHealth(t *testing.T, c healthpb.HealthClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	resp, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("gRPC through the mux: %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health %v, want SERVING", resp.GetStatus())
	}
}

func token(t *testing.T) string {
	t.Helper()
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func patient(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}

type result struct {
	conn net.Conn
	err  error
}

// goAccept runs Accept in its own goroutine.
func goAccept(ctx context.Context, m *Mux, tok string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		c, err := m.Accept(ctx, tok)
		ch <- result{c, err}
	}()
	return ch
}

// goDial runs Dial in its own goroutine.
func goDial(ctx context.Context, m *Mux, tok string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		c, err := Dial(ctx, m.Addr().String(), tok)
		ch <- result{c, err}
	}()
	return ch
}

func get(t *testing.T, what string, ch <-chan result) net.Conn {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		t.Cleanup(func() { r.conn.Close() })
		return r.conn
	case <-time.After(patience):
		t.Fatalf("%s did not return", what)
	}
	return nil
}

func getErr(t *testing.T, what string, ch <-chan result) error {
	t.Helper()
	select {
	case r := <-ch:
		if r.err == nil {
			r.conn.Close()
			t.Fatalf("%s succeeded, want an error", what)
		}
		return r.err
	case <-time.After(patience):
		t.Fatalf("%s did not return", what)
	}
	return nil
}

// exchange checks that bytes flow both ways, intact, between the two
// ends of a data connection.
func exchange(t *testing.T, client, server net.Conn) {
	t.Helper()
	for _, dir := range []struct {
		name     string
		from, to net.Conn
	}{{"client to server", client, server}, {"server to client", server, client}} {
		want := make([]byte, 3<<20)
		rand.Read(want)
		errc := make(chan error, 1)
		go func() {
			_, err := dir.from.Write(want)
			errc <- err
		}()
		got := make([]byte, len(want))
		dir.to.SetReadDeadline(time.Now().Add(patience))
		if _, err := io.ReadFull(dir.to, got); err != nil {
			t.Fatalf("%s: read: %v", dir.name, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s: write: %v", dir.name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: the bytes arrived changed", dir.name)
		}
	}
}

func TestGRPCAndDataShareOneListener(t *testing.T) {
	m := listen(t, Config{})
	health, _ := serveGRPC(t, m)
	checkHealth(t, health)

	ctx := patient(t)
	tok := token(t)
	accepted := goAccept(ctx, m, tok)
	client := get(t, "Dial", goDial(ctx, m, tok))
	server := get(t, "Accept", accepted)
	exchange(t, client, server)

	// gRPC still works beside an open data connection.
	checkHealth(t, health)
}

func TestEitherSideMayComeFirst(t *testing.T) {
	tests := []struct {
		name       string
		acceptLast bool
	}{
		{"the call claims the token, then the connection presents it", false},
		{"the connection presents the token, then the call claims it", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := listen(t, Config{})
			ctx := patient(t)
			tok := token(t)
			var accepted, dialed <-chan result
			if tt.acceptLast {
				dialed = goDial(ctx, m, tok)
				waitEarly(t, m, 1)
				accepted = goAccept(ctx, m, tok)
			} else {
				accepted = goAccept(ctx, m, tok)
				waitWaiting(t, m, 1)
				dialed = goDial(ctx, m, tok)
			}
			exchange(t, get(t, "Dial", dialed), get(t, "Accept", accepted))
		})
	}
}

// waitEarly waits until n connections wait for their token to be claimed.
func waitEarly(t *testing.T, m *Mux, n int) {
	t.Helper()
	waitFor(t, func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.early) == n })
}

// waitWaiting waits until n Accepts wait for their connection.
func waitWaiting(t *testing.T, m *Mux, n int) {
	t.Helper()
	waitFor(t, func() bool { m.mu.Lock(); defer m.mu.Unlock(); return len(m.waiting) == n })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestSilentClientsBlockNobody(t *testing.T) {
	m := listen(t, Config{HandshakeTimeout: time.Hour})
	health, _ := serveGRPC(t, m)
	silent := []string{"", "GOD", "PR"} // nothing, or less than decides the kind
	for _, first := range silent {
		c, err := net.Dial("tcp", m.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, first); err != nil {
			t.Fatal(err)
		}
	}
	checkHealth(t, health)
	ctx := patient(t)
	tok := token(t)
	accepted := goAccept(ctx, m, tok)
	exchange(t, get(t, "Dial", goDial(ctx, m, tok)), get(t, "Accept", accepted))
}

func TestSilentClientIsDropped(t *testing.T) {
	m := listen(t, Config{HandshakeTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(patience))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a silent connection read %v, want EOF: the mux closes it", err)
	}
}

func TestRPCConnectionKeepsItsFirstBytes(t *testing.T) {
	m := listen(t, Config{})
	const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n and what follows"
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, preface); err != nil {
		t.Fatal(err)
	}
	got, err := m.RPCListener().Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	buf := make([]byte, len(preface))
	got.SetReadDeadline(time.Now().Add(patience))
	if _, err := io.ReadFull(got, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != preface {
		t.Fatalf("the RPC side read %q, want %q", buf, preface)
	}
}

func TestTokensAreRefused(t *testing.T) {
	tests := []struct {
		name string
		// run makes one refused attempt and returns its error.
		run  func(t *testing.T, m *Mux) error
		want error
		// reason, when set, must be in the error.
		reason string
	}{
		{"a token nobody claims expires", func(t *testing.T, m *Mux) error {
			return getErr(t, "Dial", goDial(patient(t), m, token(t)))
		}, ErrRefused, reasonUnknown},
		{"a token claimed once is not claimed again by a connection", func(t *testing.T, m *Mux) error {
			ctx, tok := patient(t), token(t)
			accepted := goAccept(ctx, m, tok)
			get(t, "Dial", goDial(ctx, m, tok))
			get(t, "Accept", accepted)
			return getErr(t, "second Dial", goDial(ctx, m, tok))
		}, ErrRefused, "already used"},
		{"a token claimed once is not claimed again by a call", func(t *testing.T, m *Mux) error {
			ctx, tok := patient(t), token(t)
			accepted := goAccept(ctx, m, tok)
			get(t, "Dial", goDial(ctx, m, tok))
			get(t, "Accept", accepted)
			return getErr(t, "second Accept", goAccept(ctx, m, tok))
		}, ErrTokenUsed, ""},
		{"two calls cannot claim one token", func(t *testing.T, m *Mux) error {
			ctx, tok := patient(t), token(t)
			goAccept(ctx, m, tok)
			waitWaiting(t, m, 1)
			return getErr(t, "second Accept", goAccept(ctx, m, tok))
		}, ErrTokenUsed, ""},
		{"two connections cannot present one token", func(t *testing.T, m *Mux) error {
			ctx, tok := patient(t), token(t)
			first := goDial(ctx, m, tok)
			waitEarly(t, m, 1)
			err := getErr(t, "second Dial", goDial(ctx, m, tok))
			get(t, "Accept", goAccept(ctx, m, tok))
			get(t, "first Dial", first)
			return err
		}, ErrRefused, "presented twice"},
		{"a claimed token expires without a connection", func(t *testing.T, m *Mux) error {
			return getErr(t, "Accept", goAccept(patient(t), m, token(t)))
		}, ErrTimeout, ""},
		{"a call gives up when its context ends", func(t *testing.T, m *Mux) error {
			ctx, cancel := context.WithCancel(context.Background())
			accepted := goAccept(ctx, m, token(t))
			waitWaiting(t, m, 1)
			cancel()
			return getErr(t, "Accept", accepted)
		}, context.Canceled, ""},
		{"a call's malformed token", func(t *testing.T, m *Mux) error {
			return getErr(t, "Accept", goAccept(patient(t), m, strings.ToUpper(token(t))))
		}, ErrInvalidToken, ""},
		{"a connection's malformed token", func(t *testing.T, m *Mux) error {
			c, err := net.Dial("tcp", m.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The right length, so that the line is complete, but not hex.
			return handshake(c, strings.Repeat("x", TokenLen))
		}, ErrRefused, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := listen(t, Config{Wait: testWait})
			err := tt.run(t, m)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Fatalf("got %v, want the reason %q", err, tt.reason)
			}
			// Nothing is left waiting.
			waitEarly(t, m, 0)
			waitWaiting(t, m, 0)
		})
	}
}

func TestDialGivesUpWithItsContext(t *testing.T) {
	m := listen(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	dialed := goDial(ctx, m, token(t))
	waitEarly(t, m, 1)
	cancel()
	if err := getErr(t, "Dial", dialed); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want %v", err, context.Canceled)
	}
}

func TestCloseStopsBothSides(t *testing.T) {
	m := listen(t, Config{})
	health, served := serveGRPC(t, m)
	checkHealth(t, health)
	ctx := patient(t)
	waitingAccept := goAccept(ctx, m, token(t))
	earlyDial := goDial(ctx, m, token(t))
	waitWaiting(t, m, 1)
	waitEarly(t, m, 1)

	if err := m.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := getErr(t, "waiting Accept", waitingAccept); !errors.Is(err, ErrClosed) {
		t.Errorf("waiting Accept: %v, want %v", err, ErrClosed)
	}
	if err := getErr(t, "early Dial", earlyDial); !errors.Is(err, ErrRefused) {
		t.Errorf("early Dial: %v, want %v", err, ErrRefused)
	}
	select {
	case err := <-served:
		if err == nil {
			t.Errorf("Serve returned nil after its listener closed, want an error")
		}
	case <-time.After(patience):
		t.Fatal("grpc.Server.Serve did not return after Close")
	}
	if _, err := m.Accept(ctx, token(t)); !errors.Is(err, ErrClosed) {
		t.Errorf("Accept after Close: %v, want %v", err, ErrClosed)
	}
	if _, err := Dial(ctx, m.Addr().String(), token(t)); err == nil {
		t.Error("Dial after Close succeeded")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestGRPCStopClosesTheMux(t *testing.T) {
	m := listen(t, Config{})
	srv := grpc.NewServer()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(m.RPCListener()) }()
	accepted := goAccept(patient(t), m, token(t))
	waitWaiting(t, m, 1)
	srv.Stop()
	wg.Wait()
	if err := getErr(t, "Accept", accepted); !errors.Is(err, ErrClosed) {
		t.Fatalf("Accept after the gRPC server stopped: %v, want %v", err, ErrClosed)
	}
}

func TestNewTokenIsFreshAndWellFormed(t *testing.T) {
	a, b := token(t), token(t)
	if a == b {
		t.Fatal("two tokens are equal")
	}
	for _, tok := range []string{a, b} {
		if !validToken(tok) {
			t.Fatalf("token %q is not %d lowercase hex digits", tok, TokenLen)
		}
	}
}

// BenchmarkDataChannel measures one data connection's throughput through
// the mux, for comparison with a gRPC stream's, in plaintext and over
// mutual TLS: migrations send their images on it, so TLS must keep it
// fast (target: at least 60% of plaintext).
func BenchmarkDataChannel(b *testing.B) {
	ca := newCA(b)
	node := issue(b, ca, "node")
	for _, bc := range []struct {
		name   string
		cfg    Config
		dialer Dialer
	}{
		{"plaintext", Config{}, Dialer{}},
		{"TLS", Config{TLS: node.server, ClientTLS: node.client}, Dialer{TLS: node.client}},
	} {
		b.Run(bc.name, func(b *testing.B) { benchmarkDataChannel(b, bc.cfg, bc.dialer) })
	}
}

func benchmarkDataChannel(b *testing.B, cfg Config, d Dialer) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	m := Listen(l, cfg)
	defer m.Close()
	const size = 64 << 20
	out, in := make([]byte, 1<<20), make([]byte, 1<<20)
	b.SetBytes(size)
	for b.Loop() {
		tok, _ := NewToken()
		accepted := goAccept(context.Background(), m, tok)
		c, err := d.Dial(context.Background(), m.Addr().String(), tok)
		if err != nil {
			b.Fatal(err)
		}
		r := <-accepted
		if r.err != nil {
			b.Fatal(r.err)
		}
		go func() {
			for sent := 0; sent < size; sent += len(out) {
				if _, err := r.conn.Write(out); err != nil {
					break
				}
			}
			r.conn.Close()
		}()
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{c}, in)
		c.Close()
		if err != nil || n != size {
			b.Fatalf("read %d bytes (%v), want %d", n, err, size)
		}
	}
}
