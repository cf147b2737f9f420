package agent

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The root filesystem before the freeze (migration_layers.go,
// migration_rootfs.go): the source dials the destination's data
// connection and streams, reporting progress to the driver; the
// destination takes the connection that presents the token.

func (s *server) MigrateSendLayers(req *pb.MigrateSendLayersRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	return s.sendData(stream, req.GetId(), req.GetAddress(), req.GetDataToken(), "prepare",
		func(ctx context.Context, w io.Writer, progress func(done, total int64)) error {
			return s.a.MigrateSendLayers(ctx, req.GetId(), req.GetLayers(), w, progress)
		})
}

func (s *server) MigrateSyncRootfs(req *pb.MigrateSyncRootfsRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	return s.sendData(stream, req.GetId(), req.GetAddress(), req.GetDataToken(), "sync",
		func(ctx context.Context, w io.Writer, progress func(done, total int64)) error {
			return s.a.MigrateSyncRootfs(ctx, req.GetId(), req.GetFormat(), w, progress)
		})
}

func (s *server) MigrateReceiveLayers(ctx context.Context, req *pb.MigrateReceiveRequest) (*pb.MigrateReply, error) {
	return s.receiveData(ctx, req.GetDataToken(), func(r io.Reader) (string, error) {
		phase, err := s.a.MigrateReceiveLayers(ctx, req.GetId(), r)
		return string(phase), err
	})
}

func (s *server) MigrateReceiveRootfs(ctx context.Context, req *pb.MigrateReceiveRequest) (*pb.MigrateReply, error) {
	return s.receiveData(ctx, req.GetDataToken(), func(r io.Reader) (string, error) {
		phase, err := s.a.MigrateReceiveRootfs(ctx, req.GetId(), r)
		return string(phase), err
	})
}

// sendData dials the destination's data connection at address with token
// and runs send on it, streaming send's progress (as phase) to the driver.
func (s *server) sendData(stream grpc.ServerStreamingServer[pb.MigrateProgress], id, address, token, phase string,
	send func(ctx context.Context, w io.Writer, progress func(done, total int64)) error,
) error {
	ctx := stream.Context()
	conn, err := s.dialData(ctx, address, token)
	if err != nil {
		return grpcError(fmt.Errorf("migration %s: connect to the destination %s: %w", id, address, err))
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	p := &progressSender{
		send: func(m *pb.CheckpointProgress) error {
			return stream.Send(&pb.MigrateProgress{DoneBytes: m.GetDoneBytes(), TotalBytes: m.GetTotalBytes()})
		},
		interval: progressInterval,
		now:      time.Now,
	}
	bw := bufio.NewWriterSize(conn, dataWriteBuffer)
	err = send(ctx, bw, func(done, total int64) { p.report(Progress{Phase: phase, Done: done, Total: total}) })
	if err == nil {
		err = bw.Flush()
	}
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	return grpcError(err)
}

// receiveData takes the data connection presenting token and runs
// receive on it. After a success the rest of the connection is read, so
// that a sender whose stream was taken already (a repeated call) ends
// well too.
func (s *server) receiveData(ctx context.Context, token string, receive func(r io.Reader) (string, error)) (*pb.MigrateReply, error) {
	conn, err := s.acceptData(ctx, token)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	phase, err := receive(bufio.NewReaderSize(conn, dataWriteBuffer))
	if err != nil {
		return nil, grpcError(err)
	}
	_, _ = io.Copy(io.Discard, conn)
	return &pb.MigrateReply{Phase: phase}, nil
}
