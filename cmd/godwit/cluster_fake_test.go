package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/godwit/godwit/internal/clictx"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// TestMain keeps the package's tests off the contexts file of whoever
// runs them (a developer's `godwit dev up` would otherwise make every
// command talk to that cluster, with its TLS files), and off their
// GODWIT_ADDR.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "godwit-cmd-test")
	if err != nil {
		panic(err)
	}
	os.Setenv(clictx.EnvConfig, filepath.Join(dir, "contexts.json"))
	os.Unsetenv(envClusterAddr)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fakeCluster is a ClusterService that records each request and answers
// what the test put in it.
type fakeCluster struct {
	pb.UnimplementedClusterServiceServer

	// The canned answers.
	status     *pb.ClusterStatusResponse
	run        *pb.RunResponse
	containers []*pb.Container
	nodes      []*pb.Node
	images     []*pb.ClusterImage
	events     []*pb.Event
	audit      []*pb.AuditRecord
	logs       []byte
	snapshot   []byte
	// snapshotErr fails SnapshotSave after the snapshot's bytes.
	snapshotErr error
	// migration is Migrate's, InspectMigration's and CancelMigration's
	// answer; migrations ListMigrations'.
	migration  *pb.Migration
	migrations []*pb.Migration
	// watches are WatchMigration's answers, one per call in turn, the
	// last one repeated.
	watches []fakeWatch
	// watching, when set, is sent to when a WatchMigration starts to hang.
	watching chan struct{}
	// drain is DrainNode's and InspectDrain's answer; drainWatches are
	// WatchDrain's, one per call in turn, the last one repeated
	// (cluster_drain_test.go).
	drain        *pb.Drain
	drainWatches []fakeDrainWatch
	// err, when set, is every call's answer.
	err error

	mu    sync.Mutex
	calls []fakeCall
	// What the client streams sent.
	imported []byte
	restored []byte
}

// fakeWatch is one WatchMigration call's answer: the progress it sends,
// then the error it ends with (nil: the stream ends), or with hang a wait
// until the call is cancelled or the server stopped.
type fakeWatch struct {
	progress []*pb.MigrationProgress
	err      error
	hang     bool
}

// fakeCall is one request: for a client stream, its header (or nil).
type fakeCall struct {
	method string
	req    proto.Message
}

var _ pb.ClusterServiceServer = (*fakeCluster)(nil)

func (f *fakeCluster) record(method string, req proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{method, req})
	return f.err
}

// requests returns the calls made so far.
func (f *fakeCluster) requests() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeCall(nil), f.calls...)
}

