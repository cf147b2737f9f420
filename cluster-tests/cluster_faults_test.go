package clustertests

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/cluster-tests/history"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/internal/rpc"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/coordinator"
)

// Fault injection into moves the cluster drives (issue 6): three
// schedulers and three agents on netns hosts, a workload whose counter a
// TCP client on a fourth host reads over one connection for the whole
// test, and faults placed with failpoints (internal/failpoint) or by the
// test (SIGSTOP, a cut link). After each fault the move settles, and the
// test checks what an operator relies on: the phase the fault hit, the
// outcome (a committed move finishes on the destination, any other is
// aborted and the source runs the container), exactly one copy running
// as runc on the hosts shows it, the cluster's state (node, generation,
// state; the migration record and its events) agreeing with the hosts,
// the counter never going back and the client never reconnecting. A
// sampler records the history all along (cluster-tests/history), and
// the checker replays it against the invariants after every seed.
//
// Seeds: each scenario runs with a few seeds (the seed picks the
// strategy, the destination, the order of the phases); GODWIT_SOAK_SEEDS=N
// runs seeds 1..N of every scenario (`make soak`), GODWIT_FAULT_SEED=N
// replays seed N alone. A failing seed is printed with the command that
// replays it (docs/testing.md).

// This test's ranges, apart from every other test's.
var (
	faultSubnet     = netip.MustParsePrefix("10.77.60.0/24")
	faultContainers = netip.MustParsePrefix("10.78.60.0/24")
)

const (
	// faultSeedEnv replays one seed; soakSeedsEnv runs seeds 1..N.
	faultSeedEnv = "GODWIT_FAULT_SEED"
	soakSeedsEnv = "GODWIT_SOAK_SEEDS"
	// faultWorkload is the moving container's name.
	faultWorkload = "w"
	// faultHitWithin bounds the wait from a move's request to its fault.
	faultHitWithin = time.Minute
	// faultSettleWithin bounds the wait for a move to end once its fault
	// is over: a new leader's election and settling, the data
	// connection's stall watchdog (30 s, the agents' default), the gRPC
	// keepalive that gives up on a stopped agent (about 20 s), and room
	// for a loaded machine.
	faultSettleWithin = 3 * time.Minute
	// faultLookupWithin bounds the search for a migration whose request
	// failed: a new leader answers within seconds (issue 5: 5 s).
	faultLookupWithin = 15 * time.Second
	// migrateAttempts is how many times a move is asked for when the
	// cluster answers Unavailable and records nothing.
	migrateAttempts = 3
	// faultRunsWithin bounds the wait for the copy a settled move leaves
	// to run, and for the cluster's state to say so.
	faultRunsWithin = 30 * time.Second
	// faultSampleEvery is how often the sampler asks the hosts' runc and
	// the cluster where the workload is.
	faultSampleEvery = 400 * time.Millisecond
	// historyCheckTimeout bounds the linearizability check.
	historyCheckTimeout = time.Minute
	// agentCallTimeout bounds a call the test makes to an agent itself.
	agentCallTimeout = 10 * time.Second
	// faultAttempts is how many moves a fault is tried in, when the
	// leadership changes on its own before it (waitFault).
	faultAttempts = 3
	// overtakenSettle is how long overtaken lets a runc that a stopped
	// agent had started finish before it looks at the host.
	overtakenSettle = 300 * time.Millisecond
)

// faultStrategies are those a seed picks from where the fault does not
// need one: both keep the source's copy until the commit, stop-copy as
// a checkpoint on its disk, stream as the frozen container.
var faultStrategies = []string{"stop-copy", "stream"}

// TestClusterFaults runs the fault matrix of issue 6 on one cluster, in
// order: the scheduler leader killed at each phase of a move; the source
// agent killed after its dump or its freeze, and the destination's
// during its restore; the source cut from the destination during the
// transfer; an agent stopped past its lease, then continued; the
// destination cut from the schedulers between its restore and the
// commit; and a drain with one destination full whose leader is killed
// half-way.
func TestClusterFaults(t *testing.T) {
	fc := startFaultCluster(t)
	t.Run("leader killed at each phase", func(t *testing.T) {
		fc.forSeeds(t, 3, fc.leaderKilledAtEachPhase)
	})
	t.Run("agent killed in the move", func(t *testing.T) {
		fc.forSeeds(t, 3, fc.agentKilledInTheMove)
	})
	t.Run("link cut in the transfer", func(t *testing.T) {
		fc.forSeeds(t, 2, fc.linkCutInTheTransfer)
	})
	t.Run("agent paused past its lease", func(t *testing.T) {
		fc.forSeeds(t, 3, fc.agentPausedPastItsLease)
	})
	t.Run("destination cut from the schedulers", func(t *testing.T) {
		fc.forSeeds(t, 2, fc.destinationCutFromTheSchedulers)
	})
	t.Run("drain with the leader killed half-way", func(t *testing.T) {
		fc.forSeeds(t, 2, fc.drainLeaderKilledHalfWay)
	})
}

