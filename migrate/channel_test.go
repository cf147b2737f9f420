package migrate

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

// checkingSource is a source that checks its channel to the destination
// (ChannelChecker), failing with err.
type checkingSource struct {
	fakeSource
	err error
	// asked records the addresses it was asked about.
	asked *[]string
}

func (s checkingSource) CheckChannel(_ context.Context, _, address string) error {
	*s.asked = append(*s.asked, address)
	return s.err
}

func TestDriveChecksTheChannelBeforeAnything(t *testing.T) {
	tests := []struct {
		name string
		err  error
		// wantCalls are the fakes' first calls, or all of them when the
		// check fails.
		wantCalls []string
	}{
		{"a channel that gets through lets the move go on", nil, []string{"src.Describe", "dst.Prepare"}},
		{"a refused channel fails the move before the destination prepares", errBoom, []string{"src.Describe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			var asked []string
			src := checkingSource{fakeSource: fakeSource{w}, err: tt.err, asked: &asked}
			_, err := Drive(context.Background(), webMigration, src, fakeDest{w}, options(w, &collected{}))
			w.check()
			if !slices.Equal(asked, []string{fakeAddress}) {
				t.Errorf("the source was asked about %q, want once about the destination's address %q", asked, fakeAddress)
			}
			calls := w.callList()
			if tt.err == nil {
				if err != nil {
					t.Fatalf("Drive: %v", err)
				}
				calls = calls[:min(len(calls), len(tt.wantCalls))]
			} else {
				if !errors.Is(err, tt.err) || !strings.Contains(err.Error(), "cannot open a data connection to the destination at "+fakeAddress) {
					t.Fatalf("Drive: %v, want %v naming the destination", err, tt.err)
				}
				if got := w.running(); got != "source" {
					t.Errorf("running copy: %s, want the source's, never stopped", got)
				}
			}
			if !slices.Equal(calls, tt.wantCalls) {
				t.Errorf("calls %v, want %v", calls, tt.wantCalls)
			}
		})
	}
}
