package agentclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/internal/datachan"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

const (
	// restoreChunk is how many archive bytes each message of an upload
	// (RestoreArchive, ImportCheckpoint) carries when the archive travels
	// in the stream.
	restoreChunk = 1 << 20
	// dataBuffer is how many archive bytes one read or write of a data
	// connection moves: one system call per MiB.
	dataBuffer = 1 << 20
	// agentAnswerWait is how long an upload whose data connection broke
	// waits for the agent's answer before it cancels the call.
	agentAnswerWait = 5 * time.Second
)

// DataDialer opens a data connection to the agent that the gRPC client
// calls, presenting token: the archive of an export or a restore then
// travels there instead of inside the call (see internal/datachan).
type DataDialer func(ctx context.Context, token string) (net.Conn, error)

// DialData is the DataDialer of the agent whose gRPC client dials addr
// (host:port): the agent serves data connections on its gRPC address,
// over TLS with the client's configuration cfg (the one its gRPC client
// uses), or in plaintext when cfg is nil.
func DialData(addr string, cfg *tls.Config) DataDialer {
	d := datachan.Dialer{TLS: cfg}
	return func(ctx context.Context, token string) (net.Conn, error) {
		return d.Dial(ctx, addr, token)
	}
}

// Checkpoint asks the agent for a checkpoint and returns it once taken.
// progress, when set, is called with every progress message before the
// last one, which carries the checkpoint.
func Checkpoint(ctx context.Context, client pb.AgentServiceClient, req *pb.CheckpointRequest, progress func(*pb.CheckpointProgress)) (*pb.Checkpoint, error) {
	stream, err := client.Checkpoint(ctx, req)
	if err != nil {
		return nil, err
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return nil, errors.New("checkpoint: the agent ended the call without returning the checkpoint")
		}
		if err != nil {
			return nil, err
		}
		if cp := msg.GetCheckpoint(); cp != nil {
			return cp, nil
		}
		if progress != nil {
			progress(msg)
		}
	}
}

// ExportCheckpoint writes the unencrypted archive of the stored checkpoint
// req.Ref to w as the agent sends it: on a data connection that dial
// opens (see DataDialer), or, when dial is nil, inside the call's stream.
// progress, when set, is called as the agent reports it with the bytes of
// the checkpoint's files in the archive so far and their total, both
// before compression. It returns only once the agent's status is in:
// nil means w received the whole archive. On error, what was written to w
// is incomplete and must be discarded.
func ExportCheckpoint(ctx context.Context, client pb.AgentServiceClient, dial DataDialer, req *pb.ExportCheckpointRequest, w io.Writer, progress func(done, total int64)) error {
	if dial == nil {
		return exportOnStream(ctx, client, req, w, progress)
	}
	token, err := datachan.NewToken()
	if err != nil {
		return err
	}
	req = proto.CloneOf(req)
	req.DataToken = token
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the agent's export when w fails
	stream, err := client.ExportCheckpoint(ctx, req)
	if err != nil {
		return err
	}
	// The stream carries progress and then the export's status. It is
	// read beside the data, and a failure ends the data's wait.
	result := make(chan error, 1)
	go func() {
		for {
			msg, err := stream.Recv()
			if err == io.EOF {
				result <- nil
				return
			}
			if err != nil {
				cancel()
				result <- err
				return
			}
			if progress != nil {
				progress(msg.GetDoneBytes(), msg.GetTotalBytes())
			}
		}
	}()
	// Every return below waits for result: nothing calls progress after
	// ExportCheckpoint returns.
	conn, err := dial(ctx, token)
	if err != nil {
		cancel()
		return agentReason(<-result, fmt.Errorf("export checkpoint: %w", err))
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // unblocks Read
	defer stop()
	buf := make([]byte, dataBuffer)
	for {
		n, rerr := conn.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				cancel()
				<-result
				return fmt.Errorf("write checkpoint archive: %w", err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			cancel()
			return agentReason(<-result, fmt.Errorf("receive checkpoint archive: %w", rerr))
		}
	}
	// The connection's end is the archive's only if the agent says so: an
	// export that fails part-way closes it too.
	return <-result
}

// exportOnStream is ExportCheckpoint with the archive in the stream's
// messages.
func exportOnStream(ctx context.Context, client pb.AgentServiceClient, req *pb.ExportCheckpointRequest, w io.Writer, progress func(done, total int64)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the agent's export when w fails
	stream, err := client.ExportCheckpoint(ctx, req)
	if err != nil {
		return err
	}
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(chunk.GetData()); err != nil {
			return fmt.Errorf("write checkpoint archive: %w", err)
		}
		if progress != nil {
			progress(chunk.GetDoneBytes(), chunk.GetTotalBytes())
		}
	}
}

