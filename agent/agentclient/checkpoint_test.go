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
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/internal/datachan"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// fakeAgent serves the checkpoint calls from fixed data and records what
// restores received, with the archive in the stream or, when the call
// carries a data token, on a data connection.
type fakeAgent struct {
	pb.UnimplementedAgentServiceServer
	data *datachan.Mux

	progress []*pb.CheckpointProgress
	// chunks are sent by ExportCheckpoint, then failWith (if set).
	chunks   []*pb.ExportCheckpointChunk
	failWith error
	// refuseAfter, when set, makes RestoreArchive fail with failWith
	// once it has received that many bytes.
	refuseAfter int

	mu       sync.Mutex
	received []byte
	header   *pb.RestoreArchiveHeader
	// restoreEnd is how the last RestoreArchive's stream ended: "eof"
	// when the client closed its side, "cancelled" when it cancelled.
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

func (f *fakeAgent) ExportCheckpoint(req *pb.ExportCheckpointRequest, stream grpc.ServerStreamingServer[pb.ExportCheckpointChunk]) error {
	if req.GetDataToken() == "" {
		for _, c := range f.chunks {
			if err := stream.Send(c); err != nil {
				return err
			}
		}
		return f.failWith
	}
	conn, err := f.data.Accept(stream.Context(), req.GetDataToken())
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, c := range f.chunks {
		if _, err := conn.Write(c.GetData()); err != nil {
			return err
		}
		if err := stream.Send(&pb.ExportCheckpointChunk{DoneBytes: c.GetDoneBytes(), TotalBytes: c.GetTotalBytes()}); err != nil {
			return err
		}
	}
	conn.Close() // the client sees the data end before the status
	return f.failWith
}

func (f *fakeAgent) RestoreArchive(stream grpc.ClientStreamingServer[pb.RestoreArchiveRequest, pb.RestoreResponse]) error {
	defer close(f.restored)
	first, err := stream.Recv()
	if err != nil {
		// A cancelled call may end before the header is read.
		if status.Code(err) == codes.Canceled {
			f.mu.Lock()
			f.restoreEnd = "cancelled"
			f.mu.Unlock()
		}
		return err
	}
	f.mu.Lock()
	f.header = first.GetHeader()
	f.mu.Unlock()
	if token := first.GetHeader().GetDataToken(); token != "" {
		return f.restoreFromData(stream, token)
	}
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
		refuse := f.refuseAfter > 0 && len(f.received) >= f.refuseAfter
		f.mu.Unlock()
		if refuse {
			return f.failWith
		}
		if err == io.EOF {
			return stream.SendAndClose(&pb.RestoreResponse{Container: &pb.Container{Name: f.header.GetName()}})
		}
		if err != nil {
			return err
		}
	}
}

// restoreFromData reads the archive from the data connection, and the
// stream's end beside it.
func (f *fakeAgent) restoreFromData(stream grpc.ClientStreamingServer[pb.RestoreArchiveRequest, pb.RestoreResponse], token string) error {
	conn, err := f.data.Accept(stream.Context(), token)
	if err != nil {
		return err
	}
	defer conn.Close()
	streamEnd := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		streamEnd <- err
	}()
	buf := make([]byte, 64<<10)
	for {
		n, err := conn.Read(buf)
		f.mu.Lock()
		f.received = append(f.received, buf[:n]...)
		refuse := f.refuseAfter > 0 && len(f.received) >= f.refuseAfter
		f.mu.Unlock()
		if refuse {
			return f.failWith
		}
		if err != nil {
			break
		}
	}
	err = <-streamEnd
	f.mu.Lock()
	switch {
	case err == io.EOF:
		f.restoreEnd = "eof"
	case status.Code(err) == codes.Canceled:
		f.restoreEnd = "cancelled"
	}
	f.mu.Unlock()
	if err != io.EOF {
		return err
	}
	return stream.SendAndClose(&pb.RestoreResponse{Container: &pb.Container{Name: f.header.GetName()}})
}

