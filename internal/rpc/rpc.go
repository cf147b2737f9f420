// Package rpc holds the gRPC transport settings that godwit's servers and
// clients share, so that both ends of a connection agree on them: flow
// control windows and buffers, keepalive (a stopped or cut-off peer fails
// the calls on its connection instead of holding them for ever), and the
// stall timeout of a call's data connections, which travels with the call
// (StallTimeoutHeader).
package rpc

import "google.golang.org/grpc"

const (
	// windowSize is the HTTP/2 flow-control window of one stream, and
	// connWindowSize that of a connection. gRPC's default starts at 64 KiB
	// and grows with its bandwidth estimate, which holds a single bulk
	// stream (a checkpoint archive, an image) to about half a gigabyte per
	// second even on loopback; a fixed window of a few round trips' worth
	// of data lets one stream use the link.
	windowSize     = 16 << 20
	connWindowSize = 64 << 20
	// bufferSize is the socket write and read buffering: bulk streams send
	// chunks of 256 KiB to 1 MiB, and the default 32 KiB buffers flush
	// each in many system calls.
	bufferSize = 1 << 20
)

// ServerOptions are the transport options of every godwit gRPC server.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.InitialWindowSize(windowSize),
		grpc.InitialConnWindowSize(connWindowSize),
		grpc.WriteBufferSize(bufferSize),
		grpc.ReadBufferSize(bufferSize),
		grpc.KeepaliveParams(serverKeepalive),
		grpc.KeepaliveEnforcementPolicy(serverEnforcement),
		grpc.ChainUnaryInterceptor(stallUnaryServer),
		grpc.ChainStreamInterceptor(stallStreamServer),
	}
}

// DialOptions are the transport options of every godwit gRPC client; the
// caller adds credentials. Their keepalive pings need a server that allows
// them (ServerOptions): gRPC's default policy answers a client that pings
// every few seconds with GOAWAY, failing its calls.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithInitialWindowSize(windowSize),
		grpc.WithInitialConnWindowSize(connWindowSize),
		grpc.WithWriteBufferSize(bufferSize),
		grpc.WithReadBufferSize(bufferSize),
		grpc.WithKeepaliveParams(clientKeepalive),
		grpc.WithChainUnaryInterceptor(stallUnaryClient),
		grpc.WithChainStreamInterceptor(stallStreamClient),
	}
}
