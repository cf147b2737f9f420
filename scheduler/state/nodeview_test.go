package state

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// randomState fills s with nodes, containers in every desired and
// reported state (some on nodes never registered), images named every
// way an agent names them, and deletions, in several writes. It returns
// the node names and image references a test should ask about, unknown
// ones included.
func randomState(t *testing.T, s *Store, rng *rand.Rand) (nodes, refs []string) {
	t.Helper()
	const nodeCount, containerCount, writes = 12, 300, 6
	for i := range nodeCount {
		nodes = append(nodes, fmt.Sprintf("n%02d", i))
	}
	// Every way a reference can look: untagged, tagged, tagged :latest, a
	// registry with a port, a digest, a tag named like latest.
	names := []string{
		"busybox", "busybox:latest", "busybox:1.36", "alpine:latest", "alpine",
		"registry.example.com:5000/shop/api", "registry.example.com:5000/shop/api:latest",
		"registry.example.com:5000/shop/api:2", "localhost:5000/x", "x@sha256:abcd",
		"y@sha256:abcd:latest", "z:v1:latest", "latest", ":latest", "nginx:latestish",
	}
	ids := []string{"", "sha256:aaaa", "sha256:bbbb", "sha256:cccc", "abcd"}
	desired := []DesiredState{DesiredRunning, DesiredStopped}
	reported := []ReportedState{ReportedPending, ReportedCreated, ReportedRunning, ReportedStopped, ReportedExited, ReportedMigrating, ReportedLost}
	onNode := func() string {
		if rng.IntN(10) == 0 {
			return "gone" // a container whose node is not registered
		}
		return nodes[rng.IntN(len(nodes))]
	}

	index := uint64(1)
	write(t, s, index, func(tx *Txn) error {
		for _, n := range nodes {
			if err := tx.PutNode(node(n)); err != nil {
				return err
			}
		}
		return nil
	})
	var live []string
	for w := range writes {
		index++
		write(t, s, index, func(tx *Txn) error {
			for k := range containerCount / writes {
				c := ctr(fmt.Sprintf("c%d-%d", w, k), fmt.Sprintf("name-%d-%d", w, k), onNode(), rng.Int64N(2000))
				c.Spec.Request.MemoryBytes = rng.Int64N(3) << 28 // some zero: the defaults count
				c.Desired, c.Reported = desired[rng.IntN(len(desired))], reported[rng.IntN(len(reported))]
				if err := tx.PutContainer(c); err != nil {
					return err
				}
				live = append(live, c.ID)
			}
			// Delete some, and move or change others.
			for range containerCount / writes / 4 {
				i := rng.IntN(len(live))
				if rng.IntN(2) == 0 {
					if err := tx.DeleteContainer(live[i]); err != nil {
						return err
					}
					live = append(live[:i], live[i+1:]...)
					continue
				}
				old, _ := tx.ContainerByID(live[i])
				c := old.Clone()
				c.Node, c.Desired = onNode(), desired[rng.IntN(len(desired))]
				if err := tx.PutContainer(c); err != nil {
					return err
				}
			}
			for _, n := range nodes {
				if rng.IntN(3) == 0 {
					continue // keeps its images
				}
				var imgs []Image
				for _, name := range names {
					if rng.IntN(3) == 0 {
						imgs = append(imgs, Image{Name: name, ID: ids[rng.IntN(len(ids))]})
					}
				}
				if _, _, err := tx.SetImages(n, imgs); err != nil {
					return err
				}
			}
			return nil
		})
	}
	refs = append(refs, names...)
	refs = append(refs, ids...)
	refs = append(refs, "busybox:latest:latest", "registry.example.com:5000/shop", "sha256", "unknown")
	return append(nodes, "gone", "never", ""), refs
}

// TestSnapshotViewAnswersAsTheTables compares a snapshot's answers, read
// from its node view, with the same questions asked of the tables
// directly, on random states.
func TestSnapshotViewAnswersAsTheTables(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			s := NewStore()
			nodes, refs := randomState(t, s, rand.New(rand.NewPCG(seed, seed)))
			snap := s.Snapshot()
			tables := snap.reader // reads memdb on every call
			listed := snap.Nodes()
			if got, want := names(listed), names(tables.Nodes()); !slices.Equal(got, want) {
				t.Errorf("Nodes() = %v from the view, %v from the tables", got, want)
			}
			// The list is the caller's: changing it changes no other.
			listed[0] = nil
			if again := snap.Nodes(); again[0] == nil {
				t.Error("Nodes() returned the view's own list: a caller changed it for every other")
			}
			var holders int
			for _, n := range nodes {
				if got, want := snap.Allocated(n), tables.Allocated(n); got != want {
					t.Errorf("Allocated(%q) = %+v from the view, %+v from the tables", n, got, want)
				}
				if got, want := snap.ContainerCount(n), tables.ContainerCount(n); got != want {
					t.Errorf("ContainerCount(%q) = %d from the view, %d from the tables", n, got, want)
				}
				for _, ref := range refs {
					got, want := snap.HasImage(n, ref), tables.HasImage(n, ref)
					if got != want {
						t.Errorf("HasImage(%q, %q) = %t from the view, %t from the tables", n, ref, got, want)
					}
					if want {
						holders++
					}
				}
			}
			// The comparison means something only if both answers occur.
			if holders == 0 || snap.Allocated(nodes[0]) == (Resources{}) && snap.Allocated(nodes[1]) == (Resources{}) {
				t.Fatalf("the random state holds no images or no reservations: the test compares nothing")
			}
		})
	}
}

