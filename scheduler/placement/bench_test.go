package placement_test

import (
	"fmt"
	"testing"

	"github.com/godwit/godwit/scheduler/placement"
	pt "github.com/godwit/godwit/scheduler/placement/placementtest"
	"github.com/godwit/godwit/scheduler/state"
)

// benchNodes is the cluster size the scheduler benchmark
// simulates.
const benchNodes = 1000

// benchCluster is benchNodes nodes of three sizes, in two zones, loaded
// unevenly, one in fifty cordoned, one in three holding the image: what a
// placement in a real cluster walks through.
func benchCluster() *pt.State {
	nodes := make([]*pt.NodeSpec, 0, benchNodes)
	for i := range benchNodes {
		size := int64(1 + i%3)
		n := pt.Node(fmt.Sprintf("node-%04d", i), 8000*size, 32*pt.GiB*size).
			Labels("zone="+[]string{"eu", "us"}[i%2], "disk=ssd").
			Flags("avx2", "fpu", "sse4_2").
			Running(i%30, 200, 512*pt.MiB)
		if i%50 == 0 {
			n.Status(state.NodeCordoned)
		}
		if i%3 == 0 {
			n.Images("busybox:latest")
		}
		nodes = append(nodes, n)
	}
	return pt.NewState(nodes...)
}

// BenchmarkPlace places one container on 1,000 nodes. The target
// is 5,000 committed placements a second, so one placement must take well
// under 200µs for placement not to be the bottleneck.
func BenchmarkPlace(b *testing.B) {
	s := benchCluster()
	cases := []struct {
		name string
		req  placement.Request
	}{
		{"binpack", request(500, pt.GiB)},
		{"spread", spread(request(500, pt.GiB))},
		{"explain", func() placement.Request { r := request(500, pt.GiB); r.Explain = true; return r }()},
		{"constrained", constrained(request(500, pt.GiB), "zone=eu", "disk=ssd")},
		{"move", excluding(needsCPU(request(500, pt.GiB), "avx2", "fpu", "sse4_2"), "node-0001")},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := placement.Place(s, bc.req); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}

// benchBatch is how many containers the scheduler's Placer decides on one
// Table at most (server.DefaultMaxPlaceBatch).
const benchBatch = 256

// BenchmarkPlaceBatch decides batches as the scheduler's Placer does: a
// Table read from the state, then benchBatch decisions on it, each
// reserved before the next; the reading is counted.
func BenchmarkPlaceBatch(b *testing.B) {
	s := benchCluster()
	cases := []struct {
		name string
		reqs func(i int) placement.Request
	}{
		{"alike", func(int) placement.Request { return request(500, pt.GiB) }},
		{"two kinds", func(i int) placement.Request { return request(500*int64(1+i%2), pt.GiB) }},
		{"each its own", func(i int) placement.Request { return request(int64(100+i), pt.GiB) }},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				t := placement.NewTable(s)
				for i := range benchBatch {
					req := bc.reqs(i)
					d, err := placement.Place(t, req)
					if err != nil {
						b.Fatal(err)
					}
					t.Add(d.Node, req.Spec.Request)
				}
			}
			b.ReportMetric(float64(b.N*benchBatch)/b.Elapsed().Seconds(), "placements/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchBatch), "ns/placement")
		})
	}
}
