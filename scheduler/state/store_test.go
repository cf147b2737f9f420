package state

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// write applies fn at index and fails the test on an error.
func write(t *testing.T, s *Store, index uint64, fn func(*Txn) error) {
	t.Helper()
	if err := s.Write(index, t0.Add(time.Duration(index)*time.Second), fn); err != nil {
		t.Fatalf("write at index %d: %v", index, err)
	}
}

func node(name string) *Node {
	return &Node{Name: name, Address: name + ":7001", Capacity: Resources{MilliCPU: 4000, MemoryBytes: 8 << 30},
		Health: HealthAlive, Schedulability: Schedulable, Epoch: 1}
}

func ctr(id, name, node string, cpu int64) *Container {
	return &Container{ID: id, Name: name, Node: node, Spec: ContainerSpec{Image: "busybox", Request: Resources{MilliCPU: cpu, MemoryBytes: cpu << 20}},
		Desired: DesiredRunning, Reported: ReportedRunning, Generation: 1}
}

func TestSnapshotIsolation(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error { return tx.PutNode(node("n1")) })
	before := s.Snapshot()
	write(t, s, 2, func(tx *Txn) error { return tx.PutNode(node("n2")) })
	after := s.Snapshot()

	if got := names(before.Nodes()); !slices.Equal(got, []string{"n1"}) {
		t.Errorf("snapshot taken before the write sees nodes %v, want [n1]", got)
	}
	if got := names(after.Nodes()); !slices.Equal(got, []string{"n1", "n2"}) {
		t.Errorf("snapshot after the write sees nodes %v, want [n1 n2]", got)
	}
	if before.Index() != 1 || after.Index() != 2 {
		t.Errorf("indexes: before %d after %d, want 1 and 2", before.Index(), after.Index())
	}
	if got := after.TableIndex(TableContainers); got != 0 {
		t.Errorf("containers table index %d, want 0 (never written)", got)
	}
}

func names(ns []*Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.Name)
	}
	return out
}

func TestWriteErrorKeepsNothing(t *testing.T) {
	s := NewStore()
	boom := errors.New("boom")
	err := s.Write(5, t0, func(tx *Txn) error {
		if err := tx.PutNode(node("n1")); err != nil {
			return err
		}
		tx.Emit(EventNodeRegistered, "n1", "", "")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Write returned %v, want the function's error", err)
	}
	snap := s.Snapshot()
	if len(snap.Nodes()) != 0 || snap.Index() != 0 {
		t.Errorf("after a failed write: %d nodes at index %d, want none at 0", len(snap.Nodes()), snap.Index())
	}
	if evs, _, _ := s.EventsSince(0); len(evs) != 0 {
		t.Errorf("a failed write published events %v", evs)
	}
}

func TestStoredRecordsAreCopies(t *testing.T) {
	s := NewStore()
	n := node("n1")
	n.Labels = map[string]string{"zone": "a"}
	write(t, s, 1, func(tx *Txn) error { return tx.PutNode(n) })
	n.Labels["zone"] = "changed"
	n.Address = "changed"
	got, _ := s.Snapshot().Node("n1")
	if got.Labels["zone"] != "a" || got.Address != "n1:7001" {
		t.Errorf("changing the value given to PutNode changed the stored node: %+v", got)
	}
}

func TestContainerRef(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error {
		for _, c := range []*Container{
			ctr("abc111", "web", "n1", 100),
			ctr("abc222", "db", "n1", 100),
			ctr("def333", "abc", "n1", 100), // a name that is also an ID prefix
		} {
			if err := tx.PutContainer(c); err != nil {
				return err
			}
		}
		return nil
	})
	snap := s.Snapshot()
	tests := []struct {
		name, ref, wantID string
		wantErr           error
		wantMsg           string
	}{
		{name: "exact ID", ref: "abc222", wantID: "abc222"},
		{name: "name", ref: "web", wantID: "abc111"},
		{name: "name wins over ID prefix", ref: "abc", wantID: "def333"},
		{name: "unique ID prefix", ref: "abc1", wantID: "abc111"},
		{name: "unique prefix of another", ref: "de", wantID: "def333"},
		{name: "ambiguous prefix", ref: "ab", wantErr: ErrAmbiguous, wantMsg: "matches 2 containers (abc111, abc222)"},
		{name: "unknown", ref: "zzz", wantErr: ErrNotFound, wantMsg: "godwit ps"},
		{name: "empty", ref: "", wantErr: ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := snap.Container(tt.ref)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantMsg) {
					t.Fatalf("Container(%q) = %v, %v; want an error wrapping %v saying %q", tt.ref, c, err, tt.wantErr, tt.wantMsg)
				}
				return
			}
			if err != nil || c.ID != tt.wantID {
				t.Fatalf("Container(%q) = %v, %v; want %s", tt.ref, c, err, tt.wantID)
			}
		})
	}
}