// TestSnapshotViewIsTheSnapshots checks that a view built after later
// writes still answers for the snapshot's own moment, and that one built
// before them does not change.
func TestSnapshotViewIsTheSnapshots(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error {
		if err := tx.PutNode(node("n1")); err != nil {
			return err
		}
		_, _, err := tx.SetImages("n1", []Image{{Name: "busybox:latest", ID: "sha256:1"}})
		return err
	})
	write(t, s, 2, func(tx *Txn) error { return tx.PutContainer(ctr("a", "a", "n1", 500)) })
	early := s.Snapshot() // read before the next write
	early.Allocated("n1")
	late := s.Snapshot() // read only after it
	write(t, s, 3, func(tx *Txn) error {
		if err := tx.PutContainer(ctr("b", "b", "n1", 300)); err != nil {
			return err
		}
		_, _, err := tx.SetImages("n1", nil)
		return err
	})
	now := s.Snapshot()

	for _, tc := range []struct {
		name     string
		snap     *Snapshot
		milliCPU int64
		count    int
		busybox  bool
	}{
		{"view built before the write", early, 500, 1, true},
		{"view built after the write", late, 500, 1, true},
		{"snapshot after the write", now, 800, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.snap.Allocated("n1").MilliCPU; got != tc.milliCPU {
				t.Errorf("Allocated(n1) = %d milli-CPU, want %d", got, tc.milliCPU)
			}
			if got := tc.snap.ContainerCount("n1"); got != tc.count {
				t.Errorf("ContainerCount(n1) = %d, want %d", got, tc.count)
			}
			if got := tc.snap.HasImage("n1", "busybox"); got != tc.busybox {
				t.Errorf("HasImage(n1, busybox) = %t, want %t", got, tc.busybox)
			}
		})
	}
}

// TestSnapshotViewConcurrentReaders reads one fresh snapshot from many
// goroutines at once: the view is built once and every reader sees it
// whole (run with -race).
func TestSnapshotViewConcurrentReaders(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error {
		for i := range 50 {
			n := fmt.Sprintf("n%d", i)
			if err := tx.PutNode(node(n)); err != nil {
				return err
			}
			if err := tx.PutContainer(ctr("c"+n, "c"+n, n, int64(i+1))); err != nil {
				return err
			}
		}
		return nil
	})
	snap := s.Snapshot()
	const readers = 8
	var wg sync.WaitGroup
	errs := make(chan string, readers*50)
	for r := range readers {
		wg.Go(func() {
			for i := range 50 {
				n := fmt.Sprintf("n%d", (i+r)%50)
				if got := snap.Allocated(n).MilliCPU; got != int64((i+r)%50+1) {
					errs <- fmt.Sprintf("reader %d: Allocated(%s) = %d milli-CPU, want %d", r, n, got, (i+r)%50+1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// BenchmarkSnapshotReads measures what placement pays per node on a
// fresh snapshot: the view's build, spread over the nodes asked, and the
// lookups.
func BenchmarkSnapshotReads(b *testing.B) {
	const nodes, perNode = 1000, 30
	s := NewStore()
	if err := s.Write(1, t0, func(tx *Txn) error {
		for i := range nodes {
			n := fmt.Sprintf("node-%04d", i)
			if err := tx.PutNode(node(n)); err != nil {
				return err
			}
			for k := range perNode {
				if err := tx.PutContainer(ctr(fmt.Sprintf("%s-%d", n, k), fmt.Sprintf("%s-%d", n, k), n, 100)); err != nil {
					return err
				}
			}
			if i%3 == 0 {
				if _, _, err := tx.SetImages(n, []Image{{Name: "registry.example.com/shop/api:1.4.2", ID: "sha256:1"}}); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	names := []string{"node-0000"}
	for _, bc := range []struct {
		name        string
		fresh, read bool
	}{{"build only", true, false}, {"fresh snapshot", true, true}, {"same snapshot", false, true}} {
		b.Run(bc.name, func(b *testing.B) {
			snap := s.Snapshot()
			for b.Loop() {
				if bc.fresh {
					snap = s.Snapshot()
				}
				if !bc.read {
					_ = snap.Allocated(names[0])
					continue
				}
				for _, n := range snap.Nodes() {
					_ = snap.Allocated(n.Name)
					_ = snap.ContainerCount(n.Name)
					_ = snap.HasImage(n.Name, "registry.example.com/shop/api:1.4.2")
				}
			}
		})
	}
}
