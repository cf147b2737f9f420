package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/snapshot"
)

const (
	// FileName is the metadata file inside a snapshotter root.
	FileName = "metadata.json"
	// lockName is a separate file because FileName is replaced by rename,
	// which would drop a lock held on it.
	lockName = "metadata.lock"
	// formatVersion is written into the file; a file from a newer format
	// is refused rather than misread.
	formatVersion = 1
	fileMode      = 0o600
)

// ErrLocked: another snapshotter (usually another agent process) has the
// root open.
var ErrLocked = errors.New("snapshot root is in use by another process")

// Record is one snapshot as stored.
type Record struct {
	// ID names the snapshot's directory or subvolume. IDs are short
	// decimal numbers, never reused, to keep overlay lowerdir lists short.
	ID      string        `json:"id"`
	Key     string        `json:"key"`
	Parent  string        `json:"parent,omitempty"`
	Kind    snapshot.Kind `json:"kind"`
	Created time.Time     `json:"created"`
}

// Info is the record as callers of a Snapshotter see it.
func (r Record) Info() snapshot.Info {
	return snapshot.Info{Key: r.Key, Parent: r.Parent, Kind: r.Kind, Created: r.Created}
}

type state struct {
	Version   int                `json:"version"`
	NextID    uint64             `json:"nextID"`
	Snapshots map[string]*Record `json:"snapshots"`
}

func (s *state) clone() *state {
	c := &state{Version: s.Version, NextID: s.NextID, Snapshots: make(map[string]*Record, len(s.Snapshots))}
	for k, r := range s.Snapshots {
		rc := *r
		c.Snapshots[k] = &rc
	}
	return c
}

// Store holds the metadata of one snapshotter root.
type Store struct {
	mu     sync.Mutex
	path   string
	lock   *os.File
	closed bool
	st     *state
}

// Open loads (or starts) the metadata in root and locks root against other
// processes until Close.
func Open(root string) (*Store, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create snapshot root: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(root, lockName), os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("open snapshot metadata lock: %w", err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: stop the other agent using this data dir: %w", root, ErrLocked)
		}
		return nil, fmt.Errorf("lock snapshot root %s: %w", root, err)
	}
	s := &Store{path: filepath.Join(root, FileName), lock: lock}
	if s.st, err = load(s.path); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

func load(path string) (*state, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &state{Version: formatVersion, NextID: 1, Snapshots: map[string]*Record{}}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read snapshot metadata: %w", err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("parse snapshot metadata %s (restore it from backup or move it away to start empty): %w", path, err)
	}
	if st.Version != formatVersion {
		return nil, fmt.Errorf("snapshot metadata %s has format version %d, this godwit reads %d: use a matching godwit", path, st.Version, formatVersion)
	}
	if st.Snapshots == nil {
		st.Snapshots = map[string]*Record{}
	}
	for k, r := range st.Snapshots {
		if r == nil || r.Key != k || r.ID == "" {
			return nil, fmt.Errorf("snapshot metadata %s: record %q is inconsistent: restore the file from backup", path, k)
		}
	}
	return &st, nil
}

// save writes st to a temporary file, syncs it and renames it over the
// metadata file, so a crash leaves either the old or the new state.
func (s *Store) save(st *state) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode snapshot metadata: %w", err)
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, FileName+".tmp-*")
	if err != nil {
		return fmt.Errorf("write snapshot metadata: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write snapshot metadata: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync snapshot metadata dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync snapshot metadata dir: %w", err)
	}
	return nil
}

// Close releases the lock; later calls fail with snapshot.ErrClosed. A
// second Close does nothing.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.lock.Close()
}

// View runs fn with read-only access to the metadata.
func (s *Store) View(fn func(tx *Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return snapshot.ErrClosed
	}
	return fn(&Tx{st: s.st})
}

// Update runs fn with the lock held and then persists its changes. When fn
// fails, or the changes cannot be persisted, the metadata is left as it
// was. fn may do filesystem work that must be atomic with the metadata
// change; it must undo that work itself when it fails.
func (s *Store) Update(fn func(tx *Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return snapshot.ErrClosed
	}
	next := s.st.clone()
	if err := fn(&Tx{st: next, writable: true}); err != nil {
		return err
	}
	if err := s.save(next); err != nil {
		return err
	}
	s.st = next
	return nil
}

