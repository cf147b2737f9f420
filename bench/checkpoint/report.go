package main

import (
	"fmt"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
)

// conditions are what the numbers depend on.
type conditions struct {
	date       time.Time
	cpu        string
	cores      int
	memory     int64
	kernel     string
	cgroupMode string
	workFS     string
	tools      []string
}

// hostConditions describes this host now, with workDir holding every
// data dir, store and archive.
func hostConditions(workDir string, engines []engine) conditions {
	c := conditions{
		date:       time.Now().UTC(),
		cpu:        benchutil.CPUModel(),
		cores:      goruntime.NumCPU(),
		memory:     benchutil.MemoryTotal(),
		kernel:     benchutil.Kernel(),
		cgroupMode: benchutil.CgroupMode(),
		workFS:     benchutil.Filesystem(workDir),
	}
	for _, e := range engines {
		c.tools = append(c.tools, e.Versions()...)
	}
	return c
}

// row is one tool at one size: the medians of its runs.
type row struct {
	size   int
	tool   string
	median sample
}

type report struct {
	conditions conditions
	runs       int
	rows       []row
	skipped    []string
}

// render writes the report as markdown: conditions, one table with the
// tools side by side per size, and issue 3's target.
func (r report) render() string {
	var b strings.Builder
	c := r.conditions
	fmt.Fprintf(&b, "Checkpoint to an archive and restore from it: a container whose workload holds N MiB of "+
		"pseudo-random (incompressible) memory; median of %d runs per size and tool.\n\n", r.runs)
	fmt.Fprintf(&b, "- date: %s\n", c.date.Format(time.RFC3339))
	fmt.Fprintf(&b, "- host: %s, %d cores, %s memory, kernel %s, cgroup %s\n", c.cpu, c.cores, benchutil.MiB(c.memory), c.kernel, c.cgroupMode)
	fmt.Fprintf(&b, "- data dirs, stores and archives on %s; `sync` before each timed step\n", c.workFS)
	for _, t := range c.tools {
		fmt.Fprintf(&b, "- %s\n", t)
	}
	b.WriteString("- each restore is verified: the container answers on the same IP, its counter continued, " +
		"and its memory checksum matches the one taken before the checkpoint\n\n")

	b.WriteString("| size | tool | checkpoint + export | restore | total | archive | godwit / podman |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|\n")
	for _, x := range r.rows {
		s := x.median
		ratio := "—"
		if p, ok := r.find(x.size, toolPodman); ok && x.tool == toolGodwit {
			ratio = fmt.Sprintf("%.2f", s.total().Seconds()/p.total().Seconds())
		}
		fmt.Fprintf(&b, "| %d MiB | %s | %s | %s | %s | %s | %s |\n",
			x.size, x.tool, seconds(s.checkpoint), seconds(s.restore), seconds(s.total()), benchutil.MiB(s.archive), ratio)
	}
	for _, s := range r.skipped {
		fmt.Fprintf(&b, "\nSkipped %s\n", s)
	}

	g, gok := r.find(targetSize, toolGodwit)
	p, pok := r.find(targetSize, toolPodman)
	fmt.Fprintf(&b, "\nTarget (issue 3): at %d MiB, godwit's total at most %.0f%% of Podman's: ", targetSize, 100*targetRatio)
	if gok && pok {
		ratio := g.total().Seconds() / p.total().Seconds()
		fmt.Fprintf(&b, "%s against %s (%.0f%%) — %s\n", seconds(g.total()), seconds(p.total()), 100*ratio, benchutil.Verdict(ratio <= targetRatio))
	} else {
		fmt.Fprintf(&b, "not measured in this run (it needs both tools at %d MiB)\n", targetSize)
	}
	return b.String()
}

// find returns the medians of tool at size.
func (r report) find(size int, tool string) (sample, bool) {
	for _, x := range r.rows {
		if x.size == size && x.tool == tool {
			return x.median, true
		}
	}
	return sample{}, false
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
