package coordinator

// Failpoints of the leader's migration driver (internal/failpoint), for
// the fault tests that kill or stop the scheduler leader at a known point
// of a move (cluster-tests/cluster_faults_test.go). Each is hit only by a
// driver that just made the entry it names durable, never by a new
// leader settling a move from its record, so a point armed on every
// scheduler fires once per move.
const (
	// FailpointAfterPhase + a phase ("scheduler/coordinator/after-dump")
	// is hit once the leader has recorded that the move entered the phase
	// (fsm.RecordMigrationPhase applied), before the engine acts on it:
	// the record then names the phase, and the agents have not begun it.
	FailpointAfterPhase = "scheduler/coordinator/after-"
	// FailpointAfterCommit is hit once fsm.CommitMove is applied, before
	// the destination is told to run its copy: the move is decided and
	// can only finish.
	FailpointAfterCommit = "scheduler/coordinator/after-commit"
)
