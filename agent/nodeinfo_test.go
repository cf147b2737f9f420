package agent

import (
	"slices"
	"strings"
	"testing"

	"github.com/godwit/godwit/agent/doctor"
	"github.com/godwit/godwit/migrate"
)

func TestAgentStrategies(t *testing.T) {
	// The host as doctor reports this project's machine: no soft-dirty.
	report := doctor.Report{Strategies: []doctor.Strategy{
		{Name: doctor.StopCopy, Supported: true},
		{Name: doctor.Stream, Supported: true},
		{Name: doctor.PreCopy, Reason: "needs soft-dirty: the kernel does not mark written pages soft-dirty"},
		{Name: doctor.PostCopy, Supported: true},
	}}
	got := agentStrategies(report)
	var order []migrate.Strategy
	for _, s := range got {
		order = append(order, s.Strategy)
	}
	if want := []migrate.Strategy{migrate.StopCopy, migrate.Stream, migrate.PreCopy, migrate.PostCopy}; !slices.Equal(order, want) {
		t.Fatalf("strategies %v, want %v", order, want)
	}
	for _, s := range got {
		why, unimplemented := unimplementedStrategies[s.Strategy]
		switch {
		case unimplemented && (s.Supported || s.Reason != why):
			t.Errorf("%s = %+v: the agent does not implement it, want unsupported saying %q", s.Strategy, s, why)
		case s.Strategy == migrate.PreCopy && (s.Supported || !strings.Contains(s.Reason, "soft-dirty")):
			t.Errorf("pre-copy = %+v, want unsupported naming soft-dirty", s)
		case s.Strategy == migrate.StopCopy && !s.Supported:
			t.Errorf("stop-copy = %+v, want supported", s)
		}
	}

	// A host report without a strategy (an older doctor) never passes
	// for support.
	for _, s := range agentStrategies(doctor.Report{}) {
		if s.Supported {
			t.Errorf("%s supported by an empty host report", s.Strategy)
		}
	}
}
