package agent

import (
	"context"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// Migration calls: the driver's Source and Destination (migrate/sides.go)
// over gRPC. The fencing errors (migrate.ErrCommitted, ErrAborted) travel
// as FAILED_PRECONDITION with their text, which the client maps back.

func reply(p migrate.Phase, err error) (*pb.MigrateReply, error) {
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.MigrateReply{Phase: string(p)}, nil
}

func (s *server) MigrateDescribe(ctx context.Context, req *pb.MigrateDescribeRequest) (*pb.MigrateContainer, error) {
	c, err := s.a.MigrateDescribe(ctx, req.GetId(), req.GetContainer())
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.MigrateContainer{Name: c.Name, Id: c.ID, Image: c.Image, ImageLayers: c.ImageLayers, Ip: c.IP, RootfsFormats: c.RootfsFormats}, nil
}

func (s *server) MigrateDump(ctx context.Context, req *pb.MigrateDumpRequest) (*pb.MigrateReply, error) {
	opts := migrate.DumpOptions{
		Strategy: migrate.Strategy(req.GetStrategy()), PreDumps: int(req.GetPreDumps()),
		Pages: migrate.DataLink{Address: req.GetPagesAddress(), Token: req.GetPagesToken()},
	}
	if pagesStrategy(opts.Strategy) {
		return reply(s.dumpWithPages(ctx, req.GetId(), opts)) // migration_stream.go
	}
	return reply(s.a.MigrateDump(ctx, req.GetId(), opts))
}

// MigrateSend dials the destination's data connection and streams the
// checkpoint to it, sending progress to the driver.
func (s *server) MigrateSend(req *pb.MigrateSendRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
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
	// Unbuffered: the transfer framing writes its files in chunks of a
	// MiB, which a buffer would only copy (migration_transfer.go).
	err = s.a.MigrateSend(ctx, req.GetId(), conn, func(done, total int64) {
		p.report(Progress{Phase: "transfer", Done: done, Total: total})
	})
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	return grpcError(err)
}

func (s *server) MigrateFinish(ctx context.Context, req *pb.MigrateFinishRequest) (*pb.MigrateReply, error) {
	return reply(s.a.MigrateFinish(ctx, req.GetId(), req.GetDestination()))
}

func (s *server) MigrateResume(ctx context.Context, req *pb.MigrateRef) (*pb.MigrateReply, error) {
	return reply(s.a.MigrateResume(ctx, req.GetId(), "aborted by the driver"))
}

func (s *server) MigratePrepare(ctx context.Context, req *pb.MigratePrepareRequest) (*pb.MigrateReply, error) {
	c := req.GetContainer()
	phase, p, err := s.a.MigratePrepare(ctx, req.GetId(), migrate.Container{
		Name: c.GetName(), ID: c.GetId(), Image: c.GetImage(), ImageLayers: c.GetImageLayers(), IP: c.GetIp(),
		RootfsFormats: c.GetRootfsFormats(),
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.MigrateReply{Phase: string(phase), MissingLayers: p.MissingLayers, MissingImage: p.MissingImage, RootfsFormat: p.RootfsFormat}, nil
}

// MigrateReceive takes the checkpoint from the data connection that
// presents the request's token.
func (s *server) MigrateReceive(ctx context.Context, req *pb.MigrateReceiveRequest) (*pb.MigrateReply, error) {
	conn, err := s.acceptData(ctx, req.GetDataToken())
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	phase, err := s.a.MigrateReceive(ctx, req.GetId(), conn) // buffered there (migration_transfer.go)
	if err == nil {
		// A retried transfer of a checkpoint already here: take what the
		// source sends and drop it, so that its Send succeeds too.
		_, _ = io.Copy(io.Discard, conn)
	}
	return reply(phase, err)
}

func (s *server) MigrateRestore(ctx context.Context, req *pb.MigrateRestoreRequest) (*pb.MigrateReply, error) {
	opts := migrate.RestoreOptions{
		Strategy: migrate.Strategy(req.GetStrategy()), PreDumps: int(req.GetPreDumps()),
		Pages: migrate.DataLink{Address: req.GetPagesAddress(), Token: req.GetPagesToken()},
	}
	if pagesStrategy(opts.Strategy) {
		return reply(s.restoreWithPages(ctx, req.GetId(), opts)) // migration_stream.go
	}
	return reply(s.a.MigrateRestore(ctx, req.GetId(), opts))
}

func (s *server) MigrateCommit(ctx context.Context, req *pb.MigrateRef) (*pb.MigrateReply, error) {
	return reply(s.a.MigrateCommit(ctx, req.GetId()))
}

func (s *server) MigrateAbort(ctx context.Context, req *pb.MigrateAbortRequest) (*pb.MigrateReply, error) {
	return reply(s.a.MigrateAbort(ctx, req.GetId(), req.GetWhy()))
}
