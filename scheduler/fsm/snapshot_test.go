package fsm_test

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// sink is a raft.SnapshotSink in memory.
type sink struct {
	bytes.Buffer
	failAfter int // fail writes once this many bytes are written (0: never)
	cancelled bool
	closed    bool
}

func (s *sink) Write(p []byte) (int, error) {
	if s.failAfter > 0 && s.Len()+len(p) > s.failAfter {
		return 0, errors.New("disk full")
	}
	return s.Buffer.Write(p)
}
func (s *sink) ID() string            { return "test" }
func (s *sink) Cancel() error         { s.cancelled = true; return nil }
func (s *sink) Close() error          { s.closed = true; return nil }
func (s *sink) Reader() io.ReadCloser { return io.NopCloser(bytes.NewReader(s.Bytes())) }

var _ raft.SnapshotSink = (*sink)(nil)

// persist snapshots h's FSM and returns the bytes.
func persist(t *testing.T, h *harness) []byte {
	t.Helper()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !s.closed || s.cancelled {
		t.Fatalf("Persist left the sink closed=%v cancelled=%v, want closed", s.closed, s.cancelled)
	}
	return s.Bytes()
}

func restore(t *testing.T, data []byte) (*harness, error) {
	h := newHarness(t)
	err := h.f.Restore(io.NopCloser(bytes.NewReader(data)))
	return h, err
}

// filled returns a harness with something in every table.
func filled(t testing.TB) *harness {
	h := cluster(t)
	n3 := testNode("n3")
	n3.Snapshotter, n3.Strategies = "btrfs", []string{"stop-copy", "pre-copy"}
	h.must(fsm.RegisterNode{Node: n3, At: t0.Add(time.Second)})
	h.must(fsm.SetSchedulability{Name: "n2", Schedulability: state.Cordoned})
	h.must(fsm.SetNodeHealth{Name: "n3", Health: state.HealthSuspect, At: t0.Add(2 * time.Second)})
	h.must(fsm.PlaceContainers{At: t0, Containers: []fsm.NewContainer{
		{ID: "a1", Name: "web", Node: "n1", Spec: state.ContainerSpec{Image: "nginx:1", Env: []string{"A=1"},
			Labels: map[string]string{"app": "web"}, Constraints: []state.Constraint{{Key: "zone", Value: "a"}},
			Request: state.Resources{MilliCPU: 500, MemoryBytes: 1 << 30}, Pinned: true}},
		{ID: "b2", Name: "db", Node: "n1", Spec: spec(250)},
		{ID: "c3", Name: "cache", Node: "n2", Spec: spec(100)},
		{ID: "d4", Name: "gone", Node: "n2", Spec: spec(100)},
	}})
	h.must(fsm.DeleteContainer{ID: "d4"}) // leaves a hole in the addresses
	h.must(fsm.ReportContainers{Node: "n1", Epoch: 1, At: t0.Add(3 * time.Second), Reports: []fsm.Report{{ID: "a1", State: state.ReportedRunning}}})
	h.must(fsm.SetDesired{ID: "b2", Desired: state.DesiredStopped})
	h.must(fsm.SetImages{Node: "n1", Images: []state.Image{
		{Name: "nginx:1", ID: "sha256:ng", Layers: []string{"sha256:l1", "sha256:l2"}, Size: 100},
		{Name: "busybox:latest", ID: "sha256:bb", Size: 5},
	}})
	h.must(fsm.SetImages{Node: "n2", Images: []state.Image{{Name: "busybox:latest", ID: "sha256:bb", Size: 5}}})
	h.must(fsm.AppendAudit{Record: state.AuditRecord{Time: t0, Who: "alice", Role: "operator", Action: "run", Target: "web", Outcome: "ok"}})
	h.must(fsm.AppendAudit{Record: state.AuditRecord{Time: t0, Who: "bob", Role: "viewer", Action: "rm", Target: "web", Outcome: "permission denied"}})

	// Migrations: cache moved from n2 to n4 and done; web on its way to
	// n4 as part of n1's drain. Drains: n1's running, n2's cancelled.
	h.must(fsm.RegisterNode{Node: testNode("n4"), At: t0})
	h.must(fsm.CreateMigration{ID: "m1", Container: "c3", Source: "n2", Dest: "n4", Strategy: "pre-copy", Reason: "operator",
		Requested: state.Requester{Who: "alice", Role: "operator"}, WhyDestination: "only ready node", WhyStrategy: "both support it", At: t0})
	h.must(fsm.RecordMigrationPhase{ID: "m1", Phase: state.MigrationReady, At: t0.Add(time.Second)})
	h.must(fsm.CommitMove{ID: "m1", At: t0.Add(2 * time.Second)})
	h.must(fsm.FinishMigration{ID: "m1", At: t0.Add(3 * time.Second), Stats: &state.MigrationStats{
		Downtime: time.Second, Total: 3 * time.Second, Bytes: 1 << 20,
		Phases: map[state.MigrationPhase]time.Duration{state.MigrationPrepare: time.Second, state.MigrationReady: time.Second},
	}})
	h.must(fsm.StartDrain{Node: "n2", MaxParallel: 1, At: t0})
	h.must(fsm.EndDrain{Node: "n2", Status: state.DrainCancelled, Reason: "operator changed their mind", At: t0.Add(time.Second)})
	h.must(fsm.StartDrain{Node: "n1", Deadline: t0.Add(time.Hour), OnDeadline: state.OnDeadlineStop, MaxParallel: 2, At: t0})
	h.must(fsm.CreateMigration{ID: "m2", Container: "a1", Source: "n1", Dest: "n4", Strategy: "stream", Reason: "drain n1",
		DrainNode: "n1", At: t0.Add(time.Second)})
	h.must(fsm.RecordMigrationPhase{ID: "m2", Phase: state.MigrationTransfer, Error: "retried", At: t0.Add(2 * time.Second)})
	h.must(fsm.UpdateDrain{Node: "n1", Blocked: map[string]string{"b2": "stopped: moves cold later"}, Left: 2, At: t0.Add(3 * time.Second)})

	// The balancer: its policy, and a decision that moved cache (m1).
	h.must(enabled())
	d := decision()
	d.Moves[0].Container, d.Moves[0].Name, d.Moves[0].From, d.Moves[0].To = "c3", "cache", "n2", "n4"
	h.must(fsm.RecordBalanceDecision{Decision: d, At: t0.Add(time.Second)})
	return h
}

