package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/server"
	"github.com/godwit/godwit/scheduler/state"
)

// The tests run every measurement at a tiny size (10 nodes, 100
// placements), so that the benchmark keeps working; they check what it
// measured, not how fast.

const (
	tinyNodes      = 10
	tinyPlacements = 100
	tinyContainers = 100
	tinyDecisions  = 20
	// tinyWhole bounds a whole-loop measurement in the tests: far more
	// than 100 placements need, so that they all go through.
	tinyWhole = time.Minute
)

// TestMain lets the memory test run this test binary as the benchmark's
// child process.
func TestMain(m *testing.M) {
	if code, ok := runChild(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func testLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

func tinyOptions() options {
	return options{
		batches: []int{1, 16}, callers: []int{1, 8}, paths: []path{pathRaftBolt, pathRaftMemory, pathFSM},
		placements: tinyPlacements, wholeDuration: tinyWhole, proposers: 4, runs: 1,
		nodes: tinyNodes, containers: tinyContainers, decisions: tinyDecisions,
		timing: server.FastRaftTiming(),
	}
}

func TestThroughput(t *testing.T) {
	o := tinyOptions()
	for _, p := range o.paths {
		for _, d := range []decide{decideAhead, decidePlace} {
			for _, batch := range o.batches {
				t.Run(string(p)+"/"+d.String()+"/batch="+strconv.Itoa(batch), func(t *testing.T) {
					cfg := loadConfig{decide: d, placements: tinyPlacements, batch: batch, proposers: o.proposers, nodes: o.nodes}
					if d == decidePlace {
						cfg.duration = tinyWhole
					}
					s, err := throughputOnce(context.Background(), p, cfg, o, t.TempDir(), testLog())
					if err != nil {
						t.Fatal(err)
					}
					if s.placements != tinyPlacements {
						t.Errorf("placed %d containers, want %d", s.placements, tinyPlacements)
					}
					if want := (tinyPlacements + batch - 1) / batch; s.entries != want || len(s.latencies) != want {
						t.Errorf("%d entries with %d latencies, want %d of each", s.entries, len(s.latencies), want)
					}
					if s.rate() <= 0 || s.elapsed <= 0 {
						t.Errorf("rate %.1f over %s: want a positive rate", s.rate(), s.elapsed)
					}
					if (d == decidePlace) != (s.placing > 0) {
						t.Errorf("placing time %s in the %s loop", s.placing, d)
					}
				})
			}
		}
	}
}

// TestThroughputServer measures the scheduler's placement queue: every
// call is placed, one latency each, in entries of several containers
// when callers wait together.
func TestThroughputServer(t *testing.T) {
	o := tinyOptions()
	for _, p := range wholeLoopPaths {
		for _, callers := range o.callers {
			t.Run(string(p)+"/callers="+strconv.Itoa(callers), func(t *testing.T) {
				cfg := loadConfig{decide: decideServer, placements: tinyPlacements, callers: callers, duration: tinyWhole, nodes: o.nodes}
				s, err := throughputOnce(context.Background(), p, cfg, o, t.TempDir(), testLog())
				if err != nil {
					t.Fatal(err)
				}
				if s.placements != tinyPlacements || len(s.latencies) != tinyPlacements {
					t.Errorf("placed %d containers with %d latencies, want %d of each", s.placements, len(s.latencies), tinyPlacements)
				}
				// One caller waits for each commit: an entry per call.
				// More share entries, unless the machine serves each
				// at once.
				if callers == 1 && s.entries != tinyPlacements || s.entries < 1 || s.entries > tinyPlacements {
					t.Errorf("%d entries for %d placements from %d callers", s.entries, tinyPlacements, callers)
				}
				if s.placing <= 0 || s.rate() <= 0 {
					t.Errorf("placing %s, rate %.1f: want both positive", s.placing, s.rate())
				}
			})
		}
	}
}

// TestPlacerReservesWhatIsNotCommitted places two batches on the same
// committed state, the first not committed yet: the second must not
// count on the room the first took.
func TestPlacerReservesWhatIsNotCommitted(t *testing.T) {
	ctx := context.Background()
	c := newDirect(testLog())
	const nodes = 2
	if err := fillNodes(ctx, c, nodes, 1); err != nil {
		t.Fatal(err)
	}
	room := clusterCapacity(nodes)
	pl := newPlacer(c.store(), placement.BinPack)
	specs := func(first, n int) []state.ContainerSpec {
		out := make([]state.ContainerSpec, n)
		for i := range out {
			out[i] = simSpec(first + i)
		}
		return out
	}
	first, _, err := pl.place(0, specs(0, room-1))
	if err != nil {
		t.Fatalf("place %d of room for %d: %v", room-1, room, err)
	}
	if _, _, err := pl.place(room, specs(room, 2)); !errors.Is(err, placement.ErrNoNode) {
		t.Fatalf("placing 2 more with room for 1 left (the first batch pending) = %v, want placement.ErrNoNode", err)
	}
	// The refused batch gave back what it reserved: the last place is
	// still there.
	last, _, err := pl.place(room, specs(room, 1))
	if err != nil {
		t.Fatalf("place the last container: %v", err)
	}
	for _, b := range [][]fsm.NewContainer{first, last} {
		pl.release(b)
	}
	if n := pl.held.Len(); n != 0 {
		t.Errorf("%d reservations left after every batch was released", n)
	}
}

func TestMemoryChild(t *testing.T) {
	dir := t.TempDir()
	res, err := measureMemory(context.Background(), memoryConfig{Nodes: tinyNodes, Containers: tinyContainers, Dir: dir, FastRaft: true}, testLog())
	if err != nil {
		t.Fatal(err)
	}
	if res.Nodes != tinyNodes || res.Containers != tinyContainers {
		t.Errorf("the child measured %d nodes and %d containers, want %d and %d", res.Nodes, res.Containers, tinyNodes, tinyContainers)
	}
	for name, st := range map[string]memoryState{"before": res.Before, "after": res.After, "settled": res.Settled} {
		if st.RSS <= 0 || st.RSSAnon <= 0 || st.HeapAlloc == 0 || st.Sys == 0 {
			t.Errorf("memory %s the fill: %+v, want every figure positive", name, st)
		}
	}
	if res.Peak < res.After.RSS || res.Peak < res.Before.RSS {
		t.Errorf("peak %d below a resident size read (before %d, after %d)", res.Peak, res.Before.RSS, res.After.RSS)
	}
	if res.SnapshotBytes <= 0 || res.RaftDirBytes <= 0 {
		t.Errorf("snapshot %d bytes, raft dir %d bytes: want both positive", res.SnapshotBytes, res.RaftDirBytes)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("the child left %v in its work dir (%v)", left, err)
	}
}

func TestPlacementAlone(t *testing.T) {
	o := tinyOptions()
	got, err := measureAllPlacement(context.Background(), o, testLog())
	if err != nil {
		t.Fatal(err)
	}
	for _, alg := range algorithms {
		for _, v := range views {
			ss := got[placementKey{alg, v}]
			if len(ss) != o.runs || ss[0].decisions != tinyDecisions || ss[0].perDecision() <= 0 {
				t.Errorf("%s through %s: %+v, want %d run of %d decisions", alg, v, ss, o.runs, tinyDecisions)
			}
		}
	}
}

// TestMapViewDecidesAsTheSnapshot checks the maps' row measures the same
// decisions: placement on the map copy and on the snapshot choose the
// same nodes.
func TestMapViewDecidesAsTheSnapshot(t *testing.T) {
	ctx := context.Background()
	c := newDirect(testLog())
	if err := fillNodes(ctx, c, tinyNodes, 1); err != nil {
		t.Fatal(err)
	}
	if err := fillContainers(ctx, c, tinyNodes, tinyContainers); err != nil {
		t.Fatal(err)
	}
	snap := c.store().Snapshot()
	maps := newMapView(snap)
	for _, alg := range algorithms {
		req := placement.Request{Spec: simSpec(0), Algorithm: alg}
		want, err := placement.Place(snap, req)
		if err != nil {
			t.Fatal(err)
		}
		got, err := placement.Place(maps, req)
		if err != nil {
			t.Fatal(err)
		}
		if got.Node != want.Node || len(got.Candidates) != len(want.Candidates) {
			t.Errorf("%s: the map view chose %s of %d candidates, the snapshot %s of %d", alg, got.Node, len(got.Candidates), want.Node, len(want.Candidates))
		}
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name, status string
		want         map[string]int64
		wantErr      string
	}{
		{"fields in bytes", "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\nRssAnon:\t 512 kB\nThreads:\t5\n",
			map[string]int64{"VmHWM": 2 << 20, "VmRSS": 1 << 20, "RssAnon": 512 << 10}, ""},
		{"no VmRSS (a kernel thread)", "Name:\tkthreadd\nThreads:\t1\n", nil, "no VmRSS"},
		{"not a number", "VmRSS:\t lots kB\nVmHWM:\t 1 kB\n", nil, "VmRSS"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStatus([]byte(tc.status))
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("parseStatus = %v, want error containing %q", err, tc.wantErr)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %d, want %d", k, got[k], v)
				}
			}
		})
	}
}

