package clustertests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/cluster-tests/history"
	"github.com/godwit/godwit/devcluster"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The helpers of TestClusterFaults (cluster_faults_test.go): moves and
// their faults, where the workload is, and the cluster's processes.

// Moves.

// pickDestination returns the host the workload is on, as the cluster
// says, and one of the two others, by the seed.
func (fc *faultCluster) pickDestination(t *testing.T, rng *rand.Rand) (from, to *devcluster.Host) {
	t.Helper()
	from = fc.hostOf(t, fc.clusterSays(t).GetNode())
	var others []*devcluster.Host
	for _, h := range fc.nodes {
		if h != from {
			others = append(others, h)
		}
	}
	return from, others[rng.IntN(len(others))]
}

// startMove asks the cluster to move the workload to host to with
// strategy and records the move in the history. A request whose answer
// was lost (the leader died first) is looked up among the migrations:
// the cluster may have recorded it all the same. One the cluster did not
// record and refused as Unavailable (no leader yet, or a leader just
// restarted that a follower's connection has not reached again) is
// asked again, as an operator would.
func (fc *faultCluster) startMove(t *testing.T, to *devcluster.Host, strategy string) *pb.Migration {
	t.Helper()
	known := map[string]bool{}
	for _, m := range fc.migrations(t) {
		known[m.GetId()] = true
	}
	// A node is suspect for a moment when a leader change outlasts its
	// lease; a move there would be refused.
	fc.sched().waitNodes(t, "ready", nodesReadyWithin, fc.nodeNames()...)
	fc.assertCounted(t)
	call := time.Now()
	var m *pb.Migration
	for attempt := 1; m == nil; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), runTimeout)
		var err error
		m, err = fc.api(t).Migrate(ctx, &pb.MigrateRequest{Container: faultWorkload, To: to.Node(), Strategy: strategy})
		cancel()
		if err == nil {
			break
		}
		t.Logf("migrate %s: %v; looking for the migration in the cluster's records", faultWorkload, err)
		m = fc.newMigration(t, known, call)
		switch {
		case m != nil:
		case status.Code(err) != codes.Unavailable || attempt == migrateAttempts:
			t.Fatalf("migrate %s: %v, and no migration of it was recorded", faultWorkload, err)
		default:
			t.Logf("migrate %s: not recorded: asking again", faultWorkload)
		}
	}
	if m.GetDestination() != to.Node() || m.GetStrategy() != strategy {
		t.Fatalf("migration %s goes to %s with %s, want %s with %s", m.GetId(), m.GetDestination(), m.GetStrategy(), to.Node(), strategy)
	}
	fc.hist.MoveAcknowledged(faultWorkload, m.GetId(), m.GetSource(), m.GetDestination(), m.GetGeneration(), call)
	return m
}

// newMigration waits up to faultLookupWithin for a migration of the
// workload, created since asked (the leader's clock is this machine's),
// that is not in known, and returns it, or nil.
func (fc *faultCluster) newMigration(t *testing.T, known map[string]bool, asked time.Time) *pb.Migration {
	t.Helper()
	for deadline := time.Now().Add(faultLookupWithin); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		for _, r := range fc.migrations(t) {
			if !known[r.GetId()] && r.GetContainerId() == fc.id && !r.GetCreated().AsTime().Before(asked) {
				return r
			}
		}
	}
	return nil
}

// migrations lists every migration the cluster holds, asking until a
// leader answers.
func (fc *faultCluster) migrations(t *testing.T) []*pb.Migration {
	t.Helper()
	var out []*pb.Migration
	fc.retry(t, "list the migrations", func(ctx context.Context, c pb.ClusterServiceClient) error {
		list, err := c.ListMigrations(ctx, &pb.ListMigrationsRequest{All: true})
		out = list.GetMigrations()
		return err
	})
	return out
}

// inspect is migration id's record, asking until a leader answers.
func (fc *faultCluster) inspect(t *testing.T, id string) *pb.Migration {
	t.Helper()
	var m *pb.Migration
	fc.retry(t, "inspect migration "+id, func(ctx context.Context, c pb.ClusterServiceClient) (err error) {
		m, err = c.InspectMigration(ctx, &pb.MigrationRef{Id: id})
		return err
	})
	return m
}

// waitSettled waits until migration id is done or aborted and records
// its outcome in the history.
func (fc *faultCluster) waitSettled(t *testing.T, id string) *pb.Migration {
	t.Helper()
	m := fc.waitEnded(t, id)
	if err := fc.hist.MoveSettled(id, outcomeOf(m)); err != nil {
		t.Error(err)
	}
	return m
}

