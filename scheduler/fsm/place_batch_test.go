package fsm_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// TestPlaceContainersBatchAsOneByOne checks that a batch applied in one
// entry (one transaction, whose new containers and usage are written at
// its end) answers and leaves exactly what the same placements applied
// one entry each do: outcomes, errors, containers, addresses, usage and
// events.
func TestPlaceContainersBatchAsOneByOne(t *testing.T) {
	setup := func() *harness {
		h := newHarness(t)
		h.must(fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix("10.1.0.0/29"), At: t0}) // .2 to .6: 5 addresses
		for _, n := range []string{"n1", "n2", "n3"} {
			h.must(fsm.RegisterNode{Node: testNode(n), At: t0})
		}
		h.must(fsm.MarkNodeLost{Name: "n3", At: t0})
		h.place("old", "taken", "n1", 50)
		h.place("gone", "gone", "n2", 50)
		h.must(fsm.DeleteContainer{ID: "gone", At: t0}) // frees 10.1.0.3, below the others
		return h
	}
	var batch []fsm.NewContainer
	for i := range 16 {
		nc := fsm.NewContainer{ID: fmt.Sprint("c", i), Name: fmt.Sprint("web-", i), Node: []string{"n1", "n2"}[i%2], Spec: spec(int64(10 * i))}
		switch i {
		case 3:
			nc.Name = "taken" // by a container in the state
		case 4:
			nc.Name = "web-1" // by an earlier container of the batch
		case 5:
			nc.ID = "c2" // an earlier container of the batch
		case 6:
			nc.ID = "old" // a container in the state
		case 7:
			nc.Node = "n3" // down
		case 8:
			nc.Node = "n9" // unknown
		case 9:
			nc.Spec.Image = "" // invalid
		}
		batch = append(batch, nc)
	}

	together := setup()
	start := together.index
	got := together.must(fsm.PlaceContainers{Containers: batch, At: t0}).([]fsm.PlaceOutcome)
	apart := setup()
	var want []fsm.PlaceOutcome
	for _, nc := range batch {
		want = append(want, apart.must(fsm.PlaceContainers{Containers: []fsm.NewContainer{nc}, At: t0}).([]fsm.PlaceOutcome)...)
	}

	placed, full := 0, 0
	for i := range batch {
		if g, w := outcomeString(got[i]), outcomeString(want[i]); g != w {
			t.Errorf("container %d: in a batch %s, alone %s", i, g, w)
		}
		switch {
		case got[i].Err == nil:
			placed++
		case errors.Is(got[i].Err, state.ErrCIDRFull):
			full++
		}
	}
	// Seven are refused for themselves; of the nine others, four get the
	// addresses "old" leaves free, and five find none.
	if placed != 4 || full != 5 {
		t.Errorf("%d placed and %d refused for want of an address; want 4 and 5", placed, full)
	}
	if g, w := stateString(together), stateString(apart); g != w {
		t.Errorf("the states differ:\nbatch:    %s\none each: %s", g, w)
	}

	evs, _, err := together.f.Store().EventsSince(start)
	if err != nil {
		t.Fatal(err)
	}
	wantEvs, _, err := apart.f.Store().EventsSince(start)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != placed || len(wantEvs) != placed {
		t.Fatalf("%d and %d events, want one per placed container (%d)", len(evs), len(wantEvs), placed)
	}
	for i := range evs {
		e, w := evs[i], wantEvs[i]
		if e.Kind != w.Kind || e.Node != w.Node || e.Container != w.Container || e.Message != w.Message || !e.Time.Equal(w.Time) {
			t.Errorf("event %d: in a batch %+v, alone %+v", i, e, w)
		}
	}
	if want := "web-0 placed on n1 with address 10.1.0.3"; evs[0].Message != want {
		t.Errorf("first event says %q, want %q", evs[0].Message, want)
	}
}

func outcomeString(o fsm.PlaceOutcome) string {
	c, _ := json.Marshal(o.Container)
	return fmt.Sprintf("%s %v", c, o.Err)
}

// stateString is what the harness's state holds of containers and the
// nodes' usage.
func stateString(h *harness) string {
	snap := h.snap()
	out, _ := json.Marshal(snap.Containers())
	s := string(out)
	for _, n := range []string{"n1", "n2", "n3"} {
		s += fmt.Sprintf(" %s:%+v/%d", n, snap.Allocated(n), snap.ContainerCount(n))
	}
	return s
}

// TestPlaceContainersEntriesAsWritten applies PlaceContainers entries as
// godwit wrote them before they were MessagePack (its JSON, with and
// without escapes): both place their container.
func TestPlaceContainersEntriesAsWritten(t *testing.T) {
	entries := []struct {
		name, payload, wantName string
	}{
		{name: "plain", payload: `{"containers":[{"id":"c1","name":"web","spec":{"image":"busybox","args":["sleep","1000"],"request":{"milli_cpu":100,"memory_bytes":104857600}},"node":"n1"}],"at":"2025-03-01T12:00:00Z"}`,
			wantName: "web"},
		{name: "escaped", payload: `{"containers":[{"id":"c1","name":"web\u003c1\u003e","spec":{"image":"busybox","request":{"milli_cpu":100,"memory_bytes":0}},"node":"n1"}],"at":"2025-03-01T12:00:00Z"}`,
			wantName: "web<1>"},
	}
	for _, e := range entries {
		t.Run(e.name, func(t *testing.T) {
			h := cluster(t)
			res := h.applyData(append([]byte{byte(fsm.TypePlaceContainers)}, e.payload...))
			if res.Err != nil {
				t.Fatal(res.Err)
			}
			if out := res.Value.([]fsm.PlaceOutcome); out[0].Err != nil {
				t.Fatal(out[0].Err)
			}
			c := h.container("c1")
			if c.Name != e.wantName || c.Node != "n1" || c.IP.String() != "10.1.0.2" || !c.Created.Equal(t0) || c.Spec.Request.MilliCPU != 100 {
				t.Errorf("placed %+v, want %s on n1 at 10.1.0.2, created %v, 100 millicpu", c, e.wantName, t0)
			}
			if got := h.snap().Allocated("n1").MilliCPU; got != 100 {
				t.Errorf("n1 has %d millicpu allocated, want 100", got)
			}
		})
	}
}
