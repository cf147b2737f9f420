package coordinator

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A driver must stop acting the moment its leader stops leading: the
// next leader settles the migration from its record, and two drivers
// acting on one move could resume the source while the other commits the
// destination. The engine aborts on its own when its context ends (for
// an interrupted CLI that is right), so the fence is below it: every
// call to an agent made for a leadership term carries that term's context
// as a value (which survives context.WithoutCancel, as the engine's abort
// uses), and Fence's interceptors refuse the call once the term has
// ended. The engine then finds both sides unreachable and holds, acting
// on nothing.

type leadershipKey struct{}

// withLeadership is ctx carrying the leadership term lead.
func withLeadership(ctx, lead context.Context) context.Context {
	return context.WithValue(ctx, leadershipKey{}, lead)
}

// fenced refuses a call made for a leadership term that has ended.
func fenced(ctx context.Context) error {
	lead, ok := ctx.Value(leadershipKey{}).(context.Context)
	if !ok || lead.Err() == nil {
		return nil
	}
	return status.Error(codes.Unavailable, fmt.Sprintf("%v: this scheduler no longer leads; the next leader settles the migration", ErrNotLeading))
}

// FenceUnary and FenceStream are the client interceptors Sides must
// dial agents with.
func FenceUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if err := fenced(ctx); err != nil {
		return err
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// FenceStream: see FenceUnary.
func FenceStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if err := fenced(ctx); err != nil {
		return nil, err
	}
	return streamer(ctx, desc, cc, method, opts...)
}
