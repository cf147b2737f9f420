package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// drainWorld is a world with a drainer over it: a fake mover that
// records each move in raft as the coordinator would (so the FSM's own
// checks, MaxParallel's included, apply) and lets the test end it; a fake
// stopper; and a clock the test moves.
type drainWorld struct {
	*world
	d   *Drainer
	now time.Time
	// mu serialises applies: Lead applies from its own goroutine.
	mu sync.Mutex
	// refuse makes the mover refuse a container's moves (by name).
	refuse map[string]error
	moves  []Request
	stops  []string
	ids    int
	// checkpointed records each container the fake checkpointer kept
	// away, as "name->holder"; refuseCheckpoint makes it fail for a
	// container (by name).
	checkpointed     []string
	refuseCheckpoint map[string]error
}

func newDrainWorld(t *testing.T) *drainWorld {
	dw := &drainWorld{world: newWorld(t), now: t0.Add(time.Hour), refuse: map[string]error{}, refuseCheckpoint: map[string]error{}}
	dw.d = NewDrainer(DrainConfig{Store: dw.f.Store(), Apply: dw, Moves: dw, Stop: dw, Checkpoint: dw, Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return dw.clock() }})
	return dw
}

func (dw *drainWorld) clock() time.Time {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	return dw.now
}

func (dw *drainWorld) advance(d time.Duration) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	dw.now = dw.now.Add(d)
}

// Apply is the drainer's raft: the world's FSM.
func (dw *drainWorld) Apply(_ context.Context, cmd fsm.Command) (any, error) {
	dw.mu.Lock()
	defer dw.mu.Unlock()
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	dw.index++
	res := dw.f.Apply(&raft.Log{Index: dw.index, Term: 1, Type: raft.LogCommand, Data: data}).(fsm.Result)
	return res.Value, res.Err
}

// must applies cmd through the lock and fails the test on a refusal.
func (dw *drainWorld) must(cmd fsm.Command) any {
	dw.t.Helper()
	v, err := dw.Apply(context.Background(), cmd)
	if err != nil {
		dw.t.Fatalf("apply %T: %v", cmd, err)
	}
	return v
}

// Start is the fake mover: it records the move in raft, as the
// coordinator does, and drives nothing.
func (dw *drainWorld) Start(ctx context.Context, req Request) (*state.Migration, error) {
	snap := dw.f.Store().Snapshot()
	c, err := snap.Container(req.Container)
	if err != nil {
		return nil, err
	}
	dw.mu.Lock()
	dw.moves = append(dw.moves, req)
	refused := dw.refuse[c.Name]
	dw.ids++
	id := fmt.Sprintf("m-%d", dw.ids)
	at := dw.now
	dw.mu.Unlock()
	if refused != nil {
		return nil, refused
	}
	v, err := dw.Apply(ctx, &fsm.CreateMigration{ID: id, Container: c.ID, Source: c.Node, Dest: req.To, Strategy: "stop-copy",
		Reason: req.Reason, DrainNode: req.DrainNode, Requested: req.Requested, At: at})
	if err != nil {
		return nil, err
	}
	return v.(*state.Migration), nil
}

// Stop is the fake stopper: the desired state only.
func (dw *drainWorld) Stop(ctx context.Context, c *state.Container) error {
	dw.mu.Lock()
	dw.stops = append(dw.stops, c.Name)
	dw.mu.Unlock()
	_, err := dw.Apply(ctx, &fsm.SetDesired{ID: c.ID, Desired: state.DesiredStopped, At: dw.clock()})
	return err
}

// CheckpointAway is the fake checkpointer: it records the container on
// the holder in raft, as the scheduler's does once the holder keeps the
// checkpoint.
func (dw *drainWorld) CheckpointAway(ctx context.Context, c *state.Container, holder *state.Node) (string, error) {
	dw.mu.Lock()
	refused := dw.refuseCheckpoint[c.Name]
	dw.mu.Unlock()
	if refused != nil {
		return "", refused
	}
	id := "ck-" + c.Name
	if _, err := dw.Apply(ctx, &fsm.CheckpointAway{ID: c.ID, Source: c.Node, Generation: c.Generation, Holder: holder.Name, Checkpoint: id, At: dw.clock()}); err != nil {
		return "", err
	}
	dw.mu.Lock()
	dw.checkpointed = append(dw.checkpointed, c.Name+"->"+holder.Name)
	dw.mu.Unlock()
	return id, nil
}

