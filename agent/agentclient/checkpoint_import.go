package agentclient

import (
	"context"
	"errors"
	"io"

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
	return archiveUpload[pb.ImportCheckpointRequest, pb.ImportCheckpointResponse]{
		open: client.ImportCheckpoint,
		header: func(token string) *pb.ImportCheckpointRequest {
			h := &pb.ImportCheckpointHeader{DataToken: token}
			return &pb.ImportCheckpointRequest{Part: &pb.ImportCheckpointRequest_Header{Header: h}}
		},
		data: func(chunk []byte) *pb.ImportCheckpointRequest {
			return &pb.ImportCheckpointRequest{Part: &pb.ImportCheckpointRequest_Data{Data: chunk}}
		},
		dialFailed:  "import checkpoint",
		earlyAnswer: true,
	}.send(ctx, dial, r)
}

// ImportCheckpointFile imports the archive file path, as ImportCheckpoint
// does. With decryptKeyFile set, the file is decrypted here and the
// plaintext sent, so that the key never reaches the agent; a wrong key, a
// plaintext file or a tampered ciphertext is refused and nothing is kept.
// progress, when set, is called with the bytes of the file read so far
// and its size.
func ImportCheckpointFile(ctx context.Context, client pb.AgentServiceClient, dial DataDialer, path, decryptKeyFile string, progress func(done, total int64)) (*pb.ImportCheckpointResponse, error) {
	r, f, err := openArchiveFile(path, decryptKeyFile, progress)
	if err != nil {
		return nil, err
	}
	defer f.Close()
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
