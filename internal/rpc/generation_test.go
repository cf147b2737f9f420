package rpc

import (
	"context"
	"errors"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// generationServer runs the health service and returns a client and the
// channel where each call's IncomingGeneration arrives.
func generationServer(t *testing.T) (healthpb.HealthClient, <-chan generationSeen) {
	t.Helper()
	seen := make(chan generationSeen, 1)
	record := grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		g, err := IncomingGeneration(ctx)
		seen <- generationSeen{g, err}
		return h(ctx, req)
	})
	srv := grpc.NewServer(append(ServerOptions(), record)...)
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
	return healthpb.NewHealthClient(conn), seen
}

type generationSeen struct {
	g   uint64
	err error
}

// TestGenerationTravelsWithTheCall: the generation a client sets reaches
// the server; the last one set wins, 0 sends none, and a malformed
// header is an error rather than an unfenced call.
func TestGenerationTravelsWithTheCall(t *testing.T) {
	client, seen := generationServer(t)
	for _, tt := range []struct {
		name    string
		ctx     func(context.Context) context.Context
		want    uint64
		wantErr bool
	}{
		{"set", func(ctx context.Context) context.Context { return WithGeneration(ctx, 4) }, 4, false},
		{"none", func(ctx context.Context) context.Context { return ctx }, 0, false},
		{"replaced, not appended", func(ctx context.Context) context.Context {
			return WithGeneration(WithGeneration(ctx, 4), 7)
		}, 7, false},
		{"removed by 0", func(ctx context.Context) context.Context {
			return WithGeneration(WithGeneration(ctx, 4), 0)
		}, 0, false},
		{"kept beside other metadata", func(ctx context.Context) context.Context {
			return WithGeneration(metadata.AppendToOutgoingContext(ctx, StallTimeoutHeader, "1000"), 9)
		}, 9, false},
		{"malformed", func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, GenerationHeader, "latest")
		}, 0, true},
		{"negative", func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, GenerationHeader, "-1")
		}, 0, true},
		{"two values", func(ctx context.Context) context.Context {
			return metadata.AppendToOutgoingContext(ctx, GenerationHeader, "3", GenerationHeader, "4")
		}, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			if _, err := client.Check(tt.ctx(ctx), &healthpb.HealthCheckRequest{}); err != nil {
				t.Fatal(err)
			}
			got := <-seen
			if tt.wantErr != errors.Is(got.err, ErrBadGeneration) || got.g != tt.want {
				t.Fatalf("IncomingGeneration = %d, %v; want %d (error: %v)", got.g, got.err, tt.want, tt.wantErr)
			}
		})
	}
}