// leading lets Start run as in a leadership term, for the test.
func (dw *drainWorld) leading(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	dw.d.mu.Lock()
	dw.d.lead = ctx
	dw.d.mu.Unlock()
}

// open returns the drain's open migrations of node.
func (dw *drainWorld) open(node string) []*state.Migration {
	return dw.f.Store().Snapshot().Migrations(state.MigrationFilter{Open: true, DrainNode: node})
}

// finish moves m to its destination: ready, committed, done.
func (dw *drainWorld) finish(m *state.Migration) {
	dw.t.Helper()
	at := dw.clock()
	dw.must(&fsm.RecordMigrationPhase{ID: m.ID, Phase: state.MigrationReady, At: at})
	dw.must(&fsm.CommitMove{ID: m.ID, At: at})
	dw.must(&fsm.FinishMigration{ID: m.ID, Stats: &state.MigrationStats{Total: 2 * time.Second}, At: at})
}

func (dw *drainWorld) abort(m *state.Migration, why string) {
	dw.t.Helper()
	dw.must(&fsm.AbortMigration{ID: m.ID, Error: why, At: dw.clock()})
}

func (dw *drainWorld) drain(node string) *state.Drain {
	dw.t.Helper()
	d, ok := dw.f.Store().Snapshot().Drain(node)
	if !ok {
		dw.t.Fatalf("node %s has no drain", node)
	}
	return d
}

func (dw *drainWorld) nodeStatus(node string) state.NodeStatus {
	n, _ := dw.f.Store().Snapshot().Node(node)
	return n.Status()
}

// report sets what node reports of container name.
func (dw *drainWorld) report(name string, st state.ReportedState) {
	dw.t.Helper()
	snap := dw.f.Store().Snapshot()
	c, err := snap.Container(name)
	if err != nil {
		dw.t.Fatal(err)
	}
	n, _ := snap.Node(c.Node)
	dw.must(&fsm.ReportContainers{Node: c.Node, Epoch: n.Epoch, Reports: []fsm.Report{{ID: c.ID, State: st}}, At: dw.clock()})
}

// startDrain starts a drain of node through the drainer.
func (dw *drainWorld) startDrain(t *testing.T, req DrainRequest) *state.Drain {
	t.Helper()
	dw.leading(t)
	d, err := dw.d.Start(context.Background(), req)
	if err != nil {
		t.Fatalf("drain %s: %v", req.Node, err)
	}
	return d
}

// cluster4 is n1 with the containers (name, mCPU) and three empty
// nodes n2..n4 of 2 CPUs each, every node with the same CPU and
// strategies.
func cluster4(t *testing.T, ctrs map[string]int64) *drainWorld {
	dw := newDrainWorld(t)
	for _, n := range []string{"n1", "n2", "n3", "n4"} {
		dw.node(n, flags, allStrategies)
	}
	for name, cpu := range ctrs {
		dw.run(name, "n1", cpu, false)
	}
	return dw
}

