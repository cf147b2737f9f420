package agent

import (
	"bufio"
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
// as FAILED_PRECONDITION with their text, which the client maps back;
// so does a stale generation (generation.go), which the calls that
// start, stop, resume, commit or drop a copy check (callGeneration).

func reply(p migrate.Phase, err error) (*pb.MigrateReply, error) {
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.MigrateReply{Phase: string(p)}, nil
}

func (s *server) MigrateDescribe(ctx context.Context, req *pb.MigrateDescribeRequest) (*pb.MigrateContainer, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	c, err := s.a.MigrateDescribe(ctx, req.GetId(), req.GetContainer(), migrate.Strategy(req.GetStrategy()))
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.MigrateContainer{Name: c.Name, Id: c.ID, Image: c.Image, ImageLayers: c.ImageLayers, Ip: c.IP, RootfsFormats: c.RootfsFormats,
		MemoryBytes: c.Memory}, nil
}

func (s *server) MigrateDump(ctx context.Context, req *pb.MigrateDumpRequest) (*pb.MigrateReply, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	opts := migrate.DumpOptions{
		Strategy: migrate.Strategy(req.GetStrategy()), PreDumps: int(req.GetPreDumps()),
		Pages: migrate.DataLink{Address: req.GetPagesAddress(), Token: req.GetPagesToken()},
	}
	if pagesStrategy(opts.Strategy) {
		return reply(s.dumpWithPages(ctx, req.GetId(), opts)) // migration_stream.go
	}
	return reply(s.a.MigrateDump(ctx, req.GetId(), opts))
}

// MigrateSend streams the checkpoint to the destination's data
// connection, sending progress to the driver.
func (s *server) MigrateSend(req *pb.MigrateSendRequest, stream grpc.ServerStreamingServer[pb.MigrateProgress]) error {
	return s.sendData(stream, req.GetId(), req.GetAddress(), req.GetDataToken(), "transfer", false,
		func(ctx context.Context, w io.Writer, progress func(done, total int64)) error {
			return s.a.MigrateSend(ctx, req.GetId(), w, req.GetChecksum(), progress)
		})
}

func (s *server) MigrateFinish(ctx context.Context, req *pb.MigrateFinishRequest) (*pb.MigrateReply, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	return reply(s.a.MigrateFinish(ctx, req.GetId(), req.GetDestination()))
}

func (s *server) MigrateResume(ctx context.Context, req *pb.MigrateRef) (*pb.MigrateReply, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	return reply(s.a.MigrateResume(ctx, req.GetId(), "aborted by the driver"))
}

func (s *server) MigratePrepare(ctx context.Context, req *pb.MigratePrepareRequest) (*pb.MigrateReply, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	c := req.GetContainer()
	phase, p, err := s.a.MigratePrepare(ctx, req.GetId(), migrate.Container{
		Name: c.GetName(), ID: c.GetId(), Image: c.GetImage(), ImageLayers: c.GetImageLayers(), IP: c.GetIp(),
		RootfsFormats: c.GetRootfsFormats(), Memory: c.GetMemoryBytes(),
	}, migrate.Strategy(req.GetStrategy()))
	if err != nil {
		return nil, grpcError(err)
	}
	return &pb.MigrateReply{Phase: string(phase), MissingLayers: p.MissingLayers, MissingImage: p.MissingImage, RootfsFormat: p.RootfsFormat,
		TransferChecksums: p.TransferChecksums}, nil
}

// MigrateReceive takes the checkpoint from the data connection that
// presents the request's token; a checkpoint already here is taken again
// and dropped, so that a retried Send succeeds too.
func (s *server) MigrateReceive(ctx context.Context, req *pb.MigrateReceiveRequest) (*pb.MigrateReply, error) {
	return s.receiveData(ctx, req.GetDataToken(), false, func(r io.Reader) (migrate.Phase, error) {
		return s.a.MigrateReceive(ctx, req.GetId(), r) // buffered there (migration_transfer.go)
	})
}

func (s *server) MigrateRestore(ctx context.Context, req *pb.MigrateRestoreRequest) (*pb.MigrateReply, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
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
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	return reply(s.a.MigrateCommit(ctx, req.GetId()))
}

func (s *server) MigrateAbort(ctx context.Context, req *pb.MigrateAbortRequest) (*pb.MigrateReply, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	return reply(s.a.MigrateAbort(ctx, req.GetId(), req.GetWhy()))
}

// sendData dials the destination's data connection at address with token
// and runs send on it, streaming send's progress (as phase) to the driver.
// buffered puts a buffer between send and the connection, for senders
// that write in small pieces; the transfer framing writes whole chunks
// and goes without (migration_transfer.go).
func (s *server) sendData(stream grpc.ServerStreamingServer[pb.MigrateProgress], id, address, token, phase string, buffered bool,
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
	var w io.Writer = conn
	bw := bufio.NewWriterSize(conn, dataWriteBuffer)
	if buffered {
		w = bw
	}
	err = send(ctx, w, func(done, total int64) { p.report(Progress{Phase: phase, Done: done, Total: total}) })
	if err == nil && buffered {
		err = bw.Flush()
	}
	if cerr := conn.Close(); err == nil {
		err = cerr
	}
	return grpcError(err)
}

// receiveData takes the data connection presenting token and runs
// receive on it (buffered when buffered is set, as sendData). After a
// success the rest of the connection is read, so that a sender whose
// stream was taken already (a repeated call) ends well too.
func (s *server) receiveData(ctx context.Context, token string, buffered bool, receive func(r io.Reader) (migrate.Phase, error)) (*pb.MigrateReply, error) {
	conn, err := s.acceptData(ctx, token)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	var r io.Reader = conn
	if buffered {
		r = bufio.NewReaderSize(conn, dataWriteBuffer)
	}
	phase, err := receive(r)
	if err == nil {
		_, _ = io.Copy(io.Discard, conn)
	}
	return reply(phase, err)
}