// importWorkload imports the workload's image onto host h through the
// cluster. With the schedulers' test timings a loaded machine may change
// leaders on its own: a call answered Unavailable is asked again.
func (fc *faultCluster) importWorkload(t *testing.T, h *devcluster.Host, tarball string) {
	t.Helper()
	for attempt := 1; ; attempt++ {
		err := tryImportImage(fc.api(t), h.Node(), tarball, workloadImage)
		if err == nil {
			return
		}
		if status.Code(err) != codes.Unavailable || attempt == migrateAttempts {
			t.Fatalf("import %s onto %s through the cluster: %v", workloadImage, h.Node(), err)
		}
		t.Logf("import %s onto %s: %v; asking again", workloadImage, h.Node(), err)
		fc.waitLeader(t)
	}
}

// runWorkloadOnce runs the workload, asking again when the cluster
// answers Unavailable; a run that was recorded before such an answer is
// found by its name.
func (fc *faultCluster) runWorkloadOnce(t *testing.T) *pb.Container {
	t.Helper()
	req := &pb.RunRequest{Container: &pb.RunContainerRequest{
		Name: faultWorkload, Image: workloadImage, Args: []string{testutil.WorkloadPath, "-mem", "16"},
	}}
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		run, err := fc.api(t).Run(ctx, req)
		cancel()
		switch {
		case err == nil:
			return run.GetContainer()
		case status.Code(err) == codes.AlreadyExists && attempt > 1:
			var c *pb.Container
			fc.retry(t, "inspect "+faultWorkload, func(ctx context.Context, client pb.ClusterServiceClient) (err error) {
				c, err = client.InspectContainer(ctx, &pb.ContainerRef{Ref: faultWorkload})
				return err
			})
			return c
		case status.Code(err) != codes.Unavailable || attempt == migrateAttempts:
			t.Fatalf("run %s: %v", faultWorkload, err)
		}
		t.Logf("run %s: %v; asking again", faultWorkload, err)
		fc.waitLeader(t)
	}
}

// faultCluster is the cluster of TestClusterFaults.
type faultCluster struct {
	c     *devcluster.Cluster
	nodes []*devcluster.Host
	// gossip are the schedulers' gossip addresses, which agents and
	// restarted schedulers join.
	gossip []string
	// schedEnv is what the schedulers run with (their failpoints).
	schedEnv []string
	ip       netip.Addr
	// id is the workload's container ID.
	id string
	// tb is the test the workload's client reports to: the running
	// subtest.
	tb     *switchTB
	client *testutil.WorkloadClient
	// count is the counter's last value read.
	count int
	hist  *history.Recorder
}

// switchTB is a testing.TB whose target is set to the running subtest,
// for the workload's client, which outlives each of them.
type switchTB struct{ testing.TB }