func TestDrainRefusesWhatCannotMoveAndChangesNothing(t *testing.T) {
	cases := []struct {
		name string
		// setup fills n1 (and the other nodes) with containers.
		setup func(dw *drainWorld)
		// want maps each container that must be listed to a word of its
		// reason; no other may be.
		want map[string]string
	}{
		{"pinned", func(dw *drainWorld) {
			dw.node("n2", flags, allStrategies)
			dw.run("ok1", "n1", 100, false)
			dw.run("pin2", "n1", 100, true)
		}, map[string]string{"pin2": "pinned"}},
		{"stopped and exited", func(dw *drainWorld) {
			dw.node("n2", flags, allStrategies)
			dw.run("ok1", "n1", 100, false)
			dw.run("stop2", "n1", 100, false)
			dw.run("exit3", "n1", 100, false)
			dw.report("stop2", state.ReportedStopped)
			dw.report("exit3", state.ReportedExited)
		}, map[string]string{"stop2": "stopped", "exit3": "exited"}},
		{"too large for any node", func(dw *drainWorld) {
			dw.node("n2", flags, allStrategies)
			dw.run("busy", "n2", 1500, false)
			dw.run("ok1", "n1", 400, false)
			dw.run("big2", "n1", 1000, false)
		}, map[string]string{"big2": "n2: capacity"}},
		{"room for each alone, not for both", func(dw *drainWorld) {
			dw.node("n2", flags, allStrategies)
			dw.run("a1", "n1", 1200, false)
			dw.run("b2", "n1", 1100, false)
		}, map[string]string{"b2": "counting the moves in flight and the node's other containers"}},
		{"room taken by a move in flight", func(dw *drainWorld) {
			dw.node("n2", flags, allStrategies)
			dw.node("n3", flags, allStrategies)
			dw.run("mover", "n3", 1500, false)
			dw.must(&fsm.CreateMigration{ID: "m-x", Container: strings.Repeat("a", 63) + "r", Source: "n3", Dest: "n2",
				Strategy: "stop-copy", Reason: "operator", At: t0})
			dw.run("c1", "n1", 1000, false)
		}, map[string]string{"c1": "counting the moves in flight and the node's other containers"}},
		{"a CPU the others lack", func(dw *drainWorld) {
			dw.node("n2", []string{"sse4_2"}, allStrategies)
			dw.run("c1", "n1", 100, false)
		}, map[string]string{"c1": "n2: cpu"}},
		{"no strategy in common", func(dw *drainWorld) {
			dw.node("n2", flags, []string{"pre-copy"})
			dw.run("c1", "n1", 100, false)
		}, map[string]string{"c1": "share no migration strategy"}},
		{"no other node", func(dw *drainWorld) {
			dw.run("c1", "n1", 100, false)
		}, map[string]string{"c1": "no other node"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dw := newDrainWorld(t)
			dw.node("n1", flags, allStrategies)
			tc.setup(dw)
			before := dw.f.Store().Snapshot().Index()
			dw.leading(t)
			_, err := dw.d.Start(context.Background(), DrainRequest{Node: "n1", MaxParallel: 2})
			var refused *DrainRefusedError
			if !errors.As(err, &refused) || !errors.Is(err, ErrDrainRefused) {
				t.Fatalf("drain n1: %v, want a refusal", err)
			}
			got := map[string]string{}
			for _, b := range refused.Blocked {
				got[b.Name] = b.Reason
			}
			for name, word := range tc.want {
				if !strings.Contains(got[name], word) {
					t.Errorf("%s: reason %q, want it to say %q", name, got[name], word)
				}
				if !strings.Contains(err.Error(), name+": ") {
					t.Errorf("the refusal does not list %s:\n%v", name, err)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("blocked %v, want exactly %v", got, tc.want)
			}
			if idx := dw.f.Store().Snapshot().Index(); idx != before {
				t.Errorf("the state changed (index %d -> %d): a refused drain must change nothing", before, idx)
			}
			if st := dw.nodeStatus("n1"); st != state.NodeReady {
				t.Errorf("n1 is %s, want ready", st)
			}
		})
	}
}

func TestDrainRequestRefusals(t *testing.T) {
	cases := []struct {
		name string
		req  DrainRequest
		want error
	}{
		{"no parallelism", DrainRequest{Node: "n1"}, ErrInvalid},
		{"a policy without a deadline", DrainRequest{Node: "n1", MaxParallel: 1, OnDeadline: state.OnDeadlineStop}, ErrInvalid},
		{"an unknown policy", DrainRequest{Node: "n1", MaxParallel: 1, Deadline: time.Minute, OnDeadline: "pray"}, ErrInvalid},
		{"an unknown node", DrainRequest{Node: "n9", MaxParallel: 1}, state.ErrNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dw := cluster4(t, map[string]int64{"c1": 100})
			dw.leading(t)
			if _, err := dw.d.Start(context.Background(), tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("drain: %v, want %v", err, tc.want)
			}
			if st := dw.nodeStatus("n1"); st != state.NodeReady {
				t.Errorf("n1 is %s, want ready", st)
			}
		})
	}
	t.Run("not leading", func(t *testing.T) {
		dw := cluster4(t, nil)
		if _, err := dw.d.Start(context.Background(), DrainRequest{Node: "n1", MaxParallel: 1}); !errors.Is(err, ErrNotLeading) {
			t.Fatalf("drain: %v, want %v", err, ErrNotLeading)
		}
	})
}

