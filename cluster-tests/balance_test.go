package clustertests

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// This test's ranges, apart from every other test's.
var (
	balanceSubnet     = netip.MustParsePrefix("10.77.49.0/24")
	balanceContainers = netip.MustParsePrefix("10.78.49.0/24")
)

const (
	// balanceInterval is how often the leader plans in this test, and
	// balanceRounds how many rounds the burners may take to spread.
	balanceInterval = 2 * time.Second
	balanceRounds   = 30
	// balanceCooldown: no burner may move twice within it.
	balanceCooldown = 10 * time.Minute
)

// balanceTestPolicy is the policy of TestBalancerSpreadsBurnersFromOneNode:
// fast rounds over short windows, so that the test takes a minute, and
// no floor under the mean (the nodes share one 2-core host, each
// declaring all of it, so their utilisations are small numbers).
var balanceTestPolicy = map[string]string{
	"interval":   balanceInterval.String(),
	"window":     "20s",
	"stable_for": "4s",
	"mean_floor": "0",
	"cooldown":   balanceCooldown.String(),
}

// TestBalancerSpreadsBurnersFromOneNode places three CPU-burning
// workloads on n1 with `run --node` and turns the balancer on: within a
// bounded number of rounds they spread over the three nodes, the
// imbalance `balance status` reports falls to the target, each runs
// exactly once where the cluster says (runc on the hosts), none moved
// twice within its cooldown, every move is the balancer's with a reason,
// and each moved burner's counter went on over its one TCP connection.
func TestBalancerSpreadsBurnersFromOneNode(t *testing.T) {
	testutil.RequireTools(t, "criu", "iptables")
	c, sched, hosts := oneScheduler(t, devcluster.Config{Name: "ctbal", Subnet: balanceSubnet, ContainerCIDR: balanceContainers},
		[]string{"n1", "n2", "n3"}, "c")
	ctx := context.Background()
	client := sched.Client()
	tarball := filepath.Join(t.TempDir(), "workload.tar")
	testutil.WorkloadTar(t, tarball)
	for _, h := range hosts {
		importImage(t, client, h.Node(), tarball, workloadImage)
	}

	burners := []string{"b1", "b2", "b3"}
	ips := map[string]netip.Addr{}
	clients := map[string]*testutil.WorkloadClient{}
	counts := map[string]int{}
	for _, name := range burners {
		run, err := client.Run(ctx, &pb.RunRequest{Node: hosts[0].Node(), Container: &pb.RunContainerRequest{
			Name: name, Image: workloadImage, Args: []string{testutil.WorkloadPath, "-mem", "4", "-burn", "0.3"},
		}})
		if err != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		ips[name] = netip.MustParseAddr(run.GetContainer().GetIp())
		if err := c.Route(ctx, netip.PrefixFrom(ips[name], 32), hosts[0]); err != nil {
			t.Fatal(err)
		}
		clients[name] = dialFrom(t, c.Host("c"), ips[name])
		counts[name] = clients[name].Count()
	}

	var settings []*pb.BalanceSetting
	for k, v := range balanceTestPolicy {
		settings = append(settings, &pb.BalanceSetting{Key: k, Value: v})
	}
	if _, err := client.SetBalance(ctx, &pb.SetBalanceRequest{Settings: settings}); err != nil {
		t.Fatalf("set the balance policy: %v", err)
	}

	// Disabled, the balancer plans and moves nothing: once the burners'
	// load is steady, `godwit balance plan -o json` shows the moves it
	// would make, each with where from and to, gain and cost.
	cli := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(testutil.Godwit(t), append([]string{"--addr", sched.Addr()}, args...)...)
		cmd.Env = append(os.Environ(), c.TLSEnv()...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("godwit %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	var plan struct {
		Moves []struct {
			Container, From, To string
			Gain, Cost          float64
		} `json:"moves"`
		Rejected []struct{ Container, Reason string } `json:"rejected"`
	}
	deadline := time.Now().Add(balanceRounds * balanceInterval)
	for len(plan.Moves) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no move planned within %s: %s", balanceRounds*balanceInterval, cli("balance", "plan"))
		}
		time.Sleep(balanceInterval)
		if err := json.Unmarshal(cli("balance", "plan", "-o", "json"), &plan); err != nil {
			t.Fatalf("balance plan -o json: %v", err)
		}
	}
	for _, m := range plan.Moves {
		if m.From != hosts[0].Node() || m.To == m.From || m.Container == "" || m.Gain <= 0 || m.Cost <= 0 || m.Gain <= m.Cost {
			t.Errorf("planned move %+v: want a burner from %s elsewhere, its gain above its cost", m, hosts[0].Node())
		}
	}
	for _, r := range plan.Rejected {
		if r.Container == "" || r.Reason == "" {
			t.Errorf("rejected candidate %+v: want the container and why", r)
		}
	}
	if ms, err := client.ListMigrations(ctx, &pb.ListMigrationsRequest{All: true}); err != nil || len(ms.GetMigrations()) != 0 {
		t.Fatalf("migrations %v (%v) while the balancer is disabled, want none", ms.GetMigrations(), err)
	}
	cli("balance", "enable")

	// Follow the burners until they spread and the imbalance reaches the
	// target, routing each to where the cluster says it runs.
	where := map[string]string{}
	deadline = time.Now().Add(balanceRounds * balanceInterval)
	for {
		list, err := client.ListContainers(ctx, &pb.ListContainersRequest{All: true})
		if err != nil {
			t.Fatal(err)
		}
		nodes := map[string]bool{}
		for _, ctr := range list.GetContainers() {
			name := ctr.GetName()
			if _, ok := ips[name]; !ok || ctr.GetState() != pb.ContainerState_CONTAINER_STATE_RUNNING {
				continue
			}
			nodes[ctr.GetNode()] = true
			if where[name] != ctr.GetNode() {
				where[name] = ctr.GetNode()
				if err := c.Route(ctx, netip.PrefixFrom(ips[name], 32), hostOfNode(t, hosts, ctr.GetNode())); err != nil {
					t.Fatal(err)
				}
			}
		}
		st, err := client.BalanceStatus(ctx, &pb.BalanceStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(nodes) == len(hosts) && st.GetImbalance() <= st.GetTarget() && len(st.GetInFlight()) == 0 {
			t.Logf("spread over %v; imbalance %.3f, target %.3f", where, st.GetImbalance(), st.GetTarget())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d rounds the burners run on %v, imbalance %.3f (target %.3f, stop %q: %s)",
				balanceRounds, where, st.GetImbalance(), st.GetTarget(), st.GetStop(), st.GetReason())
		}
		time.Sleep(balanceInterval / 2)
	}

	var status struct {
		Enabled           bool
		Imbalance, Target float64
	}
	if err := json.Unmarshal(cli("balance", "status", "-o", "json"), &status); err != nil {
		t.Fatalf("balance status -o json: %v", err)
	}
	if !status.Enabled || status.Imbalance > status.Target {
		t.Errorf("balance status: %+v, want enabled with the imbalance at most the target", status)
	}
	for _, name := range burners {
		assertOneCopy(t, name, hostOfNode(t, hosts, where[name]), hosts)
		if got := clients[name].Count(); got < counts[name] {
			t.Errorf("%s counts %d, %d before: it restarted or an older copy answered", name, got, counts[name])
		}
		clients[name].CheckMemory()
	}
	ms, err := client.ListMigrations(ctx, &pb.ListMigrationsRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	moves := map[string][]*pb.Migration{}
	for _, m := range ms.GetMigrations() {
		if m.GetReason() != "balancer" || m.GetWhyDestination() == "" {
			t.Errorf("migration %s of %s: reason %q, why %q; want the balancer's, with why", m.GetId(), m.GetContainer(), m.GetReason(), m.GetWhyDestination())
		}
		if m.GetPhase() == "done" {
			moves[m.GetContainer()] = append(moves[m.GetContainer()], m)
		}
	}
	if len(moves) < 2 {
		t.Errorf("%d burners moved, want at least 2 of the 3", len(moves))
	}
	for name, ms := range moves {
		sort.Slice(ms, func(i, j int) bool { return ms[i].GetCreated().AsTime().Before(ms[j].GetCreated().AsTime()) })
		for i := 1; i < len(ms); i++ {
			if gap := ms[i].GetCreated().AsTime().Sub(ms[i-1].GetCreated().AsTime()); gap < balanceCooldown {
				t.Errorf("%s moved twice %s apart, within its cooldown of %s", name, gap, balanceCooldown)
			}
		}
	}
}

// hostOfNode is the host of node among hosts.
func hostOfNode(t *testing.T, hosts []*devcluster.Host, node string) *devcluster.Host {
	t.Helper()
	for _, h := range hosts {
		if h.Node() == node {
			return h
		}
	}
	t.Fatalf("no host runs node %s", node)
	return nil
}
