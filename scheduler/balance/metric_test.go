package balance_test

import (
	"math"
	"testing"

	"github.com/godwit/godwit/scheduler/balance"
	"github.com/godwit/godwit/scheduler/state"
)

func TestImbalance(t *testing.T) {
	capacity := state.Resources{MilliCPU: 1000, MemoryBytes: 1000}
	use := func(cpu, mem int64) balance.Usage {
		return balance.Usage{Capacity: capacity, Used: state.Resources{MilliCPU: cpu, MemoryBytes: mem}}
	}
	tests := []struct {
		name     string
		nodes    []balance.Usage
		wc, wm   float64
		floor    float64
		cpu, mem float64
		want     float64
	}{
		{"equal nodes are balanced", []balance.Usage{use(500, 200), use(500, 200)}, 1, 1, 0, 0, 0, 0},
		{"one node is balanced", []balance.Usage{use(900, 900)}, 1, 1, 0, 0, 0, 0},
		{"nothing used is balanced", []balance.Usage{use(0, 0), use(0, 0)}, 1, 1, 0.5, 0, 0, 0},
		// CPU 0.8 and 0.2: mean 0.5, deviation 0.3, CV 0.6.
		{"CPU apart, memory equal", []balance.Usage{use(800, 300), use(200, 300)}, 1, 1, 0, 0.6, 0, math.Sqrt(0.36 / 2)},
		{"memory weighed alone", []balance.Usage{use(800, 300), use(200, 300)}, 0, 1, 0, 0.6, 0, 0},
		{"CPU weighed three times memory", []balance.Usage{use(800, 600), use(200, 200)}, 3, 1, 0, 0.6, 0.5, math.Sqrt((3*0.36 + 0.25) / 4)},
		{"utilisation, not use: twice the capacity, twice the load", []balance.Usage{
			use(500, 500), {Capacity: state.Resources{MilliCPU: 2000, MemoryBytes: 2000}, Used: state.Resources{MilliCPU: 1000, MemoryBytes: 1000}},
		}, 1, 1, 0, 0, 0, 0},
		// CPU 0.3 and 0.1: mean 0.2, deviation 0.1; CV 0.5, or 0.2 over
		// a floor of 0.5. Memory 0.6 and 0.4 is above the floor: CV 0.2.
		{"a floor above the mean: spread judged as if nodes were that full", []balance.Usage{use(300, 600), use(100, 400)}, 1, 1, 0.5, 0.2, 0.2, 0.2},
		{"no floor: the plain coefficient of variation", []balance.Usage{use(300, 600), use(100, 400)}, 1, 1, 0, 0.5, 0.2, math.Sqrt((0.25 + 0.04) / 2)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := balance.Imbalance(tc.nodes, balance.Policy{CPUWeight: tc.wc, MemoryWeight: tc.wm, MeanFloor: tc.floor})
			if math.Abs(got.Imbalance-tc.want) > 1e-12 || math.Abs(got.CPU-tc.cpu) > 1e-12 || math.Abs(got.Memory-tc.mem) > 1e-12 {
				t.Errorf("Imbalance = %+v, want %v (CPU %v, memory %v)", got, tc.want, tc.cpu, tc.mem)
			}
		})
	}
}
