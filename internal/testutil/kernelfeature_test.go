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
		skipped bool
	}{
		{name: "present: the test goes on", probe: func() (bool, error) { return true, nil }, wentOn: true},
		{name: "absent: skipped, even in CI", probe: func() (bool, error) { return false, nil }, skipped: true},
	}
	for _, tt := range tests {
		var wentOn, skipped bool
		t.Run(tt.name, func(t *testing.T) {
			defer func() { skipped = t.Skipped() }()
			RequireKernelFeature(t, "soft-dirty", tt.probe)
			wentOn = true
		})
		if wentOn != tt.wentOn || skipped != tt.skipped {
			t.Errorf("%s: went on %v, skipped %v; want %v, %v", tt.name, wentOn, skipped, tt.wentOn, tt.skipped)
		}
	}

	// A probe that cannot tell fails the test rather than skip it.
	r := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		RequireKernelFeature(r, "soft-dirty", func() (bool, error) { return false, errors.New("open pagemap: permission denied") })
	}()
	<-done
	if !r.fatal || len(r.failures) != 1 || !strings.Contains(r.failures[0], "soft-dirty: open pagemap") {
		t.Errorf("a broken probe: fatal %v, failures %q; want one failure naming the feature and the error", r.fatal, r.failures)
	}
}
