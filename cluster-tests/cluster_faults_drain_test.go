package clustertests

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The sixth scenario: a drain with one destination full, its leader
// killed half-way.

// drainSiblings are the containers that run beside the workload on the
// drained node, and drainFiller the one that fills a destination.
var (
	drainSiblings = []string{"d1", "d2"}
	drainFiller   = "filler"
)

// drainLeaderKilledHalfWay drains the workload's node, with two more
// containers on it, one at a time, while one of the two other nodes is
// full (a filler pinned there takes all its memory): every container
// must go to the other one. Once the first container has moved, the
// leader is killed; the new leader goes on with the drain from its
// record. The drain ends done, each container runs exactly once, on the
// node with room (runc on the hosts), where the cluster says; the full
// node received nothing; the workload's counter and client went on.
func (fc *faultCluster) drainLeaderKilledHalfWay(t *testing.T, rng *rand.Rand) {
	fc.armSchedulers(t)
	src := fc.hostOf(t, fc.placement(t).GetNode())
	var others []*devcluster.Host
	for _, h := range fc.nodes {
		if h != src {
			others = append(others, h)
		}
	}
	rng.Shuffle(len(others), func(i, j int) { others[i], others[j] = others[j], others[i] })
	full, free := others[0], others[1]
	t.Logf("draining %s (%s, %v) with %s full: everything must go to %s; the leader dies after the first move",
		src.Node(), faultWorkload, drainSiblings, full.Node(), free.Node())
	t.Cleanup(func() { fc.clearDrain(t, src) })

	// The siblings run on src: the other nodes are cordoned meanwhile.
	fc.setCordoned(t, true, full, free)
	for _, name := range drainSiblings {
		fc.runWorkload(t, name, "")
	}
	fc.setCordoned(t, false, full, free)
	var room *pb.Resources
	fc.retry(t, "inspect node "+full.Node(), func(ctx context.Context, c pb.ClusterServiceClient) error {
		n, err := c.InspectNode(ctx, &pb.NodeRef{Name: full.Node()})
		room = &pb.Resources{MemoryBytes: n.GetCapacity().GetMemoryBytes() - n.GetAllocated().GetMemoryBytes()}
		return err
	})
	fc.runWorkload(t, drainFiller, full.Node(), withMemory(room.GetMemoryBytes()))

	started := time.Now()
	fc.retry(t, "drain "+src.Node(), func(ctx context.Context, c pb.ClusterServiceClient) error {
		_, err := c.DrainNode(ctx, &pb.DrainNodeRequest{Node: src.Node(), MaxParallel: 1})
		return err
	})
	half := fc.waitDrain(t, src, "the first container moved", func(d *pb.Drain) bool { return d.GetMoved() >= 1 })
	if half.GetStatus() != "running" || half.GetLeft() == 0 {
		t.Fatalf("the drain was %s with %d left when its first move was seen: not half-way", half.GetStatus(), half.GetLeft())
	}
	leader := fc.waitLeader(t)
	t.Logf("one container moved: killing the leader %s", leader.Name())
	leader.Kill()
	end := fc.waitDrain(t, src, "the drain ended", func(d *pb.Drain) bool { return d.GetStatus() != "running" })
	fc.recordDrainMoves(t, started)
	if end.GetStatus() != "done" || end.GetMoved() != 3 || end.GetLeft() != 0 {
		t.Fatalf("drain ended %s (%s): %d moved, %d failed, %d left, blocked %v; want done with 3 moved",
			end.GetStatus(), end.GetReason(), end.GetMoved(), end.GetFailed(), end.GetLeft(), end.GetBlocked())
	}

	for _, name := range drainSiblings {
		if on := runningOn(t, name, fc.nodes); len(on) != 1 || on[0] != free.Name() {
			t.Errorf("%s runs on hosts %v, want exactly on %s", name, on, free.Name())
		}
	}
	if on := runningOn(t, drainFiller, fc.nodes); len(on) != 1 || on[0] != full.Name() {
		t.Errorf("the filler runs on hosts %v, want exactly on %s", on, full.Name())
	}
	var onFull []string
	for _, c := range fc.containers(t) {
		if c.GetNode() == full.Node() {
			onFull = append(onFull, c.GetName())
		}
	}
	if !slices.Equal(onFull, []string{drainFiller}) {
		t.Errorf("%s holds %v, want only the filler: it had no room", full.Node(), onFull)
	}
	fc.waitOneCopy(t, free)
	fc.waitCluster(t, free.Node(), fc.placement(t).GetGeneration())
	fc.route(t, free)
	fc.assertCounted(t)
	fc.client.CheckMemory()
}

