package fsm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/scheduler/state"
)

// Snapshot format: newline-separated JSON values.
//
//	{"format":"godwit-state","version":1,"index":N,"table_indexes":{"nodes":N,...}}
//	{"table":"config","record":{...}}        one per record, table by table
//	{"table":"nodes","record":{...}}
//	...
//	{"end":true,"records":COUNT}
//
// The end record makes a truncated file fail to restore even when it was
// cut between two records.
const (
	snapshotFormat = "godwit-state"
	// snapshotVersion changes when a reader of the old version would
	// misread the new one. Adding a field to a record does not change it.
	snapshotVersion = 1
	// snapshotBufferSize is the write and read buffer of a snapshot
	// stream.
	snapshotBufferSize = 256 << 10
)

type snapshotHeader struct {
	Format       string            `json:"format"`
	Version      int               `json:"version"`
	Index        uint64            `json:"index"`
	TableIndexes map[string]uint64 `json:"table_indexes"`
}

// snapshotRecord is one line after the header: a record of a table, or
// the end.
type snapshotRecord[R any] struct {
	Table   string `json:"table,omitempty"`
	Record  R      `json:"record,omitempty"`
	End     bool   `json:"end,omitempty"`
	Records int    `json:"records,omitempty"`
}

// Snapshot captures the state as it is now, in O(1): the expensive part
// happens in Persist, which raft runs while Apply goes on.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{snap: f.store.Snapshot()}, nil
}

type fsmSnapshot struct {
	snap *state.Snapshot
}

// Persist streams the snapshot to sink and closes it; on an error it
// cancels the sink.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.snap); err != nil {
		return errors.Join(fmt.Errorf("persist state snapshot: %w", err), sink.Cancel())
	}
	return sink.Close()
}

// Release does nothing: the snapshot holds no resource but memory.
func (s *fsmSnapshot) Release() {}

func writeSnapshot(w io.Writer, snap *state.Snapshot) error {
	bw := bufio.NewWriterSize(w, snapshotBufferSize)
	enc := json.NewEncoder(bw)
	h := snapshotHeader{Format: snapshotFormat, Version: snapshotVersion, Index: snap.Index(), TableIndexes: map[string]uint64{}}
	for _, table := range state.Tables() {
		h.TableIndexes[table] = snap.TableIndex(table)
	}
	if err := enc.Encode(h); err != nil {
		return fmt.Errorf("write header: %w", err)
	}
	count := 0
	put := func(table string, record any) error {
		count++
		if err := enc.Encode(snapshotRecord[any]{Table: table, Record: record}); err != nil {
			return fmt.Errorf("write %s record: %w", table, err)
		}
		return nil
	}
	for _, table := range state.Tables() {
		var err error
		switch table {
		case state.TableConfig:
			err = put(table, snap.Config())
		case state.TableNodes:
			err = putAll(table, snap.Nodes(), put)
		case state.TableContainers:
			err = putAll(table, snap.Containers(), put)
		case state.TableImages:
			err = putAll(table, snap.Images(""), put)
		case state.TableAudit:
			err = putAll(table, snap.Audit(0), put)
		case state.TableMigrations:
			err = putAll(table, snap.Migrations(state.MigrationFilter{}), put)
		case state.TableDrains:
			err = putAll(table, snap.Drains(), put)
		case state.TableBalancePolicy:
			if p, ok := snap.BalancePolicy(); ok {
				err = put(table, p)
			}
		case state.TableBalanceDecisions:
			err = putAll(table, snap.BalanceDecisions(0), put)
		default:
			err = fmt.Errorf("table %q has no snapshot writer", table)
		}
		if err != nil {
			return err
		}
	}
	if err := enc.Encode(snapshotRecord[any]{End: true, Records: count}); err != nil {
		return fmt.Errorf("write end: %w", err)
	}
	return bw.Flush()
}

func putAll[R any](table string, records []R, put func(string, any) error) error {
	for _, r := range records {
		if err := put(table, r); err != nil {
			return err
		}
	}
	return nil
}

// Restore replaces the state with the snapshot's: it loads a fresh store
// and swaps it in, so that a bad snapshot leaves the state as it was.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	fresh := state.NewStore()
	if err := readSnapshot(rc, fresh); err != nil {
		f.log.Error("restoring state snapshot failed; state unchanged", "err", err)
		return fmt.Errorf("restore state snapshot: %w", err)
	}
	f.store.Replace(fresh)
	f.log.Info("restored state snapshot", "index", f.store.Snapshot().Index())
	return nil
}

func readSnapshot(r io.Reader, s *state.Store) error {
	dec := json.NewDecoder(bufio.NewReaderSize(r, snapshotBufferSize))
	var h snapshotHeader
	if err := dec.Decode(&h); err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: the file is empty", ErrSnapshotCorrupt)
		}
		return fmt.Errorf("%w: not a godwit state snapshot: %v", ErrSnapshotFormat, err)
	}
	if h.Format != snapshotFormat {
		return fmt.Errorf("%w: format %q, not a godwit state snapshot", ErrSnapshotFormat, h.Format)
	}
	if h.Version != snapshotVersion {
		return fmt.Errorf("%w: version %d; this godwit reads version %d: restore it with the godwit that wrote it, or upgrade",
			ErrSnapshotFormat, h.Version, snapshotVersion)
	}

	load := s.Restore()
	defer load.Abort()
	for table, index := range h.TableIndexes {
		if err := load.TableIndex(table, index); err != nil {
			return fmt.Errorf("%w: %v", ErrSnapshotFormat, err)
		}
	}
	count := 0
	for {
		var rec snapshotRecord[json.RawMessage]
		if err := dec.Decode(&rec); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: truncated after %d records (no end record)", ErrSnapshotCorrupt, count)
			}
			return fmt.Errorf("%w: after %d records: %v", ErrSnapshotCorrupt, count, err)
		}
		if rec.End {
			if rec.Records != count {
				return fmt.Errorf("%w: end record counts %d records, read %d", ErrSnapshotCorrupt, rec.Records, count)
			}
			break
		}
		count++
		if err := loadRecord(load, rec.Table, rec.Record); err != nil {
			return fmt.Errorf("%w: record %d: %v", ErrSnapshotCorrupt, count, err)
		}
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the end record", ErrSnapshotCorrupt)
	}
	load.Commit()
	if got := s.Snapshot().Index(); got != h.Index {
		return fmt.Errorf("%w: header says index %d, tables say %d", ErrSnapshotCorrupt, h.Index, got)
	}
	return nil
}

func loadRecord(load *state.Restore, table string, raw json.RawMessage) error {
	switch table {
	case state.TableConfig:
		var c state.Config
		if err := json.Unmarshal(raw, &c); err != nil {
			return fmt.Errorf("config: %w", err)
		}
		return load.Config(c)
	case state.TableNodes:
		return loadAs(raw, load.Node)
	case state.TableContainers:
		return loadAs(raw, load.Container)
	case state.TableImages:
		return loadAs(raw, load.Image)
	case state.TableAudit:
		return loadAs(raw, load.Audit)
	case state.TableMigrations:
		return loadAs(raw, load.Migration)
	case state.TableDrains:
		return loadAs(raw, load.Drain)
	case state.TableBalancePolicy:
		return loadAs(raw, load.BalancePolicy)
	case state.TableBalanceDecisions:
		return loadAs(raw, load.BalanceDecision)
	}
	return fmt.Errorf("unknown table %q (written by a newer godwit?)", table)
}

func loadAs[R any](raw json.RawMessage, load func(*R) error) error {
	var r R
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("%T: %w", r, err)
	}
	return load(&r)
}
