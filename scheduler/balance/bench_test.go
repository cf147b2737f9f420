package balance_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/godwit/godwit/scheduler/balance"
	bt "github.com/godwit/godwit/scheduler/balance/balancetest"
)

// BenchmarkPlan plans on issue 7's largest cluster: 1,000 nodes of 16
// CPUs and 64 GiB with 30 containers each, a tenth of the nodes hot.
// `go run ./bench/balance` measures the planner round after round on a
// changing cluster; this measures one plan, for profiling.
func BenchmarkPlan(b *testing.B) {
	const (
		nodes   = 1000
		perNode = 30
	)
	r := rand.New(rand.NewPCG(1, 2))
	var specs []*bt.NodeSpec
	for i := range nodes {
		n := bt.Node(fmt.Sprintf("n%04d", i), 16000, 64*bt.GiB).Flags("avx2", "sse4_2")
		hot := int64(1)
		if i%10 == 0 {
			hot = 3
		}
		for j := range perNode {
			cpu := hot * int64(50+r.IntN(300))
			mem := int64(64+r.IntN(1024)) * bt.MiB
			n.Run(bt.Container(fmt.Sprintf("c%04d-%02d", i, j), cpu, mem))
		}
		specs = append(specs, n)
	}
	s, in := bt.Cluster(now, specs...)
	d, err := balance.Plan(s, in)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(d.Moves)), "moves")
	b.ResetTimer()
	for b.Loop() {
		if _, err := balance.Plan(s, in); err != nil {
			b.Fatal(err)
		}
	}
}
