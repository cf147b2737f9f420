package balance

import (
	"math"

	"github.com/godwit/godwit/scheduler/state"
)

// Usage is one node's use against its capacity.
type Usage struct {
	Capacity state.Resources `json:"capacity"`
	Used     state.Resources `json:"used"`
}

// Measure is an imbalance and its two parts.
type Measure struct {
	// Imbalance is the weighted root mean square of CPU and Memory:
	// sqrt((wc CPU² + wm Memory²) / (wc + wm)).
	Imbalance float64 `json:"imbalance"`
	// CPU and Memory are the coefficients of variation of the nodes' CPU
	// and memory utilisation (used / capacity): the standard deviation
	// over the mean, the mean taken as at least Policy.MeanFloor.
	CPU    float64 `json:"cpu"`
	Memory float64 `json:"memory"`
}

// GainScale turns a reduction of the squared imbalance into a Move's
// gain: gain = GainScale x nodes x (before² - after²). See Move.Gain.
const GainScale = 100

// Imbalance measures nodes with the policy's CPUWeight, MemoryWeight and
// MeanFloor. Every node counts; a node without capacity in a dimension
// counts as unused in it (Plan leaves such nodes out). Fewer than two
// nodes are balanced.
func Imbalance(nodes []Usage, p Policy) Measure {
	var m metric
	m.reset(len(nodes), p)
	for _, n := range nodes {
		m.add(utilisation(n.Used, n.Capacity))
	}
	return m.measure()
}

// util is a node's utilisation in both dimensions.
type util struct{ cpu, mem float64 }

func utilisation(used, capacity state.Resources) util {
	var u util
	if capacity.MilliCPU > 0 {
		u.cpu = float64(used.MilliCPU) / float64(capacity.MilliCPU)
	}
	if capacity.MemoryBytes > 0 {
		u.mem = float64(used.MemoryBytes) / float64(capacity.MemoryBytes)
	}
	return u
}

// metric holds the sums the imbalance is computed from, so that the
// effect of one move (two nodes' utilisations changing) costs O(1).
type metric struct {
	n        float64
	wc, wm   float64
	floor    float64
	s1c, s2c float64
	s1m, s2m float64
}

func (m *metric) reset(nodes int, p Policy) {
	*m = metric{n: float64(nodes), wc: p.CPUWeight, wm: p.MemoryWeight, floor: p.MeanFloor}
}

func (m *metric) add(u util) {
	m.s1c += u.cpu
	m.s2c += u.cpu * u.cpu
	m.s1m += u.mem
	m.s2m += u.mem * u.mem
}

// cv2 is the squared coefficient of variation from the sums of n
// values and of their squares, the mean taken as at least floor.
func cv2(n, s1, s2, floor float64) float64 {
	if n < 2 || s1 <= 0 {
		return 0
	}
	mean := s1 / n
	v := s2/n - mean*mean
	if v <= 0 {
		// Rounding: equal utilisations may leave a tiny negative.
		return 0
	}
	d := max(mean, floor)
	return v / (d * d)
}

// squared is the squared imbalance.
func (m *metric) squared() float64 {
	return m.weigh(cv2(m.n, m.s1c, m.s2c, m.floor), cv2(m.n, m.s1m, m.s2m, m.floor))
}

func (m *metric) weigh(c2, m2 float64) float64 {
	if w := m.wc + m.wm; w > 0 {
		return (m.wc*c2 + m.wm*m2) / w
	}
	return 0
}

func (m *metric) measure() Measure {
	c2, m2 := cv2(m.n, m.s1c, m.s2c, m.floor), cv2(m.n, m.s1m, m.s2m, m.floor)
	return Measure{Imbalance: math.Sqrt(m.weigh(c2, m2)), CPU: math.Sqrt(c2), Memory: math.Sqrt(m2)}
}

// squaredAfter is the squared imbalance once two nodes' utilisations
// change from a0 to a1 and from b0 to b1.
func (m *metric) squaredAfter(a0, a1, b0, b1 util) float64 {
	s1c := m.s1c - a0.cpu - b0.cpu + a1.cpu + b1.cpu
	s2c := m.s2c - a0.cpu*a0.cpu - b0.cpu*b0.cpu + a1.cpu*a1.cpu + b1.cpu*b1.cpu
	s1m := m.s1m - a0.mem - b0.mem + a1.mem + b1.mem
	s2m := m.s2m - a0.mem*a0.mem - b0.mem*b0.mem + a1.mem*a1.mem + b1.mem*b1.mem
	return m.weigh(cv2(m.n, s1c, s2c, m.floor), cv2(m.n, s1m, s2m, m.floor))
}

// means returns the mean CPU and memory utilisation.
func (m *metric) means() util {
	if m.n == 0 {
		return util{}
	}
	return util{cpu: m.s1c / m.n, mem: m.s1m / m.n}
}

// deviation is how far above the means a node is, relative to them (at
// least the floor) and weighted as the imbalance weighs CPU and memory:
// positive for a node loaded above the cluster's mean, negative below.
// It ranks sources (most loaded first) and destinations (least loaded
// first).
func (m *metric) deviation(u util) float64 {
	mean := m.means()
	var d float64
	if mean.cpu > 0 {
		d += m.wc * (u.cpu - mean.cpu) / max(mean.cpu, m.floor)
	}
	if mean.mem > 0 {
		d += m.wm * (u.mem - mean.mem) / max(mean.mem, m.floor)
	}
	if w := m.wc + m.wm; w > 0 {
		d /= w
	}
	return d
}
