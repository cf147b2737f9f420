package authz

import (
	"github.com/godwit/godwit/internal/pki"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// SchedulerPolicy is the policy of the scheduler's APIs:
//
//   - ClusterService, for operators: the viewer may read (status, list,
//     inspect, logs, events, the audit record, the balancer's status,
//     plan and history); the operator may do everything; the scheduler
//     may too, so that a replica can forward a call to the leader;
//   - NodeService, for agents: an agent registers and renews its lease,
//     and a scheduler may forward those calls to the leader.
//
// SnapshotSave is the operator's only: a snapshot holds the whole
// cluster state.
func SchedulerPolicy() Policy {
	return NewPolicy(
		ReadOnly(
			pb.ClusterService_ClusterStatus_FullMethodName,
			pb.ClusterService_ListContainers_FullMethodName,
			pb.ClusterService_InspectContainer_FullMethodName,
			pb.ClusterService_Logs_FullMethodName,
			pb.ClusterService_ListImages_FullMethodName,
			pb.ClusterService_ListNodes_FullMethodName,
			pb.ClusterService_InspectNode_FullMethodName,
			pb.ClusterService_Events_FullMethodName,
			pb.ClusterService_WatchMigration_FullMethodName,
			pb.ClusterService_ListMigrations_FullMethodName,
			pb.ClusterService_InspectMigration_FullMethodName,
			pb.ClusterService_WatchDrain_FullMethodName,
			pb.ClusterService_InspectDrain_FullMethodName,
			pb.ClusterService_Audit_FullMethodName,
			pb.ClusterService_BalanceStatus_FullMethodName,
			pb.ClusterService_BalancePlan_FullMethodName,
			pb.ClusterService_BalanceHistory_FullMethodName,
		),
		Operate(
			pb.ClusterService_RemovePeer_FullMethodName,
			pb.ClusterService_SnapshotSave_FullMethodName,
			pb.ClusterService_SnapshotRestore_FullMethodName,
			pb.ClusterService_Run_FullMethodName,
			pb.ClusterService_StopContainer_FullMethodName,
			pb.ClusterService_StartContainer_FullMethodName,
			pb.ClusterService_RemoveContainer_FullMethodName,
			pb.ClusterService_ImportImage_FullMethodName,
			pb.ClusterService_CordonNode_FullMethodName,
			pb.ClusterService_UncordonNode_FullMethodName,
			pb.ClusterService_Migrate_FullMethodName,
			pb.ClusterService_CancelMigration_FullMethodName,
			pb.ClusterService_DrainNode_FullMethodName,
			pb.ClusterService_SetBalance_FullMethodName,
		),
		Grant([]pki.Role{pki.RoleAgent, pki.RoleScheduler},
			pb.NodeService_Register_FullMethodName,
			pb.NodeService_Heartbeat_FullMethodName,
		),
	)
}
