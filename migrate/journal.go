package migrate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// idPattern keeps migration IDs usable as file names.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// ErrUnknownMigration marks a migration ID a journal has no record of.
var ErrUnknownMigration = errors.New("unknown migration")

// Journal keeps one side's migration records on disk, one file per ID,
// each written atomically, so that an agent restarted in the middle of a
// move knows where it stood and a repeated call finds its step done.
type Journal struct {
	dir string
}

// OpenJournal opens (creating) the journal in dir.
func OpenJournal(dir string) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open migration journal: %w", err)
	}
	return &Journal{dir: dir}, nil
}

func (j *Journal) path(id string) string { return filepath.Join(j.dir, id+".json") }

// Get returns the record of migration id, or an error matching
// ErrUnknownMigration.
func (j *Journal) Get(id string) (*Record, error) {
	if !idPattern.MatchString(id) {
		return nil, fmt.Errorf("migration ID %q: want 1 to 128 letters, digits, '_', '.' or '-'", id)
	}
	data, err := os.ReadFile(j.path(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("migration %s: %w", id, ErrUnknownMigration)
	}
	if err != nil {
		return nil, fmt.Errorf("migration %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("migration %s: record %s is corrupt: %w", id, j.path(id), err)
	}
	return &r, nil
}

// Put writes r, replacing its earlier record: a crash leaves the old
// record or the new one, never a part.
func (j *Journal) Put(r *Record) error {
	if !idPattern.MatchString(r.ID) {
		return fmt.Errorf("migration ID %q: want 1 to 128 letters, digits, '_', '.' or '-'", r.ID)
	}
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(j.dir, "."+r.ID+".tmp-*")
	if err != nil {
		return fmt.Errorf("migration %s: write record: %w", r.ID, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), j.path(r.ID))
	}
	if err != nil {
		return fmt.Errorf("migration %s: write record: %w", r.ID, err)
	}
	return nil
}

// Open lists the migrations that are neither done nor aborted, oldest
// first: what a restarted agent or driver must resume or abort.
func (j *Journal) Open() ([]*Record, error) {
	entries, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("read migration journal: %w", err)
	}
	var out []*Record
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !idPattern.MatchString(id) {
			continue
		}
		r, err := j.Get(id)
		if err != nil {
			return nil, err
		}
		if r.Phase != PhaseDone && r.Phase != PhaseAborted {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Started[PhasePrepare].Before(out[b].Started[PhasePrepare]) })
	return out, nil
}
