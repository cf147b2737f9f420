package metadata

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/godwit/godwit/agent/snapshot"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// seed builds committed "base" <- committed "mid" <- active "work" and a
// view "look" on base.
func seed(t *testing.T, s *Store) {
	t.Helper()
	err := s.Update(func(tx *Tx) error {
		steps := []func() error{
			func() error { _, err := tx.Create("base-a", "", snapshot.KindActive, t0); return err },
			func() error { _, err := tx.Commit("base", "base-a"); return err },
			func() error { _, err := tx.Create("mid-a", "base", snapshot.KindActive, t0); return err },
			func() error { _, err := tx.Commit("mid", "mid-a"); return err },
			func() error { _, err := tx.Create("work", "mid", snapshot.KindActive, t0); return err },
			func() error { _, err := tx.Create("look", "base", snapshot.KindView, t0); return err },
		}
		for _, step := range steps {
			if err := step(); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
}

func open(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(root)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestOperationErrors(t *testing.T) {
	cases := []struct {
		name string
		op   func(tx *Tx) error
		want error
	}{
		{"create existing active", func(tx *Tx) error { _, err := tx.Create("work", "", snapshot.KindActive, t0); return err }, snapshot.ErrExists},
		{"create over committed name", func(tx *Tx) error { _, err := tx.Create("base", "", snapshot.KindView, t0); return err }, snapshot.ErrExists},
		{"create on missing parent", func(tx *Tx) error { _, err := tx.Create("x", "nope", snapshot.KindActive, t0); return err }, snapshot.ErrNotFound},
		{"create on active parent", func(tx *Tx) error { _, err := tx.Create("x", "work", snapshot.KindActive, t0); return err }, snapshot.ErrInvalidKind},
		{"create on view parent", func(tx *Tx) error { _, err := tx.Create("x", "look", snapshot.KindView, t0); return err }, snapshot.ErrInvalidKind},
		{"create committed directly", func(tx *Tx) error { _, err := tx.Create("x", "", snapshot.KindCommitted, t0); return err }, snapshot.ErrInvalidKind},
		{"create empty key", func(tx *Tx) error { _, err := tx.Create("", "", snapshot.KindActive, t0); return err }, snapshot.ErrInvalidArgument},
		{"commit missing", func(tx *Tx) error { _, err := tx.Commit("x", "nope"); return err }, snapshot.ErrNotFound},
		{"commit view", func(tx *Tx) error { _, err := tx.Commit("x", "look"); return err }, snapshot.ErrInvalidKind},
		{"commit committed", func(tx *Tx) error { _, err := tx.Commit("x", "mid"); return err }, snapshot.ErrInvalidKind},
		{"commit onto existing name", func(tx *Tx) error { _, err := tx.Commit("base", "work"); return err }, snapshot.ErrExists},
		{"commit to empty name", func(tx *Tx) error { _, err := tx.Commit("", "work"); return err }, snapshot.ErrInvalidArgument},
		{"remove missing", func(tx *Tx) error { _, err := tx.Remove("nope"); return err }, snapshot.ErrNotFound},
		{"remove parent of active", func(tx *Tx) error { _, err := tx.Remove("mid"); return err }, snapshot.ErrHasChildren},
		{"remove parent of view", func(tx *Tx) error { _, err := tx.Remove("base"); return err }, snapshot.ErrHasChildren},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, t.TempDir())
			seed(t, s)
			before := listKeys(t, s)
			if err := s.Update(tc.op); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if after := listKeys(t, s); after != before {
				t.Errorf("failed operation changed the metadata: %s -> %s", before, after)
			}
		})
	}
}

func listKeys(t *testing.T, s *Store) string {
	t.Helper()
	var out string
	if err := s.View(func(tx *Tx) error {
		for _, r := range tx.List() {
			out += r.Key + ":" + r.Kind.String() + ":" + r.Parent + " "
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPersistsAcrossReopen(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	seed(t, s)
	want := listKeys(t, s)
	var workID string
	s.View(func(tx *Tx) error { r, _ := tx.Get("work"); workID = r.ID; return nil })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := open(t, root)
	if got := listKeys(t, s2); got != want {
		t.Fatalf("after reopen: %s, want %s", got, want)
	}
	err := s2.View(func(tx *Tx) error {
		r, err := tx.Get("work")
		if err != nil {
			return err
		}
		if r.ID != workID || !r.Created.Equal(t0) {
			t.Errorf("work reloaded as %+v, want id %s created %v", r, workID, t0)
		}
		parents, err := tx.Parents(r)
		if err != nil {
			return err
		}
		if len(parents) != 2 || parents[0].Key != "mid" || parents[1].Key != "base" {
			t.Errorf("parents of work = %+v, want mid then base", parents)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A new snapshot never reuses an id, even after removals and reopen.
	err = s2.Update(func(tx *Tx) error {
		if _, err := tx.Remove("work"); err != nil {
			return err
		}
		r, err := tx.Create("work2", "mid", snapshot.KindActive, t0)
		if err == nil && tx.IDs()[workID] {
			t.Errorf("id %s of removed snapshot still in use", workID)
		}
		if err == nil && r.ID == workID {
			t.Errorf("new snapshot reused id %s", r.ID)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailedUpdateLeavesNoTrace(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	seed(t, s)
	before, _ := os.ReadFile(filepath.Join(root, FileName))
	boom := errors.New("filesystem work failed")
	err := s.Update(func(tx *Tx) error {
		if _, err := tx.Create("new", "", snapshot.KindActive, t0); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
	after, _ := os.ReadFile(filepath.Join(root, FileName))
	if string(before) != string(after) {
		t.Error("failed update rewrote the metadata file")
	}
	s.View(func(tx *Tx) error {
		if _, err := tx.Get("new"); !errors.Is(err, snapshot.ErrNotFound) {
			t.Errorf("snapshot of failed update: %v, want ErrNotFound", err)
		}
		return nil
	})
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if e.Name() != FileName && e.Name() != lockName {
			t.Errorf("stray file %s in root", e.Name())
		}
	}
}

func TestSecondOpenIsRefused(t *testing.T) {
	root := t.TempDir()
	s := open(t, root)
	if _, err := Open(root); !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	s.Close()
	if err := s.View(func(*Tx) error { return nil }); !errors.Is(err, snapshot.ErrClosed) {
		t.Errorf("view after close: %v, want ErrClosed", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	open(t, root) // the lock went with Close
}

func TestCorruptFiles(t *testing.T) {
	cases := []struct {
		name, content string
	}{
		{"not json", "{"},
		{"future version", `{"version": 99, "nextID": 1, "snapshots": {}}`},
		{"unknown kind", `{"version": 1, "nextID": 2, "snapshots": {"a": {"id": "1", "key": "a", "kind": "sideways"}}}`},
		{"key mismatch", `{"version": 1, "nextID": 2, "snapshots": {"a": {"id": "1", "key": "b", "kind": "active"}}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			if err := os.WriteFile(filepath.Join(root, FileName), []byte(tc.content), fileMode); err != nil {
				t.Fatal(err)
			}
			if s, err := Open(root); err == nil {
				s.Close()
				t.Fatal("opened a corrupt metadata file")
			}
		})
	}
}

func TestViewRefusesChanges(t *testing.T) {
	s := open(t, t.TempDir())
	err := s.View(func(tx *Tx) error {
		_, err := tx.Create("x", "", snapshot.KindActive, t0)
		return err
	})
	if !errors.Is(err, errReadOnlyTx) {
		t.Fatalf("create inside View: %v, want errReadOnlyTx", err)
	}
}

func TestOrphans(t *testing.T) {
	s := open(t, t.TempDir())
	seed(t, s)
	dir := t.TempDir()
	var known []string
	s.View(func(tx *Tx) error {
		for id := range tx.IDs() {
			known = append(known, id)
		}
		return nil
	})
	for _, name := range append(known, "999", "stray") {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Orphans(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"999", "stray"}; !slices.Equal(got, want) {
		t.Errorf("Orphans = %q, want %q (known ids %q)", got, want, known)
	}
	if _, err := s.Orphans(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Orphans of a missing dir: %v, want ErrNotExist", err)
	}
}

func TestQueriesHonourCanceledContext(t *testing.T) {
	s := open(t, t.TempDir())
	seed(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		call func() error
	}{
		{"Stat", func() error { _, err := s.Stat(ctx, "work"); return err }},
		{"List", func() error { _, err := s.List(ctx); return err }},
		{"Lookup", func() error { _, _, err := s.Lookup(ctx, "work", "mount", snapshot.KindActive); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a canceled context: %v, want context.Canceled", tc.name, err)
			}
		})
	}
}
