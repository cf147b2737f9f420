package balance

import (
	"fmt"
	"math"
	"slices"
	"time"
)

const gib = 1 << 30

// bandwidthSource says where a predicted bandwidth came from, most
// specific first.
type bandwidthSource uint8

const (
	// fromLink: Input.Links measured the pair.
	fromLink bandwidthSource = iota
	// fromPairHistory: past migrations between the pair (bytes / total).
	fromPairHistory
	// fromHistory: past migrations between any nodes.
	fromHistory
	// fromPolicy: Policy.Bandwidth, nothing measured.
	fromPolicy
)

// cost is a move's predicted cost.
type cost struct {
	bytes    int64
	duration time.Duration
	downtime time.Duration
	// value is DowntimeWeight x downtime seconds + GiBWeight x GiB.
	value float64

	// What the prediction rests on, for the move's explanation.
	bandwidth   float64
	bwSource    bandwidthSource
	bwSamples   int
	historyDown bool
}

// pairBandwidth is what is known of the bandwidth from one node to
// another.
type pairBandwidth struct {
	median
	src bandwidthSource
}

// median is a median and how many values it was taken over.
type median struct {
	value float64
	n     int
}

func medianOf(values []float64) median {
	if len(values) == 0 {
		return median{}
	}
	slices.Sort(values)
	mid := len(values) / 2
	v := values[mid]
	if len(values)%2 == 0 {
		v = (values[mid-1] + values[mid]) / 2
	}
	return median{value: v, n: len(values)}
}

// costModel predicts moves' costs from the policy, the history and the
// measured links.
type costModel struct {
	p Policy
	// pairs holds, by source then destination node index, the pairs with
	// a bandwidth of their own (a measured link, else past migrations
	// between them); a source without any has no entry.
	pairs   map[int32]map[int32]pairBandwidth
	global  median
	perByte median // downtime seconds per byte, of the policy's strategy
}

// newCostModel reads history and links; index maps node names to the
// indexes moves are predicted between (names it lacks are ignored).
func newCostModel(p Policy, history []PastMigration, links []Link, index map[string]int32) *costModel {
	m := &costModel{p: p, pairs: map[int32]map[int32]pairBandwidth{}}
	type key struct{ from, to int32 }
	pair := func(from, to string) (key, bool) {
		f, ok1 := index[from]
		t, ok2 := index[to]
		return key{f, t}, ok1 && ok2
	}
	byLink := map[key][]float64{}
	for _, l := range links {
		if k, ok := pair(l.From, l.To); ok && l.BytesPerSecond > 0 && !math.IsInf(l.BytesPerSecond, 0) {
			byLink[k] = append(byLink[k], l.BytesPerSecond)
		}
	}
	byPair := map[key][]float64{}
	var all, perByte []float64
	for _, h := range history {
		if h.Bytes <= 0 {
			continue
		}
		if h.Total > 0 {
			bw := float64(h.Bytes) / h.Total.Seconds()
			all = append(all, bw)
			if k, ok := pair(h.From, h.To); ok {
				byPair[k] = append(byPair[k], bw)
			}
		}
		if h.Downtime > 0 && (p.Strategy == StrategyAuto || h.Strategy == p.Strategy) {
			perByte = append(perByte, h.Downtime.Seconds()/float64(h.Bytes))
		}
	}
	put := func(k key, bw pairBandwidth) {
		inner := m.pairs[k.from]
		if inner == nil {
			inner = map[int32]pairBandwidth{}
			m.pairs[k.from] = inner
		}
		inner[k.to] = bw
	}
	for k, v := range byPair {
		put(k, pairBandwidth{medianOf(v), fromPairHistory})
	}
	for k, v := range byLink {
		put(k, pairBandwidth{medianOf(v), fromLink})
	}
	m.global = medianOf(all)
	m.perByte = medianOf(perByte)
	return m
}

