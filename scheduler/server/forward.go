package server

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the proto codec that frameCodec wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

// A follower forwards a call it must not serve itself to the leader
// without decoding what it forwards: the request and the answers travel
// as the bytes they arrived as (frames). One generic forwarder serves
// every method, so a new RPC needs only a line in the policy.

// frame is a message in its wire form.
type frame struct{ data []byte }

// frameCodec is gRPC's proto codec, except that a *frame is sent and
// received as it is. Its name is "proto", so peers see no difference.
type frameCodec struct{ proto encoding.CodecV2 }

func newFrameCodec() frameCodec { return frameCodec{proto: encoding.GetCodecV2("proto")} }

func (c frameCodec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		return mem.BufferSlice{mem.SliceBuffer(f.data)}, nil
	}
	return c.proto.Marshal(v)
}

func (c frameCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if f, ok := v.(*frame); ok {
		f.data = data.Materialize()
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

func (frameCodec) Name() string { return "proto" }

// leaderRoute says where a call goes: served here (nil conn), or
// forwarded to the leader's connection.
type leaderRoute func(ctx context.Context, method string) (*grpc.ClientConn, error)

// forwardUnary is the unary interceptor that forwards the calls route
// sends to the leader. The forwarded call carries the original caller in
// its metadata (forwardedCaller), which the leader trusts only from
// another scheduler.
func forwardUnary(route leaderRoute, codec frameCodec) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		conn, err := route(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		if conn == nil {
			return handler(ctx, req)
		}
		in, err := codec.proto.Marshal(req)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "forward %s: %v", info.FullMethod, err)
		}
		out := new(frame)
		err = conn.Invoke(withForwardedCaller(ctx), info.FullMethod, &frame{data: in.Materialize()}, out,
			grpc.ForceCodecV2(codec))
		in.Free()
		if err != nil {
			return nil, leaderUnreachable(conn, err)
		}
		return out, nil
	}
}

// forwardStream is forwardUnary for streaming calls: both directions
// are pumped frame by frame until either side ends.
func forwardStream(route leaderRoute, codec frameCodec) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx := ss.Context()
		conn, err := route(ctx, info.FullMethod)
		if err != nil {
			return err
		}
		if conn == nil {
			return handler(srv, ss)
		}
		ctx, cancel := context.WithCancel(withForwardedCaller(ctx))
		defer cancel()
		desc := &grpc.StreamDesc{ServerStreams: info.IsServerStream, ClientStreams: info.IsClientStream}
		cs, err := conn.NewStream(ctx, desc, info.FullMethod, grpc.ForceCodecV2(codec))
		if err != nil {
			return leaderUnreachable(conn, err)
		}
		upErr := make(chan error, 1)
		go func() { upErr <- pumpUp(ss, cs) }()
		for {
			f := new(frame)
			if err := cs.RecvMsg(f); err != nil {
				if errors.Is(err, io.EOF) {
					ss.SetTrailer(cs.Trailer())
					return nil
				}
				return leaderUnreachable(conn, err)
			}
			if err := ss.SendMsg(f); err != nil {
				return err
			}
			select {
			case err := <-upErr:
				if err != nil {
					return err
				}
				upErr = nil // the client finished sending; keep relaying answers
			default:
			}
		}
	}
}

// pumpUp relays the client's messages to the leader until the client
// closes its side.
func pumpUp(ss grpc.ServerStream, cs grpc.ClientStream) error {
	for {
		f := new(frame)
		if err := ss.RecvMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				return cs.CloseSend()
			}
			return fmt.Errorf("forward to the leader: %w", err)
		}
		if err := cs.SendMsg(f); err != nil {
			if errors.Is(err, io.EOF) {
				return nil // the leader answered and ended the call: its status comes on the receiving side
			}
			return err
		}
	}
}

// leaderUnreachable explains a forwarded call that failed because the
// leader could not be reached: during a failover the replicas still
// name the old leader for up to an election timeout.
func leaderUnreachable(conn *grpc.ClientConn, err error) error {
	st := status.Convert(err)
	// An Unavailable the leader answered itself (a node down, say) is
	// its answer: only a connection that is not up is the leader's
	// absence.
	if st.Code() != codes.Unavailable || conn.GetState() == connectivity.Ready {
		return err
	}
	return status.Errorf(codes.Unavailable, "the scheduler leader at %s cannot be reached (%s): if it just failed, a new leader is elected within seconds; retry",
		conn.Target(), st.Message())
}
