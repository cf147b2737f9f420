package placement

import (
	"math"
	"strconv"
)

// Score part names, as in ScorePart.Name.
const (
	ScoreBinPack    = "binpack"
	ScoreSpread     = "spread"
	ScoreContainers = "containers"
	ScoreImage      = "image"
)

const (
	// LoadWeight weighs the binpack or spread part: the algorithm's own
	// preference dominates every score.
	LoadWeight = 1.0
	// ContainersWeight weighs spread's fewest-containers part: enough to
	// separate nodes equally loaded, less than the load itself.
	ContainersWeight = 0.25
	// ImageWeight weighs the image part: a node holding the image wins
	// over one that is up to this much better by load, since fetching
	// layers delays the start but costs nothing once done.
	ImageWeight = 0.1
	// ScorePrecision is what scores are rounded to, so that nodes equal in
	// every way that matters tie exactly and the tie goes by name.
	ScorePrecision = 1e-6
	// maxParts is the most parts one Candidate has (spread: load,
	// containers, image).
	maxParts = 3
)

// score appends the current node's score parts to parts and returns it,
// with their Details when explain is set: formatting them is most of the
// cost of scoring a node.
func (p *placer) score(parts []ScorePart, explain bool) []ScorePart {
	e := &p.cur
	n := e.node
	// Fractions of capacity left free once the request is placed. The
	// capacity filter has passed, so capacity is at least the request,
	// which EffectiveRequest keeps above zero: no division by zero, and
	// both fractions lie in [0, 1].
	freeCPU := float64(e.free.MilliCPU-p.need.MilliCPU) / float64(n.Capacity.MilliCPU)
	freeMem := float64(e.free.MemoryBytes-p.need.MemoryBytes) / float64(n.Capacity.MemoryBytes)
	rmsFree := math.Sqrt((freeCPU*freeCPU + freeMem*freeMem) / 2)
	var load string
	if explain {
		load = "after placing: CPU " + percent(1-freeCPU) + "% used, memory " + percent(1-freeMem) + "% used"
	}

	switch p.alg {
	case Spread:
		count := p.s.ContainerCount(n.Name)
		containers := ScorePart{Name: ScoreContainers, Value: 1 / float64(1+count), Weight: ContainersWeight}
		if explain {
			containers.Detail = strconv.Itoa(count) + " containers on the node"
		}
		parts = append(parts, ScorePart{Name: ScoreSpread, Value: rmsFree, Weight: LoadWeight, Detail: load}, containers)
	default:
		parts = append(parts, ScorePart{Name: ScoreBinPack, Value: 1 - rmsFree, Weight: LoadWeight, Detail: load})
	}

	if img := p.req.Spec.Image; img != "" {
		image := ScorePart{Name: ScoreImage, Weight: ImageWeight}
		has := p.s.HasImage(n.Name, img)
		if has {
			image.Value = 1
		}
		if explain {
			image.Detail = imageDetail(has)
		}
		parts = append(parts, image)
	}
	return parts
}

// imageDetail is the image part's Detail.
func imageDetail(onNode bool) string {
	if onNode {
		return "image already on the node"
	}
	return "image must be fetched from a peer"
}

// scoreUnits is the weighted sum of parts in units of ScorePrecision.
func scoreUnits(parts []ScorePart) int64 {
	var sum float64
	for _, pt := range parts {
		sum += pt.Weight * pt.Value
	}
	return int64(math.Round(sum / ScorePrecision))
}

// percent formats a fraction as a whole number of percent: 0.756 is "76"
// (and, below 100, costs no allocation).
func percent(f float64) string {
	return strconv.Itoa(int(math.Round(f * 100)))
}