// transports are the two ways an archive travels: the tests of the
// archive calls run over both.
var transports = []struct {
	name string
	// data says whether the client dials a data connection.
	data bool
}{{"in the stream", false}, {"on a data connection", true}}

// testAgent is a served fakeAgent: its client, and the dialer of its data
// channel when the transport uses one.
type testAgent struct {
	client pb.AgentServiceClient
	dial   DataDialer
}

// serve starts f on a loopback listener, gRPC and data channel together
// as the agent serves them, and returns a client of it; dial is nil unless
// data is set.
func serve(t *testing.T, f *fakeAgent, data bool) testAgent {
	t.Helper()
	f.restored = make(chan struct{})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// A token nobody claims waits for an hour: a client that waited for
	// its data connection after the call failed would hang the test.
	f.data = datachan.Listen(lis, datachan.Config{Wait: time.Hour})
	srv := grpc.NewServer()
	pb.RegisterAgentServiceServer(srv, f)
	go srv.Serve(f.data.RPCListener())
	t.Cleanup(srv.Stop)
	addr := f.data.Addr().String()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ta := testAgent{client: pb.NewAgentServiceClient(conn)}
	if data {
		ta.dial = DialData(addr, nil)
	}
	return ta
}

func TestCheckpointReturnsTheLastMessagesCheckpoint(t *testing.T) {
	f := &fakeAgent{progress: []*pb.CheckpointProgress{
		{Phase: "dumping", DoneBytes: 1},
		{Phase: "sealing", DoneBytes: 5, TotalBytes: 10},
		{Phase: "done", Checkpoint: &pb.Checkpoint{Id: "0123456789ab"}},
	}}
	client := serve(t, f, false).client
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
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			data := bytes.Repeat([]byte("godwit archive "), 50_000)
			a := serve(t, &fakeAgent{chunks: archiveChunks(data, 64<<10)}, tr.data)
			path := filepath.Join(t.TempDir(), "c1.gwc")
			var lastDone, lastTotal int64
			size, err := ExportCheckpointFile(context.Background(), a.client, a.dial, "0123456789ab", path, ExportOptions{
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
		})
	}
}

func TestExportCheckpointFileEncryptsOnTheClient(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			data := bytes.Repeat([]byte("secret memory "), 30_000)
			a := serve(t, &fakeAgent{chunks: archiveChunks(data, 100_000)}, tr.data)
			dir := t.TempDir()
			key := filepath.Join(dir, "key")
			if err := bundle.GenerateKey(key); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "c1.gwc")
			size, err := ExportCheckpointFile(context.Background(), a.client, a.dial, "0123456789ab", path, ExportOptions{EncryptKeyFile: key})
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
		})
	}
}

