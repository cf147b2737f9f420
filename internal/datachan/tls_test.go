package datachan

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/godwit/godwit/internal/pki"
)

// tlsStater is a connection over TLS, as the Mux and Dialer return them.
type tlsStater interface{ ConnectionState() tls.ConnectionState }

// identity is a node's server and client TLS configurations, issued by a
// CA for 127.0.0.1.
type identity struct {
	server, client *tls.Config
}

func newCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("datachan-test")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t testing.TB, ca *pki.CA, name string) identity {
	t.Helper()
	f, err := ca.IssueTo(filepath.Join(t.TempDir(), name), pki.CertRequest{Name: name, Role: pki.RoleAgent, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	s, err := id.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	return identity{server: s, client: id.ClientConfig()}
}

// logBuffer collects a Mux's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// waitLog waits until the log has a line with every one of want.
func (b *logBuffer) waitLog(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		for _, line := range strings.Split(b.String(), "\n") {
			found := true
			for _, w := range want {
				found = found && strings.Contains(line, w)
			}
			if found {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line with %q; the log:\n%s", want, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serveTLSGRPC serves the health service on a TLS Mux's RPC side and
// records the common name of each caller's certificate.
func serveTLSGRPC(t *testing.T, m *Mux) (callers func() []string) {
	t.Helper()
	var mu sync.Mutex
	var names []string
	record := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
				mu.Lock()
				names = append(names, info.State.PeerCertificates[0].Subject.CommonName)
				mu.Unlock()
			}
		}
		return handler(ctx, req)
	}
	srv := grpc.NewServer(grpc.Creds(m.ServerCredentials()), grpc.UnaryInterceptor(record))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(m.RPCListener())
	t.Cleanup(srv.Stop)
	return func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), names...)
	}
}

func grpcClient(t *testing.T, m *Mux, creds credentials.TransportCredentials) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient(m.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

func listenTLS(t *testing.T, id identity, cfg Config) *Mux {
	t.Helper()
	cfg.TLS, cfg.ClientTLS = id.server, id.client
	return listen(t, cfg)
}

func goDialWith(ctx context.Context, d Dialer, m *Mux, tok string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		c, err := d.Dial(ctx, m.Addr().String(), tok)
		ch <- result{c, err}
	}()
	return ch
}

func TestTLSGRPCAndDataShareOneListener(t *testing.T) {
	ca := newCA(t)
	node, operator := issue(t, ca, "node-a"), issue(t, ca, "operator")
	m := listenTLS(t, node, Config{})
	callers := serveTLSGRPC(t, m)
	health := grpcClient(t, m, credentials.NewTLS(operator.client))
	checkHealth(t, health)
	if got := callers(); len(got) != 1 || got[0] != "operator" {
		t.Errorf("the handler saw callers %q, want the client certificate's name [operator]", got)
	}

	ctx := patient(t)
	tok := token(t)
	accepted := goAccept(ctx, m, tok)
	client := get(t, "Dial", goDialWith(ctx, Dialer{TLS: operator.client}, m, tok))
	server := get(t, "Accept", accepted)
	if _, ok := server.(tlsStater); !ok {
		t.Errorf("the data connection Accept returned is a %T, want a TLS connection", server)
	}
	exchange(t, client, server)
	checkHealth(t, health) // beside an open data connection
}

func TestTLSMuxDialsAnotherWithItsNodeCertificate(t *testing.T) {
	ca := newCA(t)
	src := listenTLS(t, issue(t, ca, "src"), Config{})
	dst := listenTLS(t, issue(t, ca, "dst"), Config{})
	ctx := patient(t)
	if err := src.Probe(ctx, dst.Addr().String()); err != nil {
		t.Fatalf("probe from one node to another of the same CA: %v", err)
	}
	tok := token(t)
	accepted := goAccept(ctx, dst, tok)
	sent := make(chan result, 1)
	go func() {
		c, err := src.Dial(ctx, dst.Addr().String(), tok)
		sent <- result{c, err}
	}()
	server := get(t, "Accept", accepted)
	exchange(t, get(t, "Mux.Dial", sent), server)
	if state := server.(tlsStater).ConnectionState(); len(state.PeerCertificates) == 0 || state.PeerCertificates[0].Subject.CommonName != "src" {
		t.Errorf("the destination saw the certificate %v, want the source's node certificate (src)", state.PeerCertificates)
	}
}

