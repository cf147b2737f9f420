package balance

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// Absolute floors of the stability tolerance: a container using next to
// nothing varies by more than any fraction of its level without its load
// changing in any way that matters to a node.
const (
	stableFloorMilliCPU = state.DefaultMilliCPU
	stableFloorMemory   = state.DefaultMemoryBytes
)

// estimate is what Plan knows of one container's load.
type estimate struct {
	// load is the level the container's samples have held since it last
	// changed: the mean of its stable stretch. Without samples it is the
	// container's effective request, the only guess there is.
	load state.Resources
	// measured: samples within the window gave load.
	measured bool
	// stableFor is how long the load has held its level: from the oldest
	// sample of the stretch to now.
	stableFor time.Duration
	// dirty is the latest sample's dirty rate (bytes per second), 0 when
	// unknown.
	dirty int64
}

// estimator reads samples; it reuses one buffer for every container.
type estimator struct {
	now       time.Time
	window    time.Duration
	tolerance float64
	buf       []point
}

// point is a sample with its time in nanoseconds: tens of thousands of
// containers' samples are read on every plan, and time.Time arithmetic
// was most of it.
type point struct {
	t               int64
	cpu, mem, dirty int64
}

// estimate returns the container's load from its samples: those within
// the window before now (a sample stamped after now counts as now), read
// from the newest back for as long as each stays within the tolerance of
// the mean of those after it. That mean is the load's level; the oldest
// sample kept tells how long the level has held. A container whose load
// tripled a minute ago is thus seen at its new level, steady for a
// minute, not at the average of before and after.
func (e *estimator) estimate(samples []Sample, request state.Resources) estimate {
	now := e.now.UnixNano()
	oldest := now - int64(e.window)
	e.buf = e.buf[:0]
	for _, s := range samples {
		t := min(s.Time.UnixNano(), now)
		if t >= oldest {
			e.buf = append(e.buf, point{t: t, cpu: s.MilliCPU, mem: s.MemoryBytes, dirty: s.DirtyBytesPerSecond})
		}
	}
	if len(e.buf) == 0 {
		return estimate{load: request.Effective()}
	}
	// Newest first; equal times by value, so that the order the samples
	// came in never matters. Samples usually come oldest first, with
	// distinct times: reversing them is enough.
	if strictlyAscending(e.buf) {
		slices.Reverse(e.buf)
	} else {
		slices.SortFunc(e.buf, func(a, b point) int {
			return cmp.Or(cmp.Compare(b.t, a.t), cmp.Compare(a.cpu, b.cpu), cmp.Compare(a.mem, b.mem), cmp.Compare(a.dirty, b.dirty))
		})
	}
	newest := e.buf[0]
	sumCPU, sumMem := float64(newest.cpu), float64(newest.mem)
	kept := 1
	for _, s := range e.buf[1:] {
		meanCPU, meanMem := sumCPU/float64(kept), sumMem/float64(kept)
		if !within(float64(s.cpu), meanCPU, e.tolerance, stableFloorMilliCPU) ||
			!within(float64(s.mem), meanMem, e.tolerance, stableFloorMemory) {
			break
		}
		sumCPU += float64(s.cpu)
		sumMem += float64(s.mem)
		kept++
	}
	return estimate{
		load: state.Resources{
			MilliCPU:    int64(math.Round(sumCPU / float64(kept))),
			MemoryBytes: int64(math.Round(sumMem / float64(kept))),
		},
		measured:  true,
		stableFor: time.Duration(now - e.buf[kept-1].t),
		dirty:     newest.dirty,
	}
}

// within reports whether x is within tolerance (a fraction) of level, or
// within floor of it, whichever is wider.
func within(x, level, tolerance, floor float64) bool {
	return math.Abs(x-level) <= max(tolerance*level, floor)
}

// stability is the weight a move's gain gets from how long the load has
// been steady: stableFor / StableFor, at most 1 (1 when StableFor is 0).
func stability(stableFor, need time.Duration) float64 {
	if need <= 0 {
		return 1
	}
	return min(1, max(0, float64(stableFor)/float64(need)))
}

// strictlyAscending reports whether the points' times strictly rise.
func strictlyAscending(ps []point) bool {
	for i := 1; i < len(ps); i++ {
		if ps[i].t <= ps[i-1].t {
			return false
		}
	}
	return true
}