// agentReason picks the error to report when the data side failed with
// err and the call then ended with callErr: the agent's own reason when it
// ended the call first, else err (the call was cancelled because of it).
func agentReason(callErr, err error) error {
	if callErr != nil && status.Code(callErr) != codes.Canceled {
		return callErr
	}
	return err
}

// ExportOptions tune ExportCheckpointFile.
type ExportOptions struct {
	// Compression is "zstd" (the default when empty) or "none".
	Compression string
	// EncryptKeyFile, when set, names an age identity file
	// (bundle.GenerateKey): the archive is encrypted to it here, on the
	// client, so that the key never reaches the agent.
	EncryptKeyFile string
	// Progress is as for ExportCheckpoint.
	Progress func(done, total int64)
}

// ExportCheckpointFile exports the stored checkpoint ref into the file
// path, as ExportCheckpoint does, and returns the archive's size. The file appears complete or not at
// all: the archive is written to a temporary file in path's directory and
// renamed over path, and the temporary file is removed on any error. It is
// not fsynced, like any file a command writes (and like CRIU's images): the
// kernel writes it back within seconds, and the checkpoint it came from
// stays on the agent. The file is readable by its owner only, since it holds the
// container's memory.
func ExportCheckpointFile(ctx context.Context, client pb.AgentServiceClient, dial DataDialer, ref, path string, opts ExportOptions) (size int64, err error) {
	if opts.EncryptKeyFile != "" {
		// Refuse an unusable key before the agent does any work.
		if err := CheckEncryptKey(opts.EncryptKeyFile); err != nil {
			return 0, err
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("export checkpoint to %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			err = errors.Join(err, removeTemp(tmp.Name()))
		}
	}()

	counter := &countingWriter{w: tmp}
	out := io.Writer(counter)
	var ew io.WriteCloser
	if opts.EncryptKeyFile != "" {
		if ew, err = bundle.Encrypt(counter, opts.EncryptKeyFile); err != nil {
			return 0, err
		}
		out = ew
	}
	req := &pb.ExportCheckpointRequest{Ref: ref, Compression: opts.Compression}
	if err := ExportCheckpoint(ctx, client, dial, req, out, opts.Progress); err != nil {
		return 0, err
	}
	if ew != nil {
		if err := ew.Close(); err != nil {
			return 0, fmt.Errorf("finish encrypting %s: %w", path, err)
		}
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("export checkpoint to %s: %w", path, err)
	}
	return counter.n, nil
}

// removeTemp removes a partial export; one that is already gone is fine.
func removeTemp(name string) error {
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove partial export: %w", err)
	}
	return nil
}