func TestStatistics(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 100}
	tests := []struct {
		name      string
		got, want time.Duration
	}{
		{"median, lower middle of an even count", median(ds), 3},
		{"p50", percentile(ds, 50), 3},
		{"p99 is the largest of few", percentile(ds, 99), 100},
		{"p1 is the smallest", percentile(ds, 1), 1},
		{"none", percentile(nil, 99), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %d, want %d", tc.got, tc.want)
			}
		})
	}
}

func TestReportVerdicts(t *testing.T) {
	o := tinyOptions()
	o.batches, o.callers = []int{64}, []int{256}
	sample := func(placements int) []throughputSample {
		return []throughputSample{{placements: placements, entries: 1, elapsed: time.Second, latencies: []time.Duration{time.Millisecond}, cpu: time.Second}}
	}
	r := report{opts: o, throughput: map[throughputKey][]throughputSample{
		{decide: decideServer, callers: 256, path: pathRaftBolt}: sample(4000),
		{decide: decidePlace, batch: 64, path: pathRaftBolt}:     sample(900),
		{decide: decideAhead, batch: 64, path: pathRaftBolt}:     sample(6000),
		{decide: decideAhead, batch: 64, path: pathFSM}:          sample(12000),
	}, memory: []memoryResult{{Nodes: 1000, Containers: 30000, After: memoryState{RSS: 200 << 20}, Peak: 600 << 20}}}
	text := r.render()
	for _, want := range []string{
		"through the scheduler's placement queue (what Run calls): NOT met, 4000 a second (256 callers)",
		"the benchmark's own loop, placement included: NOT met, 900 a second (batches of 64)",
		"| 256 | raft, 3 voters, bolt (fsync) | 4000 | 4000–4000 | 1.0 ms | 1.0 ms | 250 µs | 4000.0 | 0% | 0% |",
		"the nodes chosen ahead (raft and the FSM alone): met, 6000 a second",
		// Over the target at the peak misses it, however low it settles.
		"NOT met, 200.0 MiB after the fill (600.0 MiB at the peak)",
		"| 64 | raft, 3 voters, bolt (fsync) | 6000 | 6000–6000 | 1.0 ms | 1.0 ms | 167 µs | 50% |",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the report lacks %q:\n%s", want, text)
		}
	}
}

func TestOptionsCheck(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*options)
		wantErr string
	}{
		{"tiny is fine", func(*options) {}, ""},
		{"no runs", func(o *options) { o.runs = 0 }, "--runs 0"},
		{"more placements than round robin holds", func(o *options) { o.placements = roundRobinCapacity(o.nodes) + 1 }, "do not fit on 10 nodes round robin"},
		{"more containers than round robin holds", func(o *options) { o.containers = roundRobinCapacity(o.nodes) + 1 }, "--containers"},
		{"no time for the whole loop", func(o *options) { o.wholeDuration = 0 }, "--whole-duration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := tinyOptions()
			tc.change(&o)
			err := o.check()
			if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("check = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}