// waitEnded waits until migration id is done or aborted; for a move the
// running seed did not ask for (its history does not hold it), it is all
// waitSettled does.
func (fc *faultCluster) waitEnded(t *testing.T, id string) *pb.Migration {
	t.Helper()
	deadline := time.Now().Add(faultSettleWithin)
	for {
		m := fc.inspect(t, id)
		if m.GetPhase() == "done" || m.GetPhase() == "aborted" {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("migration %s is still %s %s after its fault (error: %q)", id, m.GetPhase(), faultSettleWithin, m.GetError())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// outcomeOf is how an ended migration ends in the history.
func outcomeOf(m *pb.Migration) history.Outcome {
	if m.GetPhase() == "done" {
		return history.Committed
	}
	return history.RolledBack
}

// waitPhase waits until migration id's record has reached phase.
func (fc *faultCluster) waitPhase(t *testing.T, id, phase string) *pb.Migration {
	t.Helper()
	deadline := time.Now().Add(faultHitWithin)
	for {
		m := fc.inspect(t, id)
		if slices.Contains(phasesOf(m), phase) || time.Now().After(deadline) {
			return m
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFault waits until fired says that the fault (who, at its
// failpoint) came, during migration id. It returns early=true when the
// move ended first because the leadership changed on its own (the raft
// term moved past term without the fault: on a loaded machine a leader
// may miss its lease): the move's end is checked as any other, and the
// caller tries again. A move that ended without a fault otherwise fails
// the test.
func (fc *faultCluster) waitFault(t *testing.T, who string, fired func() bool, id string, term uint64) (early bool) {
	t.Helper()
	deadline := time.Now().Add(faultHitWithin)
	for next := time.Now(); !fired(); time.Sleep(10 * time.Millisecond) {
		if time.Now().Before(next) {
			continue
		}
		next = time.Now().Add(200 * time.Millisecond)
		m := fc.inspect(t, id)
		if fired() {
			break // while the record was asked for: the fault came first
		}
		if m.GetPhase() == "done" || m.GetPhase() == "aborted" {
			if now := fc.term(t); now == term {
				t.Fatalf("%s: no fault came, and migration %s ended %s (%q)", who, id, m.GetPhase(), m.GetError())
			}
			t.Logf("%s: the leadership changed on its own before the fault; migration %s ended %s (%q)", who, id, m.GetPhase(), m.GetError())
			end := fc.waitSettled(t, id)
			fc.checkSettled(t, end, end.GetPhase() == "done")
			return true
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no fault within %s; migration %s is %s (%q)", who, faultHitWithin, id, m.GetPhase(), m.GetError())
		}
	}
	return false
}

// untilFaulted runs one move with its fault, run, again while it
// reports that the move ended before the fault (waitFault), up to
// faultAttempts times.
func (fc *faultCluster) untilFaulted(t *testing.T, what string, run func() bool) {
	t.Helper()
	for attempt := 1; !run(); attempt++ {
		if attempt == faultAttempts {
			t.Fatalf("%s: the leadership changed on its own before the fault in %d moves in a row", what, attempt)
		}
		t.Logf("%s: again (attempt %d)", what, attempt+1)
	}
}

// exited says whether a process whose exit closes done has exited.
func exited(done <-chan struct{}) func() bool {
	return func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
}

// stopped says whether process pid is stopped (state T).
func stopped(pid int) func() bool {
	return func() bool { return procStateOf(pid) == "T" }
}

// term is the highest raft term a running scheduler knows.
func (fc *faultCluster) term(t *testing.T) uint64 {
	t.Helper()
	var term uint64
	for _, s := range fc.running() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := s.Client().ClusterStatus(ctx, &pb.ClusterStatusRequest{Local: true})
		cancel()
		if err == nil {
			term = max(term, st.GetTerm())
		}
	}
	if term == 0 {
		t.Fatal("no scheduler says its raft term")
	}
	return term
}

// checkSettled checks what a settled move left: the copy on the
// destination (committed) or the source, the only one running, the
// cluster saying so at the right generation, the counter gone on from
// where it was and the memory the same bytes over the client's one
// connection.
func (fc *faultCluster) checkSettled(t *testing.T, m *pb.Migration, committed bool) {
	t.Helper()
	want, gen := m.GetSource(), m.GetGeneration()
	if committed {
		want, gen = m.GetDestination(), gen+1
		if m.GetPhase() != "done" {
			t.Fatalf("migration %s ended %s (%q), want done: the move had committed", m.GetId(), m.GetPhase(), m.GetError())
		}
	} else if m.GetPhase() != "aborted" {
		t.Fatalf("migration %s ended %s, want aborted: it had not committed", m.GetId(), m.GetPhase())
	}
	h := fc.hostOf(t, want)
	fc.waitOneCopy(t, h)
	fc.waitCluster(t, want, gen)
	fc.route(t, h)
	fc.assertCounted(t)
	fc.client.CheckMemory()
}

// reached is the last forward phase a migration's record reached.
func reached(m *pb.Migration) string {
	var last string
	for _, p := range phasesOf(m) {
		if p != "aborted" {
			last = p
		}
	}
	return last
}

func phasesOf(m *pb.Migration) []string {
	var out []string
	for _, p := range m.GetPhases() {
		out = append(out, p.GetPhase())
	}
	return out
}

// wantEvent checks that the cluster's events (`godwit events`) hold an
// event of kind about migration id whose message says what. Events are
// each replica's own, not replicated state (a replica restored from a
// snapshot starts without the earlier ones), so the event may be on any
// running scheduler; the report says what each one answered.
func (fc *faultCluster) wantEvent(t *testing.T, id, kind, what string) {
	t.Helper()
	var answers []string
	for _, s := range fc.running() {
		found, answer := eventOn(s, id, kind, what)
		if found {
			return
		}
		answers = append(answers, s.Name()+": "+answer)
	}
	t.Errorf("no scheduler holds a %s event of migration %s saying %q:\n  %s", kind, id, what, strings.Join(answers, "\n  "))
}

// eventOn looks for the event wantEvent wants on scheduler s; answer
// says what s held of the migration, or why it could not say.
func eventOn(s *devcluster.Scheduler, id, kind, what string) (found bool, answer string) {
	ctx, cancel := context.WithTimeout(context.Background(), agentCallTimeout)
	defer cancel()
	stream, err := s.Client().Events(ctx, &pb.EventsRequest{})
	if err != nil {
		return false, err.Error()
	}
	var seen []string
	for {
		e, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return false, fmt.Sprintf("%v (after %d events of the migration)", err, len(seen))
		}
		if e.GetMigration() != id {
			continue
		}
		if e.GetKind() == kind && strings.Contains(e.GetMessage(), what) {
			return true, ""
		}
		seen = append(seen, e.GetKind()+": "+e.GetMessage())
	}
	return false, fmt.Sprintf("%d events of the migration: %s", len(seen), strings.Join(seen, "; "))
}

// Where the workload is.

// clusterSays is the cluster's record of the workload, recorded in the
// history.
func (fc *faultCluster) clusterSays(t *testing.T) *pb.Container {
	t.Helper()
	ctr, call := fc.ask(t)
	if fc.id != "" {
		fc.hist.ClusterSaid(faultWorkload, call, ctr.GetNode(), ctr.GetGeneration())
	}
	return ctr
}

// placement is the cluster's record of the workload, not recorded: the
// start of a history.
func (fc *faultCluster) placement(t *testing.T) *pb.Container {
	t.Helper()
	ctr, _ := fc.ask(t)
	return ctr
}

// ask asks the cluster for its record of the workload (by name until its
// ID is known); call is when the answering call began.
func (fc *faultCluster) ask(t *testing.T) (ctr *pb.Container, call time.Time) {
	t.Helper()
	fc.retry(t, "list the containers", func(ctx context.Context, c pb.ClusterServiceClient) error {
		call = time.Now()
		list, err := c.ListContainers(ctx, &pb.ListContainersRequest{All: true})
		if err != nil {
			return err
		}
		for _, x := range list.GetContainers() {
			if x.GetId() == fc.id || (fc.id == "" && x.GetName() == faultWorkload) {
				ctr = x
			}
		}
		if ctr == nil {
			return fmt.Errorf("the cluster does not list %s", faultWorkload)
		}
		return nil
	})
	return ctr, call
}

// waitCluster waits until the cluster has the workload running on node
// at generation.
func (fc *faultCluster) waitCluster(t *testing.T, node string, gen uint64) {
	t.Helper()
	deadline := time.Now().Add(faultRunsWithin)
	for {
		c := fc.clusterSays(t)
		if c.GetNode() == node && c.GetGeneration() == gen && c.GetState() == pb.ContainerState_CONTAINER_STATE_RUNNING {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster has %s %s on %s at generation %d after %s, want running on %s at generation %d",
				faultWorkload, c.GetState(), c.GetNode(), c.GetGeneration(), faultRunsWithin, node, gen)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// observe asks runc on every node's host whether the workload runs
// there, records each answer in the history and returns the hosts that
// run it.
func (fc *faultCluster) observe() []string {
	var on []string
	for _, h := range fc.nodes {
		call := time.Now()
		running, err := runsOn(h, faultWorkload)
		if err != nil {
			continue // the host said nothing certain: no entry
		}
		fc.hist.HostSaw(faultWorkload, h.Node(), call, running)
		if running {
			on = append(on, h.Name())
		}
	}
	return on
}

// waitOneCopy waits until the workload runs on host want and nowhere
// else, by runc on the hosts.
func (fc *faultCluster) waitOneCopy(t *testing.T, want *devcluster.Host) {
	t.Helper()
	deadline := time.Now().Add(faultRunsWithin)
	for {
		on := fc.observe()
		if len(on) == 1 && on[0] == want.Name() {
			return
		}
		if len(on) > 1 {
			t.Fatalf("%s runs on hosts %v: twice", faultWorkload, on)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s runs on hosts %v after %s, want exactly on %s", faultWorkload, on, faultRunsWithin, want.Name())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// assertRunsNowhere checks that no host runs the workload: a held move.
func (fc *faultCluster) assertRunsNowhere(t *testing.T) {
	t.Helper()
	if on := fc.observe(); len(on) != 0 {
		t.Fatalf("%s runs on hosts %v while its move is held, want on none", faultWorkload, on)
	}
}

// healthy checks, before a scenario, that the workload runs once where
// the cluster says, at the generation it says, and still counts.
func (fc *faultCluster) healthy(t *testing.T) {
	t.Helper()
	// A scenario that failed may have left a move open, which the leader
	// settles shortly: the next one starts from its outcome.
	for _, m := range fc.migrations(t) {
		if m.GetContainerId() == fc.id && m.GetPhase() != "done" && m.GetPhase() != "aborted" {
			t.Logf("migration %s of %s is still %s: waiting for the leader to settle it", m.GetId(), faultWorkload, m.GetPhase())
			fc.waitEnded(t, m.GetId())
		}
	}
	c := fc.clusterSays(t)
	if c.GetState() != pb.ContainerState_CONTAINER_STATE_RUNNING {
		t.Fatalf("the cluster has %s %s on %s before the scenario: an earlier one left it so", faultWorkload, c.GetState(), c.GetNode())
	}
	fc.waitOneCopy(t, fc.hostOf(t, c.GetNode()))
	fc.assertCounted(t)
	t.Logf("%s runs on %s at generation %d, counter %d", faultWorkload, c.GetNode(), c.GetGeneration(), fc.count)
}

// assertCounted reads the counter and checks that it never went back.
func (fc *faultCluster) assertCounted(t *testing.T) {
	t.Helper()
	n := fc.client.Count()
	if n < fc.count {
		t.Errorf("the workload's counter went back from %d to %d: it restarted or an older copy answered", fc.count, n)
	}
	fc.count = max(fc.count, n)
}

// startSampler records, until the returned function is called, where
// the hosts' runc and the cluster say the workload is.
func (fc *faultCluster) startSampler() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(faultSampleEvery)
		defer t.Stop()
		for {
			fc.observe()
			fc.sampleCluster(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// sampleCluster records what the cluster says of the workload, if a
// scheduler answers.
func (fc *faultCluster) sampleCluster(ctx context.Context) {
	for _, s := range fc.c.Schedulers() {
		if !s.Running() || procStateOf(s.Pid()) == "T" {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		call := time.Now()
		list, err := s.Client().ListContainers(cctx, &pb.ListContainersRequest{All: true})
		cancel()
		if err != nil {
			continue
		}
		for _, c := range list.GetContainers() {
			if c.GetId() == fc.id {
				fc.hist.ClusterSaid(faultWorkload, call, c.GetNode(), c.GetGeneration())
			}
		}
		return
	}
}

// runsOn reports whether runc on host h shows the container named name
// running with its processes not stopped (runningOn's rule) and not in
// the hands of runc or CRIU (a restore under way: its tasks are
// runc's or CRIU's children until it ends, and run CRIU's restorer,
// not the workload), or an error when it cannot say for certain.
func runsOn(h *devcluster.Host, name string) (bool, error) {
	states, err := hostContainers(h)
	if err != nil {
		return false, err
	}
	for _, s := range states {
		if s.Annotations["org.godwit.name"] != name || s.Status != "running" {
			continue
		}
		state, parent := procStateOf(s.Pid), procParentComm(s.Pid)
		if state == "" || parent == "" {
			return false, fmt.Errorf("the state of pid %d is gone", s.Pid)
		}
		if !stoppedOrDying(state) && !slices.Contains(restoringParents, parent) {
			return true, nil
		}
	}
	return false, nil
}

// hostContainers is what runc on host h lists; nothing before runc ran
// anything there.
func hostContainers(h *devcluster.Host) ([]runcState, error) {
	root := filepath.Join(h.DataDir(), "run", "runc")
	if _, err := os.Stat(root); os.IsNotExist(err) {
		return nil, nil
	}
	return runcList(root)
}

// stoppedOrDying reports whether a process in state (/proc's letter)
// runs nothing: stopped (T, t: a held copy, or one CRIU holds) or dying
// (Z, X: a copy killed and not reaped yet).
func stoppedOrDying(state string) bool { return strings.ContainsAny(state, "TtZX") }

// holds reports whether runc on host h knows a container of the
// workload name, in any state.
func holds(h *devcluster.Host, name string) (bool, error) {
	states, err := hostContainers(h)
	if err != nil {
		return false, err
	}
	for _, s := range states {
		if s.Annotations["org.godwit.name"] == name {
			return true, nil
		}
	}
	return false, nil
}

// The cluster.

func (fc *faultCluster) nodeNames() []string {
	names := make([]string, len(fc.nodes))
	for i, h := range fc.nodes {
		names[i] = h.Node()
	}
	return names
}

func (fc *faultCluster) hostOf(t *testing.T, node string) *devcluster.Host {
	t.Helper()
	for _, h := range fc.nodes {
		if h.Node() == node {
			return h
		}
	}
	t.Fatalf("no host has node %q", node)
	return nil
}

// sched is the schedCluster view of the cluster, for waitNodes.
func (fc *faultCluster) sched() *schedCluster {
	return &schedCluster{c: fc.c, schedulers: fc.c.Schedulers(), nodes: fc.nodes}
}

// running are the schedulers whose processes run and are not stopped.
func (fc *faultCluster) running() []*devcluster.Scheduler {
	var out []*devcluster.Scheduler
	for _, s := range fc.c.Schedulers() {
		if s.Running() && procStateOf(s.Pid()) != "T" {
			out = append(out, s)
		}
	}
	return out
}

// api is a client of a running scheduler; calls reach the leader.
func (fc *faultCluster) api(t *testing.T) pb.ClusterServiceClient {
	t.Helper()
	r := fc.running()
	if len(r) == 0 {
		t.Fatal("no scheduler runs")
	}
	return r[0].Client()
}

// retry calls f with each running scheduler in turn until one answers
// without error, for up to faultRunsWithin: during an election calls
// fail.
func (fc *faultCluster) retry(t *testing.T, what string, f func(ctx context.Context, c pb.ClusterServiceClient) error) {
	t.Helper()
	deadline := time.Now().Add(faultRunsWithin)
	var err error
	for time.Now().Before(deadline) {
		for _, s := range fc.running() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err = f(ctx, s.Client())
			cancel()
			if err == nil {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: no scheduler answered within %s: %v", what, faultRunsWithin, err)
}

// waitLeader waits until the running schedulers agree on a leader among
// them: right after the leader died they may still agree on it.
func (fc *faultCluster) waitLeader(t *testing.T) *devcluster.Scheduler {
	t.Helper()
	deadline := time.Now().Add(devcluster.LeaderTimeout)
	for {
		leader, err := fc.c.WaitLeader(context.Background(), fc.running()...)
		if err == nil {
			return leader
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// armSchedulers makes every scheduler run with env (failpoints; none
// disarms them): each whose environment differs, or that is not
// running, is killed and started again, the leader last, so that the
// cluster keeps its quorum and elects once.
func (fc *faultCluster) armSchedulers(t *testing.T, env ...string) {
	t.Helper()
	all := fc.c.Schedulers()
	same := slices.Equal(env, fc.schedEnv)
	var order []*devcluster.Scheduler
	var leader *devcluster.Scheduler
	if r := fc.running(); len(r) >= 2 {
		leader = fc.waitLeader(t)
	}
	for _, s := range all {
		if s != leader && (!same || !s.Running()) {
			order = append(order, s)
		}
	}
	if leader != nil && !same {
		order = append(order, leader)
	}
	for _, s := range order {
		s.Kill()
		var join []string
		for _, o := range all {
			if o != s {
				join = append(join, o.GossipAddr())
			}
		}
		if _, err := s.Host().StartScheduler(context.Background(), devcluster.SchedulerOptions{Join: join, Env: env}); err != nil {
			t.Fatal(err)
		}
		fc.waitLeader(t)
	}
	fc.schedEnv = slices.Clone(env)
	if len(fc.running()) != len(all) {
		t.Fatalf("only %d of %d schedulers run after arming them", len(fc.running()), len(all))
	}
}

// armAgent starts host h's agent again with the failpoints env, and
// disarms it when the test ends if that agent still runs: a failed
// scenario must not leave a failpoint for the next.
func (fc *faultCluster) armAgent(t *testing.T, h *devcluster.Host, env ...string) {
	t.Helper()
	before := fc.placement(t)
	fc.restartAgent(t, h, env...)
	if before.GetState() == pb.ContainerState_CONTAINER_STATE_RUNNING {
		// A restart slow enough for the node to go down (a loaded
		// machine, the test timings) leaves the workload lost until the
		// new agent's report is in, which the node's registration shows
		// a moment before: the move must not start in between.
		fc.waitCluster(t, before.GetNode(), before.GetGeneration())
	}
	armed := h.Agent()
	t.Cleanup(func() {
		if h.Agent() == armed {
			_ = armed.Signal(syscall.SIGCONT)
			fc.restartAgent(t, h)
		}
	})
}

// restartAgent starts host h's agent again with env (its failpoints;
// none disarms them) and waits until it has registered anew, its node
// ready.
func (fc *faultCluster) restartAgent(t *testing.T, h *devcluster.Host, env ...string) {
	t.Helper()
	epoch := fc.sched().epoch(t, h.Node())
	h.Agent().Kill()
	if _, err := h.StartAgent(context.Background(), devcluster.AgentOptions{Join: fc.gossip, Env: env}); err != nil {
		t.Fatal(err)
	}
	fc.sched().waitRegistered(t, h.Node(), epoch, nodesReadyWithin)
}

// route routes the workload's address via host h, as the cluster will.
func (fc *faultCluster) route(t *testing.T, h *devcluster.Host) {
	t.Helper()
	if err := fc.c.Route(context.Background(), netip.PrefixFrom(fc.ip, 32), h); err != nil {
		t.Fatal(err)
	}
}

// runcState is what `runc list --format json` says of a container.
type runcState struct {
	Status      string            `json:"status"`
	Pid         int               `json:"pid"`
	Annotations map[string]string `json:"annotations"`
}

// runcList lists the containers of the runc state dir root.
func runcList(root string) ([]runcState, error) {
	out, err := exec.Command("runc", "--root", root, "list", "--format", "json").Output()
	if err != nil {
		return nil, fmt.Errorf("runc list in %s: %w", root, err)
	}
	var states []runcState
	if trimmed := strings.TrimSpace(string(out)); trimmed == "" || trimmed == "null" {
		return nil, nil
	}
	if err := json.Unmarshal(out, &states); err != nil {
		return nil, fmt.Errorf("runc list in %s: %w: %q", root, err, out)
	}
	return states, nil
}

// restoringParents are the parents of a container's first process
// while runc restores it: CRIU forks it as runc's sibling, or its own
// child. Once the restore is over it is the shim's.
var restoringParents = []string{"runc", "criu"}

// procStateOf is the state letter of process pid, or "" when it cannot
// be read (the process is gone).
func procStateOf(pid int) string {
	if f := procStat(pid); len(f) > 0 {
		return f[0]
	}
	return ""
}

// procParentComm is the command name of process pid's parent, or "".
func procParentComm(pid int) string {
	f := procStat(pid)
	if len(f) < 2 {
		return ""
	}
	comm, err := os.ReadFile("/proc/" + f[1] + "/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(comm))
}

// procStat is /proc/PID/stat's fields after the command name (the state
// first, then the parent's pid), or nil.
func procStat(pid int) []string {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(string(data[i+1:]))
}