func TestTLSRefusesWhatDoesNotMatch(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	node, client, stranger := issue(t, ca, "node"), issue(t, ca, "client"), issue(t, other, "stranger")
	noCert := client.client.Clone()
	noCert.Certificates = nil
	// It trusts the server, but its own certificate is of another CA.
	strangerCert := client.client.Clone()
	strangerCert.Certificates = stranger.client.Certificates
	tests := []struct {
		name string
		// plaintext serves the Mux without TLS.
		plaintext bool
		// dialer opens the data connection.
		dialer Dialer
		// want is the client's error; wantMsg a part of it.
		want    error
		wantMsg string
		// wantLog are parts of the server's log line about it.
		wantLog []string
	}{
		{name: "a plaintext data connection to a TLS agent", dialer: Dialer{},
			want: ErrTLSRequired, wantMsg: "requires TLS",
			wantLog: []string{"plaintext connection refused", "client=\"data connection\"", "--tls-ca"}},
		{name: "a client without a certificate", dialer: Dialer{TLS: noCert},
			want: ErrHandshake, wantMsg: "refused this side's certificate",
			wantLog: []string{"TLS handshake failed"}},
		{name: "a client with a certificate of another CA", dialer: Dialer{TLS: strangerCert},
			want: ErrHandshake, wantMsg: "refused this side's certificate",
			wantLog: []string{"TLS handshake failed", "certificate"}},
		{name: "a TLS client of a plaintext agent", plaintext: true, dialer: Dialer{TLS: client.client},
			want: ErrPlaintextServer, wantMsg: "--insecure",
			wantLog: []string{"TLS connection refused", "serves plaintext"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log logBuffer
			var m *Mux
			if tt.plaintext {
				m = listen(t, Config{Log: log.logger()})
			} else {
				m = listenTLS(t, node, Config{Log: log.logger()})
			}
			ctx := patient(t)
			for _, try := range []struct {
				what string
				err  error
			}{
				{"Dial", func() error { _, err := tt.dialer.Dial(ctx, m.Addr().String(), token(t)); return err }()},
				{"Probe", tt.dialer.Probe(ctx, m.Addr().String())},
			} {
				if !errors.Is(try.err, tt.want) || !strings.Contains(try.err.Error(), tt.wantMsg) {
					t.Errorf("%s: %v, want %v saying %q", try.what, try.err, tt.want, tt.wantMsg)
				}
			}
			log.waitLog(t, tt.wantLog...)
			// The refused client held up nobody: a good one gets through.
			good := Dialer{TLS: client.client}
			if tt.plaintext {
				good = Dialer{}
			}
			tok := token(t)
			accepted := goAccept(ctx, m, tok)
			exchange(t, get(t, "a good client's Dial", goDialWith(ctx, good, m, tok)), get(t, "Accept", accepted))
		})
	}
}

func TestTLSServerOfAnotherCAIsNotTrusted(t *testing.T) {
	m := listenTLS(t, issue(t, newCA(t), "impostor"), Config{})
	client := issue(t, newCA(t), "client")
	_, err := Dialer{TLS: client.client}.Dial(patient(t), m.Addr().String(), token(t))
	if !errors.Is(err, ErrHandshake) || !strings.Contains(err.Error(), "server's certificate is not trusted") {
		t.Fatalf("Dial to a server of another CA: %v, want %v saying the server is not trusted", err, ErrHandshake)
	}
}

func TestTLSRefusesPlaintextGRPC(t *testing.T) {
	ca := newCA(t)
	var log logBuffer
	m := listenTLS(t, issue(t, ca, "node"), Config{Log: log.logger()})
	serveTLSGRPC(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := grpcClient(t, m, insecure.NewCredentials()).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		t.Fatal("a plaintext gRPC client was served by a TLS agent")
	}
	log.waitLog(t, "plaintext connection refused", "client=gRPC")
	checkHealth(t, grpcClient(t, m, credentials.NewTLS(issue(t, ca, "operator").client)))
}

func TestTLSRefusesGRPCOfAnotherCA(t *testing.T) {
	m := listenTLS(t, issue(t, newCA(t), "node"), Config{})
	serveTLSGRPC(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	_, err := grpcClient(t, m, credentials.NewTLS(issue(t, newCA(t), "stranger").client)).Check(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		t.Fatal("a gRPC client of another CA was served")
	}
}

func TestTLSSilentClientsBlockNobody(t *testing.T) {
	ca := newCA(t)
	id := issue(t, ca, "node")
	m := listenTLS(t, id, Config{HandshakeTimeout: time.Hour})
	for _, first := range []string{"", "\x16\x03\x01"} { // nothing, or a ClientHello's start
		c, err := net.Dial("tcp", m.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := c.Write([]byte(first)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := patient(t)
	tok := token(t)
	accepted := goAccept(ctx, m, tok)
	exchange(t, get(t, "Dial", goDialWith(ctx, Dialer{TLS: id.client}, m, tok)), get(t, "Accept", accepted))
}

func TestTLSSilentClientIsDropped(t *testing.T) {
	m := listenTLS(t, issue(t, newCA(t), "node"), Config{HandshakeTimeout: 100 * time.Millisecond})
	c, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(patience))
	if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("a silent connection read %v, want it closed by the mux", err)
	}
}

func TestProbeIsAnsweredAndNeverClaimed(t *testing.T) {
	m := listen(t, Config{})
	if err := (Dialer{}).Probe(patient(t), m.Addr().String()); err != nil {
		t.Fatalf("probe: %v", err)
	}
	if _, err := m.Accept(patient(t), probeToken); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("Accept of the probe token: %v, want %v", err, ErrInvalidToken)
	}
	waitEarly(t, m, 0)
}

func TestTLSMuxWithoutClientCredentialsCannotDial(t *testing.T) {
	m := listen(t, Config{TLS: issue(t, newCA(t), "node").server})
	if _, err := m.Dial(patient(t), m.Addr().String(), token(t)); err == nil || !strings.Contains(err.Error(), "ClientTLS") {
		t.Fatalf("Dial of a TLS Mux without ClientTLS: %v, want an error naming Config.ClientTLS", err)
	}
}
