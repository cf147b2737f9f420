package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	"github.com/godwit/godwit/internal/datachan"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func TestCheckpointToProto(t *testing.T) {
	layer := digest.FromString("layer")
	m := &bundle.Manifest{
		ID:        "0123456789ab",
		Created:   time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC),
		Container: bundle.Container{Name: "c1", ID: "fedcba98", IP: "10.88.0.5"},
		Image:     bundle.Image{Name: "counter", Layers: []digest.Digest{layer}},
		Host:      bundle.HostInfo{Node: "node-a", CRIUVersion: "4.2.1", RuncVersion: "1.3.6", Kernel: "6.18.0"},
		Options:   bundle.Options{TCPEstablished: true, LeaveRunning: true},
		Stats: bundle.Stats{FreezingTimeUs: 1, FrozenTimeUs: 2, MemdumpTimeUs: 3, MemwriteTimeUs: 4,
			PagesScanned: 5, PagesSkippedParent: 6, PagesWritten: 7, RestoreTimeUs: 8, PagesRestored: 9},
		Files: []bundle.File{
			{Path: "config.json", Size: 1000},
			{Path: "criu/core-1.img", Size: 200},
			{Path: "criu/pages-1.img", Size: 4 << 20},
			{Path: "criu.txt", Size: 30}, // a top-level file, not an image
			{Path: "rootfs-diff.tar", Size: 5000},
		},
	}
	got := checkpointToProto(m)
	want := &pb.Checkpoint{
		Id: "0123456789ab", ContainerName: "c1", ContainerId: "fedcba98", Image: "counter",
		ImageLayers: []string{layer.String()}, Ip: "10.88.0.5", SizeBytes: 1000 + 200 + 4<<20 + 30 + 5000,
		LeaveRunning: true, TcpEstablished: true, Node: "node-a", CriuVersion: "4.2.1", RuncVersion: "1.3.6",
		KernelVersion: "6.18.0",
		Stats: &pb.CheckpointStats{FreezingTimeUs: 1, FrozenTimeUs: 2, MemdumpTimeUs: 3, MemwriteTimeUs: 4,
			PagesScanned: 5, PagesSkippedParent: 6, PagesWritten: 7, RestoreTimeUs: 8, PagesRestored: 9,
			ImageBytes: 200 + 4<<20},
	}
	if !got.GetCreated().AsTime().Equal(m.Created) {
		t.Errorf("created %v, want %v", got.GetCreated().AsTime(), m.Created)
	}
	got.Created = nil
	if got.String() != want.String() {
		t.Errorf("checkpointToProto =\n%v\nwant\n%v", got, want)
	}
}

func TestDetailToProtoKeepsTheReport(t *testing.T) {
	m := &bundle.Manifest{ID: "0123456789ab", Container: bundle.Container{Name: "c1"}}
	r := &criuimg.Report{
		Processes: []criuimg.Process{{
			PID: 1, PPID: 0, PGID: 1, SID: 1, State: "running", Comm: "counter", Cmdline: []string{"/counter", "-port", "7000"},
			Exe: "/counter", Cwd: "/", Root: "/", Threads: 4, MemoryBytes: 64 << 20,
			Files: []criuimg.File{{FD: 1, Type: "PIPE", Path: "pipe:[7]"}},
			Sockets: []criuimg.Socket{{FD: 3, Family: "IPv4", Type: "STREAM", Protocol: "TCP", State: "ESTABLISHED",
				LocalAddr: "10.88.0.5", LocalPort: 7000, RemoteAddr: "10.88.0.1", RemotePort: 40000, Inode: 11, PeerInode: 12}},
		}},
		Mounts:      []criuimg.Mount{{ID: 2, ParentID: 1, Mountpoint: "/proc", FSType: "proc", Source: "proc", Root: "/", Options: "rw", External: true}},
		MemoryBytes: 64 << 20,
		Warnings:    []string{"pid 1: command line cut"},
	}
	d := detailToProto(m, r)
	want := &pb.CheckpointDetail{
		Checkpoint: d.GetCheckpoint(),
		Processes: []*pb.CheckpointProcess{{
			Pid: 1, Ppid: 0, Pgid: 1, Sid: 1, State: "running", Comm: "counter", Cmdline: []string{"/counter", "-port", "7000"},
			Exe: "/counter", Cwd: "/", Root: "/", Threads: 4, MemoryBytes: 64 << 20,
			Files: []*pb.CheckpointFile{{Fd: 1, Type: "PIPE", Path: "pipe:[7]"}},
			Sockets: []*pb.CheckpointSocket{{Fd: 3, Family: "IPv4", Type: "STREAM", Protocol: "TCP", State: "ESTABLISHED",
				LocalAddr: "10.88.0.5", LocalPort: 7000, RemoteAddr: "10.88.0.1", RemotePort: 40000, Inode: 11, PeerInode: 12}},
		}},
		Mounts:      []*pb.CheckpointMount{{Id: 2, ParentId: 1, Mountpoint: "/proc", Fstype: "proc", Source: "proc", Root: "/", Options: "rw", External: true}},
		MemoryBytes: 64 << 20,
		Warnings:    []string{"pid 1: command line cut"},
	}
	if d.GetCheckpoint().GetId() != "0123456789ab" {
		t.Errorf("detail's checkpoint %v, want the manifest's", d.GetCheckpoint())
	}
	if d.String() != want.String() {
		t.Errorf("detailToProto =\n%v\nwant\n%v", d, want)
	}
}

