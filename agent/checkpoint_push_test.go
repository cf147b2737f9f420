package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// pushNode is an agent serving its API and data connections on
// 127.0.0.1, in plaintext, as an --insecure agent does.
type pushNode struct {
	a      *Agent
	addr   string
	client pb.AgentServiceClient
}

// startPushNode starts node name; wrap, when set, wraps its data channel
// (to hold up what it sends).
func startPushNode(t *testing.T, name string, wrap func(DataChannel) DataChannel) *pushNode {
	t.Helper()
	a := importTestAgent(t, name, "")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := datachan.Listen(lis, datachan.Config{Log: slog.New(slog.DiscardHandler)})
	srv := grpc.NewServer(append(rpc.ServerOptions(), grpc.Creds(mux.ServerCredentials()))...)
	var dc DataChannel = mux
	if wrap != nil {
		dc = wrap(mux)
	}
	a.Register(srv, WithDataChannel(dc), WithPeerCredentials(insecure.NewCredentials()))
	go srv.Serve(mux.RPCListener())
	t.Cleanup(func() {
		srv.Stop()
		mux.Close()
	})
	n := &pushNode{a: a, addr: lis.Addr().String()}
	conn, err := grpc.NewClient(n.addr, append(rpc.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	n.client = pb.NewAgentServiceClient(conn)
	return n
}

// seedCheckpoint gives node n a stored checkpoint id of about size bytes
// (and the image it needs) and returns its manifest digest.
func seedCheckpoint(t *testing.T, n *pushNode, id string, size int) string {
	t.Helper()
	img := giveImage(t, n.a)
	dir, _ := writeCheckpoint(t, ckptSpec{id: id, img: img, pages: pagesOf(size)})
	res, err := n.a.ImportCheckpoint(importCtx(t), bytes.NewReader(exportArchive(t, dir, bundle.NoCompression)))
	if err != nil {
		t.Fatal(err)
	}
	return res.ManifestDigest.String()
}

func listedIDs(t *testing.T, n *pushNode) []string {
	t.Helper()
	ms, err := n.a.ListCheckpoints(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	return ids
}

// TestPushCheckpoint: a pushed checkpoint is kept by the destination
// under the same ID and digest, verified, while the source keeps its
// copy; the push reports progress up to the checkpoint's size; pushing
// it again is answered as done; and with zstd it arrives the same.
func TestPushCheckpoint(t *testing.T) {
	const id = "feed00000001"
	src := startPushNode(t, "node-a", nil)
	dst := startPushNode(t, "node-b", nil)
	want := seedCheckpoint(t, src, id, 6<<20)
	giveImage(t, dst.a)
	ctx := importCtx(t)

	var mu sync.Mutex
	var progress [][2]int64
	resp, err := agentclient.PushCheckpoint(ctx, src.client, &pb.PushCheckpointRequest{Ref: id[:6], Address: dst.addr}, func(done, total int64) {
		mu.Lock()
		progress = append(progress, [2]int64{done, total})
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetCheckpoint().GetId() != id || resp.GetManifestDigest() != want || resp.GetNode() != "node-b" || resp.GetAlreadyPresent() {
		t.Fatalf("push = %v; want checkpoint %s newly kept on node-b with digest %s", resp, id, want)
	}
	size := resp.GetCheckpoint().GetSizeBytes()
	mu.Lock()
	if len(progress) == 0 || progress[len(progress)-1][1] != size ||
		!slices.IsSortedFunc(progress, func(x, y [2]int64) int { return int(x[0] - y[0]) }) {
		t.Errorf("progress %v: want bytes that grow, out of the checkpoint's %d", progress, size)
	}
	mu.Unlock()
	if got := listedIDs(t, dst); !slices.Equal(got, []string{id}) {
		t.Fatalf("the destination lists %v, want [%s]", got, id)
	}
	if _, err := bundle.Verify(dst.a.checkpointDir(id)); err != nil {
		t.Fatalf("the destination's copy: %v", err)
	}
	if got := listedIDs(t, src); !slices.Equal(got, []string{id}) {
		t.Fatalf("the source lists %v after the push, want its copy [%s] still", got, id)
	}

	again, err := agentclient.PushCheckpoint(ctx, src.client, &pb.PushCheckpointRequest{Ref: id, Address: dst.addr}, nil)
	if err != nil || !again.GetAlreadyPresent() || again.GetManifestDigest() != want {
		t.Fatalf("push again = %v, %v; want already present with digest %s", again, err, want)
	}

	if err := dst.a.RemoveCheckpoint(ctx, id); err != nil {
		t.Fatal(err)
	}
	zstd, err := agentclient.PushCheckpoint(ctx, src.client, &pb.PushCheckpointRequest{Ref: id, Address: dst.addr, Compression: "zstd"}, nil)
	if err != nil || zstd.GetAlreadyPresent() || zstd.GetManifestDigest() != want {
		t.Fatalf("push with zstd = %v, %v; want newly kept with digest %s", zstd, err, want)
	}
	assertStored(t, dst.a, id)
}

// TestPushCheckpointRefused: a push that cannot be done says why, with
// the code a caller acts on, and leaves nothing on the destination.
func TestPushCheckpointRefused(t *testing.T) {
	const id = "feed00000002"
	src := startPushNode(t, "node-a", nil)
	noImage := startPushNode(t, "node-b", nil) // lacks the image
	seedCheckpoint(t, src, id, 1<<20)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nobody := closed.Addr().String()
	closed.Close()

	tests := []struct {
		name     string
		req      *pb.PushCheckpointRequest
		wantCode codes.Code
		wantIn   string
	}{
		{"no address", &pb.PushCheckpointRequest{Ref: id}, codes.InvalidArgument, "no destination address"},
		{"an unknown checkpoint", &pb.PushCheckpointRequest{Ref: "nope", Address: noImage.addr}, codes.NotFound, `no checkpoint "nope"`},
		{"an unknown compression", &pb.PushCheckpointRequest{Ref: id, Address: noImage.addr, Compression: "lz4"}, codes.InvalidArgument, "unknown compression"},
		{"a destination without the image", &pb.PushCheckpointRequest{Ref: id, Address: noImage.addr}, codes.FailedPrecondition,
			"which node node-b does not have: import it with `godwit image import`"},
		{"nobody at the address", &pb.PushCheckpointRequest{Ref: id, Address: nobody}, codes.Unavailable, "push checkpoint " + id + " to " + nobody},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := agentclient.PushCheckpoint(importCtx(t), src.client, tt.req, nil)
			t.Log(err)
			if st := status.Convert(err); st.Code() != tt.wantCode || !strings.Contains(st.Message(), tt.wantIn) {
				t.Fatalf("push = %v, want %s saying %q", err, tt.wantCode, tt.wantIn)
			}
			assertStored(t, noImage.a)
			if got := listedIDs(t, src); !slices.Equal(got, []string{id}) {
				t.Fatalf("the source lists %v, want [%s]", got, id)
			}
		})
	}
}

// TestPushCheckpointCancelled: a push cancelled while the archive is on
// its way ends with Canceled, and the destination keeps nothing of it;
// the source keeps its checkpoint.
func TestPushCheckpointCancelled(t *testing.T) {
	const id = "feed00000003"
	gate := &gatedChannel{started: make(chan struct{})}
	src := startPushNode(t, "node-a", func(d DataChannel) DataChannel { gate.DataChannel = d; return gate })
	dst := startPushNode(t, "node-b", nil)
	seedCheckpoint(t, src, id, 8<<20)
	giveImage(t, dst.a)

	ctx, cancel := context.WithCancel(importCtx(t))
	defer cancel()
	go func() {
		<-gate.started // the first MiB is on its way
		cancel()
	}()
	_, err := agentclient.PushCheckpoint(ctx, src.client, &pb.PushCheckpointRequest{Ref: id, Address: dst.addr}, nil)
	if status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled push = %v, want Canceled", err)
	}
	// The destination's import ends when the cancellation reaches it.
	deadline := time.Now().Add(earlyAnswer)
	for len(storedEntries(t, dst.a)) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	assertStored(t, dst.a)
	if got := listedIDs(t, src); !slices.Equal(got, []string{id}) {
		t.Fatalf("the source lists %v, want [%s]", got, id)
	}
}

// gatedChannel lets a data connection it dials write once, then holds
// every further write until the connection's context ends: a transfer
// that is under way when the test cancels it, and moves no byte after.
type gatedChannel struct {
	DataChannel
	started chan struct{} // closed at the first held write
	once    sync.Once
}

func (g *gatedChannel) Dial(ctx context.Context, addr, token string) (net.Conn, error) {
	c, err := g.DataChannel.Dial(ctx, addr, token)
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, g: g, ctx: ctx}, nil
}

type gatedConn struct {
	net.Conn
	g      *gatedChannel
	ctx    context.Context
	writes int
}

func (c *gatedConn) Write(p []byte) (int, error) {
	if c.writes++; c.writes > 1 {
		c.g.once.Do(func() { close(c.g.started) })
		<-c.ctx.Done()
		return 0, errors.New("held until the transfer was cancelled")
	}
	return c.Conn.Write(p)
}
