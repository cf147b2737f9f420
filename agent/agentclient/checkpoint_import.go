package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/internal/datachan"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// ImportCheckpoint uploads the unencrypted checkpoint archive r to the
// agent, which verifies it and keeps it as one of its checkpoints under
// its original ID: on a data connection that dial opens (see
// DataDialer), or, when dial is nil, inside the call's stream. It returns
// the agent's answer once the checkpoint is kept; an agent that holds the
// same checkpoint already answers before the upload is done, and the
// upload then stops. If reading r fails (a decryption layer that finds
// tampering, an export that fails), the call is cancelled, so the agent
// keeps nothing, and the read error is returned; if the agent refuses the
// archive part-way, the upload stops and the agent's reason is returned.
func ImportCheckpoint(ctx context.Context, client pb.AgentServiceClient, dial DataDialer, r io.Reader) (*pb.ImportCheckpointResponse, error) {
	if dial == nil {
		return importOnStream(ctx, client, r)
	}
	token, err := datachan.NewToken()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.ImportCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	header := &pb.ImportCheckpointRequest_Header{Header: &pb.ImportCheckpointHeader{DataToken: token}}
	if err := stream.Send(&pb.ImportCheckpointRequest{Part: header}); err != nil {
		return stream.CloseAndRecv() // the agent's reason
	}
	type answer struct {
		resp *pb.ImportCheckpointResponse
		err  error
	}
	// The answer is awaited beside the upload: an agent that refuses the
	// archive, or has the checkpoint already, answers before the upload
	// is done, and the upload then stops.
	answered := make(chan answer, 1)
	dataCtx, stopData := context.WithCancel(ctx)
	defer stopData()
	go func() {
		resp := new(pb.ImportCheckpointResponse)
		err := stream.RecvMsg(resp)
		if err != nil {
			resp = nil
		}
		answered <- answer{resp, err}
		stopData()
	}()
	// endEarly ends an upload that broke off with err: with the agent's
	// answer if it comes within wait (it closes the data connection just
	// before it answers), which may be a success, else by cancelling the
	// call, so that the agent keeps nothing, and with err.
	endEarly := func(err error, wait time.Duration) (*pb.ImportCheckpointResponse, error) {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case a := <-answered:
			if a.err != nil || a.resp != nil {
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
		return endEarly(fmt.Errorf("import checkpoint: %w", err), 0)
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
				return endEarly(fmt.Errorf("send checkpoint archive: %w", err), agentAnswerWait)
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
		return endEarly(fmt.Errorf("send checkpoint archive: %w", err), agentAnswerWait)
	}
	// Closing our side of the stream tells the agent that the whole
	// archive is on the connection.
	if err := stream.CloseSend(); err != nil {
		return endEarly(fmt.Errorf("send checkpoint archive: %w", err), agentAnswerWait)
	}
	a := <-answered
	return a.resp, a.err
}

// importOnStream is ImportCheckpoint with the archive in the stream's
// messages.
func importOnStream(ctx context.Context, client pb.AgentServiceClient, r io.Reader) (*pb.ImportCheckpointResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.ImportCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	header := &pb.ImportCheckpointRequest_Header{Header: &pb.ImportCheckpointHeader{}}
	if err := stream.Send(&pb.ImportCheckpointRequest{Part: header}); err != nil {
		return stream.CloseAndRecv() // the agent's reason
	}
	buf := make([]byte, restoreChunk)
	for {
		n, rerr := r.Read(buf)
		if n > 0 {
			data := &pb.ImportCheckpointRequest_Data{Data: append([]byte(nil), buf[:n]...)}
			if err := stream.Send(&pb.ImportCheckpointRequest{Part: data}); err != nil {
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

// ImportCheckpointFile imports the archive file path, as ImportCheckpoint
// does. With decryptKeyFile set, the file is decrypted here and the
// plaintext sent, so that the key never reaches the agent; a wrong key, a
// plaintext file or a tampered ciphertext is refused and nothing is kept.
// progress, when set, is called with the bytes of the file read so far
// and its size.
func ImportCheckpointFile(ctx context.Context, client pb.AgentServiceClient, dial DataDialer, path, decryptKeyFile string, progress func(done, total int64)) (*pb.ImportCheckpointResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open checkpoint archive: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open checkpoint archive: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("checkpoint archive %s is not a regular file", path)
	}
	var r io.Reader = f
	if progress != nil {
		r = NewProgressReader(f, st.Size(), progress)
	}
	if decryptKeyFile != "" {
		if r, err = bundle.Decrypt(r, decryptKeyFile); err != nil {
			return nil, err
		}
	}
	return ImportCheckpoint(ctx, client, dial, r)
}

// PushCheckpoint asks the agent to send its stored checkpoint req.Ref to
// the agent at req.Address (see the RPC) and returns the destination's
// answer once it has verified and kept the checkpoint. progress, when
// set, is called with every progress message before the last.
func PushCheckpoint(ctx context.Context, client pb.AgentServiceClient, req *pb.PushCheckpointRequest, progress func(done, total int64)) (*pb.ImportCheckpointResponse, error) {
	stream, err := client.PushCheckpoint(ctx, req)
	if err != nil {
		return nil, err
	}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return nil, errors.New("push checkpoint: the agent ended the call without the destination's answer")
		}
		if err != nil {
			return nil, err
		}
		if imported := msg.GetImported(); imported != nil {
			return imported, nil
		}
		if progress != nil {
			progress(msg.GetDoneBytes(), msg.GetTotalBytes())
		}
	}
}
