package agentclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/internal/rpc"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// MigrationAgent is an agent as a migration's driver reaches it over its
// API: it implements both migrate.Source and migrate.Destination.
type MigrationAgent struct {
	Client pb.AgentServiceClient
	// Addr is the agent's address (host:port), where sources send
	// checkpoints on data connections.
	Addr string
	// Generation is the migration's generation: the container's
	// generation in the cluster when the move began, the same for both
	// agents and every call. The calls that start, stop, resume, commit
	// or drop a copy carry it (rpc.GenerationHeader), and an agent that
	// knows a newer one refuses them with ErrStaleGeneration; the
	// destination's commit records it plus one. 0 (the CLI's two-node
	// migrate): not fenced.
	Generation uint64
}

var (
	_ migrate.Source      = (*MigrationAgent)(nil)
	_ migrate.Destination = (*MigrationAgent)(nil)
)

// ErrStaleGeneration: the agent refused a command whose generation is
// older than the one it knows for the container, or that would run a
// copy the cluster has moved to another node: the caller lost track of
// a move and must learn the current state before it commands again.
// MigrationAgent's errors match it with errors.Is; IsStaleGeneration
// tells it from any agent call's error.
var ErrStaleGeneration = errors.New("stale generation")

// IsStaleGeneration reports whether err, from any call to an agent, is
// its refusal of a stale generation (ErrStaleGeneration).
func IsStaleGeneration(err error) bool {
	return errors.Is(err, ErrStaleGeneration) || errors.Is(fencing(err), ErrStaleGeneration)
}

// fenced is ctx for a call that carries the migration's generation.
func (m *MigrationAgent) fenced(ctx context.Context) context.Context {
	return rpc.WithGeneration(ctx, m.Generation)
}

// fencing maps the agent's refusals back to the migrate package's
// sentinels, which the driver decides on, and to ErrStaleGeneration.
func fencing(err error) error {
	if status.Code(err) != codes.FailedPrecondition {
		return err
	}
	msg := status.Convert(err).Message()
	for _, sentinel := range []error{migrate.ErrCommitted, migrate.ErrAborted, ErrStaleGeneration} {
		if strings.Contains(msg, sentinel.Error()) {
			return fmt.Errorf("%w: %s", sentinel, msg)
		}
	}
	return err
}

func (m *MigrationAgent) Address() string { return m.Addr }

func (m *MigrationAgent) Describe(ctx context.Context, id, container string, s migrate.Strategy) (migrate.Container, error) {
	c, err := m.Client.MigrateDescribe(m.fenced(ctx), &pb.MigrateDescribeRequest{Id: id, Container: container, Strategy: string(s)})
	if err != nil {
		return migrate.Container{}, fencing(err)
	}
	return migrate.Container{Name: c.GetName(), ID: c.GetId(), Image: c.GetImage(), ImageLayers: c.GetImageLayers(), IP: c.GetIp(),
		RootfsFormats: c.GetRootfsFormats(), Memory: c.GetMemoryBytes()}, nil
}

func (m *MigrationAgent) Dump(ctx context.Context, id string, opts migrate.DumpOptions) error {
	_, err := m.Client.MigrateDump(m.fenced(ctx), &pb.MigrateDumpRequest{Id: id, Strategy: string(opts.Strategy), PreDumps: int32(opts.PreDumps),
		PagesAddress: opts.Pages.Address, PagesToken: opts.Pages.Token})
	return fencing(err)
}

func (m *MigrationAgent) Send(ctx context.Context, id, address, token, checksum string, progress func(done, total int64)) error {
	stream, err := m.Client.MigrateSend(ctx, &pb.MigrateSendRequest{Id: id, Address: address, DataToken: token, Checksum: checksum})
	if err != nil {
		return fencing(err)
	}
	return followProgress(stream, progress)
}

func (m *MigrationAgent) Finish(ctx context.Context, id, destination string) error {
	_, err := m.Client.MigrateFinish(m.fenced(ctx), &pb.MigrateFinishRequest{Id: id, Destination: destination})
	return fencing(err)
}

func (m *MigrationAgent) Resume(ctx context.Context, id string) error {
	_, err := m.Client.MigrateResume(m.fenced(ctx), &pb.MigrateRef{Id: id})
	return fencing(err)
}

func (m *MigrationAgent) Prepare(ctx context.Context, id string, c migrate.Container, s migrate.Strategy) (migrate.Prepared, error) {
	r, err := m.Client.MigratePrepare(m.fenced(ctx), &pb.MigratePrepareRequest{Id: id, Strategy: string(s), Container: &pb.MigrateContainer{
		Name: c.Name, Id: c.ID, Image: c.Image, ImageLayers: c.ImageLayers, Ip: c.IP, RootfsFormats: c.RootfsFormats, MemoryBytes: c.Memory,
	}})
	if err != nil {
		return migrate.Prepared{}, fencing(err)
	}
	return migrate.Prepared{MissingLayers: r.GetMissingLayers(), MissingImage: r.GetMissingImage(), RootfsFormat: r.GetRootfsFormat(),
		TransferChecksums: r.GetTransferChecksums()}, nil
}

func (m *MigrationAgent) Receive(ctx context.Context, id, token string) error {
	_, err := m.Client.MigrateReceive(ctx, &pb.MigrateReceiveRequest{Id: id, DataToken: token})
	return fencing(err)
}

func (m *MigrationAgent) Restore(ctx context.Context, id string, opts migrate.RestoreOptions) error {
	_, err := m.Client.MigrateRestore(m.fenced(ctx), &pb.MigrateRestoreRequest{Id: id, Strategy: string(opts.Strategy), PreDumps: int32(opts.PreDumps),
		PagesAddress: opts.Pages.Address, PagesToken: opts.Pages.Token})
	return fencing(err)
}

func (m *MigrationAgent) ReceivePages(ctx context.Context, id, token string) error {
	_, err := m.Client.MigrateReceivePages(ctx, &pb.MigratePagesRequest{Id: id, DataToken: token})
	return fencing(err)
}

func (m *MigrationAgent) ServePages(ctx context.Context, id, token string) error {
	_, err := m.Client.MigrateServePages(ctx, &pb.MigratePagesRequest{Id: id, DataToken: token})
	return fencing(err)
}

func (m *MigrationAgent) Commit(ctx context.Context, id string) error {
	_, err := m.Client.MigrateCommit(m.fenced(ctx), &pb.MigrateRef{Id: id})
	return fencing(err)
}

func (m *MigrationAgent) Abort(ctx context.Context, id, why string) error {
	_, err := m.Client.MigrateAbort(m.fenced(ctx), &pb.MigrateAbortRequest{Id: id, Why: why})
	return fencing(err)
}

// followProgress reports a sender's progress stream until it ends.
func followProgress(stream grpc.ServerStreamingClient[pb.MigrateProgress], progress func(done, total int64)) error {
	for {
		p, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fencing(err)
		}
		if progress != nil {
			progress(p.GetDoneBytes(), p.GetTotalBytes())
		}
	}
}