func TestPutContainerRefusals(t *testing.T) {
	s := NewStore()
	a := ctr("a", "web", "n1", 100)
	a.IP = netip.MustParseAddr("10.0.0.2")
	write(t, s, 1, func(tx *Txn) error { return tx.PutContainer(a) })

	tests := []struct {
		name    string
		c       *Container
		wantErr error
	}{
		{name: "name taken", c: ctr("b", "web", "n1", 100), wantErr: ErrNameTaken},
		{name: "address taken", c: func() *Container { c := ctr("b", "api", "n1", 100); c.IP = a.IP; return c }(), wantErr: ErrAddressTaken},
		{name: "same container again", c: a},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Write(2, t0, func(tx *Txn) error { return tx.PutContainer(tt.c) })
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("PutContainer = %v, want %v", err, tt.wantErr)
			}
		})
	}
	if n := len(s.Snapshot().Containers()); n != 1 {
		t.Errorf("%d containers after the refusals, want 1", n)
	}
}

func TestUsage(t *testing.T) {
	s := NewStore()
	running := ctr("r", "running", "n1", 100)
	exited := ctr("e", "exited", "n1", 200)
	exited.Reported = ReportedExited
	stopped := ctr("s", "stopped", "n1", 400)
	stopped.Desired = DesiredStopped
	lost := ctr("l", "lost", "n1", 800)
	lost.Reported = ReportedLost
	other := ctr("o", "other", "n2", 1600)
	write(t, s, 1, func(tx *Txn) error {
		for _, c := range []*Container{running, exited, stopped, lost, other} {
			if err := tx.PutContainer(c); err != nil {
				return err
			}
		}
		return nil
	})
	snap := s.Snapshot()
	// Running and exited-but-desired-running hold their reservation;
	// stopped and lost do not.
	if got, want := snap.Allocated("n1"), (Resources{MilliCPU: 300, MemoryBytes: 300 << 20}); got != want {
		t.Errorf("Allocated(n1) = %+v, want %+v", got, want)
	}
	if got := snap.ContainerCount("n1"); got != 4 {
		t.Errorf("ContainerCount(n1) = %d, want 4 (every state counts)", got)
	}
	if got := snap.Allocated("nowhere"); got != (Resources{}) {
		t.Errorf("Allocated of an unknown node = %+v, want zero", got)
	}

	// Stopping the running one and deleting the exited one free n1.
	write(t, s, 2, func(tx *Txn) error {
		c := running.Clone()
		c.Desired = DesiredStopped
		if err := tx.PutContainer(c); err != nil {
			return err
		}
		return tx.DeleteContainer("e")
	})
	snap = s.Snapshot()
	if got := snap.Allocated("n1"); got != (Resources{}) {
		t.Errorf("Allocated(n1) after stop and delete = %+v, want zero", got)
	}
	if got := snap.ContainerCount("n1"); got != 3 {
		t.Errorf("ContainerCount(n1) after a delete = %d, want 3", got)
	}
	if got := names2(snap.ContainersOn("n1")); !slices.Equal(got, []string{"lost", "running", "stopped"}) {
		t.Errorf("ContainersOn(n1) = %v, want sorted by name", got)
	}
}

