package agent

import (
	"context"
	"io"

	"google.golang.org/grpc"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The root filesystem before the freeze (migration_layers.go,
// migration_rootfs.go): the source dials the destination's data
// connection and streams, reporting progress to the driver; the
// destination takes the connection that presents the token.

func (s *server) MigrateSendLayers(req *pb.MigrateSendLayersRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	return s.sendData(stream, req.GetId(), req.GetAddress(), req.GetDataToken(), "prepare", true,
		func(ctx context.Context, w io.Writer, progress func(done, total int64)) error {
			return s.a.MigrateSendLayers(ctx, req.GetId(), req.GetLayers(), w, progress)
		})
}

func (s *server) MigrateSyncRootfs(req *pb.MigrateSyncRootfsRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	return s.sendData(stream, req.GetId(), req.GetAddress(), req.GetDataToken(), "sync", true,
		func(ctx context.Context, w io.Writer, progress func(done, total int64)) error {
			return s.a.MigrateSyncRootfs(ctx, req.GetId(), req.GetFormat(), w, progress)
		})
}

func (s *server) MigrateReceiveLayers(ctx context.Context, req *pb.MigrateReceiveRequest) (*pb.MigrateReply, error) {
	return s.receiveData(ctx, req.GetDataToken(), true, func(r io.Reader) (migrate.Phase, error) {
		return s.a.MigrateReceiveLayers(ctx, req.GetId(), r)
	})
}

func (s *server) MigrateReceiveRootfs(ctx context.Context, req *pb.MigrateReceiveRequest) (*pb.MigrateReply, error) {
	return s.receiveData(ctx, req.GetDataToken(), true, func(r io.Reader) (migrate.Phase, error) {
		return s.a.MigrateReceiveRootfs(ctx, req.GetId(), r)
	})
}
