package fsm_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// TestEncodeDecode checks that every command survives the log: the
// replicas apply what the leader proposed.
func TestEncodeDecode(t *testing.T) {
	cmds := []fsm.Command{
		fsm.InitCluster{}, fsm.RegisterNode{Node: testNode("n1"), At: t0}, fsm.SetNodeHealth{Name: "n1", Health: "down", At: t0},
		fsm.SetSchedulability{Name: "n1", Schedulability: "cordoned"}, fsm.RemoveNode{Name: "n1"},
		fsm.PlaceContainers{Containers: []fsm.NewContainer{{ID: "a", Name: "b", Node: "n1", Spec: spec(1)}}, At: t0},
		fsm.SetDesired{ID: "a", Desired: "stopped"}, fsm.ReportContainers{Node: "n1", Epoch: 3, Complete: true, Seen: []string{"a"}},
		fsm.MarkNodeLost{Name: "n1"}, fsm.DeleteContainer{ID: "a"}, fsm.SetImages{Node: "n1"},
		fsm.AppendAudit{},
		fsm.CreateMigration{ID: "m", Container: "a", Source: "n1", Dest: "n2", Strategy: "stream", Reason: "operator",
			Requested: state.Requester{Who: "alice", Role: "operator"}, DrainNode: "n1", At: t0},
		fsm.RecordMigrationPhase{ID: "m", Phase: state.MigrationDump, Error: "retried",
			Stats: &state.MigrationStats{Bytes: 3, Phases: map[state.MigrationPhase]time.Duration{state.MigrationPrepare: time.Second}}, At: t0},
		fsm.CommitMove{ID: "m", At: t0}, fsm.FinishMigration{ID: "m", Stats: &state.MigrationStats{Downtime: time.Millisecond}, At: t0},
		fsm.AbortMigration{ID: "m", Error: "boom", DestinationCleanup: true, At: t0},
		fsm.FenceMigration{ID: "m", Why: "destination unreachable", At: t0},
		fsm.CleanedDestination{ID: "m", At: t0},
		fsm.CheckpointAway{ID: "c", Source: "n1", Generation: 1, Holder: "n2", Checkpoint: "0123456789ab", At: t0},
		fsm.StartDrain{Node: "n1", Deadline: t0.Add(time.Hour), OnDeadline: state.OnDeadlineFail, MaxParallel: 2, At: t0},
		fsm.UpdateDrain{Node: "n1", Blocked: map[string]string{"a": "no room"}, Left: 1, Moved: 2, Failed: 3, At: t0},
		fsm.EndDrain{Node: "n1", Status: state.DrainDone, Reason: "empty", At: t0},
		enabled(),
		fsm.RecordBalanceDecision{Decision: decision(), At: t0},
	}
	seen := map[fsm.CommandType]bool{}
	for _, cmd := range cmds {
		t.Run(cmd.Type().String(), func(t *testing.T) {
			seen[cmd.Type()] = true
			data, err := fsm.Encode(cmd)
			if err != nil {
				t.Fatal(err)
			}
			got, err := fsm.Decode(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, cmd) {
				t.Errorf("decoded %#v, want %#v", got, cmd)
			}
			// A pointer encodes the same as the value.
			ptr := reflect.New(reflect.TypeOf(cmd))
			ptr.Elem().Set(reflect.ValueOf(cmd))
			pdata, err := fsm.Encode(ptr.Interface().(fsm.Command))
			if err != nil || string(pdata) != string(data) {
				t.Errorf("pointer encodes as %q, %v; want %q", pdata, err, data)
			}
		})
	}
	// Every type byte the decoder knows is covered, new ones included.
	for typ := fsm.CommandType(1); typ != 0; typ++ {
		if _, err := fsm.Decode([]byte{byte(typ), '{', '}'}); !errors.Is(err, fsm.ErrUnknownCommand) && !seen[typ] {
			t.Errorf("command type %s is not covered", typ)
		}
	}
}
