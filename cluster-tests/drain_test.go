package clustertests

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// This test's ranges, apart from every other test's.
var (
	drainSubnet     = netip.MustParsePrefix("10.77.47.0/24")
	drainContainers = netip.MustParsePrefix("10.78.47.0/24")
)

const (
	// drainWithin bounds a drain of three small containers, two at a
	// time, on a loaded 2-core machine.
	drainWithin = 4 * time.Minute
	// drainRoom is what the filler leaves free on n2: room for two
	// containers that request nothing (each counts as 16 MiB), not three.
	drainRoom = 40 << 20
)

// TestDrainEmptiesANodeAndARefusedOneChangesNothing runs three busybox
// containers on n1 and asks the cluster to drain it. First with room
// for only two of them elsewhere (n3 cordoned, n2 nearly full): the drain
// is refused with the one that cannot move, and nothing changes. Then
// with n3 back: n1 ends empty (runc on n1 runs nothing), each container
// runs exactly once on n2 or n3 (runc on the hosts), where the cluster
// says it is, no node is promised more than it has, never more than two
// moves ran at once, and the drain's record is done.
func TestDrainEmptiesANodeAndARefusedOneChangesNothing(t *testing.T) {
	testutil.RequireTools(t, "criu", "iptables")
	c, sched, hosts := oneScheduler(t, devcluster.Config{Name: "ctdrain", Subnet: drainSubnet, ContainerCIDR: drainContainers},
		[]string{"n1", "n2", "n3"})
	ctx := context.Background()
	n1, n2, n3 := hosts[0], hosts[1], hosts[2]
	client := sched.Client()

	// Only n1 has busybox when they run, so all three land there; a
	// container pinned with --node could not be drained.
	tarball := filepath.Join(t.TempDir(), "busybox.tar")
	testutil.BusyboxTar(t, tarball)
	importThroughCluster(t, client, n1.Node(), tarball)
	names := []string{"w1", "w2", "w3"}
	for _, name := range names {
		ctr, err := run(ctx, client, name)
		if err != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		if ctr.GetNode() != n1.Node() {
			t.Fatalf("%s placed on %s, want %s (the only node with busybox)", name, ctr.GetNode(), n1.Node())
		}
	}
	importThroughCluster(t, client, n2.Node(), tarball)
	importThroughCluster(t, client, n3.Node(), tarball)

	// n2 keeps room for two of them; n3 is cordoned.
	free := nodeFree(t, client, n2.Node())
	filler, err := client.Run(ctx, &pb.RunRequest{Node: n2.Node(), Container: &pb.RunContainerRequest{
		Name: "filler", Image: devclustertest.BusyboxImage, Args: []string{"sleep", "100000"}, MemoryBytes: free.GetMemoryBytes() - drainRoom,
	}})
	if err != nil {
		t.Fatalf("run the filler on %s: %v", n2.Node(), err)
	}
	if filler.GetContainer().GetNode() != n2.Node() {
		t.Fatalf("filler on %s, want %s", filler.GetContainer().GetNode(), n2.Node())
	}
	if _, err := client.CordonNode(ctx, &pb.NodeRef{Name: n3.Node()}); err != nil {
		t.Fatal(err)
	}

	t.Run("refused", func(t *testing.T) {
		_, err := client.DrainNode(ctx, &pb.DrainNodeRequest{Node: n1.Node(), MaxParallel: 2})
		if status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("drain with room for two of three: %v, want a refusal", err)
		}
		msg := status.Convert(err).Message()
		t.Logf("refused: %s", msg)
		// Equal requests are planned by name: w3 is the one left over.
		if !strings.Contains(msg, "1 of the 3 containers") || !strings.Contains(msg, "\n  w3: ") || strings.Contains(msg, "w1: ") ||
			!strings.Contains(msg, n3.Node()+": status: node is cordoned") {
			t.Errorf("refusal %q: want w3 alone listed, with why (n2's room, n3 cordoned)", msg)
		}
		if st := nodeStatus(t, client, n1.Node()); st != "ready" {
			t.Errorf("%s is %s after a refused drain, want ready", n1.Node(), st)
		}
		if _, err := client.InspectDrain(ctx, &pb.NodeRef{Name: n1.Node()}); status.Code(err) != codes.NotFound {
			t.Errorf("inspect the drain of %s: %v, want none recorded", n1.Node(), err)
		}
		if ms, err := client.ListMigrations(ctx, &pb.ListMigrationsRequest{All: true}); err != nil || len(ms.GetMigrations()) != 0 {
			t.Errorf("migrations %v (%v), want none", ms.GetMigrations(), err)
		}
		for _, name := range names {
			assertOneCopy(t, name, n1, hosts)
		}
	})

	t.Run("drained", func(t *testing.T) {
		if _, err := client.UncordonNode(ctx, &pb.NodeRef{Name: n3.Node()}); err != nil {
			t.Fatal(err)
		}
		start, err := client.DrainNode(ctx, &pb.DrainNodeRequest{Node: n1.Node(), MaxParallel: 2})
		if err != nil {
			t.Fatalf("drain %s: %v", n1.Node(), err)
		}
		if start.GetStatus() != "running" || start.GetLeft() != 3 {
			t.Fatalf("drain started as %s with %d left, want running with 3", start.GetStatus(), start.GetLeft())
		}
		end, most := followDrain(t, client, n1.Node())
		if end.GetStatus() != "done" || end.GetMoved() != 3 || end.GetLeft() != 0 {
			t.Fatalf("drain ended %s (%s): %d moved, %d failed, %d left, blocked %v; want done with 3 moved",
				end.GetStatus(), end.GetReason(), end.GetMoved(), end.GetFailed(), end.GetLeft(), end.GetBlocked())
		}
		if most > 2 {
			t.Errorf("%d moves in flight at once, want at most 2", most)
		}
		list, err := client.ListContainers(ctx, &pb.ListContainersRequest{All: true})
		if err != nil {
			t.Fatal(err)
		}
		where := map[string]string{}
		for _, ctr := range list.GetContainers() {
			where[ctr.GetName()] = ctr.GetNode()
		}
		for _, name := range names {
			on := runningOn(t, name, hosts)
			if len(on) != 1 || on[0] == n1.Name() {
				t.Errorf("%s runs on hosts %v, want exactly one, not %s", name, on, n1.Name())
				continue
			}
			t.Logf("%s now runs on %s", name, on[0])
			if h := c.Host(on[0]); where[name] != h.Node() {
				t.Errorf("%s runs on %s, the cluster says %s", name, h.Node(), where[name])
			}
		}
		if on := runningOn(t, "filler", hosts); len(on) != 1 || on[0] != n2.Name() {
			t.Errorf("the filler runs on %v, want %s only", on, n2.Name())
		}
		nodes, err := client.ListNodes(ctx, &pb.ListNodesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.GetNodes() {
			if a, c := n.GetAllocated(), n.GetCapacity(); a.GetMemoryBytes() > c.GetMemoryBytes() || a.GetMilliCpu() > c.GetMilliCpu() {
				t.Errorf("node %s has %v allocated of %v: the drain overfilled it", n.GetName(), a, c)
			}
			if n.GetName() == n1.Node() && (n.GetStatus() != "cordoned" || n.GetContainers() != 0) {
				t.Errorf("%s is %s with %d containers, want cordoned and empty", n1.Node(), n.GetStatus(), n.GetContainers())
			}
		}
		rec, err := client.InspectDrain(ctx, &pb.NodeRef{Name: n1.Node()})
		if err != nil || rec.GetStatus() != "done" {
			t.Errorf("the drain's record: %v (%v), want done", rec, err)
		}
	})
}

