package rpc

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

	"github.com/godwit/godwit/internal/datachan"
)

// patience bounds a call that should answer at once.
const patience = 10 * time.Second

// seen records the stall timeout each handler's context carried.
type seen struct {
	mu    sync.Mutex
	stall []time.Duration
}

func (s *seen) add(ctx context.Context) {
	s.mu.Lock()
	s.stall = append(s.stall, datachan.StallTimeout(ctx))
	s.mu.Unlock()
}

func (s *seen) last() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.stall) == 0 {
		return -1
	}
	return s.stall[len(s.stall)-1]
}

// serve runs the health service with ServerOptions and returns a client
// dialled with DialOptions, and what the handlers' contexts carried.
func serve(t *testing.T) (healthpb.HealthClient, *seen) {
	t.Helper()
	s := &seen{}
	// Chained after ServerOptions' interceptors: these see the context
	// the handler gets.
	record := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		s.add(ctx)
		return h(ctx, req)
	})
	recordStream := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		s.add(ss.Context())
		return h(srv, ss)
	})
	srv := grpc.NewServer(append(ServerOptions(), record, recordStream)...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), append(DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn), s
}

// TestStallTimeoutTravelsWithTheCall: the stall timeout on a client's
// context reaches the server's handler, on unary and streaming calls; a
// call without one, or with a malformed header, leaves the server's own.
func TestStallTimeoutTravelsWithTheCall(t *testing.T) {
	client, s := serve(t)
	unary := func(ctx context.Context) error {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	stream := func(ctx context.Context) error {
		w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		_, err = w.Recv() // the handler has run once the first answer is in
		return err
	}
	for _, tt := range []struct {
		name string
		ctx  func(context.Context) context.Context
		call func(context.Context) error
		want time.Duration
	}{
		{"unary", func(ctx context.Context) context.Context {
			return datachan.WithStallTimeout(ctx, 1500*time.Millisecond)
		}, unary, 1500 * time.Millisecond},
		{"streaming", func(ctx context.Context) context.Context { return datachan.WithStallTimeout(ctx, 2*time.Second) }, stream, 2 * time.Second},
		{"none", func(ctx context.Context) context.Context { return ctx }, unary, 0},
		{"malformed", func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, StallTimeoutHeader, "soon")
		}, unary, 0},
		{"negative", func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, StallTimeoutHeader, "-5")
		}, stream, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if err := tt.call(tt.ctx(ctx)); err != nil {
				t.Fatal(err)
			}
			if got := s.last(); got != tt.want {
				t.Errorf("the handler's stall timeout = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestServerAllowsTheClientsPings: a server sends GOAWAY to a client that
// pings more often than its policy allows, failing its calls; the
// clients' keepalive must stay within the servers' policy, and the ping's
// timeout must leave a live but busy peer time to answer.
func TestServerAllowsTheClientsPings(t *testing.T) {
	if clientKeepalive.Time < serverEnforcement.MinTime {
		t.Errorf("clients ping every %s, but servers allow a ping only every %s", clientKeepalive.Time, serverEnforcement.MinTime)
	}
	if !serverEnforcement.PermitWithoutStream && clientKeepalive.PermitWithoutStream {
		t.Errorf("clients ping between calls, which servers refuse")
	}
	if clientKeepalive.Timeout < time.Second || serverKeepalive.Timeout < time.Second {
		t.Errorf("ping timeouts %s (client) and %s (server) would close connections to a merely busy peer", clientKeepalive.Timeout, serverKeepalive.Timeout)
	}
}
