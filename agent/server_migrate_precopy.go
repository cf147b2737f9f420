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

// Pre-copy's migration calls (migration_precopy.go) over gRPC.

func (s *server) MigratePreDump(ctx context.Context, req *pb.MigratePreDumpRequest) (*pb.MigratePreDumpReply, error) {
	it, err := s.a.MigratePreDump(ctx, req.GetId(), int(req.GetRound()))
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.MigratePreDumpReply{DirtyPages: it.DirtyPages, DurationUs: it.Duration.Microseconds(), Bytes: it.Bytes}, nil
}

// MigrateSendPreDump dials the destination's data connection and streams
// a pre-copy round to it, sending progress to the driver.
func (s *server) MigrateSendPreDump(req *pb.MigrateSendPreDumpRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	ctx := stream.Context()
	conn, err := s.dialData(ctx, req.GetAddress(), req.GetDataToken())
	if err != nil {
		return grpcError(fmt.Errorf("migration %s: connect to the destination %s: %w", req.GetId(), req.GetAddress(), err))
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
	err = s.a.MigrateSendPreDump(ctx, req.GetId(), int(req.GetRound()), bw, func(done, total int64) {
		p.report(Progress{Phase: "sync", Done: done, Total: total})
	})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	return grpcError(err)
}

// MigrateReceivePreDump takes a pre-copy round from the data connection
// that presents the request's token.
func (s *server) MigrateReceivePreDump(ctx context.Context, req *pb.MigrateReceivePreDumpRequest) (*pb.MigrateReply, error) {
	conn, err := s.acceptData(ctx, req.GetDataToken())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	phase, err := s.a.MigrateReceivePreDump(ctx, req.GetId(), int(req.GetRound()), bufio.NewReaderSize(conn, dataWriteBuffer))
	if err == nil {
		// A round already here: drop what the source sends again, so
		// that its send succeeds too.
		_, _ = io.Copy(io.Discard, conn)
	}
	return reply(phase, err)
}
