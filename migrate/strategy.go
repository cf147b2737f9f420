package migrate

import (
	"errors"
	"fmt"
	"strings"
)

// Strategy is how a container's memory moves.
type Strategy string

// The strategies, named as `godwit doctor` reports them and as
// `--strategy` takes them.
const (
	// StopCopy freezes, dumps to the source's disk, sends the images and
	// restores: the downtime grows with memory size.
	StopCopy Strategy = "stop-copy"
	// Stream dumps into a CRIU page server on the destination: memory
	// never touches the source's disk.
	Stream Strategy = "stream"
	// PreCopy copies memory while the container runs, again and again
	// for what it dirtied, then freezes for a short final dump. It needs
	// the kernel's soft-dirty tracking.
	PreCopy Strategy = "pre-copy"
	// PostCopy restores at once and lets pages fault in from the source:
	// the downtime hardly grows with memory, but losing either node while
	// pages are in flight loses the container, so it is only used when
	// asked for.
	PostCopy Strategy = "post-copy"
	// Auto picks the best strategy both hosts support.
	Auto Strategy = "auto"
)

// ErrUnsupported marks a strategy that one of the hosts cannot run.
var ErrUnsupported = errors.New("migration strategy not supported")

// ParseStrategy reads a --strategy value.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case Auto, StopCopy, Stream, PreCopy, PostCopy:
		return st, nil
	}
	return "", fmt.Errorf("unknown strategy %q: use auto, %s, %s, %s or %s", s, StopCopy, Stream, PreCopy, PostCopy)
}

// Support says whether a host can run one strategy, and if not why (with
// the fix), as `godwit doctor` reports it.
type Support struct {
	Supported bool
	Reason    string
}

// Capabilities are the strategies one host supports; a strategy missing
// from the map is not supported.
type Capabilities map[Strategy]Support

// Choice is a chosen strategy and why, for `migration inspect` and the
// events.
type Choice struct {
	Strategy Strategy
	Reason   string
}

// autoOrder is what auto tries, in order: the shortest freeze first among
// the strategies that never put the container at the mercy of two nodes.
var autoOrder = []Strategy{PreCopy, Stream, StopCopy}

// Choose picks the strategy for a migration from source to destination.
// A named strategy must be supported by both hosts, or Choose fails with
// ErrUnsupported saying which host lacks it and why. Auto takes the first
// of autoOrder that both support; post-copy only when minimiseDowntime is
// set (and then first), because losing either node while its pages are in
// flight loses the container.
func Choose(want Strategy, src, dst Capabilities, minimiseDowntime bool) (Choice, error) {
	if want != Auto {
		if why := unsupported(want, src, dst); why != "" {
			return Choice{}, fmt.Errorf("%w: %s: %s", ErrUnsupported, want, why)
		}
		return Choice{Strategy: want, Reason: "asked for"}, nil
	}
	order := autoOrder
	if minimiseDowntime {
		order = append([]Strategy{PostCopy}, autoOrder...)
	}
	var skipped []string
	for _, s := range order {
		why := unsupported(s, src, dst)
		if why == "" {
			reason := "auto: the first that both hosts support"
			if len(skipped) > 0 {
				reason += " (" + strings.Join(skipped, "; ") + ")"
			}
			return Choice{Strategy: s, Reason: reason}, nil
		}
		skipped = append(skipped, fmt.Sprintf("not %s: %s", s, why))
	}
	return Choice{}, fmt.Errorf("%w: no strategy is supported by both hosts: %s", ErrUnsupported, strings.Join(skipped, "; "))
}

// unsupported says why s cannot run between src and dst, or "". A reason
// both hosts give (the same kernel, say) is said once.
func unsupported(s Strategy, src, dst Capabilities) string {
	srcSup, srcOK := src[s]
	dstSup, dstOK := dst[s]
	if srcOK && dstOK && !srcSup.Supported && !dstSup.Supported && srcSup.Reason == dstSup.Reason {
		return "both hosts: " + srcSup.Reason
	}
	var why []string
	for _, h := range []struct {
		name string
		caps Capabilities
	}{{"source", src}, {"destination", dst}} {
		sup, ok := h.caps[s]
		switch {
		case !ok:
			why = append(why, h.name+" did not report it")
		case !sup.Supported:
			why = append(why, h.name+": "+sup.Reason)
		}
	}
	return strings.Join(why, "; ")
}
