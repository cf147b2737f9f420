package server

import (
	"testing"
	"time"
)

func TestDrainETA(t *testing.T) {
	tests := []struct {
		name                       string
		done                       []time.Duration
		left, maxParallel, blocked int
		want                       time.Duration
	}{
		{"nothing finished yet: no estimate", nil, 4, 2, 0, 0},
		{"rounds of max parallel at the mean", []time.Duration{2 * time.Second, 4 * time.Second}, 5, 2, 0, 9 * time.Second},
		{"the blocked are not counted", []time.Duration{3 * time.Second}, 3, 1, 2, 3 * time.Second},
		{"only blocked left", []time.Duration{3 * time.Second}, 2, 1, 2, 0},
		{"nothing left", []time.Duration{3 * time.Second}, 0, 1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := drainETA(tt.done, tt.left, tt.maxParallel, tt.blocked); got != tt.want {
				t.Errorf("drainETA = %s, want %s", got, tt.want)
			}
		})
	}
}