// runOption changes a container fc.runWorkload runs.
type runOption func(*pb.RunContainerRequest)

// withMemory requests bytes of memory.
func withMemory(bytes int64) runOption {
	return func(r *pb.RunContainerRequest) { r.MemoryBytes = bytes }
}

// runWorkload runs a small workload container named name, pinned to
// node unless node is "".
func (fc *faultCluster) runWorkload(t *testing.T, name, node string, opts ...runOption) {
	t.Helper()
	req := &pb.RunContainerRequest{Name: name, Image: workloadImage, Args: []string{testutil.WorkloadPath, "-mem", "1"}}
	for _, o := range opts {
		o(req)
	}
	fc.retry(t, "run "+name, func(ctx context.Context, c pb.ClusterServiceClient) error {
		_, err := c.Run(ctx, &pb.RunRequest{Node: node, Container: req})
		return err
	})
}

// setCordoned cordons or uncordons nodes.
func (fc *faultCluster) setCordoned(t *testing.T, cordoned bool, hosts ...*devcluster.Host) {
	t.Helper()
	for _, h := range hosts {
		fc.retry(t, fmt.Sprintf("cordon %s: %v", h.Node(), cordoned), func(ctx context.Context, c pb.ClusterServiceClient) error {
			var err error
			if cordoned {
				_, err = c.CordonNode(ctx, &pb.NodeRef{Name: h.Node()})
			} else {
				_, err = c.UncordonNode(ctx, &pb.NodeRef{Name: h.Node()})
			}
			return err
		})
	}
}

// waitDrain waits until host h's drain record satisfies done.
func (fc *faultCluster) waitDrain(t *testing.T, h *devcluster.Host, what string, done func(*pb.Drain) bool) *pb.Drain {
	t.Helper()
	deadline := time.Now().Add(drainWithin)
	for {
		var d *pb.Drain
		fc.retry(t, "inspect the drain of "+h.Node(), func(ctx context.Context, c pb.ClusterServiceClient) (err error) {
			d, err = c.InspectDrain(ctx, &pb.NodeRef{Name: h.Node()})
			return err
		})
		if done(d) {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("drain of %s: not %s within %s: %s, %d moved, %d failed, %d left, blocked %v",
				h.Node(), what, drainWithin, d.GetStatus(), d.GetMoved(), d.GetFailed(), d.GetLeft(), d.GetBlocked())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// recordDrainMoves puts the workload's moves the drain made since
// started in the history, as acknowledged when the drain was asked for
// and settled as they ended.
func (fc *faultCluster) recordDrainMoves(t *testing.T, started time.Time) {
	t.Helper()
	for _, m := range fc.migrations(t) {
		if m.GetContainerId() != fc.id || m.GetCreated().AsTime().Before(started) {
			continue
		}
		fc.hist.MoveAcknowledged(faultWorkload, m.GetId(), m.GetSource(), m.GetDestination(), m.GetGeneration(), started)
		if err := fc.hist.MoveSettled(m.GetId(), outcomeOf(m)); err != nil {
			t.Error(err)
		}
	}
}

// containers lists the cluster's containers, asking until one answers.
func (fc *faultCluster) containers(t *testing.T) []*pb.Container {
	t.Helper()
	var out []*pb.Container
	fc.retry(t, "list the containers", func(ctx context.Context, c pb.ClusterServiceClient) error {
		list, err := c.ListContainers(ctx, &pb.ListContainersRequest{All: true})
		out = list.GetContainers()
		return err
	})
	return out
}

// clearDrain leaves the cluster as the next scenario expects: the
// siblings and the filler removed, the drained node uncordoned.
func (fc *faultCluster) clearDrain(t *testing.T, src *devcluster.Host) {
	for _, name := range append(slices.Clone(drainSiblings), drainFiller) {
		fc.retry(t, "remove "+name, func(ctx context.Context, c pb.ClusterServiceClient) error {
			_, err := c.RemoveContainer(ctx, &pb.RemoveContainerRequest{Ref: name, Force: true})
			if status.Code(err) == codes.NotFound {
				return nil
			}
			return err
		})
	}
	fc.setCordoned(t, false, src)
}