// Stat returns the Info of key, or ErrNotFound.
func (s *Store) Stat(ctx context.Context, key string) (snapshot.Info, error) {
	if err := ctx.Err(); err != nil {
		return snapshot.Info{}, err
	}
	var info snapshot.Info
	err := s.View(func(tx *Tx) error {
		r, err := tx.Get(key)
		info = r.Info()
		return err
	})
	return info, err
}

// List returns the Info of every snapshot, sorted by key.
func (s *Store) List(ctx context.Context) ([]snapshot.Info, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var infos []snapshot.Info
	err := s.View(func(tx *Tx) error {
		for _, r := range tx.List() {
			infos = append(infos, r.Info())
		}
		return nil
	})
	return infos, err
}

// Lookup returns the record of key and its parents (nearest first), or
// ErrNotFound, or ErrInvalidKind when key's kind is not one of kinds. op
// names the operation in the error ("diff", "apply to").
func (s *Store) Lookup(ctx context.Context, key, op string, kinds ...snapshot.Kind) (Record, []Record, error) {
	if err := ctx.Err(); err != nil {
		return Record{}, nil, err
	}
	var rec Record
	var parents []Record
	err := s.View(func(tx *Tx) error {
		var err error
		if rec, err = tx.Get(key); err != nil {
			return err
		}
		parents, err = tx.Parents(rec)
		return err
	})
	if err != nil {
		return Record{}, nil, err
	}
	if !slices.Contains(kinds, rec.Kind) {
		return Record{}, nil, fmt.Errorf("%s snapshot %q: it is %s: %w", op, key, rec.Kind, snapshot.ErrInvalidKind)
	}
	return rec, parents, nil
}

// Orphans lists the names in dir, where a snapshotter keeps one directory
// or subvolume per snapshot named by its ID, that are no snapshot's ID:
// what a crash left between creating one and recording it, or between
// forgetting one and deleting it.
func (s *Store) Orphans(dir string) ([]string, error) {
	var orphans []string
	err := s.View(func(tx *Tx) error {
		ids := tx.IDs()
		entries, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if !ids[e.Name()] {
				orphans = append(orphans, e.Name())
			}
		}
		return nil
	})
	return orphans, err
}

// Tx is access to the metadata inside View or Update.
type Tx struct {
	st       *state
	writable bool
}

// Get returns the record of key or fails with snapshot.ErrNotFound.
func (tx *Tx) Get(key string) (Record, error) {
	r, ok := tx.st.Snapshots[key]
	if !ok {
		return Record{}, fmt.Errorf("snapshot %q: %w", key, snapshot.ErrNotFound)
	}
	return *r, nil
}

// List returns every record, sorted by key.
func (tx *Tx) List() []Record {
	keys := slices.Sorted(maps.Keys(tx.st.Snapshots))
	out := make([]Record, 0, len(keys))
	for _, k := range keys {
		out = append(out, *tx.st.Snapshots[k])
	}
	return out
}

// IDs is the set of ids in use, for finding directories or subvolumes that
// a crash left behind.
func (tx *Tx) IDs() map[string]bool {
	ids := make(map[string]bool, len(tx.st.Snapshots))
	for _, r := range tx.st.Snapshots {
		ids[r.ID] = true
	}
	return ids
}

// Parents returns r's ancestors, nearest first.
func (tx *Tx) Parents(r Record) ([]Record, error) {
	var out []Record
	for p := r.Parent; p != ""; {
		pr, ok := tx.st.Snapshots[p]
		if !ok {
			return nil, fmt.Errorf("parent %q of snapshot %q is missing from the metadata: %w", p, r.Key, snapshot.ErrNotFound)
		}
		if len(out) > len(tx.st.Snapshots) {
			return nil, fmt.Errorf("snapshot %q: parent chain loops: restore the metadata from backup", r.Key)
		}
		out = append(out, *pr)
		p = pr.Parent
	}
	return out, nil
}

