package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

const (
	// exportChunk is how many archive bytes an ExportCheckpoint message
	// carries: few messages for a multi-GiB archive, well under gRPC's
	// 4 MiB message limit.
	exportChunk = 1 << 20
	// progressInterval spaces checkpoint progress messages: CRIU and the
	// hashing report far more often than a progress bar redraws.
	progressInterval = 100 * time.Millisecond
	// dataWriteBuffer is the buffering of an archive written to a data
	// connection: the archive writer writes in small pieces (tar headers,
	// 256 KiB copies), and one system call per MiB keeps the socket busy.
	dataWriteBuffer = 1 << 20
)

func (s *server) Checkpoint(req *pb.CheckpointRequest, stream grpc.ServerStreamingServer[pb.CheckpointProgress]) error {
	p := &progressSender{send: stream.Send, interval: progressInterval, now: time.Now}
	ctx, err := callGeneration(stream.Context())
	if err != nil {
		return err
	}
	m, err := s.a.Checkpoint(ctx, req.GetContainer(), CheckpointRequest{
		LeaveRunning: req.GetLeaveRunning(),
		Progress:     p.report,
	})
	if err != nil {
		return grpcError(err)
	}
	// After Checkpoint returns nothing reports progress any more, so the
	// last message cannot race a progress one.
	size := m.Size()
	return stream.Send(&pb.CheckpointProgress{
		Phase:      PhaseDone,
		DoneBytes:  size,
		TotalBytes: size,
		Checkpoint: checkpointToProto(m),
	})
}

// progressSender turns Progress callbacks into stream messages: every
// change of phase and every phase's end, and otherwise at most one per
// interval. The agent may report from several goroutines, and a stream's
// Send is not safe for concurrent use. Once a send fails (the client went
// away, and the checkpoint's context ends with it), it stops sending.
type progressSender struct {
	send     func(*pb.CheckpointProgress) error
	interval time.Duration
	now      func() time.Time

	mu     sync.Mutex
	sent   Progress // the last progress sent
	last   time.Time
	failed bool
}

func (p *progressSender) report(pr Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	finished := pr.Total > 0 && pr.Done >= pr.Total
	switch {
	case p.failed, pr == p.sent:
		return
	case pr.Phase == p.sent.Phase && !finished && now.Sub(p.last) < p.interval:
		return
	}
	p.sent, p.last = pr, now
	if err := p.send(&pb.CheckpointProgress{Phase: pr.Phase, DoneBytes: pr.Done, TotalBytes: pr.Total}); err != nil {
		p.failed = true
	}
}

func (s *server) ListCheckpoints(ctx context.Context, req *pb.ListCheckpointsRequest) (*pb.ListCheckpointsResponse, error) {
	ms, err := s.a.ListCheckpoints(ctx, req.GetContainer())
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &pb.ListCheckpointsResponse{Checkpoints: make([]*pb.Checkpoint, 0, len(ms))}
	for _, m := range ms {
		resp.Checkpoints = append(resp.Checkpoints, checkpointToProto(m))
	}
	return resp, nil
}

func (s *server) InspectCheckpoint(ctx context.Context, req *pb.CheckpointRef) (*pb.CheckpointDetail, error) {
	m, r, err := s.a.InspectCheckpoint(ctx, req.GetRef())
	if err != nil {
		return nil, grpcError(err)
	}
	return detailToProto(m, r), nil
}

func (s *server) RemoveCheckpoint(ctx context.Context, req *pb.CheckpointRef) (*pb.RemoveCheckpointResponse, error) {
	return &pb.RemoveCheckpointResponse{}, grpcError(s.a.RemoveCheckpoint(ctx, req.GetRef()))
}

func (s *server) ExportCheckpoint(req *pb.ExportCheckpointRequest, stream grpc.ServerStreamingServer[pb.ExportCheckpointChunk]) error {
	compression, err := parseCompression(req.GetCompression())
	if err != nil {
		return err
	}
	if token := req.GetDataToken(); token != "" {
		return s.exportToDataConn(stream, req.GetRef(), compression, token)
	}
	w := &exportWriter{send: stream.Send, buf: make([]byte, 0, exportChunk)}
	if err := s.a.ExportCheckpoint(stream.Context(), req.GetRef(), w, compression, w.progress); err != nil {
		return grpcError(err)
	}
	return w.flush()
}