// CheckEncryptKey reports whether keyFile holds an identity that archives
// can be encrypted to, so that a caller can refuse a bad key before it
// checkpoints anything.
func CheckEncryptKey(keyFile string) error {
	w, err := bundle.Encrypt(io.Discard, keyFile)
	if err != nil {
		return err
	}
	return w.Close()
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// RestoreArchive uploads the unencrypted archive r to the agent, which
// verifies it and restores its container, named name when name is set:
// on a data connection that dial opens (see DataDialer), or, when dial is
// nil, inside the call's stream. If reading r fails (a decryption layer
// that finds tampering, say), the call is cancelled, so the agent
// restores nothing, and the read error is returned; if the agent refuses
// the archive part-way, the upload stops and the agent's reason is
// returned.
func RestoreArchive(ctx context.Context, client pb.AgentServiceClient, dial DataDialer, r io.Reader, name string) (*pb.RestoreResponse, error) {
	return archiveUpload[pb.RestoreArchiveRequest, pb.RestoreResponse]{
		open: client.RestoreArchive,
		header: func(token string) *pb.RestoreArchiveRequest {
			h := &pb.RestoreArchiveHeader{Name: name, DataToken: token}
			return &pb.RestoreArchiveRequest{Part: &pb.RestoreArchiveRequest_Header{Header: h}}
		},
		data: func(chunk []byte) *pb.RestoreArchiveRequest {
			return &pb.RestoreArchiveRequest{Part: &pb.RestoreArchiveRequest_Data{Data: chunk}}
		},
		dialFailed: "restore checkpoint archive",
	}.send(ctx, dial, r)
}

// archiveUpload is a client-streaming call that uploads an archive
// (RestoreArchive, ImportCheckpoint): a header, then the archive, either
// in the stream's data messages or on a data connection that the header's
// token names, then the agent's single answer. The calls differ only in
// their messages and in what an early answer means.
type archiveUpload[Req, Resp any] struct {
	// open starts the call (the client's method).
	open func(ctx context.Context, opts ...grpc.CallOption) (grpc.ClientStreamingClient[Req, Resp], error)
	// header is the first message; token is "" when the archive travels
	// in the stream.
	header func(token string) *Req
	// data is a message carrying chunk, which it may keep.
	data func(chunk []byte) *Req
	// dialFailed prefixes the error of a data connection that could not
	// be opened.
	dialFailed string
	// earlyAnswer: an answer that comes while the data connection's upload
	// breaks off is the call's result, success included (an agent that
	// holds what is uploaded already answers at once). Otherwise only the
	// agent's error is, and a success still fails with the upload's error.
	earlyAnswer bool
}

// send uploads r: on a data connection that dial opens, or, when dial is
// nil, inside the call's stream. If reading r fails, the call is
// cancelled, so that the agent keeps nothing, and the read error is
// returned; if the agent ends the call part-way, the upload stops and the
// agent's reason is returned.
func (u archiveUpload[Req, Resp]) send(ctx context.Context, dial DataDialer, r io.Reader) (*Resp, error) {
	if dial == nil {
		return u.sendOnStream(ctx, r)
	}
	token, err := datachan.NewToken()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := u.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(u.header(token)); err != nil {
		return stream.CloseAndRecv() // the agent's reason
	}
	// The agent's answer is awaited beside the upload: an agent that
	// refuses the archive part-way (or, for an import, has it already)
	// answers before the upload is done, and the upload then stops.
	type answer struct {
		resp *Resp
		err  error
	}
	answered := make(chan answer, 1)
	dataCtx, stopData := context.WithCancel(ctx)
	defer stopData()
	go func() {
		resp := new(Resp)
		err := stream.RecvMsg(resp)
		if err != nil {
			resp = nil
		}
		answered <- answer{resp, err}
		stopData()
	}()
	// giveUp ends an upload that broke off with err: with the agent's
	// answer if it comes within wait (the agent breaks the data connection
	// just before it answers), else by cancelling the call, so that the
	// agent keeps nothing, and with err.
	giveUp := func(err error, wait time.Duration) (*Resp, error) {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case a := <-answered:
			if a.err != nil || u.earlyAnswer {
				return a.resp, a.err
			}
			return nil, err
		case <-t.C:
		}
		cancel()
		return nil, agentReason((<-answered).err, err)
	}

	conn, err := dial(dataCtx, token)
	if err != nil {
		return giveUp(fmt.Errorf("%s: %w", u.dialFailed, err), 0)
	}
	defer conn.Close()
	stop := context.AfterFunc(dataCtx, func() { conn.Close() }) // unblocks Write
	defer stop()
	buf := make([]byte, dataBuffer)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if _, err := conn.Write(buf[:n]); err != nil {
				conn.Close()
				return giveUp(fmt.Errorf("send checkpoint archive: %w", err), agentAnswerWait)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// Cancel the call before the connection ends: the agent
			// takes the connection's end for the archive's only once the
			// stream is closed, which now never happens.
			cancel()
			conn.Close()
			<-answered
			return nil, fmt.Errorf("read checkpoint archive: %w", rerr)
		}
	}
	if err := conn.Close(); err != nil {
		return giveUp(fmt.Errorf("send checkpoint archive: %w", err), agentAnswerWait)
	}
	// Closing our side of the stream tells the agent that the whole
	// archive is on the connection.
	if err := stream.CloseSend(); err != nil {
		return giveUp(fmt.Errorf("send checkpoint archive: %w", err), agentAnswerWait)
	}
	a := <-answered
	return a.resp, a.err
}

