package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/internal/datachan"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// importFake is an agent that takes ImportCheckpoint and PushCheckpoint
// as the real one's API does (the archive on a data connection), records
// what arrived and answers with answer, or refuses with refuse.
type importFake struct {
	pb.UnimplementedAgentServiceServer
	addr string
	mux  *datachan.Mux

	mu       sync.Mutex
	answer   *pb.ImportCheckpointResponse
	refuse   error
	received []byte // the archive of the last import
	complete bool   // whether the last import's client closed its stream
	pushed   *pb.PushCheckpointRequest
}

func startImportFake(t *testing.T, answer *pb.ImportCheckpointResponse) *importFake {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &importFake{addr: lis.Addr().String(), answer: answer}
	f.mux = datachan.Listen(lis, datachan.Config{Log: slog.New(slog.DiscardHandler)})
	srv := grpc.NewServer(grpc.Creds(f.mux.ServerCredentials()))
	pb.RegisterAgentServiceServer(srv, f)
	go func() { _ = srv.Serve(f.mux.RPCListener()) }()
	t.Cleanup(func() {
		srv.Stop()
		f.mux.Close()
	})
	return f
}

func (f *importFake) ImportCheckpoint(stream grpc.ClientStreamingServer[pb.ImportCheckpointRequest, pb.ImportCheckpointResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	conn, err := f.mux.Accept(stream.Context(), first.GetHeader().GetDataToken())
	if err != nil {
		return err
	}
	defer conn.Close()
	data, _ := io.ReadAll(conn)
	_, err = stream.Recv()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.received, f.complete = data, err == io.EOF
	if !f.complete {
		return status.Error(codes.Canceled, "the client did not finish")
	}
	if f.refuse != nil {
		return f.refuse
	}
	return stream.SendAndClose(f.answer)
}

func (f *importFake) PushCheckpoint(req *pb.PushCheckpointRequest, stream grpc.ServerStreamingServer[pb.PushCheckpointProgress]) error {
	f.mu.Lock()
	f.pushed = req
	answer, refuse := f.answer, f.refuse
	f.mu.Unlock()
	if refuse != nil {
		return refuse
	}
	if err := stream.Send(&pb.PushCheckpointProgress{DoneBytes: 10, TotalBytes: 20}); err != nil {
		return err
	}
	return stream.Send(&pb.PushCheckpointProgress{DoneBytes: 20, TotalBytes: 20, Imported: answer})
}

// importAnswer is what the fake node-b answers for the fixture's
// checkpoint.
func importAnswer(fx fixture, already bool) *pb.ImportCheckpointResponse {
	return &pb.ImportCheckpointResponse{
		Checkpoint:     &pb.Checkpoint{Id: fx.m.ID, ContainerName: "c1", Node: "node-a", SizeBytes: 4096, Image: "counter"},
		ManifestDigest: "sha256:" + strings.Repeat("ab", 32),
		AlreadyPresent: already,
		Node:           "node-b",
		ReceivedBytes:  1234,
		Warnings:       []string{"kernel differs"},
	}
}

// TestCheckpointImport: `checkpoint import` sends the archive as it is,
// or decrypted here with --decrypt-key (the agent sees only plaintext),
// and prints what the node kept; a tampered ciphertext stops the upload
// before it completes, so the agent keeps nothing; the agent's refusal
// is the command's error.
func TestCheckpointImport(t *testing.T) {
	fx := newFixture(t)
	key := newKey(t)
	plain := fx.export(t, bundle.Zstd, "")
	plainBytes, err := os.ReadFile(plain)
	if err != nil {
		t.Fatal(err)
	}
	encrypted := fx.export(t, bundle.Zstd, key)

	t.Run("json, decrypted here", func(t *testing.T) {
		f := startImportFake(t, importAnswer(fx, false))
		out, _, err := runGodwit(t, "--agent", f.addr, "checkpoint", "import", encrypted, "--decrypt-key", key, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if v["id"] != fx.m.ID || v["kept_on"] != "node-b" || v["node"] != "node-a" || v["already_present"] != false ||
			v["manifest_digest"] != "sha256:"+strings.Repeat("ab", 32) {
			t.Errorf("checkpoint import -o json = %s", out)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if !f.complete || !bytes.Equal(f.received, plainBytes) {
			t.Errorf("the agent received %d bytes (complete %v), want the %d of the plaintext archive", len(f.received), f.complete, len(plainBytes))
		}
	})
	t.Run("text, already there", func(t *testing.T) {
		f := startImportFake(t, importAnswer(fx, true))
		out, stderr, err := runGodwit(t, "--agent", f.addr, "checkpoint", "import", plain)
		if err != nil {
			t.Fatal(err)
		}
		if lines := strings.Split(out, "\n"); lines[0] != fx.m.ID || !strings.Contains(out, "was on node-b already: nothing changed") {
			t.Errorf("checkpoint import printed %q, want the ID first, then that it was there already", out)
		}
		if !strings.Contains(stderr, "warning: kernel differs") {
			t.Errorf("stderr %q lacks the warning", stderr)
		}
	})
	t.Run("tampered ciphertext", func(t *testing.T) {
		f := startImportFake(t, importAnswer(fx, false))
		tampered := fx.export(t, bundle.NoCompression, key)
		data, err := os.ReadFile(tampered)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)-100] ^= 0x01
		if err := os.WriteFile(tampered, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err = runGodwit(t, "--agent", f.addr, "checkpoint", "import", tampered, "--decrypt-key", key)
		if err == nil || !strings.Contains(err.Error(), "read checkpoint archive") {
			t.Fatalf("import of a tampered archive: %v, want the decryption's failure", err)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.complete {
			t.Error("the upload of a tampered archive completed: the agent would keep it")
		}
	})
	t.Run("refused", func(t *testing.T) {
		f := startImportFake(t, importAnswer(fx, false))
		f.refuse = status.Error(codes.FailedPrecondition, "checkpoint 0123456789ab refused by node node-b, nothing was kept: import the image")
		_, _, err := runGodwit(t, "--agent", f.addr, "checkpoint", "import", plain)
		if err == nil || err.Error() != "checkpoint 0123456789ab refused by node node-b, nothing was kept: import the image" {
			t.Fatalf("refused import: %v, want the agent's message", err)
		}
	})
}

// TestCheckpointPush: `checkpoint push` asks the source agent to send
// to --to, with the compression given (none by default), and prints the
// destination's answer.
func TestCheckpointPush(t *testing.T) {
	fx := newFixture(t)
	f := startImportFake(t, importAnswer(fx, false))
	out, _, err := runGodwit(t, "--agent", f.addr, "checkpoint", "push", fx.m.ID[:6], "--to", "10.77.70.3:7701", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v importedView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if v.ID != fx.m.ID || v.KeptOn != "node-b" || v.ManifestDigest == "" {
		t.Errorf("checkpoint push -o json = %s", out)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if r := f.pushed; r.GetRef() != fx.m.ID[:6] || r.GetAddress() != "10.77.70.3:7701" || r.GetCompression() != "none" {
		t.Errorf("the agent was asked %v", r)
	}
}

func TestCheckpointImportAndPushRefuseBadArguments(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"import without a file", []string{"checkpoint", "import"}, "accepts 1 arg(s)"},
		{"import of a missing file", []string{"checkpoint", "import", "/nonexistent/c1.gwc"}, "no such file"},
		{"push without --to", []string{"checkpoint", "push", "abc"}, "--to ADDR"},
		{"push with an unknown compression", []string{"checkpoint", "push", "abc", "--to", "h:1", "--compress", "lz4"}, `--compress "lz4"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runGodwit(t, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("godwit %s: %v, want an error containing %q", strings.Join(tt.args, " "), err, tt.want)
			}
			if strings.Contains(err.Error(), "cannot reach the agent") {
				t.Fatalf("the arguments were not checked before the agent was called: %v", err)
			}
		})
	}
}
