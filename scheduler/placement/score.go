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

// terms are the current node's score parts before weighting: what both
// the ranking (units) and a Candidate's Parts (parts) are computed from,
// so that they always agree.
type terms struct {
	// freeCPU and freeMem are the fractions of the node's capacity left
	// free once the request is placed.
	freeCPU, freeMem float64
	// load is the binpack or spread part's value.
	load float64
	// containers is spread's containers part's value.
	containers float64
	// image is whether the node holds the request's image, when it names
	// one.
	image bool
}

// terms computes the current node's terms.
func (p *placer) terms() terms {
	n := p.cur.node
	// The capacity filter has passed, so capacity is at least the request,
	// which EffectiveRequest keeps above zero: no division by zero, and
	// both fractions lie in [0, 1].
	t := terms{
		freeCPU: float64(p.free.MilliCPU-p.need.MilliCPU) / float64(n.Capacity.MilliCPU),
		freeMem: float64(p.free.MemoryBytes-p.need.MemoryBytes) / float64(n.Capacity.MemoryBytes),
	}
	rmsFree := math.Sqrt((t.freeCPU*t.freeCPU + t.freeMem*t.freeMem) / 2)
	t.load = 1 - rmsFree
	if p.alg == Spread {
		t.load = rmsFree
		t.containers = 1 / float64(1+p.cur.count)
	}
	t.image = p.held != nil && p.held[p.index]
	return t
}

// units is the weighted sum of t's parts in units of ScorePrecision, the
// parts added in the order parts lists them (floating-point addition is
// not associative, and a Candidate's Score must be its Parts' sum).
func (p *placer) units(t terms) int64 {
	sum := LoadWeight * t.load
	if p.alg == Spread {
		sum += ContainersWeight * t.containers
	}
	if p.req.Spec.Image != "" {
		sum += ImageWeight * imageValue(t.image)
	}
	return int64(math.Round(sum / ScorePrecision))
}

// parts appends the parts of t to dst, with their Details when explain is
// set: formatting them is most of the cost of scoring a node.
func (p *placer) parts(dst []ScorePart, t terms, explain bool) []ScorePart {
	var load string
	if explain {
		load = "after placing: CPU " + percent(1-t.freeCPU) + "% used, memory " + percent(1-t.freeMem) + "% used"
	}
	switch p.alg {
	case Spread:
		containers := ScorePart{Name: ScoreContainers, Value: t.containers, Weight: ContainersWeight}
		if explain {
			containers.Detail = strconv.Itoa(p.cur.count) + " containers on the node"
		}
		dst = append(dst, ScorePart{Name: ScoreSpread, Value: t.load, Weight: LoadWeight, Detail: load}, containers)
	default:
		dst = append(dst, ScorePart{Name: ScoreBinPack, Value: t.load, Weight: LoadWeight, Detail: load})
	}
	if p.req.Spec.Image != "" {
		image := ScorePart{Name: ScoreImage, Value: imageValue(t.image), Weight: ImageWeight}
		if explain {
			image.Detail = imageDetail(t.image)
		}
		dst = append(dst, image)
	}
	return dst
}

// imageValue is the image part's value.
func imageValue(onNode bool) float64 {
	if onNode {
		return 1
	}
	return 0
}

// imageDetail is the image part's Detail.
func imageDetail(onNode bool) string {
	if onNode {
		return "image already on the node"
	}
	return "image must be fetched from a peer"
}

// percent formats a fraction as a whole number of percent: 0.756 is "76"
// (and, below 100, costs no allocation).
func percent(f float64) string {
	return strconv.Itoa(int(math.Round(f * 100)))
}