// sendOnStream is send with the archive in the stream's messages.
func (u archiveUpload[Req, Resp]) sendOnStream(ctx context.Context, r io.Reader) (*Resp, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := u.open(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(u.header("")); err != nil {
		return stream.CloseAndRecv() // the agent's reason
	}
	buf := make([]byte, restoreChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			if err := stream.Send(u.data(append([]byte(nil), buf[:n]...))); err != nil {
				break // the agent ended the stream; CloseAndRecv says why
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// Cancel rather than close: a closed stream would look
			// like the end of a (truncated) archive.
			cancel()
			return nil, fmt.Errorf("read checkpoint archive: %w", rerr)
		}
	}
	return stream.CloseAndRecv()
}

// RestoreArchiveFile restores from the archive file path, as
// RestoreArchive does. With
// decryptKeyFile set, the file is decrypted here and the plaintext sent,
// so that the key never reaches the agent; a wrong key, a plaintext file
// or a tampered ciphertext is refused and nothing is restored. progress,
// when set, is called with the bytes of the file read so far and its
// size.
func RestoreArchiveFile(ctx context.Context, client pb.AgentServiceClient, dial DataDialer, path, name, decryptKeyFile string, progress func(done, total int64)) (*pb.RestoreResponse, error) {
	r, f, err := openArchiveFile(path, decryptKeyFile, progress)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return RestoreArchive(ctx, client, dial, r, name)
}

// openArchiveFile opens the archive file path for an upload
// (RestoreArchiveFile, ImportCheckpointFile) and returns the reader of its
// plaintext: decrypted here with decryptKeyFile when that is set, and
// reporting to progress, when set, the bytes of the file read so far and
// its size. The caller closes f once the upload is done; on error, it is
// closed already.
func openArchiveFile(path, decryptKeyFile string, progress func(done, total int64)) (r io.Reader, f *os.File, err error) {
	f, err = os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint archive: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("open checkpoint archive: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("checkpoint archive %s is not a regular file", path)
	}
	r = f
	if progress != nil {
		r = NewProgressReader(f, st.Size(), progress)
	}
	if decryptKeyFile != "" {
		if r, err = bundle.Decrypt(r, decryptKeyFile); err != nil {
			return nil, nil, err
		}
	}
	return r, f, nil
}

// NewProgressReader returns a reader of r that calls report with the bytes
// read so far and total after every read: the progress of an upload.
func NewProgressReader(r io.Reader, total int64, report func(done, total int64)) io.Reader {
	return &progressReader{r: r, total: total, report: report}
}

// progressReader reports how much of a reader of known size was read.
type progressReader struct {
	r           io.Reader
	done, total int64
	report      func(done, total int64)
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.done += int64(n)
		p.report(p.done, p.total)
	}
	return n, err
}
