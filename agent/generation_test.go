package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/internal/rpc"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// webID is the ID of the container "web" the generation tests store.
var webID = strings.Repeat("ab", 32)

// storeWeb stores the record of container "web" (webID) in state st, at
// generation gen, arrived at registration arrival, as a run or a
// restore would have left it.
func storeWeb(t *testing.T, a *Agent, st State, gen, arrival uint64) *Container {
	t.Helper()
	c := &Container{ID: webID, Name: "web", State: st, Generation: gen, ArrivalEpoch: arrival, Created: time.Now().UTC()}
	if err := a.save(c); err != nil {
		t.Fatal(err)
	}
	a.mu.Lock()
	a.containers[c.ID] = &entry{c: c}
	a.mu.Unlock()
	return c
}

// savedGeneration is web's generation as its record on disk has it.
func savedGeneration(t *testing.T, a *Agent) uint64 {
	t.Helper()
	records, err := a.loadRecords()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range records {
		if c.ID == webID {
			return c.Generation
		}
	}
	t.Fatal("no record of web on disk")
	return 0
}

// staleMessage is the refusal the operator and the scheduler read.
func staleMessage(given, current uint64) string {
	return fmt.Sprintf("stale generation %d for container web on node t: the cluster moved it (generation %d); the command comes from a scheduler that lost track", given, current)
}

// wantStale fails unless err is the refusal of generation given against
// current, mapped to FailedPrecondition with that message.
func wantStale(t *testing.T, err error, given, current uint64) {
	t.Helper()
	if !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("err = %v, want a stale generation refusal", err)
	}
	st, _ := status.FromError(grpcError(err))
	if want := staleMessage(given, current); st.Code() != codes.FailedPrecondition || st.Message() != want {
		t.Fatalf("gRPC status = %v %q, want FailedPrecondition %q", st.Code(), st.Message(), want)
	}
}

// TestGenerationFence: the generation store of one container, stopped,
// at generation 4, through Stop: the commands a stopped container
// answers without a runtime.
func TestGenerationFence(t *testing.T) {
	for _, tt := range []struct {
		name string
		// cluster is the generation the node's registration gives web
		// (0: it does not place web here).
		cluster   uint64
		given     uint64
		wantStale uint64 // the current generation a refusal names; 0: accepted
		wantSaved uint64
	}{
		{name: "no generation: not fenced", given: 0, wantSaved: 4},
		{name: "the known generation", given: 4, wantSaved: 4},
		{name: "an older one is refused", given: 3, wantStale: 4, wantSaved: 4},
		{name: "the first generation after a move is refused", given: 1, wantStale: 4, wantSaved: 4},
		{name: "a newer one raises it: the scheduler is ahead", given: 6, wantSaved: 6},
		{name: "the cluster's newer word raises it", cluster: 5, given: 0, wantSaved: 5},
		{name: "the cluster's newer word refuses the known one", cluster: 5, given: 4, wantStale: 5, wantSaved: 5},
		{name: "the cluster's older word changes nothing", cluster: 2, given: 3, wantStale: 4, wantSaved: 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fence := &fakeFence{epoch: 2, generations: map[string]uint64{}}
			if tt.cluster != 0 {
				fence.generations[webID] = tt.cluster
			}
			a := fenceTestAgent(t, fence)
			storeWeb(t, a, StateStopped, 4, 1)
			_, err := a.Stop(withGeneration(context.Background(), tt.given), "web", 0)
			if tt.wantStale != 0 {
				wantStale(t, err, tt.given, tt.wantStale)
			} else if err != nil {
				t.Fatalf("refused: %v", err)
			}
			if got := savedGeneration(t, a); got != tt.wantSaved {
				t.Fatalf("saved generation = %d, want %d", got, tt.wantSaved)
			}
		})
	}
}

