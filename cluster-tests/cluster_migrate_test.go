package clustertests

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// This test's ranges, apart from every other test's.
var (
	cmigSubnet     = netip.MustParsePrefix("10.77.46.0/24")
	cmigContainers = netip.MustParsePrefix("10.78.46.0/24")
)

// clusterMoveWithin bounds one move driven by the scheduler.
const clusterMoveWithin = 2 * time.Minute

// TestClusterMovesAContainerThereAndBack asks the cluster, not a pair of
// agents, to move a running container: the leader chooses the
// destination, records every phase in raft, commits the new node and
// generation, and the container runs on; a TCP client on a third host
// never reconnects, its counter never goes back, and runc on the hosts
// shows exactly one copy, on the node the cluster names.
func TestClusterMovesAContainerThereAndBack(t *testing.T) {
	testutil.RequireTools(t, "criu", "iptables")
	c, sched, hosts := oneScheduler(t, devcluster.Config{Name: "ctcmig", Subnet: cmigSubnet, ContainerCIDR: cmigContainers},
		[]string{"n1", "n2"}, "c")
	ctx := context.Background()
	n1, n2 := hosts[0], hosts[1]
	// The image is on n1 only: the run lands there, and the move fetches
	// its layers from n1.
	tarball := filepath.Join(t.TempDir(), "workload.tar")
	testutil.WorkloadTar(t, tarball)
	client := sched.Client()
	importImage(t, client, n1.Node(), tarball, workloadImage)
	run, err := client.Run(ctx, &pb.RunRequest{Container: &pb.RunContainerRequest{
		Name: "w", Image: workloadImage, Args: []string{testutil.WorkloadPath, "-mem", "16"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if run.GetContainer().GetNode() != n1.Node() {
		t.Fatalf("w placed on %s, want %s (the only node with its image)", run.GetContainer().GetNode(), n1.Node())
	}
	ip := netip.MustParseAddr(run.GetContainer().GetIp())
	if err := c.Route(ctx, netip.PrefixFrom(ip, 32), n1); err != nil {
		t.Fatal(err)
	}
	wc := dialFrom(t, c.Host("c"), ip)
	m := &moveCluster{c: c, a: n1, b: n2, ip: ip, client: wc}

	for i, step := range []struct {
		to   string // "" lets placement choose
		want *devcluster.Host
	}{{"", n2}, {n1.Node(), n1}} {
		before := wc.Count()
		rec := migrateThroughCluster(t, client, &pb.MigrateRequest{Container: "w", To: step.to})
		if rec.GetPhase() != "done" {
			t.Fatalf("move %d ended %s: %s", i+1, rec.GetPhase(), rec.GetError())
		}
		if rec.GetDestination() != step.want.Node() || rec.GetWhyDestination() == "" || rec.GetWhyStrategy() == "" {
			t.Errorf("move %d went to %s (why: %q; strategy %s, why: %q), want %s with reasons",
				i+1, rec.GetDestination(), rec.GetWhyDestination(), rec.GetStrategy(), rec.GetWhyStrategy(), step.want.Node())
		}
		assertOneCopy(t, "w", step.want, hosts)
		got, err := client.InspectContainer(ctx, &pb.ContainerRef{Ref: "w"})
		if err != nil {
			t.Fatal(err)
		}
		if got.GetNode() != step.want.Node() || got.GetIp() != ip.String() {
			t.Errorf("after move %d the cluster has w on %s at %s, want %s at %s", i+1, got.GetNode(), got.GetIp(), step.want.Node(), ip)
		}
		if rec.GetGeneration() != uint64(i+1) {
			t.Errorf("move %d started at generation %d, want %d", i+1, rec.GetGeneration(), i+1)
		}
		m.assertWentOn(t, before)
		// The cluster route follows; until then the old node forwarded.
		m.route(t, step.want)
	}
	// wc asked over one connection throughout: had it broken, Count
	// would have failed the test.
}

// migrateThroughCluster starts a move and follows it to its end; it
// returns the final record.
func migrateThroughCluster(t *testing.T, client pb.ClusterServiceClient, req *pb.MigrateRequest) *pb.Migration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterMoveWithin)
	defer cancel()
	m, err := client.Migrate(ctx, req)
	if err != nil {
		t.Fatalf("migrate %s: %v", req.GetContainer(), err)
	}
	for {
		stream, err := client.WatchMigration(ctx, &pb.MigrationRef{Id: m.GetId()})
		if err != nil {
			t.Fatalf("watch migration %s: %v", m.GetId(), err)
		}
		for {
			p, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("watch migration %s: %v", m.GetId(), err)
			}
			if p.GetDone() {
				return p.GetMigration()
			}
		}
		// Ended without the final record: the move is open still (held
		// or being settled); look again.
		time.Sleep(200 * time.Millisecond)
	}
}
