package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseTools(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{"both", "godwit,podman", []string{"godwit", "podman"}, false},
		{"order kept", "podman,godwit", []string{"podman", "godwit"}, false},
		{"once each", "podman,podman", []string{"podman"}, false},
		{"unknown", "docker", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTools(tc.in)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Errorf("parseTools(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestMedianTakesEachMeasureApart(t *testing.T) {
	s := median([]sample{
		{checkpoint: 9 * time.Second, restore: 1 * time.Second, archive: 30},
		{checkpoint: 2 * time.Second, restore: 8 * time.Second, archive: 10},
		{checkpoint: 3 * time.Second, restore: 2 * time.Second, archive: 20},
	})
	want := sample{checkpoint: 3 * time.Second, restore: 2 * time.Second, archive: 20}
	if s != want {
		t.Errorf("median = %+v, want %+v", s, want)
	}
}

func TestReportTarget(t *testing.T) {
	podman := sample{checkpoint: 4 * time.Second, restore: 4 * time.Second}
	tests := []struct {
		name   string
		godwit sample
		want   string
	}{
		{"half of podman meets it", sample{checkpoint: 2 * time.Second, restore: 2 * time.Second}, "4.00 s against 8.00 s (50%) — met"},
		{"more than half misses it", sample{checkpoint: 3 * time.Second, restore: 2 * time.Second}, "5.00 s against 8.00 s (62%) — NOT met"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := report{runs: 1, rows: []row{
				{size: targetSize, tool: toolGodwit, median: tc.godwit},
				{size: targetSize, tool: toolPodman, median: podman},
			}}
			text := r.render()
			if !strings.Contains(text, tc.want) {
				t.Errorf("report does not say %q:\n%s", tc.want, text)
			}
			ratio := fmt.Sprintf("| %.2f |", tc.godwit.total().Seconds()/podman.total().Seconds())
			if !strings.Contains(text, ratio) {
				t.Errorf("godwit's row lacks the ratio %q:\n%s", ratio, text)
			}
		})
	}
}

func TestReportWithoutPodman(t *testing.T) {
	r := report{runs: 1, rows: []row{{size: targetSize, tool: toolGodwit, median: sample{checkpoint: time.Second}}},
		skipped: []string{"2048 MiB: needs 3072 MiB of memory available"}}
	text := r.render()
	for _, want := range []string{"not measured in this run", "Skipped 2048 MiB", "| 512 MiB | godwit | 1.00 s | 0.00 s | 1.00 s | 0.0 MiB | — |"} {
		if !strings.Contains(text, want) {
			t.Errorf("report does not say %q:\n%s", want, text)
		}
	}
}