func startFaultCluster(t *testing.T) *faultCluster {
	testutil.RequireTools(t, "criu", "iptables")
	c := devclustertest.Start(t, devcluster.Config{Name: "ctfault", Subnet: faultSubnet, ContainerCIDR: faultContainers},
		"s1", "s2", "s3", "n1", "n2", "n3", "c")
	ctx := context.Background()
	fc := &faultCluster{c: c, hist: history.New(), tb: &switchTB{TB: t}}
	for _, name := range []string{"s1", "s2", "s3"} {
		s, err := c.Host(name).StartScheduler(ctx, devcluster.SchedulerOptions{BootstrapExpect: 3, Join: fc.gossip})
		if err != nil {
			t.Fatal(err)
		}
		fc.gossip = append(fc.gossip, s.GossipAddr())
	}
	fc.waitLeader(t)
	for _, name := range []string{"n1", "n2", "n3"} {
		h := c.Host(name)
		if _, err := h.StartAgent(ctx, devcluster.AgentOptions{Join: fc.gossip}); err != nil {
			t.Fatal(err)
		}
		fc.nodes = append(fc.nodes, h)
	}
	fc.sched().waitNodes(t, "ready", nodesReadyWithin, fc.nodeNames()...)
	// The image is on n1 only when the workload runs, so it runs there;
	// then every node gets it, so that no move waits for layers.
	tarball := filepath.Join(t.TempDir(), "workload.tar")
	testutil.WorkloadTar(t, tarball)
	fc.importWorkload(t, fc.nodes[0], tarball)
	ctr := fc.runWorkloadOnce(t)
	if ctr.GetNode() != fc.nodes[0].Node() {
		t.Fatalf("%s placed on %s, want %s (the only node with its image)", faultWorkload, ctr.GetNode(), fc.nodes[0].Node())
	}
	for _, h := range fc.nodes[1:] {
		fc.importWorkload(t, h, tarball)
	}
	gen := fc.placement(t).GetGeneration()
	fc.id = ctr.GetId()
	fc.ip = netip.MustParseAddr(ctr.GetIp())
	fc.route(t, fc.nodes[0])
	fc.client = testutil.DialWorkload(fc.tb, c.Host("c").Dial, netip.AddrPortFrom(fc.ip, testutil.WorkloadPort).String())
	fc.count = fc.client.Count()
	t.Logf("%s (%.12s) runs on %s at generation %d, %s; its client is connected from host c", faultWorkload, fc.id, ctr.GetNode(), gen, fc.ip)
	return fc
}

// forSeeds runs scenario once per seed, each a subtest named after its
// seed, with the sampler recording the history; after each seed the
// history is checked. A failing seed is printed with its replay command.
func (fc *faultCluster) forSeeds(t *testing.T, defaultSeeds int, scenario func(t *testing.T, rng *rand.Rand)) {
	for _, seed := range faultSeeds(t, defaultSeeds) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			fc.tb.TB = t
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("FAILED SEED %d; replay it with: %s=%d go test -count=1 -run '^%s$' ./cluster-tests",
						seed, faultSeedEnv, seed, strings.ReplaceAll(t.Name(), " ", "_"))
				}
			})
			fc.healthy(t)
			// Each seed's history starts where the workload is, so that a
			// seed is checked, and replayed, on its own.
			at := fc.placement(t)
			fc.hist = history.New()
			fc.hist.Placed(faultWorkload, at.GetNode(), at.GetGeneration())
			stop := fc.startSampler()
			defer func() {
				stop()
				fc.checkHistory(t)
			}()
			scenario(t, rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15)))
		})
	}
}

// faultSeeds are the seeds to run: GODWIT_FAULT_SEED alone, or 1..N
// with GODWIT_SOAK_SEEDS=N, or 1..defaultSeeds.
func faultSeeds(t *testing.T, defaultSeeds int) []int {
	parse := func(name string) int {
		v := os.Getenv(name)
		if v == "" {
			return 0
		}
		var n int
		if _, err := fmt.Sscan(v, &n); err != nil || n < 1 {
			t.Fatalf("%s=%q: want a positive number", name, v)
		}
		return n
	}
	if seed := parse(faultSeedEnv); seed > 0 {
		return []int{seed}
	}
	n := defaultSeeds
	if soak := parse(soakSeedsEnv); soak > 0 {
		n = soak
	}
	seeds := make([]int, n)
	for i := range seeds {
		seeds[i] = i + 1
	}
	return seeds
}

// checkHistory checks the history recorded so far; on a violation it
// logs the whole history and writes porcupine's view of it.
func (fc *faultCluster) checkHistory(t *testing.T) {
	err := fc.hist.Check(historyCheckTimeout)
	if err == nil {
		t.Logf("history of %d entries checked: at most one running copy per generation, every acknowledged migration settled", fc.hist.Len())
		return
	}
	t.Errorf("%v\nthe whole history:\n%s", err, fc.hist)
	path := filepath.Join(os.TempDir(), fmt.Sprintf("godwit-history-%d.html", time.Now().UnixNano()))
	if f, ferr := os.Create(path); ferr == nil {
		if verr := fc.hist.Visualize(f, historyCheckTimeout); verr == nil {
			t.Logf("porcupine's view of the history: %s", path)
		}
		f.Close()
	}
}

// The first scenario: the leader killed at each phase of a move in turn.

