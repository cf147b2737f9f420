package agentclient

import (
	"context"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The root filesystem before the freeze: image layers the destination
// lacks, and the writable layer's sync.

func (m *MigrationAgent) SendLayers(ctx context.Context, id string, layers []string, address, token string, progress func(done, total int64)) error {
	stream, err := m.Client.MigrateSendLayers(ctx, &pb.MigrateSendLayersRequest{Id: id, Layers: layers, Address: address, DataToken: token})
	if err != nil {
		return fencing(err)
	}
	return followProgress(stream, progress)
}

func (m *MigrationAgent) SyncRootfs(ctx context.Context, id, format, address, token string, progress func(done, total int64)) error {
	stream, err := m.Client.MigrateSyncRootfs(ctx, &pb.MigrateSyncRootfsRequest{Id: id, Format: format, Address: address, DataToken: token})
	if err != nil {
		return fencing(err)
	}
	return followProgress(stream, progress)
}

func (m *MigrationAgent) ReceiveLayers(ctx context.Context, id, token string) error {
	_, err := m.Client.MigrateReceiveLayers(ctx, &pb.MigrateReceiveRequest{Id: id, DataToken: token})
	return fencing(err)
}

func (m *MigrationAgent) ReceiveRootfs(ctx context.Context, id, token string) error {
	_, err := m.Client.MigrateReceiveRootfs(ctx, &pb.MigrateReceiveRequest{Id: id, DataToken: token})
	return fencing(err)
}
