package clustertests

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// This test's ranges, apart from every other test's.
var (
	drainCkptSubnet     = netip.MustParsePrefix("10.77.48.0/24")
	drainCkptContainers = netip.MustParsePrefix("10.78.48.0/24")
)

// TestDrainDeadlineCheckpointsWhatIsLeft drains a node with three
// workloads, one move at a time, and a deadline too short for more than
// the first: at the deadline the checkpoint policy checkpoints the others,
// keeps their checkpoints on n3 (the only other node with their image;
// the live move fetches layers, a checkpoint does not) as well as on n1,
// and puts them there, stopped. The drain ends done, n1 empty. Nothing of
// them runs anywhere until `godwit start` restores one on n3: its counter
// goes on from where it was, not from zero, its memory the same bytes.
func TestDrainDeadlineCheckpointsWhatIsLeft(t *testing.T) {
	testutil.RequireTools(t, "criu", "iptables")
	c, sched, hosts := oneScheduler(t, devcluster.Config{Name: "ctdrck", Subnet: drainCkptSubnet, ContainerCIDR: drainCkptContainers},
		[]string{"n1", "n2", "n3"}, "c")
	ctx := context.Background()
	n1, n3 := hosts[0], hosts[2]
	client := sched.Client()

	// Only n1 has the image when they run; then n3 gets it, n2 never.
	tarball := filepath.Join(t.TempDir(), "workload.tar")
	testutil.WorkloadTar(t, tarball)
	importImage(t, client, n1.Node(), tarball, workloadImage)
	// Equal requests are moved by name: a1 first; z, the one the test
	// follows, is left for the deadline.
	names := []string{"a1", "a2", "z"}
	ips := map[string]netip.Addr{}
	for _, name := range names {
		run, err := client.Run(ctx, &pb.RunRequest{Container: &pb.RunContainerRequest{
			Name: name, Image: workloadImage, Args: []string{testutil.WorkloadPath, "-mem", "8"},
		}})
		if err != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		if run.GetContainer().GetNode() != n1.Node() {
			t.Fatalf("%s placed on %s, want %s (the only node with its image)", name, run.GetContainer().GetNode(), n1.Node())
		}
		ips[name] = netip.MustParseAddr(run.GetContainer().GetIp())
	}
	importImage(t, client, n3.Node(), tarball, workloadImage)
	if err := c.Route(ctx, netip.PrefixFrom(ips["z"], 32), n1); err != nil {
		t.Fatal(err)
	}
	before := dialFrom(t, c.Host("c"), ips["z"])
	waitCount(t, before, 20)
	counted := before.Count()

	if _, err := client.DrainNode(ctx, &pb.DrainNodeRequest{Node: n1.Node(), MaxParallel: 1,
		DeadlineMs: (500 * time.Millisecond).Milliseconds(), OnDeadline: "checkpoint"}); err != nil {
		t.Fatalf("drain %s: %v", n1.Node(), err)
	}
	end, _ := followDrain(t, client, n1.Node())
	if end.GetStatus() != "done" || end.GetLeft() != 0 || end.GetCheckpointed() < 1 || end.GetMoved()+end.GetCheckpointed() != 3 {
		t.Fatalf("drain ended %s (%s): %d moved, %d checkpointed, %d left, blocked %v; want done with z among the checkpointed",
			end.GetStatus(), end.GetReason(), end.GetMoved(), end.GetCheckpointed(), end.GetLeft(), end.GetBlocked())
	}
	t.Logf("drain: %s", end.GetReason())

	z, err := client.InspectContainer(ctx, &pb.ContainerRef{Ref: "z"})
	if err != nil {
		t.Fatal(err)
	}
	if z.GetNode() != n3.Node() || z.GetState() != pb.ContainerState_CONTAINER_STATE_CHECKPOINTED || z.GetLastCheckpoint() == "" {
		t.Fatalf("z is %s on %s (checkpoint %q), want checkpointed on %s, the only other node with its image",
			z.GetState(), z.GetNode(), z.GetLastCheckpoint(), n3.Node())
	}
	if on := runningOn(t, "z", hosts); len(on) != 0 {
		t.Errorf("z runs on %v while checkpointed, want nowhere", on)
	}
	for _, h := range []*devcluster.Host{n1, n3} {
		if ids := checkpointIDs(t, h); !slices.Contains(ids, z.GetLastCheckpoint()) {
			t.Errorf("%s keeps checkpoints %v, want z's %s there too", h.Node(), ids, z.GetLastCheckpoint())
		}
	}
	if n, err := client.InspectNode(ctx, &pb.NodeRef{Name: n1.Node()}); err != nil || n.GetContainers() != 0 {
		t.Errorf("%s holds %d containers (%v), want none", n1.Node(), n.GetContainers(), err)
	}

	started, err := client.StartContainer(ctx, &pb.ContainerRef{Ref: "z"})
	if err != nil {
		t.Fatalf("start z from its checkpoint: %v", err)
	}
	if started.GetState() != pb.ContainerState_CONTAINER_STATE_RUNNING || started.GetNode() != n3.Node() {
		t.Errorf("started z is %s on %s, want running on %s", started.GetState(), started.GetNode(), n3.Node())
	}
	assertOneCopy(t, "z", n3, hosts)
	if err := c.Route(ctx, netip.PrefixFrom(ips["z"], 32), n3); err != nil {
		t.Fatal(err)
	}
	after := dialFrom(t, c.Host("c"), ips["z"])
	if got := after.Count(); got < counted {
		t.Errorf("z counts %d after its restore, %d before the drain: it restarted rather than restored", got, counted)
	}
	after.CheckMemory()
}

// waitCount waits until the workload's counter reaches n.
func waitCount(t *testing.T, w *testutil.WorkloadClient, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for w.Count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the workload's counter did not reach %d", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkpointIDs lists the checkpoints host h's agent keeps.
func checkpointIDs(t *testing.T, h *devcluster.Host) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := h.Agent().Client().ListCheckpoints(ctx, &pb.ListCheckpointsRequest{})
	if err != nil {
		t.Fatalf("list the checkpoints of %s: %v", h.Node(), err)
	}
	var ids []string
	for _, ck := range list.GetCheckpoints() {
		ids = append(ids, ck.GetId())
	}
	return ids
}