// leaderPhases are the points of a move at which the leader is killed:
// right after it recorded each phase (before the agents act on it), and
// right after it committed the move (fsm.CommitMove applied, before the
// destination runs its copy).
var leaderPhases = []string{"prepare", "sync", "dump", "transfer", "restore", "ready", "commit"}

// leaderKilledAtEachPhase moves the workload once per phase, in the
// seed's order, with every scheduler armed to die at that phase: the new
// leader aborts a move it finds undecided, the source running the
// container again, and finishes a committed one, and says which in the
// events.
func (fc *faultCluster) leaderKilledAtEachPhase(t *testing.T, rng *rand.Rand) {
	phases := slices.Clone(leaderPhases)
	rng.Shuffle(len(phases), func(i, j int) { phases[i], phases[j] = phases[j], phases[i] })
	t.Logf("phases in this seed's order: %v", phases)
	for _, phase := range phases {
		fc.untilFaulted(t, "phase "+phase, func() bool { return fc.leaderKilledAt(t, rng, phase) })
	}
}

// leaderKilledAt is one move of leaderKilledAtEachPhase; false when the
// move ended before its fault (untilFaulted).
func (fc *faultCluster) leaderKilledAt(t *testing.T, rng *rand.Rand, phase string) bool {
	point := coordinator.FailpointAfterPhase + phase
	if phase == "commit" {
		point = coordinator.FailpointAfterCommit
	}
	fc.armSchedulers(t, failpoint.Arm(point, failpoint.ActionKill))
	leader := fc.waitLeader(t)
	from, to := fc.pickDestination(t, rng)
	strategy := faultStrategies[rng.IntN(len(faultStrategies))]
	t.Logf("phase %s: moving %s from %s to %s with %s; the leader %s dies at %s", phase, faultWorkload, from.Node(), to.Node(), strategy, leader.Name(), point)

	term := fc.term(t)
	m := fc.startMove(t, to, strategy)
	if early := fc.waitFault(t, "the leader "+leader.Name()+" at "+point, exited(leader.Exited()), m.GetId(), term); early {
		return false
	}
	for _, s := range fc.c.Schedulers() {
		if s != leader && !s.Running() {
			t.Fatalf("scheduler %s exited too: only the leader was to die", s.Name())
		}
	}
	next := fc.waitLeader(t)
	end := fc.waitSettled(t, m.GetId())
	committed := phase == "commit"
	fc.checkSettled(t, end, committed)
	if committed {
		if !slices.Contains(phasesOf(end), "committed") {
			t.Errorf("migration %s finished, but its record never says committed: %v", end.GetId(), phasesOf(end))
		}
		fc.wantEvent(t, end.GetId(), "migration-done", "finished from its record")
	} else {
		if got := reached(end); got != phase {
			t.Errorf("migration %s reached %s before it was aborted, want %s (the fault's phase): %v", end.GetId(), got, phase, phasesOf(end))
		}
		fc.wantEvent(t, end.GetId(), "migration-aborted", "aborted in "+phase)
	}
	t.Logf("phase %s: the new leader %s %s migration %s: %s", phase, next.Name(), end.GetPhase(), end.GetId(), end.GetError())
	return true
}

// The second scenario: an agent killed during the move.

// agentKilledInTheMove kills the source's agent right after its dump
// (stop-copy or stream), the source's right after a stream move froze
// the container (before the dump: the agent comes back to a paused
// container its record says is running), and the destination's during
// its restore (post-copy: the one restore with a failpoint that kills),
// in the seed's order. Either way the move cannot be aborted or
// finished while the agent is down, so it is held, no copy running;
// once the agent is back, the leader aborts it and the source runs the
// container.
func (fc *faultCluster) agentKilledInTheMove(t *testing.T, rng *rand.Rand) {
	faults := []func() bool{
		func() bool {
			return fc.agentKilled(t, rng, "source", agent.FailpointSourceAfterDump, faultStrategies[rng.IntN(len(faultStrategies))], "dump")
		},
		func() bool {
			return fc.agentKilled(t, rng, "source", agent.FailpointSourceAfterFreeze, "stream", "dump")
		},
		func() bool {
			return fc.agentKilled(t, rng, "destination", agent.FailpointDestinationLazyRestore, "post-copy", "restore")
		},
	}
	rng.Shuffle(len(faults), func(i, j int) { faults[i], faults[j] = faults[j], faults[i] })
	for _, f := range faults {
		fc.untilFaulted(t, "an agent killed", f)
	}
}

