package fsm_test

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/godwit/godwit/scheduler/fsm"
)

// Size of the simulated cluster the placement benchmark runs on (issue 5's
// memory and throughput targets are stated for it).
const (
	benchNodes      = 1000
	benchContainers = 30000
	benchFillBatch  = 1000
)

// benchCluster returns an FSM holding benchNodes nodes and
// benchContainers containers spread over them.
func benchCluster(b *testing.B) *harness {
	h := newHarness(b)
	h.must(fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix("10.0.0.0/8"), At: t0})
	for i := range benchNodes {
		h.must(fsm.RegisterNode{Node: testNode(fmt.Sprintf("node-%04d", i)), At: t0})
	}
	for start := 0; start < benchContainers; start += benchFillBatch {
		h.must(fsm.PlaceContainers{Containers: newContainers("fill", start, benchFillBatch), At: t0})
	}
	return h
}

func newContainers(prefix string, start, n int) []fsm.NewContainer {
	cs := make([]fsm.NewContainer, n)
	for i := range cs {
		k := start + i
		cs[i] = fsm.NewContainer{
			ID:   fmt.Sprintf("%s%060d", prefix, k),
			Name: fmt.Sprintf("%s-%d", prefix, k),
			Node: fmt.Sprintf("node-%04d", k%benchNodes),
			Spec: spec(10),
		}
	}
	return cs
}

// BenchmarkPlaceContainers measures what the FSM costs per placement:
// encoding a PlaceContainers batch, decoding it and applying it (address
// allocation, indexes, usage, events) on a 1,000-node, 30,000-container
// state. Raft's own cost (replication, fsync) is not included.
func BenchmarkPlaceContainers(b *testing.B) {
	for _, batch := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			h := benchCluster(b)
			b.ReportAllocs()
			placed := 0
			for b.Loop() {
				out := h.must(fsm.PlaceContainers{Containers: newContainers("bench", placed, batch), At: t0}).([]fsm.PlaceOutcome)
				for _, o := range out {
					if o.Err != nil {
						b.Fatalf("placement refused: %v", o.Err)
					}
				}
				placed += batch
			}
			b.ReportMetric(float64(placed)/b.Elapsed().Seconds(), "placements/s")
			if got := h.snap().ContainerCount("node-0000"); got < benchContainers/benchNodes {
				b.Fatalf("node-0000 holds %d containers, want at least %d", got, benchContainers/benchNodes)
			}
		})
	}
}
