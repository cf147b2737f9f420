package agentclient

import (
	"context"
	"time"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// Pre-copy's calls of migrate.Source and migrate.Destination.

func (m *MigrationAgent) PreDump(ctx context.Context, id string, round int) (migrate.PreCopyIteration, error) {
	r, err := m.Client.MigratePreDump(ctx, &pb.MigratePreDumpRequest{Id: id, Round: int32(round)})
	if err != nil {
		return migrate.PreCopyIteration{}, fencing(err)
	}
	return migrate.PreCopyIteration{
		DirtyPages: r.GetDirtyPages(),
		Duration:   time.Duration(r.GetDurationUs()) * time.Microsecond,
		Bytes:      r.GetBytes(),
	}, nil
}

func (m *MigrationAgent) SendPreDump(ctx context.Context, id string, round int, address, token string, progress func(done, total int64)) error {
	stream, err := m.Client.MigrateSendPreDump(ctx, &pb.MigrateSendPreDumpRequest{Id: id, Round: int32(round), Address: address, DataToken: token})
	if err != nil {
		return fencing(err)
	}
	return followProgress(stream, progress)
}

func (m *MigrationAgent) ReceivePreDump(ctx context.Context, id string, round int, token string) error {
	_, err := m.Client.MigrateReceivePreDump(ctx, &pb.MigrateReceivePreDumpRequest{Id: id, Round: int32(round), DataToken: token})
	return fencing(err)
}