// errReadOnlyTx reports a change attempted inside View: a programming
// error in a snapshotter.
var errReadOnlyTx = errors.New("snapshot metadata changed inside a read-only transaction")

// Create records a new snapshot of kind (active or view) on parent and
// gives it a fresh id. It fails with ErrInvalidArgument for an empty key,
// ErrExists when key is taken, ErrNotFound when parent is missing and
// ErrInvalidKind when parent is not committed.
func (tx *Tx) Create(key, parent string, kind snapshot.Kind, now time.Time) (Record, error) {
	if !tx.writable {
		return Record{}, errReadOnlyTx
	}
	if key == "" {
		return Record{}, fmt.Errorf("snapshot key is empty: %w", snapshot.ErrInvalidArgument)
	}
	if kind != snapshot.KindActive && kind != snapshot.KindView {
		return Record{}, fmt.Errorf("create snapshot %q of kind %s: %w", key, kind, snapshot.ErrInvalidKind)
	}
	if _, ok := tx.st.Snapshots[key]; ok {
		return Record{}, fmt.Errorf("snapshot %q: %w", key, snapshot.ErrExists)
	}
	if parent != "" {
		p, ok := tx.st.Snapshots[parent]
		if !ok {
			return Record{}, fmt.Errorf("parent %q of snapshot %q: %w", parent, key, snapshot.ErrNotFound)
		}
		if p.Kind != snapshot.KindCommitted {
			return Record{}, fmt.Errorf("parent %q of snapshot %q is %s, not committed: %w", parent, key, p.Kind, snapshot.ErrInvalidKind)
		}
	}
	r := &Record{
		ID:      strconv.FormatUint(tx.st.NextID, 10),
		Key:     key,
		Parent:  parent,
		Kind:    kind,
		Created: now.UTC(),
	}
	tx.st.NextID++
	tx.st.Snapshots[key] = r
	return *r, nil
}

// Commit renames the active snapshot key to name and makes it committed.
// It fails with ErrNotFound, ErrInvalidKind (key is not active),
// ErrInvalidArgument (empty name) or ErrExists (name is taken).
func (tx *Tx) Commit(name, key string) (Record, error) {
	if !tx.writable {
		return Record{}, errReadOnlyTx
	}
	r, ok := tx.st.Snapshots[key]
	if !ok {
		return Record{}, fmt.Errorf("commit snapshot %q: %w", key, snapshot.ErrNotFound)
	}
	if r.Kind != snapshot.KindActive {
		return Record{}, fmt.Errorf("commit snapshot %q: it is %s, only active snapshots can be committed: %w", key, r.Kind, snapshot.ErrInvalidKind)
	}
	if name == "" {
		return Record{}, fmt.Errorf("commit snapshot %q: name is empty: %w", key, snapshot.ErrInvalidArgument)
	}
	if _, ok := tx.st.Snapshots[name]; ok {
		return Record{}, fmt.Errorf("commit snapshot %q as %q: %w", key, name, snapshot.ErrExists)
	}
	delete(tx.st.Snapshots, key)
	r.Key = name
	r.Kind = snapshot.KindCommitted
	tx.st.Snapshots[name] = r
	return *r, nil
}

// Remove forgets key. It fails with ErrNotFound, or ErrHasChildren when a
// snapshot names key as its parent.
func (tx *Tx) Remove(key string) (Record, error) {
	if !tx.writable {
		return Record{}, errReadOnlyTx
	}
	r, ok := tx.st.Snapshots[key]
	if !ok {
		return Record{}, fmt.Errorf("remove snapshot %q: %w", key, snapshot.ErrNotFound)
	}
	var children []string
	for _, c := range tx.st.Snapshots {
		if c.Parent == key {
			children = append(children, c.Key)
		}
	}
	if len(children) > 0 {
		slices.Sort(children)
		return Record{}, fmt.Errorf("remove snapshot %q: remove its children %q first: %w", key, children, snapshot.ErrHasChildren)
	}
	delete(tx.st.Snapshots, key)
	return *r, nil
}
