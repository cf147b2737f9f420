package testutil

import (
	"errors"
	"strings"
	"testing"
)

func TestRequireKernelFeature(t *testing.T) {
	t.Setenv("CI", "true") // a missing kernel feature skips even in CI
	tests := []struct {
		name    string
		probe   func() (bool, error)
		wentOn  bool
		skipped string // what the skip says
		failure string // what the failure says
	}{
		{name: "present: the test goes on", probe: func() (bool, error) { return true, nil }, wentOn: true},
		{name: "absent: skipped, even in CI, naming the feature", probe: func() (bool, error) { return false, nil },
			skipped: "this kernel lacks soft-dirty"},
		{name: "a probe that cannot tell fails the test rather than skip it",
			probe:   func() (bool, error) { return false, errors.New("open pagemap: permission denied") },
			failure: "soft-dirty: open pagemap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recordingTB{TB: t}
			wentOn := false
			done := make(chan struct{})
			go func() { // RequireKernelFeature ends the goroutine when it skips or fails
				defer close(done)
				RequireKernelFeature(r, "soft-dirty", tt.probe)
				wentOn = true
			}()
			<-done
			if wentOn != tt.wentOn {
				t.Errorf("went on: %v, want %v", wentOn, tt.wentOn)
			}
			if (r.skipped == "") != (tt.skipped == "") || !strings.Contains(r.skipped, tt.skipped) {
				t.Errorf("skipped with %q, want %q", r.skipped, tt.skipped)
			}
			switch {
			case tt.failure == "" && len(r.failures) > 0:
				t.Errorf("failures %q, want none", r.failures)
			case tt.failure != "" && (!r.fatal || len(r.failures) != 1 || !strings.Contains(r.failures[0], tt.failure)):
				t.Errorf("fatal %v, failures %q; want one failure saying %q", r.fatal, r.failures, tt.failure)
			}
		})
	}
}
