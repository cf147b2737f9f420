package rpc

import (
	"context"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/godwit/godwit/internal/datachan"
)

// StallTimeoutHeader is the call metadata that carries the stall timeout
// of a call's data connections (datachan.WithStallTimeout on the
// client's context), in milliseconds, to the server, whose handler's
// context then carries it: the data connections an agent opens or
// accepts for a call stall out when its caller says, as gRPC's own
// deadline travels with a call.
const StallTimeoutHeader = "godwit-data-stall-timeout-ms"

// withStallHeader adds ctx's stall timeout, if any, to its outgoing
// metadata.
func withStallHeader(ctx context.Context) context.Context {
	d := datachan.StallTimeout(ctx)
	if d <= 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, StallTimeoutHeader, strconv.FormatInt(max(d.Milliseconds(), 1), 10))
}

// fromStallHeader returns ctx carrying the stall timeout of its incoming
// metadata; a missing or malformed one leaves it as it is, so that the
// server's own applies.
func fromStallHeader(ctx context.Context) context.Context {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ctx
	}
	v := md.Get(StallTimeoutHeader)
	if len(v) == 0 {
		return ctx
	}
	ms, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || ms <= 0 || ms > datachan.MaxStallTimeout.Milliseconds() {
		return ctx
	}
	return datachan.WithStallTimeout(ctx, time.Duration(ms)*time.Millisecond)
}

func stallUnaryClient(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	return invoker(withStallHeader(ctx), method, req, reply, cc, opts...)
}

func stallStreamClient(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return streamer(withStallHeader(ctx), desc, cc, method, opts...)
}

func stallUnaryServer(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	return handler(fromStallHeader(ctx), req)
}

func stallStreamServer(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx := fromStallHeader(ss.Context())
	if ctx == ss.Context() {
		return handler(srv, ss)
	}
	return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
}

// contextStream is a server stream whose handler sees another context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *contextStream) Context() context.Context { return s.ctx }
