package agent

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/godwit/godwit/migrate"
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

// MigrateSendPreDump streams a pre-copy round to the destination's data
// connection, sending progress to the driver.
func (s *server) MigrateSendPreDump(req *pb.MigrateSendPreDumpRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	return s.sendData(stream, req.GetId(), req.GetAddress(), req.GetDataToken(), "sync", true,
		func(ctx context.Context, w io.Writer, progress func(done, total int64)) error {
			return s.a.MigrateSendPreDump(ctx, req.GetId(), int(req.GetRound()), w, progress)
		})
}

// MigrateReceivePreDump takes a pre-copy round from the data connection
// that presents the request's token; a round already here is taken again
// and dropped.
func (s *server) MigrateReceivePreDump(ctx context.Context, req *pb.MigrateReceivePreDumpRequest) (*pb.MigrateReply, error) {
	return s.receiveData(ctx, req.GetDataToken(), true, func(r io.Reader) (migrate.Phase, error) {
		return s.a.MigrateReceivePreDump(ctx, req.GetId(), int(req.GetRound()), r)
	})
}