func TestExportCheckpointFileNeverLeavesAPartialFile(t *testing.T) {
	old := []byte("an earlier archive")
	data := bytes.Repeat([]byte{7}, 1<<20)
	tests := []struct {
		name     string
		existing bool
		// sent is how many chunks the agent sends before it fails.
		sent int
	}{
		{name: "new file", sent: 2},
		{name: "over an existing file", existing: true, sent: 2},
		// The agent fails before any data: on a data connection, the
		// client must not wait for data that never comes.
		{name: "nothing sent", sent: 0},
	}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr.name+"/"+tt.name, func(t *testing.T) {
				a := serve(t, &fakeAgent{
					chunks:   archiveChunks(data, 256<<10)[:tt.sent],
					failWith: status.Error(codes.InvalidArgument, "checkpoint file criu/pages-1.img: sha256 mismatch"),
				}, tr.data)
				path := filepath.Join(t.TempDir(), "c1.gwc")
				if tt.existing {
					if err := os.WriteFile(path, old, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				_, err := ExportCheckpointFile(context.Background(), a.client, a.dial, "0123456789ab", path, ExportOptions{})
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
}

// TestExportFailsWhenTheAgentRefusesBeforeTheDataConnection: an agent
// that fails the call before it claims the data connection (an unknown
// checkpoint) leaves the client's connection waiting for an answer that
// only comes after the data channel's timeout: the call's status must end
// the wait.
func TestExportFailsWhenTheAgentRefusesBeforeTheDataConnection(t *testing.T) {
	a := serve(t, &fakeAgent{}, true)
	client := refusingExport{AgentServiceClient: a.client}
	errc := make(chan error, 1)
	go func() {
		errc <- ExportCheckpoint(context.Background(), client, a.dial, &pb.ExportCheckpointRequest{Ref: "nope"}, io.Discard, nil)
	}()
	select {
	case err := <-errc:
		if status.Code(err) != codes.NotFound {
			t.Fatalf("export error %v, want the agent's NotFound", err)
		}
	case <-time.After(10 * time.Second): // the data channel would wait an hour
		t.Fatal("the export waited for its data connection after the agent had failed the call")
	}
}

// refusingExport answers ExportCheckpoint with NotFound without touching
// the data channel.
type refusingExport struct{ pb.AgentServiceClient }

func (refusingExport) ExportCheckpoint(context.Context, *pb.ExportCheckpointRequest, ...grpc.CallOption) (grpc.ServerStreamingClient[pb.ExportCheckpointChunk], error) {
	return failedStream{status.Error(codes.NotFound, "checkpoint nope not found")}, nil
}

// failedStream is a server stream that ends at once with err.
type failedStream struct{ err error }

func (s failedStream) Recv() (*pb.ExportCheckpointChunk, error) { return nil, s.err }
func (failedStream) Header() (metadata.MD, error)               { return nil, nil }
func (failedStream) Trailer() metadata.MD                       { return nil }
func (failedStream) CloseSend() error                           { return nil }
func (failedStream) Context() context.Context                   { return context.Background() }
func (failedStream) SendMsg(any) error                          { return nil }
func (s failedStream) RecvMsg(any) error                        { return s.err }

func TestExportCheckpointFileRefusesABadKeyFirst(t *testing.T) {
	f := &fakeAgent{chunks: archiveChunks([]byte("data"), 4)}
	a := serve(t, f, true)
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := ExportCheckpointFile(context.Background(), a.client, a.dial, "0123456789ab", filepath.Join(dir, "c1.gwc"), ExportOptions{EncryptKeyFile: key})
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

	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			agent := &fakeAgent{}
			a := serve(t, agent, tr.data)
			var lastDone, lastTotal int64
			resp, err := RestoreArchiveFile(context.Background(), a.client, a.dial, path, "c2", key,
				func(done, total int64) { lastDone, lastTotal = done, total })
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
			if agent.restoreEnd != "eof" {
				t.Errorf("the stream ended with %q, want eof: the client closes it once the archive is sent", agent.restoreEnd)
			}
			if lastDone != st.Size() || lastTotal != st.Size() {
				t.Errorf("last progress %d/%d, want the file's %d bytes", lastDone, lastTotal, st.Size())
			}
		})
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
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			agent := &fakeAgent{}
			a := serve(t, agent, tr.data)
			tampered := errors.New("failed to decrypt and authenticate payload chunk")
			_, err := RestoreArchive(context.Background(), a.client, a.dial, &failingReader{data: make([]byte, 600<<10), err: tampered}, "")
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
		})
	}
}

func TestRestoreArchiveReturnsTheAgentsReasonWhenItRefusesPartWay(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			agent := &fakeAgent{
				refuseAfter: 1 << 20,
				failWith:    status.Error(codes.InvalidArgument, "checkpoint archive refused: criu/pages-1.img: sha256 mismatch"),
			}
			a := serve(t, agent, tr.data)
			// Far more than the agent reads and the sockets hold, so that
			// the upload is still going when the agent refuses.
			archive := bytes.NewReader(make([]byte, 256<<20))
			_, err := RestoreArchive(context.Background(), a.client, a.dial, archive, "")
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "sha256 mismatch") {
				t.Fatalf("restore error %v, want the agent's reason", err)
			}
			if archive.Len() == 0 {
				t.Error("the whole archive was sent after the agent refused it")
			}
		})
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
			a := serve(t, agent, true)
			_, err := RestoreArchiveFile(context.Background(), a.client, a.dial, tt.path, "", key, nil)
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