// exportToDataConn writes the archive to the data connection that
// presents token and reports progress on the stream. The connection is
// closed in every case; the call's status tells the client whether what
// it carried is the whole archive.
func (s *server) exportToDataConn(stream grpc.ServerStreamingServer[pb.ExportCheckpointChunk], ref string, compression bundle.Compression, token string) error {
	ctx := stream.Context()
	conn, err := s.acceptData(ctx, token)
	if err != nil {
		return err
	}
	// A client that stops reading must not hold the export for ever:
	// when the call ends, so does the connection.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	const exportPhase = "exporting"
	p := &progressSender{
		send: func(m *pb.CheckpointProgress) error {
			return stream.Send(&pb.ExportCheckpointChunk{DoneBytes: m.GetDoneBytes(), TotalBytes: m.GetTotalBytes()})
		},
		interval: progressInterval,
		now:      time.Now,
	}
	bw := bufio.NewWriterSize(conn, dataWriteBuffer)
	err = s.a.ExportCheckpoint(ctx, ref, bw, compression, func(done, total int64) {
		p.report(Progress{Phase: exportPhase, Done: done, Total: total})
	})
	if err == nil {
		if err = bw.Flush(); err != nil {
			err = fmt.Errorf("send checkpoint archive: %w", err)
		}
	}
	if cerr := conn.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("send checkpoint archive: %w", cerr)
	}
	return grpcError(err)
}

// acceptData waits for the data connection that presents token.
func (s *server) acceptData(ctx context.Context, token string) (net.Conn, error) {
	if s.data == nil {
		return nil, status.Error(codes.FailedPrecondition,
			"this agent serves no data connections: send the archive on the stream, without a data token")
	}
	conn, err := s.data.Accept(ctx, token)
	if err != nil {
		return nil, grpcError(fmt.Errorf("open the data connection: %w; check that the client can open a second "+
			"connection to the agent's address", err))
	}
	return conn, nil
}

// dialData opens a data connection to the agent at addr presenting token,
// for a call that sends to another agent.
func (s *server) dialData(ctx context.Context, addr, token string) (net.Conn, error) {
	if s.data == nil {
		return nil, status.Error(codes.FailedPrecondition, "this agent serves no data connections, so it cannot open one to another agent")
	}
	return s.data.Dial(ctx, addr, token)
}

// parseCompression accepts the API's compression names; empty is zstd.
func parseCompression(name string) (bundle.Compression, error) {
	switch c := bundle.Compression(name); c {
	case "":
		return bundle.Zstd, nil
	case bundle.Zstd, bundle.NoCompression:
		return c, nil
	}
	return "", status.Errorf(codes.InvalidArgument, "unknown compression %q: use %s or %s", name, bundle.Zstd, bundle.NoCompression)
}

// exportWriter sends what the archive writer writes as chunks of
// exportChunk bytes, each stamped with the progress reached when it was
// sent. The compressor may write from its own goroutine while progress is
// reported from the exporter's, hence the lock.
type exportWriter struct {
	send func(*pb.ExportCheckpointChunk) error

	mu          sync.Mutex
	buf         []byte
	done, total int64
}

func (w *exportWriter) progress(done, total int64) {
	w.mu.Lock()
	w.done, w.total = done, total
	w.mu.Unlock()
}