// TestGenerationFenceRefusesEveryCommand: a command of each kind with a
// stale generation is refused before it acts.
func TestGenerationFenceRefusesEveryCommand(t *testing.T) {
	for _, tt := range []struct {
		name string
		call func(context.Context, *Agent) error
	}{
		{"run", func(ctx context.Context, a *Agent) error {
			_, err := a.Run(ctx, RunRequest{Name: "web", Image: "busybox", ID: webID})
			return err
		}},
		{"start", func(ctx context.Context, a *Agent) error { _, err := a.Start(ctx, "web"); return err }},
		{"stop", func(ctx context.Context, a *Agent) error { _, err := a.Stop(ctx, "web", 0); return err }},
		{"remove", func(ctx context.Context, a *Agent) error { return a.Remove(ctx, "web", true) }},
		{"checkpoint", func(ctx context.Context, a *Agent) error {
			_, err := a.Checkpoint(ctx, "web", CheckpointRequest{})
			return err
		}},
		{"describe a migration", func(ctx context.Context, a *Agent) error {
			_, err := a.MigrateDescribe(ctx, "m-new", "web", migrate.StopCopy)
			return err
		}},
		{"dump for a migration", func(ctx context.Context, a *Agent) error {
			_, err := a.MigrateDump(ctx, "m-src", migrate.DumpOptions{Strategy: migrate.StopCopy})
			return err
		}},
		{"resume a migration's source", func(ctx context.Context, a *Agent) error {
			_, err := a.MigrateResume(ctx, "m-src", "aborted by the test")
			return err
		}},
		{"finish a migration's source", func(ctx context.Context, a *Agent) error {
			_, err := a.MigrateFinish(ctx, "m-src", "127.0.0.1:1")
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a := fenceTestAgent(t, &fakeFence{epoch: 2, generations: map[string]uint64{webID: 4}})
			if tt.name != "run" {
				storeWeb(t, a, StateStopped, 4, 1)
			}
			rec, _ := a.mig.journal.Get("m-src")
			err := tt.call(withGeneration(context.Background(), 3), a)
			wantStale(t, err, 3, 4)
			if after, _ := a.mig.journal.Get("m-src"); after.Phase != rec.Phase {
				t.Fatalf("m-src moved from %s to %s although refused", rec.Phase, after.Phase)
			}
			if _, err := a.mig.journal.Get("m-new"); !errors.Is(err, migrate.ErrUnknownMigration) {
				t.Fatalf("a refused describe recorded its migration: %v", err)
			}
			if tt.name != "run" {
				if e, err := a.lookup("web"); err != nil || e.c.State != StateStopped {
					t.Fatalf("web after a refused %s: %v", tt.name, err)
				}
			} else if len(a.containers) != 0 {
				t.Fatal("a refused run left a container")
			}
		})
	}
}

