package placement_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/godwit/godwit/scheduler/placement"
	pt "github.com/godwit/godwit/scheduler/placement/placementtest"
	"github.com/godwit/godwit/scheduler/state"
)

// TestTableBatchDecidesAsEveryNodeAnew decides random batches on one
// Table, each decision reserved on it before the next, as the scheduler's
// Placer does, and checks every Decision against the same request placed
// with the batch's reservations on the State itself (which evaluates every
// node anew): the Table keeps each kind of decision's outcomes between
// decisions and updates only the nodes reserved on, and must never differ,
// rejections' words included. Batches mix requests alike (the case the
// Table keeps outcomes for) with other sizes, the spread algorithm, an
// image, constraints and Explain, and run nodes out of room.
func TestTableBatchDecidesAsEveryNodeAnew(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, 7))
			s := randomCluster(r)
			var held placement.Reservations
			view := placement.Reserve(s, &held)
			table := placement.NewTable(s)
			kinds := []placement.Request{
				request(500, pt.GiB),
				request(0, 0),
				spread(request(250, 512*pt.MiB)),
				withImage(request(1000, 2*pt.GiB), "busybox:latest"),
				constrained(request(500, pt.GiB), "zone=eu"),
			}
			for i := range 300 {
				req := kinds[r.IntN(len(kinds))]
				if r.IntN(10) == 0 {
					req = request(int64(100*(1+r.IntN(20))), int64(1+r.IntN(8))*256*pt.MiB) // a request of its own
				}
				req.Explain = r.IntN(20) == 0
				want, wantErr := placement.Place(view, req)
				got, err := placement.Place(table, req)
				if !reflect.DeepEqual(got, want) || (err == nil) != (wantErr == nil) {
					t.Fatalf("decision %d (%+v): on the Table %+v (err %v), anew %+v (err %v)", i, req, got, err, want, wantErr)
				}
				if err != nil && !errors.Is(err, placement.ErrNoNode) {
					t.Fatalf("decision %d: %v", i, err)
				}
				if got.Node != "" {
					held.Add(got.Node, req.Spec.Request)
					table.Add(got.Node, req.Spec.Request)
				}
			}
		})
	}
}

// randomCluster is a few small nodes, some full already, some cordoned,
// in two zones, some holding an image: a batch of 300 runs several of
// them out of room.
func randomCluster(r *rand.Rand) *pt.State {
	nodes := make([]*pt.NodeSpec, 0, 12)
	for i := range 8 + r.IntN(5) {
		n := pt.Node(fmt.Sprintf("n%02d", i), int64(2000*(1+r.IntN(4))), int64(1+r.IntN(8))*pt.GiB).
			Labels("zone="+[]string{"eu", "us"}[r.IntN(2)]).
			Running(r.IntN(6), 250, 256*pt.MiB)
		if r.IntN(8) == 0 {
			n.Status(state.NodeCordoned)
		}
		if r.IntN(2) == 0 {
			n.Images("busybox:latest")
		}
		nodes = append(nodes, n)
	}
	return pt.NewState(nodes...)
}

func withImage(r placement.Request, image string) placement.Request {
	r.Spec.Image = image
	return r
}
