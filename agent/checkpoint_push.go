package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// PushCheckpoint sends a stored checkpoint to another agent, which keeps
// it (ImportCheckpoint): a drain's deadline checkpoints a container on the
// node going into maintenance and keeps the checkpoint on another node
// too. This agent is the destination's client twice, with the same
// identity: the gRPC call (WithPeerCredentials) and the data connection
// that carries the archive (DataChannel.Dial).

// pushPhase is the phase of PushCheckpoint's progress.
const pushPhase = "pushing"

// WithPeerCredentials gives the agent the credentials it calls other
// agents' APIs with (PushCheckpoint calls the destination's
// ImportCheckpoint): its node certificate as a client, accepting only
// agents' certificates of the cluster's CA, or plaintext for an agent
// started with --insecure. Without it PushCheckpoint is refused.
func WithPeerCredentials(c credentials.TransportCredentials) ServerOption {
	return func(s *server) { s.peer = c }
}

// parsePushCompression accepts the API's compression names; empty is
// none, since memory pages hardly compress and the link between agents is
// faster than zstd on them (docs/migration-transfer.md).
func parsePushCompression(name string) (bundle.Compression, error) {
	if name == "" {
		return bundle.NoCompression, nil
	}
	return parseCompression(name)
}

func (s *server) PushCheckpoint(req *pb.PushCheckpointRequest, stream grpc.ServerStreamingServer[pb.PushCheckpointProgress]) error {
	compression, err := parsePushCompression(req.GetCompression())
	if err != nil {
		return err
	}
	p := &progressSender{
		send: func(m *pb.CheckpointProgress) error {
			return stream.Send(&pb.PushCheckpointProgress{DoneBytes: m.GetDoneBytes(), TotalBytes: m.GetTotalBytes()})
		},
		interval: progressInterval,
		now:      time.Now,
	}
	resp, err := s.pushCheckpoint(stream, req.GetRef(), req.GetAddress(), compression, func(done, total int64) {
		p.report(Progress{Phase: pushPhase, Done: done, Total: total})
	})
	if err != nil {
		return err
	}
	// Nothing reports progress once pushCheckpoint has returned.
	size := resp.GetCheckpoint().GetSizeBytes()
	return stream.Send(&pb.PushCheckpointProgress{DoneBytes: size, TotalBytes: size, Imported: resp})
}

// pushCheckpoint exports checkpoint ref into the destination's
// ImportCheckpoint at addr and returns the destination's answer, once it
// has verified and kept the checkpoint with the same manifest digest as
// here. The errors are gRPC status errors.
func (s *server) pushCheckpoint(stream grpc.ServerStream, ref, addr string, compression bundle.Compression, progress func(done, total int64)) (*pb.ImportCheckpointResponse, error) {
	ctx := stream.Context()
	switch {
	case addr == "":
		return nil, status.Error(codes.InvalidArgument, "push checkpoint: no destination address: give the destination agent's address (host:port)")
	case s.peer == nil || s.data == nil:
		return nil, status.Error(codes.FailedPrecondition, "this agent has no credentials for other agents or serves no data connections, so it cannot push a checkpoint")
	}
	m, err := s.a.findCheckpoint(ctx, ref)
	if err != nil {
		return nil, grpcError(err)
	}
	want, err := ManifestDigest(m)
	if err != nil {
		return nil, grpcError(err)
	}
	log := s.a.log.With("checkpoint", m.ID, "destination", addr)
	conn, err := grpc.NewClient(addr, append(rpc.DialOptions(), grpc.WithTransportCredentials(s.peer))...)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "push checkpoint %s: destination address %q: %v", m.ID, addr, err)
	}
	defer conn.Close()

	// The export writes into a pipe that the upload reads; a failed
	// export fails the upload's read, which cancels the destination's
	// import, so that it keeps nothing.
	start := time.Now()
	pr, pw := io.Pipe()
	exported := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(pw, dataWriteBuffer)
		err := s.a.ExportCheckpoint(ctx, m.ID, bw, compression, progress)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err) // io.EOF when nil
		exported <- err
	}()
	dial := func(ctx context.Context, token string) (net.Conn, error) { return s.data.Dial(ctx, addr, token) }
	resp, err := agentclient.ImportCheckpoint(ctx, pb.NewAgentServiceClient(conn), dial, pr)
	// A destination that had the checkpoint already answers before the
	// export is done: stop it.
	pr.CloseWithError(errPushAnswered)
	if eerr := <-exported; err == nil && eerr != nil && !errors.Is(eerr, errPushAnswered) {
		log.Warn("the export ended with an error after the destination kept the checkpoint", "err", eerr)
	}
	if err != nil {
		log.Warn("checkpoint push failed", "err", err)
		if st, ok := status.FromError(err); ok {
			msg := st.Message()
			if st.Code() == codes.Unavailable {
				msg += "; check that an agent runs at " + addr + " (the destination's advertised address) and that this node reaches it"
			}
			return nil, status.Errorf(st.Code(), "push checkpoint %s to %s: %s", m.ID, addr, msg)
		}
		return nil, grpcError(fmt.Errorf("push checkpoint %s to %s: %w", m.ID, addr, err))
	}
	if got := resp.GetManifestDigest(); got != want.String() || resp.GetCheckpoint().GetId() != m.ID {
		return nil, status.Errorf(codes.DataLoss, "push checkpoint %s to %s: the destination (node %s) kept checkpoint %s with manifest digest %s, but this node's is %s: "+
			"inspect both copies before removing this one", m.ID, addr, resp.GetNode(), resp.GetCheckpoint().GetId(), got, want)
	}
	log.Info("checkpoint pushed", "destination_node", resp.GetNode(), "already_present", resp.GetAlreadyPresent(),
		"archive_bytes", resp.GetReceivedBytes(), "duration", time.Since(start).Round(time.Millisecond))
	return resp, nil
}

// errPushAnswered stops an export whose destination has answered.
var errPushAnswered = errors.New("the destination answered")