func names2(cs []*Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func TestImages(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error {
		if _, _, err := tx.SetImages("n1", []Image{
			{Name: "busybox:latest", ID: "sha256:bb"},
			{Name: "alpine:3.20", ID: "sha256:al"},
		}); err != nil {
			return err
		}
		_, _, err := tx.SetImages("n2", []Image{{Name: "busybox:latest", ID: "sha256:bb"}})
		return err
	})
	snap := s.Snapshot()
	has := []struct {
		node, image string
		want        bool
	}{
		{"n1", "busybox:latest", true},
		{"n1", "busybox", true}, // no tag means :latest
		{"n1", "sha256:al", true},
		{"n1", "alpine", false}, // alpine:latest is not alpine:3.20
		{"n2", "alpine:3.20", false},
		{"n3", "busybox", false},
		{"n1", "", false},
	}
	for _, h := range has {
		if got := snap.HasImage(h.node, h.image); got != h.want {
			t.Errorf("HasImage(%q, %q) = %v, want %v", h.node, h.image, got, h.want)
		}
	}
	var all []string
	for _, img := range snap.Images("") {
		all = append(all, img.Node+"/"+img.Name)
	}
	if want := []string{"n1/alpine:3.20", "n1/busybox:latest", "n2/busybox:latest"}; !slices.Equal(all, want) {
		t.Errorf("Images(\"\") = %v, want %v", all, want)
	}
	var holders []string
	for _, img := range snap.ImageHolders("busybox") {
		holders = append(holders, img.Node)
	}
	if !slices.Equal(holders, []string{"n1", "n2"}) {
		t.Errorf("ImageHolders(busybox) = %v, want [n1 n2]", holders)
	}

	var added, removed []string
	write(t, s, 2, func(tx *Txn) error {
		var err error
		added, removed, err = tx.SetImages("n1", []Image{{Name: "busybox:latest", ID: "sha256:bb"}, {Name: "nginx:1", ID: "sha256:ng"}})
		return err
	})
	if !slices.Equal(added, []string{"nginx:1"}) || !slices.Equal(removed, []string{"alpine:3.20"}) {
		t.Errorf("SetImages: added %v removed %v, want [nginx:1] and [alpine:3.20]", added, removed)
	}
	if got := len(s.Snapshot().Images("n1")); got != 2 {
		t.Errorf("n1 has %d images after the replace, want 2", got)
	}

	// Deleting a node takes its images along.
	write(t, s, 3, func(tx *Txn) error {
		if err := tx.PutNode(node("n1")); err != nil {
			return err
		}
		return tx.DeleteNode("n1")
	})
	if got := len(s.Snapshot().Images("n1")); got != 0 {
		t.Errorf("n1 has %d images after its removal, want 0", got)
	}
}

func TestAudit(t *testing.T) {
	s := NewStore()
	for i := uint64(1); i <= 5; i++ {
		write(t, s, i, func(tx *Txn) error { return tx.AppendAudit(&AuditRecord{Index: i, Action: "run"}) })
	}
	snap := s.Snapshot()
	var got []uint64
	for _, r := range snap.Audit(3) {
		got = append(got, r.Index)
	}
	if !slices.Equal(got, []uint64{3, 4, 5}) {
		t.Errorf("Audit(3) = %v, want the last three, newest last", got)
	}
	if n := len(snap.Audit(0)); n != 5 {
		t.Errorf("Audit(0) returned %d records, want all 5", n)
	}
}

// TestConcurrentReaders shares one snapshot among goroutines while the
// writer goes on: run with -race. Each reader must keep seeing the state
// of its snapshot.
func TestConcurrentReaders(t *testing.T) {
	s := NewStore()
	write(t, s, 1, func(tx *Txn) error {
		if err := tx.PutNode(node("n1")); err != nil {
			return err
		}
		return tx.PutContainer(ctr("a", "web", "n1", 100))
	})
	snap := s.Snapshot()
	done := make(chan error)
	for range 4 {
		go func() {
			for range 200 {
				if n := len(snap.Nodes()); n != 1 {
					done <- fmt.Errorf("snapshot saw %d nodes, want 1", n)
					return
				}
				if got := snap.Allocated("n1").MilliCPU; got != 100 {
					done <- fmt.Errorf("snapshot saw %d mCPU allocated, want 100", got)
					return
				}
				_ = s.Snapshot().Containers()
			}
			done <- nil
		}()
	}
	for i := uint64(2); i < 100; i++ {
		write(t, s, i, func(tx *Txn) error {
			if err := tx.PutNode(node(fmt.Sprint("m", i))); err != nil {
				return err
			}
			return tx.PutContainer(ctr(fmt.Sprint("c", i), fmt.Sprint("c", i), "n1", 100))
		})
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
