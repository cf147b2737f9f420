package datachan

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// testStall is the stall timeout of the watchdog's tests: short, yet
// long against a loopback round trip on a busy machine.
const testStall = 300 * time.Millisecond

// stallSlack is how late a stall may be reported: timers and a loaded
// CPU.
const stallSlack = 2 * time.Second

// dataPair is a claimed data connection, client and server ends, between
// a Mux and a Dialer configured by the case.
func dataPair(ctx context.Context, t *testing.T, cfg Config, d Dialer) (client, server net.Conn) {
	t.Helper()
	m := listen(t, cfg)
	tok := token(t)
	accepted := goAccept(ctx, m, tok)
	client = get(t, "dial", goDialWith(ctx, d, m, tok))
	server = get(t, "accept", accepted)
	return client, server
}

// pairs are the ways a data connection is made: plaintext and TLS, with
// the stall timeout in the Mux's and Dialer's configuration or in the
// context.
func pairs(t *testing.T) map[string]func(t *testing.T) (client, server net.Conn) {
	ca := newCA(t)
	node := issue(t, ca, "node")
	return map[string]func(t *testing.T) (net.Conn, net.Conn){
		"plaintext, configured": func(t *testing.T) (net.Conn, net.Conn) {
			return dataPair(patient(t), t, Config{StallTimeout: testStall}, Dialer{StallTimeout: testStall})
		},
		"TLS, configured": func(t *testing.T) (net.Conn, net.Conn) {
			return dataPair(patient(t), t, Config{StallTimeout: testStall, TLS: node.server, ClientTLS: node.client},
				Dialer{TLS: node.client, StallTimeout: testStall})
		},
		"plaintext, from the context": func(t *testing.T) (net.Conn, net.Conn) {
			return dataPair(WithStallTimeout(patient(t), testStall), t, Config{}, Dialer{})
		},
		"TLS, from the context": func(t *testing.T) (net.Conn, net.Conn) {
			return dataPair(WithStallTimeout(patient(t), testStall), t, Config{TLS: node.server, ClientTLS: node.client}, Dialer{TLS: node.client})
		},
	}
}

// assertStalled checks that err is a stall of about testStall that names
// peer, reported no sooner than the stall timeout and not much later.
func assertStalled(t *testing.T, what string, err error, peer net.Addr, waited time.Duration) {
	t.Helper()
	var stall *StallError
	if !errors.As(err, &stall) || !errors.Is(err, ErrStalled) {
		t.Fatalf("%s: err = %v, want a stall", what, err)
	}
	if !strings.Contains(err.Error(), peer.String()) || !strings.Contains(err.Error(), "stalled") {
		t.Errorf("%s: %q does not say that the transfer with %s stalled", what, err, peer)
	}
	if waited < testStall || waited > testStall+stallSlack {
		t.Errorf("%s: failed after %s, want after the stall timeout %s", what, waited, testStall)
	}
}

// TestStalledReaderFails: the receiving side of a transfer whose sender
// stops sending fails once nothing arrived for the stall timeout, and
// goes on failing.
func TestStalledReaderFails(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each waits on its own timers
			client, server := pair(t)
			if _, err := client.Write([]byte("first bytes")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			if _, err := io.ReadFull(server, buf[:len("first bytes")]); err != nil {
				t.Fatalf("read what was sent: %v", err)
			}
			start := time.Now()
			_, err := server.Read(buf) // the client sends nothing more
			assertStalled(t, "read", err, server.RemoteAddr(), time.Since(start))
			if _, err := server.Read(buf); !errors.Is(err, ErrStalled) {
				t.Errorf("read after the stall: %v, want the stall again", err)
			}
		})
	}
}

// TestStalledWriterFails: the sending side of a transfer whose receiver
// stopped reading (a stopped process: its kernel still holds the
// connection open) fails once the buffers are full and nothing moved for
// the stall timeout, and closing it does not wait on the peer.
func TestStalledWriterFails(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each waits on its own timers
			client, server := pair(t)
			_ = server // never read
			chunk := make([]byte, 1<<20)
			start := time.Now()
			var err error
			for deadline := time.Now().Add(patience); err == nil && time.Now().Before(deadline); {
				start = time.Now() // the stall starts with the write that blocks
				_, err = client.Write(chunk)
			}
			assertStalled(t, "write", err, client.RemoteAddr(), time.Since(start))
			closeStart := time.Now()
			client.Close()
			if took := time.Since(closeStart); took > time.Second {
				t.Errorf("closing the stalled connection took %s", took)
			}
		})
	}
}

// TestSlowTransferIsNoStall: bytes that trickle in more slowly than the
// reader asks for them, but never a stall timeout apart, and time in
// which nobody waits on the connection, never count as a stall.
func TestSlowTransferIsNoStall(t *testing.T) {
	for name, pair := range pairs(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel() // each waits on its own timers
			client, server := pair(t)
			const drops = 4
			go func() {
				for range drops {
					time.Sleep(testStall / 3)
					if _, err := client.Write([]byte{'x'}); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, 1)
			for i := range drops {
				if _, err := io.ReadFull(server, buf); err != nil {
					t.Fatalf("read byte %d of a slow but steady transfer: %v", i, err)
				}
			}
			// Nobody reads for longer than the stall timeout: no stall.
			time.Sleep(2 * testStall)
			if _, err := client.Write([]byte{'y'}); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(server, buf); err != nil || buf[0] != 'y' {
				t.Fatalf("read after an idle spell: %q, %v", buf, err)
			}
		})
	}
}

// TestConnectToSilentPeerFails: a server that accepts the TCP connection
// but never answers the TLS handshake (a stopped agent, whose kernel
// still accepts) fails the dial after the stall timeout.
func TestConnectToSilentPeerFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	node := issue(t, newCA(t), "node")
	start := time.Now()
	_, err = Dialer{TLS: node.client, StallTimeout: testStall}.Dial(patient(t), l.Addr().String(), token(t))
	assertStalled(t, "dial", err, l.Addr(), time.Since(start))
}

func TestWithStallTimeout(t *testing.T) {
	for _, tt := range []struct {
		name string
		d    time.Duration
		want time.Duration
	}{
		{"set", time.Second, time.Second},
		{"zero leaves it unset", 0, 0},
		{"negative leaves it unset", -time.Second, 0},
		{"capped", 1000 * time.Hour, MaxStallTimeout},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := StallTimeout(WithStallTimeout(context.Background(), tt.d)); got != tt.want {
				t.Errorf("StallTimeout(WithStallTimeout(%s)) = %s, want %s", tt.d, got, tt.want)
			}
		})
	}
}