// bandwidth is the predicted bandwidth between two nodes: the pair's
// (pairs is the source's entry of costModel.pairs, nil when it has
// none), else the median of all past migrations, else the policy's.
func (m *costModel) bandwidth(pairs map[int32]pairBandwidth, to int32) (float64, bandwidthSource, int) {
	if b, ok := pairs[to]; ok {
		return b.value, b.src, b.n
	}
	if m.global.n > 0 {
		return m.global.value, fromHistory, m.global.n
	}
	return float64(m.p.Bandwidth), fromPolicy, 0
}

// predict is the cost of moving a container using memory bytes and
// dirtying dirty bytes a second (0: unknown) from one node to another.
//
// Bytes are the memory plus what it dirties while the memory is copied
// once (a single pass: pre-copy's later rounds are shorter still).
// The duration is bytes over the bandwidth. The downtime is bytes times
// the median downtime per byte of past migrations of the policy's
// strategy, else DowntimePerGiB, and never under MinDowntime.
//
// pairs is the source's entry of costModel.pairs.
func (m *costModel) predict(pairs map[int32]pairBandwidth, to int32, memory, dirty int64) cost {
	bw, src, n := m.bandwidth(pairs, to)
	c := cost{bytes: memory, bandwidth: bw, bwSource: src, bwSamples: n}
	if dirty > 0 {
		c.bytes += int64(float64(dirty) * float64(memory) / bw)
	}
	c.duration = seconds(float64(c.bytes) / bw)
	if m.perByte.n > 0 {
		c.downtime = seconds(m.perByte.value * float64(c.bytes))
		c.historyDown = true
	} else {
		c.downtime = time.Duration(float64(m.p.DowntimePerGiB) * float64(c.bytes) / gib)
	}
	c.downtime = max(c.downtime, m.p.MinDowntime)
	c.value = m.p.DowntimeWeight*c.downtime.Seconds() + m.p.GiBWeight*float64(c.bytes)/gib
	return c
}

// basis says in words what a cost was predicted from.
func (m *costModel) basis(c cost, from, to string) string {
	var bw string
	switch c.bwSource {
	case fromLink:
		bw = fmt.Sprintf("measured %s→%s", from, to)
	case fromPairHistory:
		bw = fmt.Sprintf("median of %d past %s %s→%s", c.bwSamples, plural(c.bwSamples, "migration", "migrations"), from, to)
	case fromHistory:
		bw = fmt.Sprintf("median of %d past %s", c.bwSamples, plural(c.bwSamples, "migration", "migrations"))
	default:
		bw = "the policy's bandwidth, nothing measured yet"
	}
	down := fmt.Sprintf("%s per GiB, the policy's downtime_per_gib", m.p.DowntimePerGiB)
	if c.historyDown {
		strategy := "all"
		if m.p.Strategy != StrategyAuto {
			strategy = m.p.Strategy
		}
		down = fmt.Sprintf("%s per GiB, the median of %d past %s %s", seconds(m.perByte.value*gib).Round(time.Millisecond),
			m.perByte.n, strategy, plural(m.perByte.n, "migration", "migrations"))
	}
	if c.downtime == m.p.MinDowntime {
		down += ", raised to min_downtime"
	}
	return fmt.Sprintf("%s at %s/s (%s); downtime %s (%s)", formatBytes(c.bytes), formatBytes(int64(c.bandwidth)), bw,
		c.downtime.Round(time.Millisecond), down)
}

func seconds(s float64) time.Duration {
	if s*float64(time.Second) >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(s * float64(time.Second))
}

// formatBytes writes a size for an operator: 512 MiB, 1.5 GiB.
func formatBytes(n int64) string {
	switch {
	case n >= gib:
		return fmt.Sprintf("%.1f GiB", float64(n)/gib)
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// formatCPU writes thousandths of a CPU as CPUs: 1.25 CPU.
func formatCPU(milli int64) string {
	return fmt.Sprintf("%.2f CPU", float64(milli)/1000)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