func (w *exportWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for len(p) > 0 {
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		n += k
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.sendLocked(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush sends what is left; called once the archive is complete.
func (w *exportWriter) flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) == 0 {
		return nil
	}
	return w.sendLocked()
}

func (w *exportWriter) sendLocked() error {
	// Send may keep the message until it is written out: give it its own
	// copy of the buffer.
	data := append([]byte(nil), w.buf...)
	w.buf = w.buf[:0]
	return w.send(&pb.ExportCheckpointChunk{Data: data, DoneBytes: w.done, TotalBytes: w.total})
}

func (s *server) Restore(ctx context.Context, req *pb.RestoreRequest) (*pb.RestoreResponse, error) {
	res, err := s.a.Restore(ctx, RestoreRequest{
		Container:    req.GetContainer(),
		CheckpointID: req.GetCheckpointId(),
		Name:         req.GetName(),
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return s.restoreToProto(res), nil
}

func (s *server) RestoreArchive(stream grpc.ClientStreamingServer[pb.RestoreArchiveRequest, pb.RestoreResponse]) error {
	header, err := recvHeader(stream.Recv, "restore archive", (*pb.RestoreArchiveRequest).GetHeader)
	if err != nil {
		return err
	}
	if token := header.GetDataToken(); token != "" {
		return s.restoreFromDataConn(stream, header.GetName(), token)
	}
	// The archive is received in its own goroutine, a few messages ahead
	// of the importer, so that receiving and verifying overlap.
	pr, pw := newChunkPipe(archiveReadAhead)
	go receiveUpload(stream.Recv, "restore archive", "checkpoint archive", restoreArchivePart, pw.Write, pw.CloseWithError)
	res, err := s.a.RestoreArchive(stream.Context(), pr, header.GetName())
	pr.Close() // unblocks the receiver
	if err != nil {
		return grpcError(err)
	}
	return stream.SendAndClose(s.restoreToProto(res))
}

// restoreArchivePart is receiveUpload's part for RestoreArchive: a
// message's data, and whether it is a header.
func restoreArchivePart(msg *pb.RestoreArchiveRequest) ([]byte, bool) {
	return msg.GetData(), msg.GetHeader() != nil
}

// restoreFromDataConn restores from the archive on the data connection
// that presents token. The stream carries nothing more; the client closes
// its side once the whole archive is on the connection.
func (s *server) restoreFromDataConn(stream grpc.ClientStreamingServer[pb.RestoreArchiveRequest, pb.RestoreResponse], name, token string) error {
	ctx := stream.Context()
	archive, release, err := acceptArchive(ctx, s, stream.Recv, token, "restore archive", 0)
	if err != nil {
		return err
	}
	defer release()
	res, err := s.a.RestoreArchive(ctx, archive, name)
	if err != nil {
		return grpcError(err)
	}
	return stream.SendAndClose(s.restoreToProto(res))
}

// recvHeader receives the first message of a client-streaming upload
// (RestoreArchive, ImportCheckpoint, ImportImage) with recv, and returns
// the header that header finds in it. A first message that is not the
// header is refused with InvalidArgument, naming call.
func recvHeader[Req, H any](recv func() (*Req, error), call string, header func(*Req) *H) (*H, error) {
	first, err := recv()
	if err != nil {
		return nil, grpcError(err)
	}
	h := header(first)
	if h == nil {
		return nil, status.Error(codes.InvalidArgument, call+": the first message must be the header")
	}
	return h, nil
}

// receiveUpload receives, with recv, the messages of a client-streaming
// upload that follow its header, and passes the data that part finds in
// each to write, the writing end of a pipe, until the client closes its
// side; it then closes the pipe with closeWith(nil), which the reader
// sees as io.EOF. A failed receive closes the pipe with that error, as
// "receive <what>: ...", and a message that part says is a second header
// with InvalidArgument, naming call. It stops as soon as write returns
// false: the reader stopped reading and said why. Run it in its own
// goroutine, beside the reader.
func receiveUpload[Req any](recv func() (*Req, error), call, what string, part func(*Req) (data []byte, header bool),
	write func(data []byte) bool, closeWith func(error),
) {
	for {
		msg, err := recv()
		if err == io.EOF {
			closeWith(nil)
			return
		}
		if err != nil {
			closeWith(fmt.Errorf("receive %s: %w", what, err))
			return
		}
		data, header := part(msg)
		if header {
			closeWith(status.Error(codes.InvalidArgument, call+": a second header arrived among the data"))
			return
		}
		if !write(data) {
			return // the importer stopped reading and said why
		}
	}
}

// acceptArchive accepts the data connection that presents token for the
// archive of the call whose context is ctx, and returns the archive on it
// (see archiveConn), read through a buffer of bufSize bytes when bufSize
// is positive, and release, which closes the connection: call it once
// done with the archive. The call's stream, which recv receives from,
// carries nothing more: a message on it is refused with InvalidArgument,
// naming call, and ends the connection. A client that cancels the call,
// or stops sending, must not hold the importer: when the call ends, so
// does the connection.
func acceptArchive[Req any](ctx context.Context, s *server, recv func() (*Req, error), token, call string, bufSize int) (archive io.Reader, release func(), err error) {
	conn, err := s.acceptData(ctx, token)
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	streamEnd := make(chan error, 1)
	go func() {
		_, err := recv()
		switch {
		case err == io.EOF:
			streamEnd <- nil
		case err != nil:
			streamEnd <- fmt.Errorf("receive checkpoint archive: %w", err)
		default:
			streamEnd <- status.Error(codes.InvalidArgument,
				call+": a message arrived on the stream, but with a data token the archive travels on the data connection")
			conn.Close()
		}
	}()
	var r io.Reader = conn
	if bufSize > 0 {
		r = bufio.NewReaderSize(conn, bufSize)
	}
	release = func() {
		stop()
		conn.Close()
	}
	return &archiveConn{conn: r, streamEnd: streamEnd}, release, nil
}

// archiveConn reads an archive from a data connection. The connection's
// end is the archive's end only once the client has closed its side of
// the call's stream, which it does after sending the whole archive: a
// client that fails part-way (a tampered ciphertext found while
// decrypting) cancels the call instead, and the reader returns that
// error rather than the end of a short archive.
type archiveConn struct {
	conn io.Reader
	// streamEnd delivers how the call's stream ended: nil when the
	// client closed its side.
	streamEnd <-chan error
	err       error // sticky, once the connection ended
}

func (a *archiveConn) Read(p []byte) (int, error) {
	if a.err != nil {
		return 0, a.err
	}
	n, err := a.conn.Read(p)
	switch {
	case err == io.EOF:
		if serr := <-a.streamEnd; serr != nil {
			err = serr
		}
		a.err = err
	case err != nil:
		err = fmt.Errorf("receive checkpoint archive: %w", err)
		// The stream's end, when known, says why the connection broke.
		select {
		case serr := <-a.streamEnd:
			if serr != nil {
				err = serr
			}
		default:
		}
		a.err = err
	}
	return n, err
}

func (s *server) restoreToProto(res *RestoreResult) *pb.RestoreResponse {
	out := &pb.RestoreResponse{Warnings: res.Warnings}
	if res.Container != nil {
		out.Container = s.containerToProto(res.Container)
	}
	if res.Checkpoint != nil {
		out.Checkpoint = checkpointToProto(res.Checkpoint)
	}
	return out
}

// checkpointToProto summarises a manifest: everything but its file list,
// of which only the sizes remain.
func checkpointToProto(m *bundle.Manifest) *pb.Checkpoint {
	st := m.Stats
	out := &pb.Checkpoint{
		Id:             m.ID,
		ContainerName:  m.Container.Name,
		ContainerId:    m.Container.ID,
		Created:        timestamppb.New(m.Created),
		Image:          m.Image.Name,
		Ip:             m.Container.IP,
		SizeBytes:      m.Size(),
		LeaveRunning:   m.Options.LeaveRunning,
		TcpEstablished: m.Options.TCPEstablished,
		Node:           m.Host.Node,
		CriuVersion:    m.Host.CRIUVersion,
		RuncVersion:    m.Host.RuncVersion,
		KernelVersion:  m.Host.Kernel,
		Stats: &pb.CheckpointStats{
			FreezingTimeUs:     st.FreezingTimeUs,
			FrozenTimeUs:       st.FrozenTimeUs,
			MemdumpTimeUs:      st.MemdumpTimeUs,
			MemwriteTimeUs:     st.MemwriteTimeUs,
			PagesScanned:       st.PagesScanned,
			PagesSkippedParent: st.PagesSkippedParent,
			PagesWritten:       st.PagesWritten,
			RestoreTimeUs:      st.RestoreTimeUs,
			PagesRestored:      st.PagesRestored,
			ImageBytes:         criuImageBytes(m),
		},
	}
	for _, d := range m.Image.Layers {
		out.ImageLayers = append(out.ImageLayers, d.String())
	}
	return out
}

// criuImageBytes is the size of the files in the manifest's CRIU
// directory: the images, memory pages included.
func criuImageBytes(m *bundle.Manifest) int64 {
	var n int64
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, bundle.CRIUDir+"/") {
			n += f.Size
		}
	}
	return n
}

func detailToProto(m *bundle.Manifest, r *criuimg.Report) *pb.CheckpointDetail {
	out := &pb.CheckpointDetail{
		Checkpoint:  checkpointToProto(m),
		MemoryBytes: r.MemoryBytes,
		Warnings:    r.Warnings,
	}
	for _, p := range r.Processes {
		pp := &pb.CheckpointProcess{
			Pid:         int32(p.PID),
			Ppid:        int32(p.PPID),
			Pgid:        int32(p.PGID),
			Sid:         int32(p.SID),
			State:       p.State,
			Comm:        p.Comm,
			Cmdline:     p.Cmdline,
			Exe:         p.Exe,
			Cwd:         p.Cwd,
			Root:        p.Root,
			Threads:     int32(p.Threads),
			MemoryBytes: p.MemoryBytes,
		}
		for _, f := range p.Files {
			pp.Files = append(pp.Files, &pb.CheckpointFile{Fd: int32(f.FD), Type: f.Type, Path: f.Path})
		}
		for _, sk := range p.Sockets {
			pp.Sockets = append(pp.Sockets, &pb.CheckpointSocket{
				Fd:         int32(sk.FD),
				Family:     sk.Family,
				Type:       sk.Type,
				Protocol:   sk.Protocol,
				State:      sk.State,
				LocalAddr:  sk.LocalAddr,
				LocalPort:  int32(sk.LocalPort),
				RemoteAddr: sk.RemoteAddr,
				RemotePort: int32(sk.RemotePort),
				Path:       sk.Path,
				Inode:      sk.Inode,
				PeerInode:  sk.PeerInode,
			})
		}
		out.Processes = append(out.Processes, pp)
	}
	for _, mt := range r.Mounts {
		out.Mounts = append(out.Mounts, &pb.CheckpointMount{
			Id:         int32(mt.ID),
			ParentId:   int32(mt.ParentID),
			Mountpoint: mt.Mountpoint,
			Fstype:     mt.FSType,
			Source:     mt.Source,
			Root:       mt.Root,
			Options:    mt.Options,
			External:   mt.External,
		})
	}
	return out
}