// agentKilled moves the workload with the agent of side ("source" or
// "destination") armed to die at point, and checks that the move is
// held in phase, then aborted once the agent is back; false when the
// move ended before its fault (untilFaulted).
func (fc *faultCluster) agentKilled(t *testing.T, rng *rand.Rand, side, point, strategy, phase string) bool {
	fc.armSchedulers(t)
	from, to := fc.pickDestination(t, rng)
	victim := from
	if side == "destination" {
		victim = to
	}
	fc.armAgent(t, victim, failpoint.Arm(point, failpoint.ActionKill))
	t.Logf("moving %s from %s to %s with %s; the %s's agent dies at %s", faultWorkload, from.Node(), to.Node(), strategy, side, point)

	term := fc.term(t)
	m := fc.startMove(t, to, strategy)
	if early := fc.waitFault(t, "the "+side+"'s agent at "+point, exited(victim.Agent().Exited()), m.GetId(), term); early {
		return false
	}
	// Nobody may run a copy while the agent is down: the source's is
	// stopped (its checkpoint, or its frozen container), and the
	// destination's was never restored. The leader keeps trying to abort.
	if held := fc.waitPhase(t, m.GetId(), phase); reached(held) != phase {
		t.Errorf("migration %s reached %s (%v) when its %s's agent died, want %s", m.GetId(), reached(held), phasesOf(held), side, phase)
	}
	fc.assertRunsNowhere(t)
	fc.sched().waitNodes(t, "down", downWithin, victim.Node())
	fc.assertRunsNowhere(t)
	if got := fc.inspect(t, m.GetId()); got.GetPhase() == "aborted" || got.GetPhase() == "done" {
		t.Fatalf("migration %s ended %s while its %s's agent was down: nobody could have carried it out", m.GetId(), got.GetPhase(), side)
	}

	fc.restartAgent(t, victim)
	end := fc.waitSettled(t, m.GetId())
	fc.checkSettled(t, end, false)
	if got := reached(end); got != phase {
		t.Errorf("migration %s reached %s before it was aborted, want %s (the fault's phase)", end.GetId(), got, phase)
	}
	fc.wantEvent(t, end.GetId(), "migration-aborted", "aborted in "+phase)
	return true
}

// The third scenario: the link between source and destination cut.

// linkCutInTheTransfer cuts the source from the destination while the
// checkpoint is on its way (the destination's agent stops itself as the
// transfer reaches it, the link is cut under it, and it goes on), the
// leader still reaching both: the transfer stalls on both sides and
// fails by its watchdog, the destination acknowledges the abort and the
// source runs the container on. The link is healed afterwards. The move
// is a stop-copy, whose transfer carries the memory: stream's carries a
// few KiB, which the hosts' buffers hold whole before the cut.
func (fc *faultCluster) linkCutInTheTransfer(t *testing.T, rng *rand.Rand) {
	fc.untilFaulted(t, "the link cut", func() bool { return fc.linkCut(t, rng) })
}

// linkCut is linkCutInTheTransfer's move; false when it ended before its
// fault (untilFaulted).
func (fc *faultCluster) linkCut(t *testing.T, rng *rand.Rand) bool {
	fc.armSchedulers(t)
	from, to := fc.pickDestination(t, rng)
	strategy := "stop-copy"
	fc.armAgent(t, to, failpoint.Arm(agent.FailpointDestinationReceive, failpoint.ActionPause))
	daemon := to.Agent()
	pid := daemon.Pid()
	t.Cleanup(func() { _ = daemon.Signal(syscall.SIGCONT) })
	t.Cleanup(func() {
		if err := fc.c.Heal(context.Background(), from, to); err != nil {
			t.Errorf("heal the link between %s and %s: %v", from.Name(), to.Name(), err)
		}
	})
	t.Logf("moving %s from %s to %s with %s; the link between them is cut in the transfer", faultWorkload, from.Node(), to.Node(), strategy)

	term := fc.term(t)
	m := fc.startMove(t, to, strategy)
	if early := fc.waitFault(t, "the destination's agent at "+agent.FailpointDestinationReceive, stopped(pid), m.GetId(), term); early {
		return false
	}
	if err := fc.c.Cut(context.Background(), from, to); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	end := fc.waitSettled(t, m.GetId())
	if err := fc.c.Heal(context.Background(), from, to); err != nil {
		t.Fatal(err)
	}
	fc.checkSettled(t, end, false)
	if got := reached(end); got != "transfer" {
		t.Errorf("migration %s reached %s before it was aborted, want transfer (the fault's phase)", end.GetId(), got)
	}
	if !strings.Contains(end.GetError(), "stalled") {
		t.Errorf("migration %s was aborted with %q, want it to say that the transfer stalled", end.GetId(), end.GetError())
	}
	fc.wantEvent(t, end.GetId(), "migration-aborted", "aborted in transfer")
	return true
}