// TestRestartedAgentKeepsGenerations: the generation a command raised is
// in the container's record, and an agent started again on the same
// data dir refuses what the first would have.
func TestRestartedAgentKeepsGenerations(t *testing.T) {
	ctx := context.Background()
	a := fenceTestAgent(t, nil)
	storeWeb(t, a, StateStopped, 1, 0)
	if _, err := a.Stop(withGeneration(ctx, 5), "web", 0); err != nil {
		t.Fatal(err)
	}
	restarted := func() *Agent {
		b := &Agent{cfg: a.cfg, log: slog.New(slog.DiscardHandler), containers: map[string]*entry{}}
		if err := b.adopt(ctx); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := restarted()
	_, err := b.Stop(withGeneration(ctx, 4), "web", 0)
	wantStale(t, err, 4, 5)
	if _, err := b.Stop(withGeneration(ctx, 7), "web", 0); err != nil {
		t.Fatal(err)
	}
	_, err = restarted().Stop(withGeneration(ctx, 6), "web", 0)
	wantStale(t, err, 6, 7)
}

// TestStaleMigrateResume: a migration's source resumes its copy only
// while the command's generation is current and the cluster still
// places the container on this node; a lease alone is not enough.
func TestStaleMigrateResume(t *testing.T) {
	const movedAway = "stale generation 4 for container web on node t: the cluster moved it to another node (this node's registration 3 does not place it here)"
	for _, tt := range []struct {
		name string
		// fence: nil is a standalone agent; the node holds a valid lease
		// otherwise.
		fence         *fakeFence
		gen, arrival  uint64 // web's record
		given         uint64
		wantErr       string // a prefix of the refusal; "": resumed
		wantPhaseSame bool
	}{
		{name: "current generation, placed here", fence: &fakeFence{epoch: 3, generations: map[string]uint64{webID: 4}},
			gen: 4, arrival: 1, given: 4},
		{name: "older generation", fence: &fakeFence{epoch: 3, generations: map[string]uint64{webID: 4}},
			gen: 4, arrival: 1, given: 3, wantErr: staleMessage(3, 4)},
		{name: "the move committed elsewhere: the registration places it on another node", fence: &fakeFence{epoch: 3},
			gen: 4, arrival: 1, given: 4, wantErr: movedAway},
		{name: "the move committed elsewhere, and the command carries no generation", fence: &fakeFence{epoch: 3},
			gen: 4, arrival: 1, given: 0, wantErr: movedAway},
		{name: "the cluster placed it here at a newer generation", fence: &fakeFence{epoch: 3, generations: map[string]uint64{webID: 6}},
			gen: 4, arrival: 1, given: 0, wantErr: staleMessage(4, 6)},
		{name: "registered before the container came here: its absence says nothing", fence: &fakeFence{epoch: 3},
			gen: 4, arrival: 3, given: 4},
		{name: "a container the cluster never knew", fence: &fakeFence{epoch: 3}, gen: 0, arrival: 0, given: 0},
		{name: "standalone", gen: 4, arrival: 0, given: 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var fence Fence
			if tt.fence != nil {
				fence = tt.fence
			}
			a := fenceTestAgent(t, fence)
			storeWeb(t, a, StateCheckpointed, tt.gen, tt.arrival)
			phase, err := a.MigrateResume(withGeneration(context.Background(), tt.given), "m-src", "aborted by the test")
			if tt.wantErr == "" {
				if err != nil || phase != migrate.PhaseAborted {
					t.Fatalf("resume = %s, %v; want aborted (resumed), nil", phase, err)
				}
				return
			}
			st, _ := status.FromError(grpcError(err))
			if !errors.Is(err, ErrStaleGeneration) || st.Code() != codes.FailedPrecondition || !strings.HasPrefix(st.Message(), tt.wantErr) {
				t.Fatalf("resume = %v (%v); want FailedPrecondition %q...", err, st.Code(), tt.wantErr)
			}
			if rec, _ := a.mig.journal.Get("m-src"); rec.Phase != migrate.PhaseDump {
				t.Fatalf("m-src is %s after a refused resume, want still dumped", rec.Phase)
			}
		})
	}
}

