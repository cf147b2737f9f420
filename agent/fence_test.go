package agent

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/migrate"
)

// fakeFence is a lease gate whose answers the test sets: Check's error,
// and the last registration's epoch and generations (container ID to
// generation; a container missing is not placed on the node).
type fakeFence struct {
	err         error
	epoch       uint64
	generations map[string]uint64
}

func (f *fakeFence) Check() error { return f.err }

func (f *fakeFence) Placement(id string) (uint64, bool, uint64) {
	g, ok := f.generations[id]
	return g, ok, f.epoch
}

// leaseLapsed is the message the cluster link gives while a node has no
// lease.
const leaseLapsed = "node n1 has no valid lease with the scheduler since 2025-01-01T12:00:00Z: it starts, resumes and commits nothing until it has registered again"

// fenceTestAgent is an agent with an image store and a migration journal
// holding m-fresh (its source, not dumped yet), m-src (its source,
// dumped) and m-dst (its destination, ready to
// commit), enough for every fenced call to get past its fence and fail
// further on, or succeed, without a runtime.
func fenceTestAgent(t *testing.T, fence Fence) *Agent {
	t.Helper()
	a, _ := testAgent(t)
	a.cfg.Fence = fence
	a.containers = map[string]*entry{}
	var err error
	if a.images, err = image.Open(a.cfg.imagesDir(), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if a.mig.journal, err = migrate.OpenJournal(a.migrationsDir()); err != nil {
		t.Fatal(err)
	}
	a.mig.locks = map[string]*sync.Mutex{}
	for _, r := range []struct {
		id, role string
		phases   []migrate.Phase
	}{
		{"m-fresh", migrate.RoleSource, nil},
		{"m-src", migrate.RoleSource, []migrate.Phase{migrate.PhaseDump}},
		{"m-dst", migrate.RoleDestination, []migrate.Phase{migrate.PhaseTransfer, migrate.PhaseRestore, migrate.PhaseReady}},
	} {
		rec := migrate.NewRecord(r.id, migrate.StopCopy, time.Now())
		rec.Role, rec.Container = r.role, "web"
		for _, p := range r.phases {
			if _, err := rec.Advance(p, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if err := a.mig.journal.Put(rec); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

// fencedCalls are the calls that make a container run, and a
// migration's dump, each with the migration record it may move (empty:
// none).
var fencedCalls = []struct {
	name      string
	migration string
	call      func(context.Context, *Agent) error
}{
	{"run", "", func(ctx context.Context, a *Agent) error {
		_, err := a.Run(ctx, RunRequest{Name: "web", Image: "busybox"})
		return err
	}},
	{"start", "", func(ctx context.Context, a *Agent) error { _, err := a.Start(ctx, "web"); return err }},
	{"restore", "", func(ctx context.Context, a *Agent) error {
		_, err := a.Restore(ctx, RestoreRequest{Container: "web"})
		return err
	}},
	{"restore an archive", "", func(ctx context.Context, a *Agent) error {
		_, err := a.RestoreArchive(ctx, strings.NewReader("not an archive"), "web")
		return err
	}},
	{"migration source dumps", "m-fresh", func(ctx context.Context, a *Agent) error {
		_, err := a.MigrateDump(ctx, "m-fresh", migrate.DumpOptions{Strategy: migrate.StopCopy})
		return err
	}},
	{"migration source resumes", "m-src", func(ctx context.Context, a *Agent) error {
		_, err := a.MigrateResume(ctx, "m-src", "aborted by the test")
		return err
	}},
	{"migration destination commits", "m-dst", func(ctx context.Context, a *Agent) error {
		_, err := a.MigrateCommit(ctx, "m-dst")
		return err
	}},
}

func TestFenceRefusesWithoutALease(t *testing.T) {
	for _, tt := range fencedCalls {
		t.Run(tt.name, func(t *testing.T) {
			a := fenceTestAgent(t, &fakeFence{err: errors.New(leaseLapsed)})
			var before migrate.Phase
			if tt.migration != "" {
				rec, _ := a.mig.journal.Get(tt.migration)
				before = rec.Phase
			}
			err := tt.call(context.Background(), a)
			if !errors.Is(err, ErrFenced) {
				t.Fatalf("err = %v, want ErrFenced", err)
			}
			st, _ := status.FromError(grpcError(err))
			if st.Code() != codes.FailedPrecondition || st.Message() != leaseLapsed {
				t.Fatalf("gRPC status = %v %q, want FailedPrecondition with the fence's message %q", st.Code(), st.Message(), leaseLapsed)
			}
			if tt.migration != "" {
				if rec, _ := a.mig.journal.Get(tt.migration); rec.Phase != before {
					t.Fatalf("migration %s moved from %s to %s although refused", tt.migration, before, rec.Phase)
				}
			}
			if len(a.containers) != 0 {
				t.Fatalf("a refused call left %d containers", len(a.containers))
			}
		})
	}
}

func TestFenceLetsCallsThroughWithALeaseOrStandalone(t *testing.T) {
	for _, fence := range []struct {
		name  string
		fence Fence
	}{
		{"valid lease", &fakeFence{}},
		{"standalone", nil},
	} {
		for _, tt := range fencedCalls {
			t.Run(fence.name+"/"+tt.name, func(t *testing.T) {
				a := fenceTestAgent(t, fence.fence)
				// Each call fails further on, for want of an image, a
				// container or a runtime, or succeeds: never at the fence.
				if err := tt.call(context.Background(), a); errors.Is(err, ErrFenced) {
					t.Fatalf("refused by the fence: %v", err)
				}
			})
		}
	}
}

func TestFenceLetsARepeatedResumeThrough(t *testing.T) {
	a := fenceTestAgent(t, &fakeFence{})
	if _, err := a.MigrateResume(context.Background(), "m-src", "aborted by the test"); err != nil {
		t.Fatal(err)
	}
	// The lease lapses; the driver repeats its call after the resume was
	// done: it is answered, not refused, since nothing runs again.
	a.cfg.Fence = &fakeFence{err: errors.New(leaseLapsed)}
	if phase, err := a.MigrateResume(context.Background(), "m-src", "aborted by the test"); err != nil || phase != migrate.PhaseAborted {
		t.Fatalf("repeated resume = %s, %v; want aborted, nil", phase, err)
	}
}

// A lease that lapsed for a moment (the schedulers changing leaders)
// does not refuse a migration's dump once the node has registered: only
// a node that has not registered since its agent started does.
func TestFenceLetsADumpThroughOnceRegistered(t *testing.T) {
	a := fenceTestAgent(t, &fakeFence{err: errors.New(leaseLapsed), epoch: 3})
	_, err := a.MigrateDump(context.Background(), "m-fresh", migrate.DumpOptions{Strategy: migrate.StopCopy})
	if errors.Is(err, ErrFenced) {
		t.Fatalf("dump on a registered node whose lease lapsed: refused by the fence: %v", err)
	}
}