// fakeClock is a settable time for progressSender.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestProgressSenderThrottlesWithinAPhase(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var sent []string
	p := &progressSender{
		send: func(m *pb.CheckpointProgress) error {
			sent = append(sent, fmt.Sprintf("%s %d/%d", m.GetPhase(), m.GetDoneBytes(), m.GetTotalBytes()))
			return nil
		},
		interval: 100 * time.Millisecond,
		now:      clock.now,
	}
	steps := []struct {
		advance time.Duration
		p       Progress
	}{
		{0, Progress{PhaseDumping, 0, 0}},                        // first: sent
		{10 * time.Millisecond, Progress{PhaseDumping, 1, 0}},    // too soon: dropped
		{100 * time.Millisecond, Progress{PhaseDumping, 2, 0}},   // interval passed: sent
		{time.Millisecond, Progress{PhaseRootfs, 3, 0}},          // new phase: sent at once
		{time.Millisecond, Progress{PhaseSealing, 0, 10}},        // new phase: sent
		{time.Millisecond, Progress{PhaseSealing, 5, 10}},        // too soon: dropped
		{time.Millisecond, Progress{PhaseSealing, 10, 10}},       // phase complete: sent
		{time.Millisecond, Progress{PhaseSealing, 10, 10}},       // repeated: dropped
		{200 * time.Millisecond, Progress{PhaseSealing, 10, 10}}, // still nothing new: dropped
	}
	for _, s := range steps {
		clock.t = clock.t.Add(s.advance)
		p.report(s.p)
	}
	want := []string{"dumping 0/0", "dumping 2/0", "rootfs 3/0", "sealing 0/10", "sealing 10/10"}
	if fmt.Sprint(sent) != fmt.Sprint(want) {
		t.Errorf("sent %q, want %q", sent, want)
	}
}

func TestProgressSenderStopsAfterAFailedSend(t *testing.T) {
	calls := 0
	p := &progressSender{
		send:     func(*pb.CheckpointProgress) error { calls++; return errors.New("client went away") },
		interval: time.Nanosecond,
		now:      time.Now,
	}
	p.report(Progress{PhaseDumping, 0, 0})
	p.report(Progress{PhaseRootfs, 0, 0})
	if calls != 1 {
		t.Errorf("send called %d times, want 1: nobody is listening after a failure", calls)
	}
}

func TestExportWriterChunks(t *testing.T) {
	var (
		mu     sync.Mutex
		chunks []*pb.ExportCheckpointChunk
	)
	w := &exportWriter{
		send: func(c *pb.ExportCheckpointChunk) error {
			mu.Lock()
			defer mu.Unlock()
			chunks = append(chunks, c)
			return nil
		},
		buf: make([]byte, 0, exportChunk),
	}
	var want bytes.Buffer
	// Writes smaller and larger than a chunk, as tar headers and the
	// compressor's blocks come.
	sizes := []int{512, 100, exportChunk, 3*exportChunk + 17, 1, exportChunk - 1}
	for i, n := range sizes {
		data := bytes.Repeat([]byte{byte(i + 1)}, n)
		w.progress(int64(want.Len()+n), 10<<20)
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		want.Write(data)
	}
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	for i, c := range chunks {
		if len(c.GetData()) > exportChunk || len(c.GetData()) == 0 {
			t.Errorf("chunk %d has %d bytes, want 1 to %d", i, len(c.GetData()), exportChunk)
		}
		if i < len(chunks)-1 && len(c.GetData()) != exportChunk {
			t.Errorf("chunk %d has %d bytes: only the last may be short", i, len(c.GetData()))
		}
		if c.GetTotalBytes() != 10<<20 || c.GetDoneBytes() == 0 {
			t.Errorf("chunk %d progress %d/%d", i, c.GetDoneBytes(), c.GetTotalBytes())
		}
		got.Write(c.GetData())
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatalf("chunks carry %d bytes, want the %d written in order", got.Len(), want.Len())
	}
	if err := w.flush(); err != nil || len(chunks) != (want.Len()+exportChunk-1)/exportChunk {
		t.Errorf("an empty flush sent a message (%d chunks for %d bytes) or failed: %v", len(chunks), want.Len(), err)
	}
}

