package agentclient

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

var _ migrate.ChannelChecker = (*MigrationAgent)(nil)

// CheckChannel asks the agent, as a migration's source, whether it can
// open a data connection to the destination at address with its node
// certificate and have it accepted. An agent that predates the check
// answers Unimplemented, which passes: its send finds out.
func (m *MigrationAgent) CheckChannel(ctx context.Context, id, address string) error {
	_, err := m.Client.MigrateCheckChannel(ctx, &pb.MigrateCheckChannelRequest{Id: id, Address: address})
	if status.Code(err) == codes.Unimplemented {
		return nil
	}
	// The agent's refusal reads best as its own message; any other
	// failure (the source agent unreachable) keeps its code.
	if st := status.Convert(err); st.Code() == codes.FailedPrecondition {
		return errors.New(st.Message())
	}
	return err
}