func TestDrainPlanSharesTheRoomAmongTheContainers(t *testing.T) {
	// n2..n4 have 2 CPUs each: 1.5 + 1.2 + 1.0 + 0.9 fit only one per
	// node but the smallest two, which must share.
	dw := cluster4(t, map[string]int64{"c1": 1500, "c2": 1200, "c3": 1000, "c4": 900})
	dw.startDrain(t, DrainRequest{Node: "n1", MaxParallel: 4})
	if st := dw.nodeStatus("n1"); st != state.NodeDraining {
		t.Fatalf("n1 is %s, want draining", st)
	}
	dw.d.pass(context.Background())
	load := map[string]int64{}
	snap := dw.f.Store().Snapshot()
	for _, m := range dw.open("n1") {
		c, _ := snap.ContainerByID(m.Container)
		load[m.Dest] += c.Spec.Request.MilliCPU
		if m.Reason != "drain n1" || m.Source != "n1" {
			t.Errorf("move %s: reason %q from %s, want a drain of n1's", m.ID, m.Reason, m.Source)
		}
	}
	if len(dw.open("n1")) != 4 {
		t.Fatalf("%d moves started, want all 4 (every container has room)", len(dw.open("n1")))
	}
	for n, cpu := range load {
		if cpu > 2000 {
			t.Errorf("node %s is promised %d mCPU of 2000: two moves counted on the same room", n, cpu)
		}
	}
}

func TestDrainLoopKeepsToMaxParallelAndEndsWhenEmpty(t *testing.T) {
	dw := cluster4(t, map[string]int64{"c1": 100, "c2": 100, "c3": 100, "c4": 100, "c5": 100})
	dw.startDrain(t, DrainRequest{Node: "n1", MaxParallel: 2})
	ctx := context.Background()
	for round := 1; ; round++ {
		dw.d.pass(ctx)
		dw.d.pass(ctx) // a second look starts nothing more
		open := dw.open("n1")
		if len(open) > 2 {
			t.Fatalf("round %d: %d moves in flight, want at most 2", round, len(open))
		}
		if len(open) == 0 {
			break
		}
		if round > 5 {
			t.Fatal("the drain does not move on")
		}
		d := dw.drain("n1")
		if d.Left+d.Moved != 5 {
			t.Errorf("round %d: %d left and %d moved, want 5 in all", round, d.Left, d.Moved)
		}
		dw.finish(open[0])
	}
	d := dw.drain("n1")
	if d.Status != state.DrainDone || d.Moved != 5 || d.Left != 0 || d.Failed != 0 {
		t.Errorf("drain %+v: want done with 5 moved", d)
	}
	if n := dw.f.Store().Snapshot().ContainerCount("n1"); n != 0 {
		t.Errorf("n1 holds %d containers, want none", n)
	}
	if st := dw.nodeStatus("n1"); st != state.NodeCordoned {
		t.Errorf("n1 is %s, want cordoned for its maintenance", st)
	}
	if len(dw.moves) != 5 {
		t.Errorf("%d moves asked for, want 5", len(dw.moves))
	}
}

