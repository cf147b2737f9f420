package tunnel

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// waitLimit bounds every wait of these tests, so that a tunnel that never
// ends fails the test instead of hanging it.
const waitLimit = 10 * time.Second

// tcpPair returns the two ends of one loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func wait(t *testing.T, tun *Tunnel) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err := tun.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		t.Fatal("the tunnel did not end")
	}
	return err
}

// readAll reads c to EOF within waitLimit.
func readAll(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read to the end: %v", err)
	}
	return b
}

// TestSpliceHalfClose: each end sees EOF when its peer stops sending,
// while the other way still flows; the tunnel ends once both ways have.
func TestSpliceHalfClose(t *testing.T) {
	client, localEnd := tcpPair(t)  // CRIU and the agent's local side
	remoteEnd, server := tcpPair(t) // the data connection and its far end
	tun := Splice(context.Background(), localEnd, remoteEnd)

	if _, err := client.Write([]byte("request")); err != nil {
		t.Fatal(err)
	}
	client.(*net.TCPConn).CloseWrite()
	if got := readAll(t, server); string(got) != "request" {
		t.Fatalf("far end read %q, want %q", got, "request")
	}
	// The local side stopped sending; the answer still gets through.
	if _, err := server.Write([]byte("answer")); err != nil {
		t.Fatal(err)
	}
	server.(*net.TCPConn).CloseWrite()
	if got := readAll(t, client); string(got) != "answer" {
		t.Fatalf("client read %q, want %q", got, "answer")
	}
	if err := wait(t, tun); err != nil {
		t.Fatalf("Wait: %v, want a clean end", err)
	}
	if got, want := tun.Stats(), (Stats{ToRemote: 7, ToLocal: 6}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

// TestSpliceCarriesBothWaysAtOnce: large streams both ways at the same
// time arrive intact (no deadlock, no byte lost or reordered).
func TestSpliceCarriesBothWaysAtOnce(t *testing.T) {
	client, localEnd := tcpPair(t)
	remoteEnd, server := tcpPair(t)
	tun := Splice(context.Background(), localEnd, remoteEnd)

	up, down := make([]byte, 8<<20), make([]byte, 3<<20)
	rand.Read(up)
	rand.Read(down)
	send := func(c net.Conn, b []byte) {
		c.Write(b)
		c.(*net.TCPConn).CloseWrite()
	}
	go send(client, up)
	go send(server, down)
	gotDown := make(chan []byte, 1)
	go func() { gotDown <- readAll(t, client) }()
	if got := readAll(t, server); !bytes.Equal(got, up) {
		t.Errorf("far end got %d bytes, not the %d sent", len(got), len(up))
	}
	if got := <-gotDown; !bytes.Equal(got, down) {
		t.Errorf("client got %d bytes, not the %d sent", len(got), len(down))
	}
	if err := wait(t, tun); err != nil {
		t.Fatalf("Wait: %v", err)
	}
}

func TestAccept(t *testing.T) {
	tests := []struct {
		name string
		// act does what happens to the listener's side; it returns the
		// error Wait must match (nil: a clean end).
		act func(t *testing.T, addr string, tun *Tunnel, cancel context.CancelFunc, server net.Conn) error
	}{
		{
			name: "the first connection is spliced, a second is refused",
			act: func(t *testing.T, addr string, tun *Tunnel, _ context.CancelFunc, server net.Conn) error {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.Write([]byte("pages"))
				c.(*net.TCPConn).CloseWrite()
				if got := readAll(t, server); string(got) != "pages" {
					t.Errorf("far end read %q", got)
				}
				// The listener is gone: nobody else reaches the far end.
				if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
					c2.Close()
					t.Errorf("a second connection to %s was accepted", addr)
				}
				server.(*net.TCPConn).CloseWrite()
				readAll(t, c)
				return nil
			},
		},
		{
			name: "cancelled before anyone connects: the far end is closed",
			act: func(t *testing.T, addr string, tun *Tunnel, cancel context.CancelFunc, server net.Conn) error {
				cancel()
				if got := readAll(t, server); len(got) != 0 {
					t.Errorf("far end read %q", got)
				}
				return context.Canceled
			},
		},
		{
			name: "closed before anyone connects",
			act: func(t *testing.T, addr string, tun *Tunnel, _ context.CancelFunc, server net.Conn) error {
				tun.Close()
				readAll(t, server)
				return context.Canceled
			},
		},
		{
			name: "the local side resets: the far end is cut and Wait says so",
			act: func(t *testing.T, addr string, tun *Tunnel, _ context.CancelFunc, server net.Conn) error {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.Write([]byte("partial"))
				readAllPrefix(t, server, len("partial"))
				c.(*net.TCPConn).SetLinger(0)
				c.Close() // RST
				server.SetReadDeadline(time.Now().Add(waitLimit))
				if _, err := io.ReadAll(server); err != nil && !errors.Is(err, io.EOF) {
					t.Logf("far end: %v", err)
				}
				return errAny
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			remoteEnd, server := tcpPair(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			tun := Accept(ctx, l, remoteEnd)
			want := tt.act(t, l.Addr().String(), tun, cancel, server)
			err = wait(t, tun)
			switch {
			case want == nil && err != nil:
				t.Errorf("Wait: %v, want a clean end", err)
			case want == errAny && err == nil:
				t.Error("Wait: nil, want the reset reported")
			case want != nil && want != errAny && !errors.Is(err, want):
				t.Errorf("Wait: %v, want %v", err, want)
			}
		})
	}
}

// errAny stands for any error in TestAccept's table.
var errAny = errors.New("any error")

func readAllPrefix(t *testing.T, c net.Conn, n int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(waitLimit))
	if _, err := io.ReadFull(c, make([]byte, n)); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
}