func (f *fakeCluster) ClusterStatus(_ context.Context, r *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {
	return f.status, f.record("ClusterStatus", r)
}

func (f *fakeCluster) RemovePeer(_ context.Context, r *pb.RemovePeerRequest) (*pb.RemovePeerResponse, error) {
	return &pb.RemovePeerResponse{}, f.record("RemovePeer", r)
}

func (f *fakeCluster) SnapshotSave(r *pb.SnapshotSaveRequest, s grpc.ServerStreamingServer[pb.SnapshotChunk]) error {
	if err := f.record("SnapshotSave", r); err != nil {
		return err
	}
	for data := f.snapshot; len(data) > 0; {
		n := min(len(data), 1000)
		if err := s.Send(&pb.SnapshotChunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return f.snapshotErr
}

func (f *fakeCluster) SnapshotRestore(s grpc.ClientStreamingServer[pb.SnapshotChunk, pb.SnapshotRestoreResponse]) error {
	if err := f.record("SnapshotRestore", nil); err != nil {
		return err
	}
	var buf bytes.Buffer
	for {
		c, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		buf.Write(c.GetData())
	}
	f.mu.Lock()
	f.restored = buf.Bytes()
	f.mu.Unlock()
	return s.SendAndClose(&pb.SnapshotRestoreResponse{Index: 42})
}

func (f *fakeCluster) Run(_ context.Context, r *pb.RunRequest) (*pb.RunResponse, error) {
	return f.run, f.record("Run", r)
}

func (f *fakeCluster) ListContainers(_ context.Context, r *pb.ListContainersRequest) (*pb.ListContainersResponse, error) {
	return &pb.ListContainersResponse{Containers: f.containers}, f.record("ListContainers", r)
}

func (f *fakeCluster) InspectContainer(_ context.Context, r *pb.ContainerRef) (*pb.Container, error) {
	return f.containers[0], f.record("InspectContainer", r)
}

func (f *fakeCluster) StopContainer(_ context.Context, r *pb.StopContainerRequest) (*pb.Container, error) {
	return f.containers[0], f.record("StopContainer", r)
}

func (f *fakeCluster) StartContainer(_ context.Context, r *pb.ContainerRef) (*pb.Container, error) {
	return f.containers[0], f.record("StartContainer", r)
}

func (f *fakeCluster) RemoveContainer(_ context.Context, r *pb.RemoveContainerRequest) (*pb.RemoveContainerResponse, error) {
	return &pb.RemoveContainerResponse{}, f.record("RemoveContainer", r)
}

func (f *fakeCluster) Logs(r *pb.LogsRequest, s grpc.ServerStreamingServer[pb.LogsChunk]) error {
	if err := f.record("Logs", r); err != nil {
		return err
	}
	return s.Send(&pb.LogsChunk{Data: f.logs})
}

func (f *fakeCluster) ImportImage(s grpc.ClientStreamingServer[pb.ClusterImportImageRequest, pb.ClusterImage]) error {
	first, err := s.Recv()
	if err != nil {
		return err
	}
	header := first.GetHeader()
	if err := f.record("ImportImage", header); err != nil {
		return err
	}
	var buf bytes.Buffer
	for {
		m, err := s.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		buf.Write(m.GetChunk())
	}
	f.mu.Lock()
	f.imported = buf.Bytes()
	f.mu.Unlock()
	node := header.GetNode()
	if node == "" {
		node = "n2" // the scheduler's pick
	}
	return s.SendAndClose(&pb.ClusterImage{Node: node, Image: &pb.Image{Name: header.GetImage().GetName(), Id: "sha256:" + string(bytes.Repeat([]byte("ab"), 32)),
		Format: "rootfs", Size: int64(buf.Len()), Layers: []*pb.Layer{{Digest: "sha256:cd", Size: int64(buf.Len())}}}})
}

func (f *fakeCluster) ListImages(_ context.Context, r *pb.ClusterListImagesRequest) (*pb.ClusterListImagesResponse, error) {
	return &pb.ClusterListImagesResponse{Images: f.images}, f.record("ListImages", r)
}

func (f *fakeCluster) ListNodes(_ context.Context, r *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	return &pb.ListNodesResponse{Nodes: f.nodes}, f.record("ListNodes", r)
}

func (f *fakeCluster) InspectNode(_ context.Context, r *pb.NodeRef) (*pb.Node, error) {
	return f.nodes[0], f.record("InspectNode", r)
}

func (f *fakeCluster) CordonNode(_ context.Context, r *pb.NodeRef) (*pb.Node, error) {
	return &pb.Node{Name: r.GetName(), Status: "cordoned"}, f.record("CordonNode", r)
}

func (f *fakeCluster) UncordonNode(_ context.Context, r *pb.NodeRef) (*pb.Node, error) {
	return &pb.Node{Name: r.GetName(), Status: "ready"}, f.record("UncordonNode", r)
}

func (f *fakeCluster) Migrate(_ context.Context, r *pb.MigrateRequest) (*pb.Migration, error) {
	return f.migration, f.record("Migrate", r)
}

func (f *fakeCluster) WatchMigration(r *pb.MigrationRef, s grpc.ServerStreamingServer[pb.MigrationProgress]) error {
	if err := f.record("WatchMigration", r); err != nil {
		return err
	}
	n := -1
	for _, c := range f.requests() {
		if c.method == "WatchMigration" {
			n++
		}
	}
	if len(f.watches) == 0 {
		return status.Error(codes.Unimplemented, "the test gave no watch")
	}
	w := f.watches[min(n, len(f.watches)-1)]
	for _, p := range w.progress {
		if err := s.Send(p); err != nil {
			return err
		}
	}
	if w.hang {
		if f.watching != nil {
			f.watching <- struct{}{}
		}
		<-s.Context().Done()
		return s.Context().Err()
	}
	return w.err
}

func (f *fakeCluster) ListMigrations(_ context.Context, r *pb.ListMigrationsRequest) (*pb.ListMigrationsResponse, error) {
	return &pb.ListMigrationsResponse{Migrations: f.migrations}, f.record("ListMigrations", r)
}

func (f *fakeCluster) InspectMigration(_ context.Context, r *pb.MigrationRef) (*pb.Migration, error) {
	return f.migration, f.record("InspectMigration", r)
}

func (f *fakeCluster) CancelMigration(_ context.Context, r *pb.MigrationRef) (*pb.Migration, error) {
	return f.migration, f.record("CancelMigration", r)
}

func (f *fakeCluster) DrainNode(_ context.Context, r *pb.DrainNodeRequest) (*pb.Drain, error) {
	return f.drain, f.record("DrainNode", r)
}

func (f *fakeCluster) InspectDrain(_ context.Context, r *pb.NodeRef) (*pb.Drain, error) {
	return f.drain, f.record("InspectDrain", r)
}

func (f *fakeCluster) WatchDrain(r *pb.NodeRef, s grpc.ServerStreamingServer[pb.DrainProgress]) error {
	if err := f.record("WatchDrain", r); err != nil {
		return err
	}
	return f.answerDrainWatch(s)
}

func (f *fakeCluster) Events(r *pb.EventsRequest, s grpc.ServerStreamingServer[pb.Event]) error {
	if err := f.record("Events", r); err != nil {
		return err
	}
	for _, e := range f.events {
		if err := s.Send(e); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeCluster) Audit(_ context.Context, r *pb.AuditRequest) (*pb.AuditResponse, error) {
	return &pb.AuditResponse{Records: f.audit}, f.record("Audit", r)
}

// serveCluster serves f on a loopback port picked by the kernel, with
// TLS when cfg is set, and returns its address.
func serveCluster(t *testing.T, f *fakeCluster, cfg *tls.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var opts []grpc.ServerOption
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterClusterServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// listAgent is an AgentService that lists one container, so that a test
// can tell which target answered.
type listAgent struct {
	pb.UnimplementedAgentServiceServer
	container *pb.Container
}

func (a listAgent) ListContainers(context.Context, *pb.ListContainersRequest) (*pb.ListContainersResponse, error) {
	return &pb.ListContainersResponse{Containers: []*pb.Container{a.container}}, nil
}

// serveListAgent serves listAgent in plaintext and returns its address.
func serveListAgent(t *testing.T, c *pb.Container) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterAgentServiceServer(srv, listAgent{container: c})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// isolateCLI gives the test its own empty contexts file and no target or
// TLS settings from the environment, and returns the file's path.
func isolateCLI(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "contexts.json")
	t.Setenv(clictx.EnvConfig, path)
	t.Setenv(envClusterAddr, "")
	t.Setenv(envAgentAddr, "")
	clearTLSEnv(t)
	return path
}

// runCLI runs godwit with args, as given, and returns its stdout, stderr
// and error.
func runCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	root := newRootCommand()
	var stdout, stderr bytes.Buffer
	root.SetOut(&stdout)
	root.SetErr(&stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(context.Background())
	return stdout.String(), stderr.String(), err
}