func TestDrainRetriesAFailingMoveThenBlocksIt(t *testing.T) {
	dw := cluster4(t, map[string]int64{"c1": 100})
	dw.startDrain(t, DrainRequest{Node: "n1", MaxParallel: 1})
	ctx := context.Background()
	for attempt := 1; attempt <= DefaultDrainAttempts; attempt++ {
		dw.d.pass(ctx)
		open := dw.open("n1")
		if len(open) != 1 {
			t.Fatalf("attempt %d: %d moves in flight, want 1", attempt, len(open))
		}
		dw.advance(time.Second)
		dw.abort(open[0], fmt.Sprintf("restore failed (%d)", attempt))
		if attempt < DefaultDrainAttempts {
			if d := dw.drain("n1"); !d.Running() {
				t.Fatalf("attempt %d: the drain ended %s, want it to try again", attempt, d.Status)
			}
		}
	}
	since := dw.f.Store().Snapshot().Index()
	dw.d.pass(ctx)
	if open := dw.open("n1"); len(open) != 0 || len(dw.moves) != DefaultDrainAttempts {
		t.Fatalf("%d moves asked for, %d in flight: want %d attempts and no more", len(dw.moves), len(open), DefaultDrainAttempts)
	}
	d := dw.drain("n1")
	if d.Status != state.DrainFailed || d.Failed != DefaultDrainAttempts || !strings.Contains(d.Reason, "c1") || !strings.Contains(d.Reason, "restore failed (3)") {
		t.Errorf("drain %+v: want failed, %d failed moves, the reason naming c1 and its last error", d, DefaultDrainAttempts)
	}
	if d.Blocked[strings.Repeat("a", 63)+"1"] == "" {
		t.Errorf("blocked %v: want c1 with why", d.Blocked)
	}
	// Said at once, in the events, before the end.
	events, _, _ := dw.f.Store().EventsSince(since)
	var said bool
	for _, e := range events {
		said = said || e.Kind == state.EventDrainUpdated && strings.Contains(e.Message, "c1 cannot move") && strings.Contains(e.Message, "3 times")
	}
	if !said {
		t.Errorf("no drain-updated event says c1 cannot move: %+v", events)
	}
	if st := dw.nodeStatus("n1"); st != state.NodeCordoned {
		t.Errorf("n1 is %s, want cordoned", st)
	}
}

func TestDrainWaitsForRoomAndSaysWhy(t *testing.T) {
	dw := cluster4(t, map[string]int64{"c1": 100})
	dw.startDrain(t, DrainRequest{Node: "n1", MaxParallel: 1})
	for _, n := range []string{"n2", "n3", "n4"} {
		dw.must(&fsm.SetSchedulability{Name: n, Schedulability: state.Cordoned, At: dw.clock()})
	}
	ctx := context.Background()
	dw.d.pass(ctx)
	d := dw.drain("n1")
	if why := d.Blocked[strings.Repeat("a", 63)+"1"]; !d.Running() || !strings.Contains(why, "cordoned") || d.Left != 1 {
		t.Fatalf("drain %+v: want running, c1 blocked because the other nodes are cordoned", d)
	}
	dw.must(&fsm.SetSchedulability{Name: "n3", Schedulability: state.Schedulable, At: dw.clock()})
	dw.d.pass(ctx)
	open := dw.open("n1")
	if len(open) != 1 || open[0].Dest != "n3" {
		t.Fatalf("moves %+v: want c1 moving to n3 once it is uncordoned", open)
	}
	if d := dw.drain("n1"); len(d.Blocked) != 0 {
		t.Errorf("blocked %v after it started moving, want none", d.Blocked)
	}
}

