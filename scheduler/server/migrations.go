package server

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/coordinator"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// The migration API: the leader's coordinator (scheduler/coordinator)
// drives each move; these handlers start, follow, list and cancel them.

// applier is the coordinator's way to raft: this replica's apply.
type applier struct{ s *Scheduler }

func (a applier) Apply(ctx context.Context, cmd fsm.Command) (any, error) { return a.s.apply(ctx, cmd) }

// migrationSides dials agents for the coordinator over connections that
// carry its leadership fence.
type migrationSides struct{ pool *connPool }

func (m migrationSides) Side(addr string, generation uint64) (coordinator.Side, error) {
	conn, err := m.pool.conn(addr)
	if err != nil {
		return nil, err
	}
	return &agentclient.MigrationAgent{Client: pb.NewAgentServiceClient(conn), Addr: addr, Generation: generation}, nil
}

// outcomeUnknown reports whether a raft apply error leaves it unknown
// whether the command committed.
func outcomeUnknown(err error) bool {
	return errors.Is(err, ErrLeadershipLost) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func (a *clusterAPI) Migrate(ctx context.Context, req *pb.MigrateRequest) (*pb.Migration, error) {
	strategy := migrate.Strategy(req.GetStrategy())
	if strategy == "" {
		strategy = migrate.Auto
	}
	if _, err := migrate.ParseStrategy(string(strategy)); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	who := callerOf(ctx)
	m, err := a.s.coord.Start(ctx, coordinator.Request{
		Container: req.GetContainer(), To: req.GetTo(), Strategy: strategy, MinimizeDowntime: req.GetMinimizeDowntime(),
		Reason: "operator", Requested: state.Requester{Who: who.Name, Role: string(who.Role)},
	})
	if err != nil {
		return nil, a.audited(ctx, "migrate", req.GetContainer(), migrationError(err))
	}
	a.audit(ctx, "migrate", m.ContainerName+" to "+m.Dest+" ("+m.ID+")", nil)
	return migrationToProto(m), nil
}

func (a *clusterAPI) WatchMigration(ref *pb.MigrationRef, stream grpc.ServerStreamingServer[pb.MigrationProgress]) error {
	ctx := stream.Context()
	id := ref.GetId()
	if _, ok := a.s.store.Snapshot().Migration(id); !ok {
		return status.Errorf(codes.NotFound, "no migration %q: see `godwit migration ls -a`", id)
	}
	events, stop := a.s.coord.Watch(id)
	defer stop()
	for events != nil {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-events:
			if !ok {
				events = nil
				break
			}
			if err := stream.Send(&pb.MigrationProgress{Phase: string(e.Phase), BytesDone: e.BytesDone, BytesTotal: e.BytesTotal,
				Throughput: e.Throughput, EtaMs: e.ETA.Milliseconds(), Message: e.Message}); err != nil {
				return err
			}
		}
	}
	// The drive ended here (or runs nowhere now): the record is the
	// answer once it has ended; an open one the watcher follows again.
	m, _ := a.s.store.Snapshot().Migration(id)
	return stream.Send(&pb.MigrationProgress{Phase: string(m.Phase), Done: !m.Open(), Migration: migrationToProto(m)})
}

func (a *clusterAPI) ListMigrations(_ context.Context, req *pb.ListMigrationsRequest) (*pb.ListMigrationsResponse, error) {
	f := state.MigrationFilter{Open: !req.GetAll(), Limit: int(req.GetLimit())}
	out := &pb.ListMigrationsResponse{}
	for _, m := range a.s.store.Snapshot().Migrations(f) {
		out.Migrations = append(out.Migrations, migrationToProto(m))
	}
	return out, nil
}

func (a *clusterAPI) InspectMigration(_ context.Context, ref *pb.MigrationRef) (*pb.Migration, error) {
	m, ok := a.s.store.Snapshot().Migration(ref.GetId())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no migration %q: see `godwit migration ls -a`", ref.GetId())
	}
	return migrationToProto(m), nil
}

func (a *clusterAPI) CancelMigration(ctx context.Context, ref *pb.MigrationRef) (*pb.Migration, error) {
	m, err := a.s.coord.Cancel(ctx, ref.GetId())
	if err != nil {
		return nil, a.audited(ctx, "migration cancel", ref.GetId(), migrationError(err))
	}
	a.audit(ctx, "migration cancel", ref.GetId(), nil)
	return migrationToProto(m), nil
}

// migrationError maps the coordinator's refusals to gRPC codes.
func migrationError(err error) error {
	switch {
	case errors.Is(err, coordinator.ErrInvalid), errors.Is(err, migrate.ErrUnsupported):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, coordinator.ErrNoDestination):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, migrate.ErrCommitted):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, coordinator.ErrNotLeading):
		return status.Error(codes.Unavailable, "this scheduler lost the leadership: retry")
	}
	return stateError(err)
}

func migrationToProto(m *state.Migration) *pb.Migration {
	out := &pb.Migration{
		Id: m.ID, Container: m.ContainerName, ContainerId: m.Container, Source: m.Source, Destination: m.Dest,
		Strategy: m.Strategy, Phase: string(m.Phase), Generation: m.Generation,
		RequestedBy: m.Requested.Who, Reason: m.Reason, WhyDestination: m.WhyDestination, WhyStrategy: m.WhyStrategy,
		Error: m.Error, Created: timestamp(m.Created), Updated: timestamp(m.Updated),
		Aborting: m.Aborting, DestinationCleanup: m.DestinationCleanup,
		Stats: &pb.MigrationStats{DowntimeMs: m.Stats.Downtime.Milliseconds(), TotalMs: m.Stats.Total.Milliseconds(), Bytes: m.Stats.Bytes},
	}
	if m.Requested.Role != "" {
		out.RequestedBy += " (" + m.Requested.Role + ")"
	}
	for _, p := range state.MigrationPhases() {
		t, ok := m.Started[p]
		if !ok {
			continue
		}
		out.Phases = append(out.Phases, &pb.MigrationPhase{Phase: string(p), Started: timestamp(t), DurationMs: m.Stats.Phases[p].Milliseconds()})
	}
	return out
}
