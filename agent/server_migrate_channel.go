package agent

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// MigrateCheckChannel probes the destination's data channel with this
// agent's credentials (see DataChannel.Probe), so that a move between
// agents that refuse each other fails before the container is frozen.
func (s *server) MigrateCheckChannel(ctx context.Context, req *pb.MigrateCheckChannelRequest) (*pb.MigrateReply, error) {
	if s.data == nil {
		return nil, status.Error(codes.FailedPrecondition, "this agent serves no data connections, so it cannot open one to another agent")
	}
	if req.GetAddress() == "" {
		return nil, status.Error(codes.InvalidArgument, "check the data channel: no destination address")
	}
	if err := s.data.Probe(ctx, req.GetAddress()); err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s: %v", s.a.cfg.Name, err)
	}
	return &pb.MigrateReply{}, nil
}