func TestDrainDeadlinePolicies(t *testing.T) {
	cases := []struct {
		name       string
		policy     state.DeadlinePolicy
		wantStops  []string
		wantStatus state.DrainStatus
		wantWord   string
	}{
		{"stop stops what is not moving", state.OnDeadlineStop, []string{"c2", "c3"}, state.DrainStopped, "stopped"},
		{"fail leaves it running", state.OnDeadlineFail, nil, state.DrainFailed, "keeps running"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dw := cluster4(t, map[string]int64{"c1": 300, "c2": 200, "c3": 100})
			dw.startDrain(t, DrainRequest{Node: "n1", MaxParallel: 1, Deadline: time.Minute, OnDeadline: tc.policy})
			ctx := context.Background()
			dw.d.pass(ctx)
			moving := dw.open("n1")
			if len(moving) != 1 {
				t.Fatalf("%d moves in flight, want 1", len(moving))
			}
			dw.advance(2 * time.Minute)
			dw.d.pass(ctx)
			dw.d.pass(ctx)
			if len(dw.moves) != 1 {
				t.Errorf("%d moves asked for, want no new one after the deadline", len(dw.moves))
			}
			if d := dw.drain("n1"); !d.Running() {
				t.Fatalf("drain %s with a move in flight, want it running until the move ends", d.Status)
			}
			if fmt.Sprint(dw.stops) != fmt.Sprint(tc.wantStops) {
				t.Errorf("stopped %v, want %v (once each; not the moving c1)", dw.stops, tc.wantStops)
			}
			dw.finish(moving[0])
			dw.d.pass(ctx)
			d := dw.drain("n1")
			if d.Status != tc.wantStatus || d.Moved != 1 || d.Left != 2 || !strings.Contains(d.Reason, tc.wantWord) ||
				!strings.Contains(d.Reason, "deadline") {
				t.Errorf("drain %+v: want %s at the deadline with 1 moved, 2 left, saying %q", d, tc.wantStatus, tc.wantWord)
			}
			for _, c := range dw.f.Store().Snapshot().ContainersOn("n1") {
				if wantStopped := tc.policy == state.OnDeadlineStop; (c.Desired == state.DesiredStopped) != wantStopped {
					t.Errorf("%s is desired %s on n1", c.Name, c.Desired)
				}
			}
		})
	}
}

// At the deadline the checkpoint policy keeps what is left on another
// node that holds its image, stopped there; the drain ends done once the
// move in flight ends, the node empty. A checkpoint that fails is
// blocked with why and tried again.
func TestDrainDeadlineCheckpointsWhatIsLeftAway(t *testing.T) {
	dw := cluster4(t, map[string]int64{"c1": 300, "c2": 200, "c3": 100})
	dw.must(&fsm.SetImages{Node: "n3", Images: []state.Image{{Name: "busybox:latest", ID: "sha256:1"}}, At: t0})
	dw.refuseCheckpoint["c3"] = errors.New("push to n3: disk full")
	dw.startDrain(t, DrainRequest{Node: "n1", MaxParallel: 1, Deadline: time.Minute, OnDeadline: state.OnDeadlineCheckpoint})
	ctx := context.Background()
	dw.d.pass(ctx)
	moving := dw.open("n1")
	if len(moving) != 1 {
		t.Fatalf("%d moves in flight, want 1", len(moving))
	}
	dw.advance(2 * time.Minute)
	dw.d.pass(ctx)
	if fmt.Sprint(dw.checkpointed) != "[c2->n3]" {
		t.Errorf("checkpointed away %v, want c2 to n3 (the only other node with its image; c1 moves; c3 fails)", dw.checkpointed)
	}
	dw.d.pass(ctx)
	c3, _ := dw.f.Store().Snapshot().Container("c3")
	if why := dw.drain("n1").Blocked[c3.ID]; !strings.Contains(why, "disk full") {
		t.Errorf("c3 blocked for %q, want the checkpoint's failure", why)
	}
	c2, _ := dw.f.Store().Snapshot().Container("c2")
	if c2.Node != "n3" || c2.Reported != state.ReportedCheckpointed || c2.Desired != state.DesiredStopped || c2.Checkpoint != "ck-c2" {
		t.Errorf("c2 %+v: want checkpointed on n3, desired stopped, waiting in ck-c2", c2)
	}

	delete(dw.refuseCheckpoint, "c3")
	dw.d.pass(ctx)
	dw.finish(moving[0])
	dw.d.pass(ctx)
	dw.d.pass(ctx)
	d := dw.drain("n1")
	if d.Status != state.DrainDone || d.Moved != 1 || d.Checkpointed != 2 || !strings.Contains(d.Reason, "2 containers were checkpointed") {
		t.Errorf("drain %+v: want done, 1 moved, 2 checkpointed away, saying so", d)
	}
	if got := dw.f.Store().Snapshot().ContainerCount("n1"); got != 0 {
		t.Errorf("n1 holds %d containers, want none", got)
	}
}