// TestSnapshotRoundTrip checks every table, and what is derived from
// them, after persist and restore into a new FSM.
func TestSnapshotRoundTrip(t *testing.T) {
	orig := filled(t)
	data := persist(t, orig)
	got, err := restore(t, data)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	want, have := orig.snap(), got.snap()

	tables := []struct {
		table      string
		want, have any
	}{
		{state.TableConfig, want.Config(), have.Config()},
		{state.TableNodes, want.Nodes(), have.Nodes()},
		{state.TableContainers, want.Containers(), have.Containers()},
		{state.TableImages, want.Images(""), have.Images("")},
		{state.TableAudit, want.Audit(0), have.Audit(0)},
		{state.TableMigrations, want.Migrations(state.MigrationFilter{}), have.Migrations(state.MigrationFilter{})},
		{state.TableDrains, want.Drains(), have.Drains()},
		{state.TableBalancePolicy, func() *state.BalancePolicy { p, _ := want.BalancePolicy(); return p }(),
			func() *state.BalancePolicy { p, _ := have.BalancePolicy(); return p }()},
		{state.TableBalanceDecisions, want.BalanceDecisions(0), have.BalanceDecisions(0)},
	}
	if len(tables) != len(state.Tables()) {
		t.Fatalf("the test checks %d tables, the state has %d: check the new one too", len(tables), len(state.Tables()))
	}
	for _, tt := range tables {
		t.Run(tt.table, func(t *testing.T) {
			if reflect.ValueOf(tt.want).IsZero() || reflect.ValueOf(tt.want).Kind() == reflect.Slice && reflect.ValueOf(tt.want).Len() == 0 {
				t.Fatalf("the fixture leaves table %s empty", tt.table)
			}
			if !reflect.DeepEqual(tt.want, tt.have) {
				t.Errorf("restored %s differ:\nwant %s\nhave %s", tt.table, dump(tt.want), dump(tt.have))
			}
			if w, h := want.TableIndex(tt.table), have.TableIndex(tt.table); w != h || w == 0 {
				t.Errorf("table index %d after restore, want %d (non-zero)", h, w)
			}
		})
	}

	t.Run("derived", func(t *testing.T) {
		if want.Index() != have.Index() {
			t.Errorf("index %d, want %d", have.Index(), want.Index())
		}
		if m, ok := have.OpenMigrationOf("a1"); !ok || m.ID != "m2" {
			t.Errorf("open migration of a1 after restore: %+v, %v; want m2", m, ok)
		}
		if got := have.Incoming("n4"); got != want.Incoming("n4") || got.MilliCPU != 500 {
			t.Errorf("n4 incoming %+v after restore, want %+v (web's request)", got, want.Incoming("n4"))
		}
		for _, n := range []string{"n1", "n2", "n3"} {
			if want.Allocated(n) != have.Allocated(n) || want.ContainerCount(n) != have.ContainerCount(n) {
				t.Errorf("node %s: allocated %+v count %d, want %+v and %d", n,
					have.Allocated(n), have.ContainerCount(n), want.Allocated(n), want.ContainerCount(n))
			}
		}
		// The same next placement on both: same address (the hole).
		got.index = orig.index
		a := orig.place("e5", "new", "n1", 10)
		b := got.place("e5", "new", "n1", 10)
		if a.IP != b.IP || a.IP != netip.MustParseAddr("10.1.0.5") {
			t.Errorf("next address: original %s, restored %s; want both 10.1.0.5", a.IP, b.IP)
		}
	})
}

