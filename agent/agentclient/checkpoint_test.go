package agentclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// fakeAgent serves the checkpoint calls from fixed data and records what
// restores received.
type fakeAgent struct {
	pb.UnimplementedAgentServiceServer

	progress []*pb.CheckpointProgress
	// chunks are sent by ExportCheckpoint, then failWith (if set).
	chunks   []*pb.ExportCheckpointChunk
	failWith error

	mu       sync.Mutex
	received []byte
	header   *pb.RestoreArchiveHeader
	// restoreEnd is how the last RestoreArchive ended: "eof" when the
	// client closed its side, "cancelled" when it cancelled.
	restoreEnd string
	restored   chan struct{}
}

func (f *fakeAgent) Checkpoint(_ *pb.CheckpointRequest, stream grpc.ServerStreamingServer[pb.CheckpointProgress]) error {
	for _, p := range f.progress {
		if err := stream.Send(p); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeAgent) ExportCheckpoint(_ *pb.ExportCheckpointRequest, stream grpc.ServerStreamingServer[pb.ExportCheckpointChunk]) error {
	for _, c := range f.chunks {
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return f.failWith
}

func (f *fakeAgent) RestoreArchive(stream grpc.ClientStreamingServer[pb.RestoreArchiveRequest, pb.RestoreResponse]) error {
	defer close(f.restored)
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.header = first.GetHeader()
	f.mu.Unlock()
	for {
		msg, err := stream.Recv()
		f.mu.Lock()
		switch {
		case err == io.EOF:
			f.restoreEnd = "eof"
		case status.Code(err) == codes.Canceled:
			f.restoreEnd = "cancelled"
		case err == nil:
			f.received = append(f.received, msg.GetData()...)
		}
		f.mu.Unlock()
		if err == io.EOF {
			return stream.SendAndClose(&pb.RestoreResponse{Container: &pb.Container{Name: f.header.GetName()}})
		}
		if err != nil {
			return err
		}
	}
}

// serve starts f on an in-memory listener and returns a client of it.
func serve(t *testing.T, f *fakeAgent) pb.AgentServiceClient {
	t.Helper()
	f.restored = make(chan struct{})
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	pb.RegisterAgentServiceServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewAgentServiceClient(conn)
}

func TestCheckpointReturnsTheLastMessagesCheckpoint(t *testing.T) {
	f := &fakeAgent{progress: []*pb.CheckpointProgress{
		{Phase: "dumping", DoneBytes: 1},
		{Phase: "sealing", DoneBytes: 5, TotalBytes: 10},
		{Phase: "done", Checkpoint: &pb.Checkpoint{Id: "0123456789ab"}},
	}}
	client := serve(t, f)
	var phases []string
	cp, err := Checkpoint(context.Background(), client, &pb.CheckpointRequest{Container: "c1"},
		func(p *pb.CheckpointProgress) { phases = append(phases, p.GetPhase()) })
	if err != nil {
		t.Fatal(err)
	}
	if cp.GetId() != "0123456789ab" {
		t.Errorf("checkpoint %q, want 0123456789ab", cp.GetId())
	}
	if got := strings.Join(phases, ","); got != "dumping,sealing" {
		t.Errorf("progress phases %s, want dumping,sealing", got)
	}

	f.progress = f.progress[:2] // a stream that ends without the checkpoint
	if _, err := Checkpoint(context.Background(), client, &pb.CheckpointRequest{Container: "c1"}, nil); err == nil {
		t.Fatal("a stream without the checkpoint was accepted")
	}
}

// archiveChunks splits data into export chunks with increasing progress.
func archiveChunks(data []byte, size int) []*pb.ExportCheckpointChunk {
	var out []*pb.ExportCheckpointChunk
	total := int64(len(data))
	for i := 0; i < len(data); i += size {
		end := min(i+size, len(data))
		out = append(out, &pb.ExportCheckpointChunk{Data: data[i:end], DoneBytes: int64(end), TotalBytes: total})
	}
	return out
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestExportCheckpointFileWritesTheWholeArchive(t *testing.T) {
	data := bytes.Repeat([]byte("godwit archive "), 50_000)
	client := serve(t, &fakeAgent{chunks: archiveChunks(data, 64<<10)})
	path := filepath.Join(t.TempDir(), "c1.gwc")
	var lastDone, lastTotal int64
	size, err := ExportCheckpointFile(context.Background(), client, "0123456789ab", path, ExportOptions{
		Progress: func(done, total int64) { lastDone, lastTotal = done, total },
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) || size != int64(len(data)) {
		t.Fatalf("file holds %d bytes (size reported %d), want the %d bytes sent", len(got), size, len(data))
	}
	if lastDone != int64(len(data)) || lastTotal != int64(len(data)) {
		t.Errorf("last progress %d/%d, want %d/%d", lastDone, lastTotal, len(data), len(data))
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("archive mode %v, want 0600: it holds the container's memory", st.Mode().Perm())
	}
	if names := dirNames(t, filepath.Dir(path)); len(names) != 1 {
		t.Errorf("directory holds %v, want only the archive", names)
	}
}

func TestExportCheckpointFileEncryptsOnTheClient(t *testing.T) {
	data := bytes.Repeat([]byte("secret memory "), 30_000)
	client := serve(t, &fakeAgent{chunks: archiveChunks(data, 100_000)})
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := bundle.GenerateKey(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "c1.gwc")
	size, err := ExportCheckpointFile(context.Background(), client, "0123456789ab", path, ExportOptions{EncryptKeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	ciphertext, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(ciphertext)) {
		t.Errorf("reported size %d, file has %d bytes", size, len(ciphertext))
	}
	if bytes.Contains(ciphertext, []byte("secret memory")) {
		t.Fatal("the archive file holds plaintext")
	}
	r, err := bundle.Decrypt(bytes.NewReader(ciphertext), key)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, data) {
		t.Fatalf("decrypted %d bytes, want the %d sent", len(plain), len(data))
	}
}

func TestExportCheckpointFileNeverLeavesAPartialFile(t *testing.T) {
	old := []byte("an earlier archive")
	tests := []struct {
		name     string
		existing bool
	}{
		{name: "new file"},
		{name: "over an existing file", existing: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := bytes.Repeat([]byte{7}, 1<<20)
			client := serve(t, &fakeAgent{
				chunks:   archiveChunks(data, 256<<10)[:2],
				failWith: status.Error(codes.InvalidArgument, "checkpoint file criu/pages-1.img: sha256 mismatch"),
			})
			path := filepath.Join(t.TempDir(), "c1.gwc")
			if tt.existing {
				if err := os.WriteFile(path, old, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := ExportCheckpointFile(context.Background(), client, "0123456789ab", path, ExportOptions{})
			if err == nil || !strings.Contains(err.Error(), "criu/pages-1.img") {
				t.Fatalf("export error %v, want the agent's", err)
			}
			got, readErr := os.ReadFile(path)
			switch {
			case tt.existing && !bytes.Equal(got, old):
				t.Errorf("the earlier archive was replaced by %d bytes", len(got))
			case !tt.existing && !errors.Is(readErr, os.ErrNotExist):
				t.Errorf("a failed export left %s (%d bytes)", path, len(got))
			}
			want := 0
			if tt.existing {
				want = 1
			}
			if names := dirNames(t, filepath.Dir(path)); len(names) != want {
				t.Errorf("directory holds %v after a failed export", names)
			}
		})
	}
}

func TestExportCheckpointFileRefusesABadKeyFirst(t *testing.T) {
	f := &fakeAgent{chunks: archiveChunks([]byte("data"), 4)}
	client := serve(t, f)
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ExportCheckpointFile(context.Background(), client, "0123456789ab", filepath.Join(dir, "c1.gwc"), ExportOptions{EncryptKeyFile: key})
	if !errors.Is(err, bundle.ErrKey) {
		t.Fatalf("export with a bad key: %v, want ErrKey", err)
	}
	if names := dirNames(t, dir); len(names) != 1 {
		t.Errorf("directory holds %v, want only the key", names)
	}
}

func TestRestoreArchiveFileSendsHeaderThenPlaintext(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := bundle.GenerateKey(key); err != nil {
		t.Fatal(err)
	}
	plain := bytes.Repeat([]byte("archive bytes "), 100_000)
	path := filepath.Join(dir, "c1.gwc")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	ew, err := bundle.Encrypt(f, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ew.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := ew.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, _ := os.Stat(path)

	agent := &fakeAgent{}
	client := serve(t, agent)
	var lastDone, lastTotal int64
	resp, err := RestoreArchiveFile(context.Background(), client, path, "c2", key, func(done, total int64) { lastDone, lastTotal = done, total })
	if err != nil {
		t.Fatal(err)
	}
	<-agent.restored
	if resp.GetContainer().GetName() != "c2" || agent.header.GetName() != "c2" {
		t.Errorf("header name %q, response %q, want c2", agent.header.GetName(), resp.GetContainer().GetName())
	}
	if !bytes.Equal(agent.received, plain) {
		t.Errorf("agent received %d bytes, want the %d plaintext bytes", len(agent.received), len(plain))
	}
	if lastDone != st.Size() || lastTotal != st.Size() {
		t.Errorf("last progress %d/%d, want the file's %d bytes", lastDone, lastTotal, st.Size())
	}
}

// failingReader returns its data and then an error, as a decryption layer
// does when it reaches a tampered chunk.
type failingReader struct {
	data []byte
	err  error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, r.err
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func TestRestoreArchiveCancelsWhenTheReaderFails(t *testing.T) {
	agent := &fakeAgent{}
	client := serve(t, agent)
	tampered := errors.New("failed to decrypt and authenticate payload chunk")
	_, err := RestoreArchive(context.Background(), client, &failingReader{data: make([]byte, 600<<10), err: tampered}, "")
	if !errors.Is(err, tampered) {
		t.Fatalf("restore error %v, want the reader's", err)
	}
	select {
	case <-agent.restored:
	case <-time.After(10 * time.Second):
		t.Fatal("the agent's call did not end")
	}
	agent.mu.Lock()
	defer agent.mu.Unlock()
	if agent.restoreEnd != "cancelled" {
		t.Fatalf("the agent saw the upload end with %q, want cancelled: a clean end would pass for a complete archive", agent.restoreEnd)
	}
}

func TestRestoreArchiveFileRefusesWithoutCallingTheAgent(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := bundle.GenerateKey(key); err != nil {
		t.Fatal(err)
	}
	plainFile := filepath.Join(dir, "plain.gwc")
	if err := os.WriteFile(plainFile, []byte("(a plaintext archive)"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want error
	}{
		{name: "plaintext file with a key", path: plainFile, want: bundle.ErrDecrypt},
		{name: "missing file", path: filepath.Join(dir, "none.gwc"), want: os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			agent := &fakeAgent{}
			client := serve(t, agent)
			_, err := RestoreArchiveFile(context.Background(), client, tt.path, "", key, nil)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			select {
			case <-agent.restored:
				t.Fatal("the agent was called")
			default:
			}
		})
	}
}