// followDrain watches node's drain to its end; it returns the final
// record and the most moves it saw in flight at once.
func followDrain(t *testing.T, client pb.ClusterServiceClient, node string) (*pb.Drain, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), drainWithin)
	defer cancel()
	most := 0
	for {
		stream, err := client.WatchDrain(ctx, &pb.NodeRef{Name: node})
		if err != nil {
			t.Fatalf("watch the drain of %s: %v", node, err)
		}
		for {
			p, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("watch the drain of %s: %v", node, err)
			}
			most = max(most, len(p.GetMoves()))
			for _, b := range p.GetDrain().GetBlocked() {
				t.Logf("drain of %s: %s cannot move: %s", node, b.GetContainer(), b.GetReason())
			}
			if p.GetDone() {
				return p.GetDrain(), most
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// nodeFree is what node has not allocated of its capacity.
func nodeFree(t *testing.T, client pb.ClusterServiceClient, node string) *pb.Resources {
	t.Helper()
	n, err := client.InspectNode(context.Background(), &pb.NodeRef{Name: node})
	if err != nil {
		t.Fatal(err)
	}
	return &pb.Resources{MilliCpu: n.GetCapacity().GetMilliCpu() - n.GetAllocated().GetMilliCpu(),
		MemoryBytes: n.GetCapacity().GetMemoryBytes() - n.GetAllocated().GetMemoryBytes()}
}

func nodeStatus(t *testing.T, client pb.ClusterServiceClient, node string) string {
	t.Helper()
	n, err := client.InspectNode(context.Background(), &pb.NodeRef{Name: node})
	if err != nil {
		t.Fatal(err)
	}
	return n.GetStatus()
}