func dump(v any) string {
	var b strings.Builder
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Slice {
		return strings.TrimSpace(mustJSON(v))
	}
	for i := range rv.Len() {
		b.WriteString("\n  " + mustJSON(rv.Index(i).Interface()))
	}
	return b.String()
}

func TestSnapshotIsAPointInTime(t *testing.T) {
	h := filled(t)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	h.place("late", "late", "n1", 10) // applied while the snapshot persists
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	got, err := restore(t, s.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.snap().ContainerByID("late"); ok {
		t.Error("the snapshot holds a container placed after it was taken")
	}
}

func TestRestoreRefusesBadSnapshots(t *testing.T) {
	h := filled(t)
	good := persist(t, h)
	lines := strings.SplitAfter(string(good), "\n")
	lastRecordEnd := len(good) - len(lines[len(lines)-2]) // cut just before the end line

	tests := []struct {
		name    string
		data    string
		wantErr error
		wantMsg string
	}{
		{name: "empty", data: "", wantErr: fsm.ErrSnapshotCorrupt, wantMsg: "empty"},
		{name: "cut inside a record", data: string(good[:len(good)/2]), wantErr: fsm.ErrSnapshotCorrupt},
		{name: "cut between records", data: string(good[:lastRecordEnd]), wantErr: fsm.ErrSnapshotCorrupt, wantMsg: "no end record"},
		{name: "header only", data: lines[0], wantErr: fsm.ErrSnapshotCorrupt},
		{name: "newer version", data: strings.Replace(string(good), `"version":1`, `"version":2`, 1),
			wantErr: fsm.ErrSnapshotFormat, wantMsg: "upgrade"},
		{name: "another format", data: strings.Replace(string(good), "godwit-state", "consul", 1), wantErr: fsm.ErrSnapshotFormat},
		{name: "not JSON", data: "PK\x03\x04 a zip file", wantErr: fsm.ErrSnapshotFormat},
		{name: "unknown table", data: strings.Replace(string(good), `{"table":"audit"`, `{"table":"widgets"`, 1), wantErr: fsm.ErrSnapshotCorrupt},
		{name: "end count wrong", data: strings.Replace(string(good), lines[len(lines)-2], `{"end":true,"records":3}`+"\n", 1),
			wantErr: fsm.ErrSnapshotCorrupt},
		{name: "data after the end", data: string(good) + `{"table":"nodes","record":{}}` + "\n", wantErr: fsm.ErrSnapshotCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Restore over a live FSM: a refused snapshot leaves its state.
			live := cluster(t)
			before := live.snap()
			err := live.f.Restore(io.NopCloser(strings.NewReader(tt.data)))
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("Restore = %v, want an error wrapping %v saying %q", err, tt.wantErr, tt.wantMsg)
			}
			after := live.snap()
			if after.Index() != before.Index() || len(after.Nodes()) != 2 {
				t.Error("a refused snapshot changed the state")
			}
		})
	}
}

func TestPersistCancelsOnError(t *testing.T) {
	h := filled(t)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	s := sink{failAfter: 1}
	if err := snap.Persist(&s); err == nil || !s.cancelled || s.closed {
		t.Fatalf("Persist to a failing sink = %v, cancelled=%v closed=%v; want an error and the sink cancelled", err, s.cancelled, s.closed)
	}
}

func TestRestoreWakesWatchers(t *testing.T) {
	h := cluster(t)
	_, wake, _ := h.f.Store().EventsSince(h.index)
	other := filled(t)
	if err := h.f.Restore(io.NopCloser(bytes.NewReader(persist(t, other)))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	default:
		t.Fatal("Restore did not wake the event watchers")
	}
	if _, _, err := h.f.Store().EventsSince(h.index); !errors.Is(err, state.ErrEventsLost) {
		t.Errorf("a watcher from before the restore got %v, want ErrEventsLost", err)
	}
	if got := len(h.snap().Containers()); got != 3 {
		t.Errorf("%d containers after the restore, want the snapshot's 3", got)
	}
}