func TestExportWriterReportsSendErrors(t *testing.T) {
	gone := errors.New("client went away")
	w := &exportWriter{send: func(*pb.ExportCheckpointChunk) error { return gone }, buf: make([]byte, 0, exportChunk)}
	if _, err := w.Write(make([]byte, exportChunk+1)); !errors.Is(err, gone) {
		t.Fatalf("Write = %v, want the send error, so that the export stops", err)
	}
}

func TestParseCompression(t *testing.T) {
	for in, want := range map[string]bundle.Compression{"": bundle.Zstd, "zstd": bundle.Zstd, "none": bundle.NoCompression} {
		if got, err := parseCompression(in); err != nil || got != want {
			t.Errorf("parseCompression(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := parseCompression("gzip"); status.Code(err) != codes.InvalidArgument {
		t.Errorf("parseCompression(gzip) = %v, want InvalidArgument", err)
	}
}

func TestGRPCErrorCodesForCheckpoints(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"corrupt member", &bundle.FileError{Path: "criu/pages-1.img", Archive: true, Reason: "sha256 mismatch", Err: bundle.ErrCorrupt}, codes.InvalidArgument},
		{"unsafe member", fmt.Errorf("import: %w", bundle.ErrUnsafe), codes.InvalidArgument},
		{"invalid manifest", fmt.Errorf("%w: id missing", bundle.ErrInvalidManifest), codes.InvalidArgument},
		{"encrypted without key", &bundle.FileError{Archive: true, Reason: "pass --decrypt-key FILE", Err: bundle.ErrEncrypted}, codes.InvalidArgument},
		{"decryption failed", fmt.Errorf("%w: tampered", bundle.ErrDecrypt), codes.InvalidArgument},
		{"malformed image", fmt.Errorf("inspect: %w", criuimg.ErrMalformedImage), codes.InvalidArgument},
		{"incompatible host", &bundle.IncompatibleError{Problems: []string{"CRIU 4.1 is older than 4.2.1: upgrade CRIU"}}, codes.FailedPrecondition},
		{"newer format", fmt.Errorf("%w: format_version 2", bundle.ErrUnsupportedVersion), codes.FailedPrecondition},
		{"import destination exists", fmt.Errorf("import: %w", bundle.ErrExists), codes.AlreadyExists},
		{"stalled transfer", fmt.Errorf("send: %w", &datachan.StallError{Peer: "10.0.0.2:7701", Timeout: time.Second}), codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := status.FromError(grpcError(tt.err))
			if st.Code() != tt.want || st.Message() != tt.err.Error() {
				t.Errorf("grpcError = %v %q, want %v with the same message", st.Code(), st.Message(), tt.want)
			}
		})
	}
}

func TestArchiveConnEndsOnlyWhenTheClientSaysSo(t *testing.T) {
	archive := []byte("the archive's bytes")
	cancelled := status.Error(codes.Canceled, "context canceled")
	broken := errors.New("connection reset by peer")
	tests := []struct {
		name string
		// conn is what the data connection reads; streamEnd how the
		// call's stream ended (nil: the client closed its side).
		conn      io.Reader
		streamEnd error
		want      error // what follows the bytes; io.EOF for a complete archive
	}{
		{"the client closed the stream after the archive", bytes.NewReader(archive), nil, io.EOF},
		{"the client cancelled: the short archive is an error", bytes.NewReader(archive), cancelled, cancelled},
		{"the connection broke", io.MultiReader(bytes.NewReader(archive), iotest.ErrReader(broken)), nil, broken},
		{"the connection broke as the client cancelled", io.MultiReader(bytes.NewReader(archive), iotest.ErrReader(broken)), cancelled, cancelled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end := make(chan error, 1)
			end <- tt.streamEnd
			a := &archiveConn{conn: tt.conn, streamEnd: end}
			got, err := io.ReadAll(a)
			if tt.want == io.EOF {
				if err != nil {
					t.Fatalf("read %v, want a complete archive", err)
				}
			} else if !errors.Is(err, tt.want) {
				t.Fatalf("read %v, want %v", err, tt.want)
			}
			if !bytes.Equal(got, archive) {
				t.Errorf("read %q, want %q", got, archive)
			}
			// The end is final: a second read does not wait again.
			if _, err2 := a.Read(make([]byte, 1)); (err == nil) != (err2 == io.EOF) {
				t.Errorf("second read %v after %v", err2, err)
			}
		})
	}
}
