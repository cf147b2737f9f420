package main

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"time"

	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/server"
	"github.com/godwit/godwit/scheduler/state"
)

// algorithms are the placement algorithms measured alone.
var algorithms = []placement.Algorithm{placement.BinPack, placement.Spread}

// view is what placement reads the state through.
type view string

const (
	// viewSnapshot: a placement.Table read from a state.Snapshot taken
	// for each decision, as the leader's Placer reads one for a Run that
	// has a batch to itself.
	viewSnapshot view = "placement.Table of a state.Snapshot, one per decision"
	// viewBatch: one Table for server.DefaultMaxPlaceBatch decisions, as
	// the leader's Placer reads one for a full batch.
	viewBatch view = "placement.Table of a state.Snapshot, one per 256 decisions"
	// viewMaps: the same state copied once into Go maps (untimed), placed
	// on directly: every node evaluated anew for each decision, reading
	// the state costing next to nothing.
	viewMaps view = "Go maps, every node anew"
)

// views are the placement-alone rows, in the report's order.
var views = []view{viewSnapshot, viewBatch, viewMaps}

// placementKey names one row of the placement table.
type placementKey struct {
	alg  placement.Algorithm
	view view
}

// placementSample is one run of the placement-alone measurement.
type placementSample struct {
	decisions int
	elapsed   time.Duration
	// allocs and bytes are the heap allocations of all the decisions.
	allocs, bytes uint64
}

func (s placementSample) perDecision() time.Duration {
	return s.elapsed / time.Duration(s.decisions)
}

// measureAllPlacement fills an FSM (no raft) with o.nodes nodes and
// o.containers containers, then times o.decisions placements with each
// algorithm through each view, o.runs times.
func measureAllPlacement(ctx context.Context, o options, log *slog.Logger) (map[placementKey][]placementSample, error) {
	c := newDirect(quiet(log))
	if err := fillNodes(ctx, c, o.nodes, 1); err != nil {
		return nil, fmt.Errorf("register %d nodes: %w", o.nodes, err)
	}
	if err := fillContainers(ctx, c, o.nodes, o.containers); err != nil {
		return nil, err
	}
	maps := newMapView(c.store().Snapshot())
	var batchTable *placement.Table
	var batchUsed int
	read := map[view]func() placement.State{
		viewSnapshot: func() placement.State { return placement.NewTable(c.store().Snapshot()) },
		viewBatch: func() placement.State {
			if batchUsed%server.DefaultMaxPlaceBatch == 0 {
				batchTable = placement.NewTable(c.store().Snapshot())
			}
			batchUsed++
			return batchTable
		},
		viewMaps: func() placement.State { return maps },
	}
	out := map[placementKey][]placementSample{}
	for i := range o.runs {
		for k := range algorithms {
			alg := algorithms[(i+k)%len(algorithms)]
			for _, v := range views {
				batchUsed = 0
				s, err := measurePlacement(ctx, read[v], alg, o.containers, o.decisions)
				if err != nil {
					return nil, fmt.Errorf("placement alone, %s through %s, run %d: %w", alg, v, i+1, err)
				}
				log.Info("measured placement", "algorithm", alg, "view", v, "per_decision", s.perDecision(), "run", i+1, "of", o.runs)
				key := placementKey{alg: alg, view: v}
				out[key] = append(out[key], s)
			}
		}
	}
	return out, nil
}

// measurePlacement times n decisions for containers first, first+1 ...,
// each on the state read returns, without committing them (reserved on a
// Table).
func measurePlacement(ctx context.Context, read func() placement.State, alg placement.Algorithm, first, n int) (placementSample, error) {
	reqs := make([]placement.Request, n)
	for i := range reqs {
		reqs[i] = placement.Request{Spec: simSpec(first + i), Algorithm: alg}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	for i, req := range reqs {
		if err := ctx.Err(); err != nil {
			return placementSample{}, err
		}
		s := read()
		d, err := placement.Place(s, req)
		if err != nil {
			return placementSample{}, err
		}
		if d.Node == "" {
			return placementSample{}, fmt.Errorf("placement chose no node for container %d", first+i)
		}
		// On a Table, as the Placer does, each decision is reserved
		// before the next.
		if t, ok := s.(*placement.Table); ok {
			t.Add(d.Node, req.Spec.Request)
		}
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	return placementSample{decisions: n, elapsed: elapsed, allocs: after.Mallocs - before.Mallocs, bytes: after.TotalAlloc - before.TotalAlloc}, nil
}

// mapView is a snapshot's nodes, reservations and images copied into Go
// maps: a placement.State whose reads cost a map lookup.
type mapView struct {
	nodes     []*state.Node
	allocated map[string]state.Resources
	count     map[string]int
	images    map[string]map[string]bool
}

func newMapView(snap *state.Snapshot) *mapView {
	m := &mapView{nodes: snap.Nodes(), allocated: map[string]state.Resources{}, count: map[string]int{}, images: map[string]map[string]bool{}}
	for _, n := range m.nodes {
		m.allocated[n.Name] = snap.Allocated(n.Name)
		m.count[n.Name] = snap.ContainerCount(n.Name)
	}
	for _, img := range snap.Images("") {
		if m.images[img.Node] == nil {
			m.images[img.Node] = map[string]bool{}
		}
		m.images[img.Node][img.Name] = true
	}
	return m
}

func (m *mapView) Nodes() []*state.Node                  { return m.nodes }
func (m *mapView) Allocated(node string) state.Resources { return m.allocated[node] }
func (m *mapView) ContainerCount(node string) int        { return m.count[node] }

// HasImage matches the image's name exactly: the benchmark's image names
// its tag, so the snapshot's other ways of naming it do not arise.
func (m *mapView) HasImage(node, image string) bool { return m.images[node][image] }
