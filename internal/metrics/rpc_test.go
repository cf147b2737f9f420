package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

const (
	healthCheck = "/grpc.health.v1.Health/Check"
	healthWatch = "/grpc.health.v1.Health/Watch"
)

func requests(t *testing.T, m *RPC, method, code string) float64 {
	t.Helper()
	return testutil.ToFloat64(m.requests.WithLabelValues(method, code))
}

func TestInterceptorsCountByMethodAndCode(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		wantCode string
	}{
		{name: "ok", err: nil, wantCode: "OK"},
		{name: "status error", err: status.Error(codes.NotFound, "no container c1"), wantCode: "NotFound"},
		{name: "wrapped status error", err: fmt.Errorf("run: %w", status.Error(codes.FailedPrecondition, "cordoned")), wantCode: "FailedPrecondition"},
		{name: "plain error", err: errors.New("disk full"), wantCode: "Unknown"},
		{name: "cancelled", err: context.Canceled, wantCode: "Canceled"},
		{name: "deadline", err: context.DeadlineExceeded, wantCode: "DeadlineExceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewRPC(prometheus.NewRegistry(), "agent")
			unary := m.UnaryServerInterceptor()
			for range 2 {
				_, err := unary(t.Context(), nil, &grpc.UnaryServerInfo{FullMethod: "/godwit.v1.AgentService/RunContainer"},
					func(context.Context, any) (any, error) { return nil, tt.err })
				if !errors.Is(err, tt.err) {
					t.Fatalf("the interceptor returned %v, want the handler's %v", err, tt.err)
				}
			}
			stream := m.StreamServerInterceptor()
			err := stream(nil, nil, &grpc.StreamServerInfo{FullMethod: "/godwit.v1.AgentService/Logs"},
				func(any, grpc.ServerStream) error { return tt.err })
			if !errors.Is(err, tt.err) {
				t.Fatalf("the stream interceptor returned %v, want the handler's %v", err, tt.err)
			}

			if got := requests(t, m, "/godwit.v1.AgentService/RunContainer", tt.wantCode); got != 2 {
				t.Errorf("RunContainer with %s: %v, want 2", tt.wantCode, got)
			}
			if got := requests(t, m, "/godwit.v1.AgentService/Logs", tt.wantCode); got != 1 {
				t.Errorf("Logs with %s: %v, want 1", tt.wantCode, got)
			}
			if n := testutil.CollectAndCount(m.requests); n != 2 {
				t.Errorf("%d series, want 2 (one per method, all with code %s)", n, tt.wantCode)
			}
		})
	}
}

// On a real server, the options count calls that an interceptor after
// them refuses (authorization), with the refusal's code, and streams.
func TestServerOptionsCountOnARealServer(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewRPC(reg, "scheduler")
	passUnary := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		return h(ctx, req)
	}
	refuseStreams := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		return status.Error(codes.PermissionDenied, "a viewer may not watch")
	}
	opts := append(m.ServerOptions(), grpc.ChainUnaryInterceptor(passUnary), grpc.ChainStreamInterceptor(refuseStreams))
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	hs.SetServingStatus("godwit", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "godwit"}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	for range 3 {
		if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: "nothing"}); status.Code(err) != codes.NotFound {
			t.Fatalf("Check of an unknown service: %v, want NotFound", err)
		}
	}
	w, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "godwit"})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("Watch: %v, want PermissionDenied", err)
	}

	for _, c := range []struct {
		method, code string
		want         float64
	}{
		{healthCheck, "OK", 1},
		{healthCheck, "NotFound", 3},
		{healthWatch, "PermissionDenied", 1},
	} {
		if got := requests(t, m, c.method, c.code); got != c.want {
			t.Errorf("%s %s: %v calls counted, want %v", c.method, c.code, got, c.want)
		}
	}
}

func TestNilMetricsCountNothing(t *testing.T) {
	var (
		r *RPC
		s *Scheduler
		a *Agent
	)
	if opts := r.ServerOptions(); opts != nil {
		t.Errorf("a nil RPC's options: %d, want none", len(opts))
	}
	if opts := s.ServerOptions(); opts != nil {
		t.Errorf("a nil Scheduler's options: %d, want none", len(opts))
	}
	// None of these may panic: a daemon without --metrics calls them.
	s.LeadershipChanged(true)
	a.MigrationStarted("source")
	a.MigrationEnded(MigrationEnd{Role: "source", Outcome: OutcomeDone})
	a.MigrationTransfer("checkpoint", 1)
	a.Checkpoint(OutcomeDone)
}
