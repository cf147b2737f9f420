package archive

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestOverlayChangesRacyWindow: an entry whose stat matches its record is
// trusted only when its ctime is safely older than the recording; one
// that may have been written in the recording's clock tick is sent again.
func TestOverlayChangesRacyWindow(t *testing.T) {
	upper := t.TempDir()
	writeFile(t, filepath.Join(upper, "f"), "written just before the mark\n", 0o644)
	must(t, os.Link(filepath.Join(upper, "f"), filepath.Join(upper, "f2")))
	var mark bytes.Buffer
	idx, err := WriteOverlayMark(t.Context(), upper, &mark)
	must(t, err)
	if idx.Entries["f"] != idx.Entries["f2"] {
		t.Errorf("two names of one file were recorded apart: %+v and %+v", idx.Entries["f"], idx.Entries["f2"])
	}
	cases := []struct {
		name  string
		taken time.Time
		sent  bool
	}{
		{"recorded in the tick of the write: sent again", idx.Taken, true},
		{"recorded well after the write: trusted", time.Now().Add(2 * RacyWindow), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			since := *idx
			since.Taken = tc.taken
			var out bytes.Buffer
			must(t, WriteOverlayChanges(t.Context(), upper, &since, &out))
			names := memberNames(t, out.Bytes())
			if got := slices.Contains(names, "f") && slices.Contains(names, "f2"); got != tc.sent {
				t.Errorf("changes %q: both names sent %v, want %v", names, got, tc.sent)
			}
		})
	}
}
