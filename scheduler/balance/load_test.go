package balance

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

func TestEstimate(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(ago time.Duration, cpu, mem int64) Sample {
		return Sample{Time: now.Add(-ago), MilliCPU: cpu, MemoryBytes: mem}
	}
	request := state.Resources{MilliCPU: 250}
	tests := []struct {
		name    string
		samples []Sample
		want    estimate
	}{
		{"no sample: the effective request", nil,
			estimate{load: state.Resources{MilliCPU: 250, MemoryBytes: state.DefaultMemoryBytes}}},
		{"samples older than the window are ignored", []Sample{at(6*time.Minute, 900, 1<<30)},
			estimate{load: state.Resources{MilliCPU: 250, MemoryBytes: state.DefaultMemoryBytes}}},
		{"a steady load: the mean, steady since the oldest sample",
			[]Sample{at(0, 1000, 1<<30), at(time.Minute, 1100, 1<<30), at(2*time.Minute, 900, 1<<30)},
			estimate{load: state.Resources{MilliCPU: 1000, MemoryBytes: 1 << 30}, measured: true, stableFor: 2 * time.Minute}},
		{"a load that tripled: the new level, steady since it changed",
			[]Sample{at(0, 3000, 1<<30), at(time.Minute, 3100, 1<<30), at(2*time.Minute, 1000, 1<<30), at(3*time.Minute, 1000, 1<<30)},
			estimate{load: state.Resources{MilliCPU: 3050, MemoryBytes: 1 << 30}, measured: true, stableFor: time.Minute}},
		{"memory that grew counts as a change too",
			[]Sample{at(0, 1000, 2<<30), at(time.Minute, 1000, 1<<30)},
			estimate{load: state.Resources{MilliCPU: 1000, MemoryBytes: 2 << 30}, measured: true}},
		{"tiny loads vary within the floor",
			[]Sample{at(0, 2, 1<<20), at(time.Minute, 9, 3<<20)},
			estimate{load: state.Resources{MilliCPU: 6, MemoryBytes: 2 << 20}, measured: true, stableFor: time.Minute}},
		{"a sample from the future counts as now",
			[]Sample{at(-time.Minute, 1000, 1<<30), {Time: now.Add(-time.Minute), MilliCPU: 1000, MemoryBytes: 1 << 30, DirtyBytesPerSecond: 7}},
			estimate{load: state.Resources{MilliCPU: 1000, MemoryBytes: 1 << 30}, measured: true, stableFor: time.Minute}},
		{"the dirty rate is the newest sample's",
			[]Sample{{Time: now, MilliCPU: 1000, MemoryBytes: 1 << 30, DirtyBytesPerSecond: 5 << 20}, {Time: now.Add(-time.Minute), MilliCPU: 1000, MemoryBytes: 1 << 30, DirtyBytesPerSecond: 1}},
			estimate{load: state.Resources{MilliCPU: 1000, MemoryBytes: 1 << 30}, measured: true, stableFor: time.Minute, dirty: 5 << 20}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := estimator{now: now, window: 5 * time.Minute, tolerance: DefaultStableTolerance}
			if got := e.estimate(tc.samples, request); got != tc.want {
				t.Errorf("estimate = %+v, want %+v", got, tc.want)
			}
			shuffled := slices.Clone(tc.samples)
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			if got := e.estimate(shuffled, request); got != tc.want {
				t.Errorf("with the samples shuffled, estimate = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestStability(t *testing.T) {
	tests := []struct {
		stable, need time.Duration
		want         float64
	}{
		{time.Minute, 2 * time.Minute, 0.5},
		{5 * time.Minute, 2 * time.Minute, 1},
		{0, 2 * time.Minute, 0},
		{0, 0, 1},
	}
	for _, tc := range tests {
		if got := stability(tc.stable, tc.need); got != tc.want {
			t.Errorf("stability(%s, %s) = %v, want %v", tc.stable, tc.need, got, tc.want)
		}
	}
}
