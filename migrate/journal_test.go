package migrate

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestJournalSurvivesARestart is what a restarted agent relies on: the
// record comes back as it was, a repeated step is found done, and only
// unfinished migrations are listed as open.
func TestJournalSurvivesARestart(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	inFlight := NewRecord("m-in-flight", Stream, at(0))
	if _, err := inFlight.Advance(PhaseDump, at(10)); err != nil {
		t.Fatal(err)
	}
	finished := advanceTo(t, PhaseDump, PhaseTransfer, PhaseRestore, PhaseReady, PhaseCommitted, PhaseDone)
	finished.ID = "m-done"
	aborted := NewRecord("m-aborted", StopCopy, at(1))
	if _, err := aborted.Abort("destination disk full", at(5)); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Record{inFlight, finished, aborted} {
		if err := j.Put(r); err != nil {
			t.Fatal(err)
		}
	}

	again, err := OpenJournal(dir) // the agent restarted
	if err != nil {
		t.Fatal(err)
	}
	got, err := again.Get("m-in-flight")
	if err != nil {
		t.Fatal(err)
	}
	if got.Phase != PhaseDump || got.Strategy != Stream || !got.Started[PhaseDump].Equal(at(10)) {
		t.Errorf("record after a restart = %+v, want it in dump since %v", got, at(10))
	}
	if changed, err := got.Advance(PhaseDump, at(20)); changed || err != nil {
		t.Errorf("repeating the dump step: changed %v, err %v; want a no-op", changed, err)
	}
	open, err := again.Open()
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0].ID != "m-in-flight" {
		t.Errorf("open migrations = %v, want only m-in-flight", open)
	}
	if _, err := again.Get("m-never"); !errors.Is(err, ErrUnknownMigration) {
		t.Errorf("unknown ID: err = %v, want ErrUnknownMigration", err)
	}
	if _, err := again.Get("../escape"); err == nil {
		t.Error("an ID with a path in it was accepted")
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if filepath.Ext(e.Name()) != ".json" {
			t.Errorf("the journal left %s behind", e.Name())
		}
	}
}

func TestJournalRefusesACorruptRecord(t *testing.T) {
	dir := t.TempDir()
	j, err := OpenJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "m1.json"), []byte("{half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Get("m1"); err == nil {
		t.Error("a corrupt record was read without an error")
	}
}
