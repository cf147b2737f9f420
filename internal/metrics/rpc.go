package metrics

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// RPC counts a gRPC server's calls by method and status code.
type RPC struct {
	requests *prometheus.CounterVec
}

// NewRPC registers godwit_<daemon>_api_requests_total{method, code} in
// reg: the calls the daemon's gRPC server answered, by full method name
// (/godwit.v1.ClusterService/Run) and gRPC status code (OK,
// PermissionDenied, ...). daemon is "agent" or "scheduler".
func NewRPC(reg prometheus.Registerer, daemon string) *RPC {
	m := &RPC{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Subsystem: daemon,
			Name:      "api_requests_total",
			Help:      "gRPC API calls answered, by full method name and status code (a refused caller counts as PermissionDenied or Unauthenticated).",
		}, []string{"method", "code"}),
	}
	reg.MustRegister(m.requests)
	return m
}

// ServerOptions are the interceptors that count every call. Put them
// before the server's other interceptors, so that a call they refuse
// (authorization) is counted with its code. A nil RPC returns none.
func (m *RPC) ServerOptions() []grpc.ServerOption {
	if m == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.StreamServerInterceptor()),
	}
}

// UnaryServerInterceptor counts each unary call once its handler (and
// the interceptors after this one) returned.
func (m *RPC) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		m.count(info.FullMethod, err)
		return resp, err
	}
}

// StreamServerInterceptor counts each stream once it ended, with the
// code it ended with.
func (m *RPC) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		m.count(info.FullMethod, err)
		return err
	}
}

// count records one call with the code the client sees.
func (m *RPC) count(method string, err error) {
	m.requests.WithLabelValues(method, codeOf(err).String()).Inc()
}

// codeOf is the status code gRPC sends for a handler's error: a status
// error's own, a bare context error's matching code (Canceled,
// DeadlineExceeded), Unknown for any other error, OK for nil.
func codeOf(err error) codes.Code {
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	return status.FromContextError(err).Code()
}