// The fourth scenario: an agent stopped past its lease.

// agentPausedPastItsLease stops an agent of a move (SIGSTOP) right after
// the leader committed it (the leader stops itself there, and is then
// killed), and keeps it stopped until its lease has run out and its
// node is down; then it goes on. It does so for the source and for the
// destination, in the seed's order. Neither may act on what it knew
// before: the lease gate refuses to run anything until the node has
// registered again, and a command at the old generation is refused.
// The new leader finishes the move: the destination runs the container
// at the next generation, once, and the cluster says so.
func (fc *faultCluster) agentPausedPastItsLease(t *testing.T, rng *rand.Rand) {
	sides := []string{"source", "destination"}
	rng.Shuffle(len(sides), func(i, j int) { sides[i], sides[j] = sides[j], sides[i] })
	for _, side := range sides {
		fc.untilFaulted(t, "the "+side+" stopped", func() bool { return fc.pausedAfterTheCommit(t, rng, side) })
	}
}

// pausedAfterTheCommit is agentPausedPastItsLease for one side.
//
// The schedulers elect a new leader while the old one is paused at the
// failpoint; one that got to the side before its agent stopped leaves no
// fault to observe, and the move is tried again (overtaken).
//
// The source, stopped, cannot drop its old copy, so the move stays
// committed while the destination runs the container; continued, it
// refuses to run its old copy (no lease, and the cluster moved the
// container), then drops it: the move is done.
//
// The destination, stopped, cannot run the container, so nobody does
// and the cluster reports it lost with its node; the source refuses to
// run its old copy at the old generation. Continued, the destination
// runs the container only once it has registered again.
//
// False when the move ended before its fault (untilFaulted).
func (fc *faultCluster) pausedAfterTheCommit(t *testing.T, rng *rand.Rand, side string) bool {
	fc.armSchedulers(t, failpoint.Arm(coordinator.FailpointAfterCommit, failpoint.ActionPause))
	leader := fc.waitLeader(t)
	from, to := fc.pickDestination(t, rng)
	strategy := faultStrategies[rng.IntN(len(faultStrategies))]
	gen := fc.clusterSays(t).GetGeneration()
	paused := from
	if side == "destination" {
		paused = to
	}
	t.Logf("moving %s from %s to %s with %s; the %s's agent stops after the commit, past its lease", faultWorkload, from.Node(), to.Node(), strategy, side)

	term := fc.term(t)
	m := fc.startMove(t, to, strategy)
	if early := fc.waitFault(t, "the leader "+leader.Name()+" at "+coordinator.FailpointAfterCommit, stopped(leader.Pid()), m.GetId(), term); early {
		return false
	}
	daemon := paused.Agent()
	if err := daemon.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = daemon.Signal(syscall.SIGCONT) })
	if fc.overtaken(t, side, to, m.GetId()) {
		// The leader paused at the failpoint, so the others elected a
		// new one (in a few hundred ms with the test timings), which
		// finished the step before the agent stopped: no fault here.
		t.Logf("a leader elected while %s was paused got to the %s first: trying again", leader.Name(), side)
		leader.Kill()
		if err := daemon.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		fc.waitLeader(t)
		end := fc.waitSettled(t, m.GetId())
		fc.checkSettled(t, end, true)
		return false
	}
	leader.Kill()
	fc.waitLeader(t)

	if side == "source" {
		// The new leader finishes the move as far as it can: the
		// destination runs the container; the source cannot drop its
		// copy.
		fc.waitCluster(t, to.Node(), gen+1)
		fc.waitOneCopy(t, to)
		fc.route(t, to)
		fc.assertCounted(t)
	}
	fc.sched().waitNodes(t, "down", downWithin, paused.Node())
	if got := fc.inspect(t, m.GetId()); got.GetPhase() != "committed" {
		t.Errorf("migration %s is %s while its %s's agent is stopped, want committed", m.GetId(), got.GetPhase(), side)
	}
	if side == "destination" {
		fc.assertRunsNowhere(t)
		if c := fc.clusterSays(t); c.GetNode() != to.Node() || c.GetGeneration() != gen+1 || c.GetState() != pb.ContainerState_CONTAINER_STATE_LOST {
			t.Errorf("the cluster has %s %s on %s at generation %d while its node is down, want lost on %s at generation %d",
				faultWorkload, c.GetState(), c.GetNode(), c.GetGeneration(), to.Node(), gen+1)
		}
		// A deposed leader's start at the old generation must not run
		// the source's copy: the cluster committed the move.
		ctx, cancel := context.WithTimeout(context.Background(), agentCallTimeout)
		defer cancel()
		_, err := from.Agent().Client().StartContainer(rpc.WithGeneration(ctx, gen), &pb.ContainerRef{Ref: fc.id})
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("start on the source at the old generation %d after the commit: %v, want it refused", gen, err)
		}
		t.Logf("the source refused to start its old copy at generation %d: %v", gen, err)
		fc.assertRunsNowhere(t)
	} else {
		// The node that has the container now refuses the old
		// generation, as it would a deposed leader's command.
		ctx, cancel := context.WithTimeout(context.Background(), agentCallTimeout)
		defer cancel()
		_, err := to.Agent().Client().StopContainer(rpc.WithGeneration(ctx, gen), &pb.StopContainerRequest{Ref: fc.id, TimeoutSeconds: 1})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "generation") {
			t.Errorf("stop at the old generation %d on the destination: %v, want it refused as stale", gen, err)
		}
		t.Logf("the destination refused the old generation: %v", err)
	}

	if err := daemon.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if side == "source" {
		// Past its lease, it refuses to run its old copy, at the old
		// generation or none.
		ctx, cancel := context.WithTimeout(context.Background(), agentCallTimeout)
		defer cancel()
		for _, g := range []uint64{gen, 0} {
			_, err := from.Agent().Client().StartContainer(rpc.WithGeneration(ctx, g), &pb.ContainerRef{Ref: fc.id})
			if status.Code(err) != codes.FailedPrecondition {
				t.Errorf("start on the source, stopped past its lease, at generation %d: %v, want it refused", g, err)
			}
			t.Logf("the source refused to start its old copy at generation %d: %v", g, err)
		}
	} else {
		fc.runsOnlyOnceRegistered(t, to)
		fc.route(t, to)
	}
	end := fc.waitSettled(t, m.GetId())
	fc.checkSettled(t, end, true)
	fc.wantEvent(t, end.GetId(), "migration-done", "runs on "+to.Node())
	fc.sched().waitNodes(t, "ready", nodesReadyWithin, paused.Node())

	// Registered again, the source holds no copy, and says so.
	ctx, cancel := context.WithTimeout(context.Background(), agentCallTimeout)
	defer cancel()
	list, err := from.Agent().Client().ListContainers(ctx, &pb.ListContainersRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list.GetContainers() {
		if c.GetId() == fc.id {
			t.Errorf("the source %s still holds %s (%s) after the move was done", from.Node(), faultWorkload, c.GetState())
		}
	}
	fc.waitCluster(t, to.Node(), gen+1)
	fc.waitOneCopy(t, to)
	return true
}