func TestUncordonEndsADrainAndStopsItsMoves(t *testing.T) {
	dw := cluster4(t, map[string]int64{"c1": 100, "c2": 100, "c3": 100})
	dw.startDrain(t, DrainRequest{Node: "n1", MaxParallel: 2})
	ctx := context.Background()
	dw.d.pass(ctx)
	if n := len(dw.open("n1")); n != 2 {
		t.Fatalf("%d moves in flight, want 2", n)
	}
	dw.must(&fsm.SetSchedulability{Name: "n1", Schedulability: state.Schedulable, At: dw.clock()})
	for _, m := range dw.open("n1") {
		dw.finish(m)
	}
	dw.d.pass(ctx)
	if len(dw.moves) != 2 {
		t.Errorf("%d moves asked for after the uncordon, want the 2 in flight only", len(dw.moves))
	}
	if d := dw.drain("n1"); d.Status != state.DrainCancelled {
		t.Errorf("drain %s, want cancelled", d.Status)
	}
	if st := dw.nodeStatus("n1"); st != state.NodeReady {
		t.Errorf("n1 is %s, want ready", st)
	}
}

func TestANewLeaderGoesOnWithARunningDrain(t *testing.T) {
	dw := cluster4(t, map[string]int64{"c1": 100, "c2": 100, "c3": 100})
	dw.startDrain(t, DrainRequest{Node: "n1", MaxParallel: 2})
	ctx := context.Background()
	dw.d.pass(ctx)
	open := dw.open("n1")
	// The leader fails: one move finished, the other the next leader's
	// coordinator aborts (it had not committed).
	dw.finish(open[0])
	dw.abort(open[1], "its driver stopped (the leader changed)")

	next := NewDrainer(DrainConfig{Store: dw.f.Store(), Apply: dw, Moves: dw, Stop: dw, Log: slog.New(slog.DiscardHandler),
		Now: func() time.Time { return dw.clock() }})
	for range 5 {
		next.pass(ctx)
		for _, m := range dw.open("n1") {
			dw.finish(m)
		}
	}
	d := dw.drain("n1")
	if d.Status != state.DrainDone || d.Moved != 3 || d.Failed != 1 {
		t.Errorf("drain %+v: want done by the new leader, 3 moved and the aborted move counted as failed", d)
	}
}

func TestLeadDrivesADrainAsSoonAsItStarts(t *testing.T) {
	dw := cluster4(t, map[string]int64{"c1": 100, "c2": 100})
	dw.d = NewDrainer(DrainConfig{Store: dw.f.Store(), Apply: dw, Moves: dw, Stop: dw, Log: slog.New(slog.DiscardHandler),
		Every: time.Hour, Now: func() time.Time { return dw.clock() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		dw.d.Lead(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if _, err = dw.d.Start(ctx, DrainRequest{Node: "n1", MaxParallel: 2}); !errors.Is(err, ErrNotLeading) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(dw.open("n1")) < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d moves in flight 5s after the drain started, want 2 (Every is an hour: Start must wake Lead)", len(dw.open("n1")))
		}
	}
	// Each move that ends wakes it again: the drain ends done.
	for _, m := range dw.open("n1") {
		dw.finish(m)
	}
	for deadline := time.Now().Add(5 * time.Second); dw.drain("n1").Running(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("drain %+v still running 5s after its moves ended", dw.drain("n1"))
		}
	}
}
