package authz

import (
	"context"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Options are how a server's interceptors enforce its policy.
type Options struct {
	// Insecure says that the server serves plaintext (--insecure): every
	// call is allowed, since there is nobody to check. A server that
	// serves TLS leaves it false, and then a call that reaches it without
	// a verified certificate (plaintext, by a mistake in its credentials)
	// is refused.
	Insecure bool
	// Log receives a warning for every refused call; nil discards them.
	Log *slog.Logger
}

// ServerOptions are the interceptors, unary and stream, that enforce p on
// a gRPC server: add them to grpc.NewServer's options. They chain after
// any interceptors given before them.
func ServerOptions(p Policy, opts Options) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(UnaryServerInterceptor(p, opts)),
		grpc.ChainStreamInterceptor(StreamServerInterceptor(p, opts)),
	}
}

// UnaryServerInterceptor refuses a unary call that p does not allow the
// caller (see Authorize) before its handler runs: codes.Unauthenticated
// when the caller has no verified identity, codes.PermissionDenied when
// its role may not call the method or the method is not in p.
func UnaryServerInterceptor(p Policy, opts Options) grpc.UnaryServerInterceptor {
	a := newAuthorizer(p, opts)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := a.check(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is UnaryServerInterceptor for streams: a
// refused stream ends before its handler reads or sends anything.
func StreamServerInterceptor(p Policy, opts Options) grpc.StreamServerInterceptor {
	a := newAuthorizer(p, opts)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := a.check(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

type authorizer struct {
	policy   Policy
	insecure bool
	log      *slog.Logger
}

func newAuthorizer(p Policy, opts Options) *authorizer {
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &authorizer{policy: p, insecure: opts.Insecure, log: log}
}

// check returns nil when the call may go on, else its gRPC status error.
func (a *authorizer) check(ctx context.Context, method string) error {
	if a.insecure {
		return nil
	}
	remote := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		remote = p.Addr.String()
	}
	id, err := Caller(ctx)
	if err == nil && !id.Authenticated() {
		err = fmt.Errorf("%w: this server serves TLS, and the call came without a certificate: give the client the cluster's CA, a certificate and its key", ErrUnauthenticated)
	}
	if err != nil {
		a.log.Warn("call refused: the caller has no verified identity", "method", method, "remote", remote, "error", err)
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if err := a.policy.Authorize(id, method); err != nil {
		a.log.Warn("call refused by the policy", "method", method, "caller", id.Name, "role", string(id.Role), "remote", remote, "error", err)
		return status.Error(codes.PermissionDenied, err.Error())
	}
	return nil
}