// overtaken says whether, by the time side's agent stopped, a new
// leader had already done that side's part after the commit: the
// destination runs the container, or the source dropped what it kept
// and the move is done (a stop-copy source holds no runc container after
// its dump, only images, so the record tells). It waits a moment first,
// for a runc the agent started before it stopped, and for the record.
func (fc *faultCluster) overtaken(t *testing.T, side string, to *devcluster.Host, id string) bool {
	t.Helper()
	time.Sleep(overtakenSettle)
	if side == "destination" {
		running, err := runsOn(to, faultWorkload)
		if err != nil {
			t.Fatal(err)
		}
		return running
	}
	return fc.inspect(t, id).GetPhase() == "done"
}

// runsOnlyOnceRegistered follows host h's agent, just continued past its
// lease, until it runs the workload: each time runc on h shows it
// running, the cluster must already have h's node ready again, that is,
// registered.
func (fc *faultCluster) runsOnlyOnceRegistered(t *testing.T, h *devcluster.Host) {
	t.Helper()
	deadline := time.Now().Add(faultSettleWithin)
	for {
		running, err := runsOn(h, faultWorkload)
		if err == nil && running {
			var st string
			fc.retry(t, "inspect node "+h.Node(), func(ctx context.Context, c pb.ClusterServiceClient) error {
				n, err := c.InspectNode(ctx, &pb.NodeRef{Name: h.Node()})
				st = n.GetStatus()
				return err
			})
			if st != "ready" {
				t.Errorf("%s runs %s while the cluster has its node %s: it ran before it registered again", h.Name(), faultWorkload, st)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not run %s %s after its agent went on", h.Name(), faultWorkload, faultSettleWithin)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The fifth scenario: the destination cut from the schedulers.

// destinationCutFromTheSchedulers cuts the destination's host from the
// three schedulers' hosts once it holds the restored copy and before
// the commit (its agent stops itself there, the links are cut, and it
// goes on: its answer never reaches the leader). The move cannot
// commit without that answer, and the destination cannot acknowledge an
// abort: the leader records in raft that the move can no longer commit
// and has the source run the container again, at once rather than
// after the destination is declared down. Once the links heal, the
// destination drops the copy it held, never having run it.
func (fc *faultCluster) destinationCutFromTheSchedulers(t *testing.T, rng *rand.Rand) {
	fc.untilFaulted(t, "the destination cut", func() bool { return fc.destinationCut(t, rng) })
}

// destinationCut is one move of destinationCutFromTheSchedulers; false
// when the move ended before its fault (untilFaulted).
func (fc *faultCluster) destinationCut(t *testing.T, rng *rand.Rand) bool {
	fc.armSchedulers(t)
	from, to := fc.pickDestination(t, rng)
	strategy := faultStrategies[rng.IntN(len(faultStrategies))]
	fc.armAgent(t, to, failpoint.Arm(agent.FailpointDestinationRestored, failpoint.ActionPause))
	daemon := to.Agent()
	pid := daemon.Pid()
	t.Cleanup(func() { _ = daemon.Signal(syscall.SIGCONT) })
	var schedulers []*devcluster.Host
	for _, s := range fc.c.Schedulers() {
		schedulers = append(schedulers, s.Host())
	}
	heal := func() error {
		var errs []error
		for _, s := range schedulers {
			errs = append(errs, fc.c.Heal(context.Background(), to, s))
		}
		return errors.Join(errs...)
	}
	t.Cleanup(func() {
		if err := heal(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("moving %s from %s to %s with %s; the destination is cut from the schedulers once it restored", faultWorkload, from.Node(), to.Node(), strategy)

	term := fc.term(t)
	m := fc.startMove(t, to, strategy)
	if early := fc.waitFault(t, "the destination's agent at "+agent.FailpointDestinationRestored, stopped(pid), m.GetId(), term); early {
		return false
	}
	for _, s := range schedulers {
		if err := fc.c.Cut(context.Background(), to, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := daemon.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Aborted while the destination is still cut off: the source runs
	// the container, the destination's held copy stays stopped.
	end := fc.waitSettled(t, m.GetId())
	fc.checkSettled(t, end, false)
	if got := reached(end); got != "restore" {
		t.Errorf("migration %s reached %s before it was aborted, want restore (the fault's phase)", end.GetId(), got)
	}
	if !end.GetDestinationCleanup() {
		t.Errorf("migration %s ended aborted without owing its destination's cleanup, yet %s could not have acknowledged the abort", end.GetId(), to.Node())
	}
	fc.wantEvent(t, end.GetId(), "migration-aborting", "can no longer commit")

	if err := heal(); err != nil {
		t.Fatal(err)
	}
	fc.waitCleaned(t, end.GetId(), to)
	fc.wantEvent(t, end.GetId(), "migration-cleaned", "dropped what it held")
	fc.waitOneCopy(t, from)
	fc.assertCounted(t)
	return true
}

// waitCleaned waits until migration id no longer owes its destination's
// cleanup and host h, its destination, holds no container of the
// workload any more (runc knows none).
func (fc *faultCluster) waitCleaned(t *testing.T, id string, h *devcluster.Host) {
	t.Helper()
	deadline := time.Now().Add(faultSettleWithin)
	for {
		m := fc.inspect(t, id)
		held, err := holds(h, faultWorkload)
		if !m.GetDestinationCleanup() && err == nil && !held {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s, migration %s owes its destination's cleanup: %v; %s holds a copy of %s: %v (%v)",
				faultSettleWithin, id, m.GetDestinationCleanup(), h.Node(), faultWorkload, held, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
