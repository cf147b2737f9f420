package fsm

import (
	"fmt"
	"log/slog"
	"runtime/debug"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/scheduler/state"
)

// Result is what Apply returns for a command log entry: the value the
// leader's raft.ApplyFuture.Response() hands to whoever proposed it.
// Err is set when the command was refused or could not be decoded; the
// state is then unchanged. Value's type is the command's own (see each
// command).
type Result struct {
	Value any
	Err   error
}

// FSM is the raft finite state machine over a state.Store. raft calls
// Apply, ApplyBatch, Snapshot and Restore from one goroutine; Persist runs
// concurrently with Apply, on a snapshot that Apply does not change.
type FSM struct {
	store *state.Store
	log   *slog.Logger
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// New returns an FSM that applies the log to store. Readers keep using
// the same store across restores: Restore swaps its contents.
func New(store *state.Store, logger *slog.Logger) *FSM {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &FSM{store: store, log: logger.With("component", "fsm")}
}

// Store returns the store the FSM writes.
func (f *FSM) Store() *state.Store { return f.store }

// Apply applies one committed log entry. Entries other than commands
// (raft's own configuration entries) change nothing and return nil.
// Commands return a Result.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	return f.apply(l)
}

// ApplyBatch applies a run of committed entries, each in its own
// transaction so that a refused command does not undo its neighbours.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	for i, l := range logs {
		out[i] = f.Apply(l)
	}
	return out
}

func (f *FSM) apply(l *raft.Log) (res Result) {
	cmd, err := Decode(l.Data)
	if err != nil {
		// Every replica refuses the same entry the same way, so the state
		// stays the same everywhere; but it means a version mismatch or a
		// bug, so say so loudly.
		f.log.Error("refusing raft log entry", "index", l.Index, "err", err)
		return Result{Err: fmt.Errorf("log entry %d: %w", l.Index, err)}
	}
	defer func() {
		if p := recover(); p != nil {
			f.log.Error("command panicked; it changed nothing", "index", l.Index, "command", cmd.Type(),
				"panic", p, "stack", string(debug.Stack()))
			res = Result{Err: fmt.Errorf("%s at log index %d: %w", cmd.Type(), l.Index, ErrPanic)}
		}
	}()
	var value any
	err = f.store.Write(l.Index, cmd.when(), func(tx *state.Txn) error {
		v, err := cmd.apply(tx)
		value = v
		return err
	})
	if err != nil {
		f.log.Debug("command refused", "index", l.Index, "command", cmd.Type(), "err", err)
		return Result{Err: err}
	}
	return Result{Value: value}
}
