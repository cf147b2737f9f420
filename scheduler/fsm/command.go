package fsm

import (
	"fmt"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// CommandType is the first byte of a raft log entry: which command the
// payload after it holds. The values live in raft logs and snapshots of
// running clusters: never renumber or reuse one; add new ones at the end.
type CommandType uint8

const (
	TypeInitCluster       CommandType = 1
	TypeRegisterNode      CommandType = 2
	TypeSetNodeHealth     CommandType = 3
	TypeSetSchedulability CommandType = 4
	TypeRemoveNode        CommandType = 5
	TypePlaceContainers   CommandType = 6
	TypeSetDesired        CommandType = 7
	TypeReportContainers  CommandType = 8
	TypeMarkNodeLost      CommandType = 9
	TypeDeleteContainer   CommandType = 10
	TypeSetImages         CommandType = 11
	TypeAppendAudit       CommandType = 12
	// Issue 6: migrations and drains.
	TypeCreateMigration      CommandType = 13
	TypeRecordMigrationPhase CommandType = 14
	TypeCommitMove           CommandType = 15
	TypeFinishMigration      CommandType = 16
	TypeAbortMigration       CommandType = 17
	TypeStartDrain           CommandType = 18
	TypeUpdateDrain          CommandType = 19
	TypeEndDrain             CommandType = 20
	TypeFenceMigration       CommandType = 21
	TypeCleanedDestination   CommandType = 22
	TypeCheckpointAway       CommandType = 23
	// Issue 7: the balancer.
	TypeSetBalancePolicy      CommandType = 24
	TypeRecordBalanceDecision CommandType = 25
)

var commandNames = map[CommandType]string{
	TypeInitCluster:       "init-cluster",
	TypeRegisterNode:      "register-node",
	TypeSetNodeHealth:     "set-node-health",
	TypeSetSchedulability: "set-schedulability",
	TypeRemoveNode:        "remove-node",
	TypePlaceContainers:   "place-containers",
	TypeSetDesired:        "set-desired",
	TypeReportContainers:  "report-containers",
	TypeMarkNodeLost:      "mark-node-lost",
	TypeDeleteContainer:   "delete-container",
	TypeSetImages:         "set-images",
	TypeAppendAudit:       "append-audit",

	TypeCreateMigration:      "create-migration",
	TypeRecordMigrationPhase: "record-migration-phase",
	TypeCommitMove:           "commit-move",
	TypeFinishMigration:      "finish-migration",
	TypeAbortMigration:       "abort-migration",
	TypeStartDrain:           "start-drain",
	TypeUpdateDrain:          "update-drain",
	TypeEndDrain:             "end-drain",
	TypeFenceMigration:       "fence-migration",
	TypeCleanedDestination:   "cleaned-destination",
	TypeCheckpointAway:       "checkpoint-away",

	TypeSetBalancePolicy:      "set-balance-policy",
	TypeRecordBalanceDecision: "record-balance-decision",
}

func (t CommandType) String() string {
	if name, ok := commandNames[t]; ok {
		return name
	}
	return fmt.Sprintf("command-%d", uint8(t))
}

// decoders maps each type byte to its command's decoder.
var decoders = map[CommandType]func([]byte) (Command, error){
	TypeInitCluster:       decodeAs[InitCluster],
	TypeRegisterNode:      decodeAs[RegisterNode],
	TypeSetNodeHealth:     decodeAs[SetNodeHealth],
	TypeSetSchedulability: decodeAs[SetSchedulability],
	TypeRemoveNode:        decodeAs[RemoveNode],
	TypePlaceContainers:   decodeAs[PlaceContainers],
	TypeSetDesired:        decodeAs[SetDesired],
	TypeReportContainers:  decodeAs[ReportContainers],
	TypeMarkNodeLost:      decodeAs[MarkNodeLost],
	TypeDeleteContainer:   decodeAs[DeleteContainer],
	TypeSetImages:         decodeAs[SetImages],
	TypeAppendAudit:       decodeAs[AppendAudit],

	TypeCreateMigration:      decodeAs[CreateMigration],
	TypeRecordMigrationPhase: decodeAs[RecordMigrationPhase],
	TypeCommitMove:           decodeAs[CommitMove],
	TypeFinishMigration:      decodeAs[FinishMigration],
	TypeAbortMigration:       decodeAs[AbortMigration],
	TypeStartDrain:           decodeAs[StartDrain],
	TypeUpdateDrain:          decodeAs[UpdateDrain],
	TypeEndDrain:             decodeAs[EndDrain],
	TypeFenceMigration:       decodeAs[FenceMigration],
	TypeCleanedDestination:   decodeAs[CleanedDestination],
	TypeCheckpointAway:       decodeAs[CheckpointAway],

	TypeSetBalancePolicy:      decodeAs[SetBalancePolicy],
	TypeRecordBalanceDecision: decodeAs[RecordBalanceDecision],
}

// Command is a change to the cluster state, proposed by the leader and
// applied by every replica's FSM. Each command is a struct in this
// package with one apply function; it carries everything the apply needs,
// the leader's time included, so that applying it reads no clock.
type Command interface {
	// Type is the command's type byte in the log.
	Type() CommandType
	// when is the leader's time the command carries; its events get it.
	when() time.Time
	// apply makes the change in tx and returns the command's result
	// value. An error drops the whole change.
	apply(tx *state.Txn) (any, error)
}

// Encode returns the log entry for cmd: its type byte, then its payload
// (encoding.go: JSON, or MessagePack for PlaceContainers).
func Encode(cmd Command) ([]byte, error) {
	payload, err := encodePayload(cmd)
	if err != nil {
		return nil, fmt.Errorf("encode %s command: %w", cmd.Type(), err)
	}
	return append([]byte{byte(cmd.Type())}, payload...), nil
}

// Decode returns the command a log entry holds. The error wraps
// ErrUnknownCommand or ErrBadCommand.
func Decode(data []byte) (Command, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("decode command: empty log entry: %w", ErrBadCommand)
	}
	t := CommandType(data[0])
	decode, ok := decoders[t]
	if !ok {
		return nil, fmt.Errorf("decode command: type %d: %w: a newer godwit wrote it; upgrade every scheduler to the same version", data[0], ErrUnknownCommand)
	}
	return decode(data[1:])
}