// TestDestinationGenerations: the destination of a migration at
// generation 4 holds its restored copy at 4 until the commit, which
// records 5, and accepts a commit the cluster has already bumped; a
// stale abort does not drop a copy the cluster committed.
func TestDestinationGenerations(t *testing.T) {
	ctx := context.Background()
	t.Run("commit records the next generation", func(t *testing.T) {
		fence := &fakeFence{epoch: 3}
		a := fenceTestAgent(t, fence)
		storeWeb(t, a, StateMigrating, 4, 0)
		// Without a runtime the commit fails once it resumes the copy:
		// the generation is recorded before the copy runs.
		_, err := a.MigrateCommit(withGeneration(ctx, 4), "m-dst")
		if errors.Is(err, ErrStaleGeneration) {
			t.Fatal(err)
		}
		if got := savedGeneration(t, a); got != 5 {
			t.Fatalf("generation after the commit = %d, want 5", got)
		}
		if e, _ := a.lookup("web"); e.c.ArrivalEpoch != 3 {
			t.Fatalf("arrival epoch = %d, want the registration's 3", e.c.ArrivalEpoch)
		}
	})
	for _, tt := range []struct {
		name      string
		cluster   uint64 // the registration places web here at it; 0: not here
		call      func(context.Context, *Agent) error
		given     uint64
		wantStale uint64
	}{
		{"a commit the cluster bumped already", 5, func(ctx context.Context, a *Agent) error {
			_, err := a.MigrateCommit(ctx, "m-dst")
			return err
		}, 4, 0},
		{"a commit of an older move", 6, func(ctx context.Context, a *Agent) error {
			_, err := a.MigrateCommit(ctx, "m-dst")
			return err
		}, 4, 6},
		{"an abort of a copy the cluster committed", 5, func(ctx context.Context, a *Agent) error {
			_, err := a.MigrateAbort(ctx, "m-dst", "aborted by a deposed leader")
			return err
		}, 4, 5},
		{"a restore of a container the cluster placed here later", 6, func(ctx context.Context, a *Agent) error {
			_, err := a.MigrateRestore(ctx, "m-new-dst", migrate.RestoreOptions{Strategy: migrate.StopCopy})
			return err
		}, 4, 6},
		{"a prepare of a container the cluster placed here later", 6, func(ctx context.Context, a *Agent) error {
			_, _, err := a.MigratePrepare(ctx, "m-new-dst", migrate.Container{Name: "web", ID: webID}, migrate.StopCopy)
			return err
		}, 4, 6},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fence := &fakeFence{epoch: 3, generations: map[string]uint64{}}
			if tt.cluster != 0 {
				fence.generations[webID] = tt.cluster
			}
			a := fenceTestAgent(t, fence)
			if strings.Contains(tt.name, "later") {
				// Prepared (or not) but not restored: no copy here yet.
				rec := migrate.NewRecord("m-new-dst", migrate.StopCopy, time.Now())
				rec.Role, rec.Container, rec.ContainerID = migrate.RoleDestination, "web", webID
				if err := a.mig.journal.Put(rec); err != nil {
					t.Fatal(err)
				}
			} else {
				storeWeb(t, a, StateMigrating, 4, 0)
				rec, _ := a.mig.journal.Get("m-dst")
				rec.ContainerID = webID
				if err := a.mig.journal.Put(rec); err != nil {
					t.Fatal(err)
				}
			}
			err := tt.call(withGeneration(ctx, tt.given), a)
			if tt.wantStale == 0 {
				if errors.Is(err, ErrStaleGeneration) {
					t.Fatal(err)
				}
				if got := savedGeneration(t, a); got != tt.given+1 {
					t.Fatalf("generation after the commit = %d, want %d", got, tt.given+1)
				}
				return
			}
			wantStale(t, err, tt.given, tt.wantStale)
			if rec, _ := a.mig.journal.Get("m-dst"); rec.Phase != migrate.PhaseReady {
				t.Fatalf("m-dst is %s after a refused call, want still ready", rec.Phase)
			}
			if e, err := a.lookup("web"); !strings.Contains(tt.name, "later") && (err != nil || e.c.State != StateMigrating) {
				t.Fatalf("the held copy after a refused call: %v", err)
			}
		})
	}
}

// TestGenerationOverGRPC: a generation in the call's metadata reaches
// the fence, its refusal comes back as FailedPrecondition, which
// agentclient tells apart, and a malformed one is refused outright.
func TestGenerationOverGRPC(t *testing.T) {
	a := fenceTestAgent(t, &fakeFence{epoch: 3, generations: map[string]uint64{webID: 4}})
	storeWeb(t, a, StateCheckpointed, 4, 1)
	srv := grpc.NewServer(rpc.ServerOptions()...)
	a.Register(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), append(rpc.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := pb.NewAgentServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	_, err = client.StopContainer(rpc.WithGeneration(ctx, 3), &pb.StopContainerRequest{Ref: "web"})
	if st, _ := status.FromError(err); st.Code() != codes.FailedPrecondition || st.Message() != staleMessage(3, 4) {
		t.Fatalf("stale stop = %v, want FailedPrecondition %q", err, staleMessage(3, 4))
	}
	if !agentclient.IsStaleGeneration(err) {
		t.Fatalf("agentclient does not see a stale generation in %v", err)
	}
	c, err := client.StopContainer(rpc.WithGeneration(ctx, 4), &pb.StopContainerRequest{Ref: "web"})
	if err != nil || c.GetGeneration() != 4 {
		t.Fatalf("current stop = %v, generation %d; want the container at 4", err, c.GetGeneration())
	}
	if _, err := client.StopContainer(metadata.AppendToOutgoingContext(ctx, rpc.GenerationHeader, "four"), &pb.StopContainerRequest{Ref: "web"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed generation: %v, want InvalidArgument", err)
	}

	src := &agentclient.MigrationAgent{Client: client, Addr: l.Addr().String(), Generation: 3}
	if err := src.Resume(ctx, "m-src"); !errors.Is(err, agentclient.ErrStaleGeneration) || agentclient.IsStaleGeneration(errors.New("other")) {
		t.Fatalf("stale resume through the driver's client = %v, want ErrStaleGeneration", err)
	}
	src.Generation = 4
	if err := src.Resume(ctx, "m-src"); err != nil {
		t.Fatalf("current resume: %v", err)
	}
}
