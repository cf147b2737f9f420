package authz

import (
	"github.com/godwit/godwit/internal/pki"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// agentMigrationMethods are the RPCs of a live migration, which its
// driver calls on both agents: an operator's CLI, the scheduler's
// coordinator, or an agent driving a move.
var agentMigrationMethods = []string{
	pb.AgentService_MigrateCheckChannel_FullMethodName,
	pb.AgentService_MigrateDescribe_FullMethodName,
	pb.AgentService_MigratePrepare_FullMethodName,
	pb.AgentService_MigratePreDump_FullMethodName,
	pb.AgentService_MigrateSendPreDump_FullMethodName,
	pb.AgentService_MigrateReceivePreDump_FullMethodName,
	pb.AgentService_MigrateSendLayers_FullMethodName,
	pb.AgentService_MigrateReceiveLayers_FullMethodName,
	pb.AgentService_MigrateSyncRootfs_FullMethodName,
	pb.AgentService_MigrateReceiveRootfs_FullMethodName,
	pb.AgentService_MigrateDump_FullMethodName,
	pb.AgentService_MigrateSend_FullMethodName,
	pb.AgentService_MigrateReceive_FullMethodName,
	pb.AgentService_MigrateReceivePages_FullMethodName,
	pb.AgentService_MigrateServePages_FullMethodName,
	pb.AgentService_MigrateRestore_FullMethodName,
	pb.AgentService_MigrateFinish_FullMethodName,
	pb.AgentService_MigrateCommit_FullMethodName,
	pb.AgentService_MigrateResume_FullMethodName,
	pb.AgentService_MigrateAbort_FullMethodName,
}

// AgentPolicy is the policy of the agent's API (AgentService):
//
//   - operator and scheduler: everything;
//   - agent: the Migrate* RPCs and NodeInfo, which a migration's driver
//     calls on both agents (the reads a move needs are NodeInfo and
//     MigrateDescribe), and ImportCheckpoint, which PushCheckpoint calls
//     on the destination;
//   - viewer: the reads: NodeInfo, List*, Inspect*, Logs.
//
// Exec, ExportCheckpoint (a checkpoint holds the container's memory) and
// every write are the operator's and the scheduler's only, except
// ImportCheckpoint, which an agent calls too when it pushes a checkpoint
// (it keeps a checkpoint and runs nothing).
func AgentPolicy() Policy {
	agent := []pki.Role{pki.RoleAgent}
	return NewPolicy(
		ReadOnly(
			pb.AgentService_NodeInfo_FullMethodName,
			pb.AgentService_ListImages_FullMethodName,
			pb.AgentService_ListContainers_FullMethodName,
			pb.AgentService_InspectContainer_FullMethodName,
			pb.AgentService_Logs_FullMethodName,
			pb.AgentService_ListCheckpoints_FullMethodName,
			pb.AgentService_InspectCheckpoint_FullMethodName,
		),
		Operate(
			pb.AgentService_ImportImage_FullMethodName,
			pb.AgentService_RemoveImage_FullMethodName,
			pb.AgentService_RunContainer_FullMethodName,
			pb.AgentService_StopContainer_FullMethodName,
			pb.AgentService_StartContainer_FullMethodName,
			pb.AgentService_RemoveContainer_FullMethodName,
			pb.AgentService_Exec_FullMethodName,
			pb.AgentService_Checkpoint_FullMethodName,
			pb.AgentService_RemoveCheckpoint_FullMethodName,
			pb.AgentService_ExportCheckpoint_FullMethodName,
			pb.AgentService_Restore_FullMethodName,
			pb.AgentService_RestoreArchive_FullMethodName,
			pb.AgentService_ImportCheckpoint_FullMethodName,
			pb.AgentService_PushCheckpoint_FullMethodName,
		),
		Operate(agentMigrationMethods...),
		Grant(agent, agentMigrationMethods...),
		Grant(agent, pb.AgentService_NodeInfo_FullMethodName),
		// An agent pushes a checkpoint to another (PushCheckpoint calls
		// the destination's ImportCheckpoint with its node certificate).
		Grant(agent, pb.AgentService_ImportCheckpoint_FullMethodName),
	)
}
