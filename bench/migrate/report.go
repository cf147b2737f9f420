package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/migrate"
)

// Issue 4's targets (item 9), for each strategy.
const (
	// At downtimeTargetSize MiB and above, godwit's downtime is at most
	// downtimeTargetRatio of the hand-scripted baseline's.
	downtimeTargetSize  = 512
	downtimeTargetRatio = 0.5
	// Post-copy's downtime at postCopyLargeSize MiB is at most
	// postCopyGrowth times its downtime at postCopySmallSize MiB: it
	// hardly grows with memory.
	postCopySmallSize = 64
	postCopyLargeSize = 2048
	postCopyGrowth    = 1.5
	// The image transfer runs at transferTargetRatio of raw TCP or more.
	transferTargetRatio = 0.6
	// During a move of rssTargetSize MiB each agent stays under rssTarget
	// bytes resident.
	rssTargetSize = 2048
	rssTarget     = 100 << 20
)

// conditions are what the numbers depend on.
type conditions struct {
	date        time.Time
	cpu         string
	cores       int
	memory      int64
	kernel      string
	cgroupMode  string
	workFS      string
	dataFS      string
	godwit      string
	runc        string
	criu        string
	snapshotter string
	// insecure: the agents ran with --insecure, not mutual TLS.
	insecure bool
	// cool is the wait before each move (--cool).
	cool time.Duration
}

// row is one tool at one size.
type row struct {
	size int
	tool string
	// median holds the median of each measure across the runs, taken
	// apart, so that a slow dump in one run and a slow restore in another
	// do not make one row.
	median sample
	// rate is the median of the runs' transfer throughputs, bytes/s.
	rate float64
	// peak is the largest resident memory of the source and destination
	// agents over the runs (godwit only).
	peak [2]int64
	// raw is the median raw TCP throughput measured before the size's
	// runs, bytes/s.
	raw float64
	// channel is the median throughput of the agents' data connection
	// (TLS) measured beside raw, bytes/s; 0 when not measured.
	channel float64
}

// newRow sums up the runs of one tool at one size, with the raw TCP and
// data channel throughputs measured alongside them.
func newRow(size int, tool string, samples []sample, raw, channel []float64) row {
	r := row{size: size, tool: tool, median: median(samples), raw: medianFloat(raw), channel: medianFloat(channel)}
	rates := make([]float64, len(samples))
	for i, s := range samples {
		rates[i] = s.throughput()
		r.peak[0] = max(r.peak[0], s.rssSource)
		r.peak[1] = max(r.peak[1], s.rssDestination)
	}
	r.rate = medianFloat(rates)
	return r
}

type report struct {
	conditions conditions
	runs       int
	rawMiB     int
	// rawCores and channelCores are the CPUs each raw TCP and data
	// channel measurement kept busy (linkRate.cores).
	rawCores, channelCores []float64
	rows                   []row
	skipped                []string
	// unmeasured are the strategies left out, with why.
	unmeasured []unmeasured
}

// render writes the report as markdown: conditions, the table with
// godwit's strategies and the baselines side by side per size, the baselines' steps,
// the agents' memory and issue 4's targets.
func (r report) render() string {
	var b strings.Builder
	c := r.conditions
	fmt.Fprintf(&b, "Live migration from host a to host b of a devcluster while a client on host c holds one TCP connection to the container: "+
		"a workload holding N MiB of pseudo-random (incompressible) memory; median of %d runs per size and tool.\n\n", r.runs)
	fmt.Fprintf(&b, "- date: %s\n", c.date.Format(time.RFC3339))
	fmt.Fprintf(&b, "- host: %s, %d cores, %s memory, kernel %s, cgroup %s\n", c.cpu, c.cores, benchutil.MiB(c.memory), c.kernel, c.cgroupMode)
	fmt.Fprintf(&b, "- godwit %s, runc %s, CRIU %s (CGO_ENABLED=0); %s snapshotter; agents' data on %s, the baseline's images on %s\n",
		c.godwit, c.runc, c.criu, c.snapshotter, c.dataFS, c.workFS)
	security := "mutual TLS with node certificates (TLS 1.3, a throwaway CA) on the API and the data connections"
	if c.insecure {
		security = "`--insecure` (plaintext data connections)"
	}
	fmt.Fprintf(&b, "- hosts: network namespaces on one bridge (veth pairs), one kernel; agents %s\n", security)
	if c.cool > 0 {
		fmt.Fprintf(&b, "- each move waited %s before it started, its container running (--cool): where a memory balloon reports free pages, "+
			"the hypervisor has taken back what earlier moves freed, so every tool writes fresh memory\n", c.cool)
	}
	fmt.Fprintf(&b, "- downtime (probe): the longest gap between two replies of a client on host c asking COUNT on one connection "+
		"every %s (or as soon as the answer came, when later), from its last reply before the move to its first after; "+
		"it includes TCP's retransmission backoff once the container runs again\n", probeInterval)
	b.WriteString("- downtime (engine): godwit's own measure (migrate.Result.Downtime), from the dump's start to the commit's end\n")
	b.WriteString("- godwit: `migrate.Drive` between the two agents with the strategy named; total is Drive's duration (for post-copy " +
		"it includes the source's wait for the last page); the cluster's route moves to b once Drive returns (until then host a " +
		"forwards the address to b); bytes are the checkpoint sent plus the memory pages sent beside it\n")
	for _, st := range r.strategies() {
		switch st {
		case migrate.StopCopy:
			fmt.Fprintf(&b, "  - %s: transfer is the checkpoint's bytes over the transfer phase (in the migration transfer framing, "+
				"docs/migration-transfer.md: uncompressed, each file's CRC-32C computed as it is sent and again as it is received "+
				"to the destination's tmpfs, and checked)\n", toolOf(st))
		case migrate.Stream:
			fmt.Fprintf(&b, "  - %s: the source's CRIU dumps the memory pages into a CRIU page server on the destination through "+
				"the agents' data connection in the dump phase; transfer is the pages' bytes over the time from their first byte "+
				"to their last at the destination (its agent's log: `memory pages received from the source`, bytes and pages_time)\n", toolOf(st))
		case migrate.PostCopy:
			fmt.Fprintf(&b, "  - %s: the destination restores without the memory and CRIU's lazy-pages daemon fetches it from "+
				"the source, faulted in first, the rest in the background, after the commit too; transfer is the pages' bytes "+
				"over the time from their first byte to their last at the destination (its agent's log: `every memory page "+
				"fetched from the source`)\n", toolOf(st))
		default:
			fmt.Fprintf(&b, "  - %s\n", toolOf(st))
		}
	}
	b.WriteString("- the baselines, the move an operator would script by hand: `runc checkpoint --tcp-established` of the container " +
		"on host a (the agent's runc root), tar of the images from host a into a directory on host b, then " +
		"`runc restore --detach --tcp-established` from the copy that reached b, back on host a, where the container's network " +
		"namespace and address are (rebuilding them on b is not part of the script); total is the script's duration, " +
		"transfer the images' bytes over the copy's time (archived, sent, unpacked to disk)\n")
	for _, tool := range r.baselines() {
		switch tool {
		case copyTCP.tool():
			fmt.Fprintf(&b, "  - %s: tar writes straight into a TCP connection from host a (`tar -cf - . > /dev/tcp/B/PORT`), and "+
				"tar on host b reads straight from the accepted connection (as socat or tcpsvd would hand it over): "+
				"nothing but the kernel copies between them\n", tool)
		case copyNC.tool():
			fmt.Fprintf(&b, "  - %s: `tar -cf - . | busybox nc B PORT` into `busybox nc -l -p PORT | tar -xf -`, the usual idiom with "+
				"the only netcat this host has; busybox's nc moves 1 KiB per system call, which caps the copy\n", tool)
		}
	}
	fmt.Fprintf(&b, "- raw TCP: %d MiB from memory in host a to memory in host b over one connection, before each run; the median%s\n",
		r.rawMiB, busy(r.rawCores, c.cores))
	if !c.insecure {
		fmt.Fprintf(&b, "- data channel: the same %d MiB over a data connection as the agents open it (mutual TLS with node certificates, "+
			"internal/datachan), memory to memory, after each raw TCP measurement; the median: the most a transfer through the agents' TLS "+
			"could carry between these hosts%s\n", r.rawMiB, busy(r.channelCores, c.cores))
	}
	b.WriteString("- each move is verified: the probe's connection is answered after it, the workload's counter never went back and went on, " +
		"and its memory checksum is the one taken at start-up\n")
	for _, u := range r.unmeasured {
		fmt.Fprintf(&b, "- not measured: %s: %s\n", u.strategy, u.why)
	}
	b.WriteString("\n")

	b.WriteString("| size | tool | downtime (probe) | downtime (engine) | total | bytes | transfer MiB/s | raw TCP MiB/s | transfer / raw TCP | data channel MiB/s |\n")
	b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.rows {
		s := x.median
		engine := "—"
		if isGodwit(x.tool) {
			engine = seconds(s.engineDowntime)
		}
		fmt.Fprintf(&b, "| %d MiB | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			x.size, x.tool, seconds(s.probeDowntime), engine, seconds(s.total), benchutil.MiB(s.bytes),
			mibps(x.rate), mibps(x.raw), percent(x.rate, x.raw), mibps(x.channel))
	}
	for _, s := range r.skipped {
		fmt.Fprintf(&b, "\nSkipped %s\n", s)
	}

	for _, st := range r.strategies() {
		fmt.Fprintf(&b, "\n%s phases (medians; the downtime runs from the dump's start to the commit's end):\n\n", toolOf(st))
		for _, x := range r.tool(toolOf(st)) {
			var steps []string
			for _, step := range phaseSteps {
				if d, ok := x.median.phases[step.phase]; ok {
					steps = append(steps, step.label+" "+seconds(d))
				}
			}
			fmt.Fprintf(&b, "- %d MiB: %s\n", x.size, strings.Join(steps, ", "))
		}
	}
	for _, tool := range r.baselines() {
		fmt.Fprintf(&b, "\n%s steps (medians):\n\n", tool)
		for _, x := range r.tool(tool) {
			fmt.Fprintf(&b, "- %d MiB: checkpoint %s, copy %s, restore %s\n",
				x.size, seconds(x.median.checkpoint), seconds(x.median.transfer), seconds(x.median.restore))
		}
	}
	if len(r.strategies()) > 0 {
		b.WriteString("\nAgents' peak resident memory during godwit's moves (the largest over the runs; VmRSS sampled every " +
			rssInterval.String() + ", or the kernel's VmHWM over the move when larger):\n\n")
		b.WriteString("| size | strategy | source agent | destination agent |\n|---:|---|---:|---:|\n")
		for _, x := range r.rows {
			if isGodwit(x.tool) {
				fmt.Fprintf(&b, "| %d MiB | %s | %s | %s |\n", x.size, strategyOf(x.tool), benchutil.MiB(x.peak[0]), benchutil.MiB(x.peak[1]))
			}
		}
	}
	r.renderTargets(&b)
	return b.String()
}

// renderTargets writes issue 4's targets and whether this run met them,
// for each strategy.
func (r report) renderTargets(b *strings.Builder) {
	b.WriteString("\nTargets (issue 4, item 9), for each strategy:\n\n")
	strategies := r.strategies()

	fmt.Fprintf(b, "- downtime (probe) at most %.0f%% of the hand-scripted baseline's at %d MiB and above (each baseline apart):",
		100*downtimeTargetRatio, downtimeTargetSize)
	measured := false
	for _, st := range strategies {
		for _, g := range r.tool(toolOf(st)) {
			for _, tool := range r.baselines() {
				base, ok := r.find(g.size, tool)
				if g.size < downtimeTargetSize || !ok {
					continue
				}
				measured = true
				ratio := g.median.probeDowntime.Seconds() / base.median.probeDowntime.Seconds()
				fmt.Fprintf(b, "\n  - %s, %d MiB, against %s: %s against %s (%.0f%%) — %s", st, g.size, tool, seconds(g.median.probeDowntime),
					seconds(base.median.probeDowntime), 100*ratio, benchutil.Verdict(ratio <= downtimeTargetRatio))
			}
		}
	}
	if !measured {
		fmt.Fprintf(b, " not measured in this run (it needs godwit and a baseline at %d MiB or more)", downtimeTargetSize)
	}
	b.WriteString("\n")

	fmt.Fprintf(b, "- transfer at least %.0f%% of the raw TCP throughput measured in the same run:", 100*transferTargetRatio)
	measured = false
	for _, st := range strategies {
		for _, g := range r.tool(toolOf(st)) {
			if g.raw <= 0 || g.rate <= 0 {
				continue
			}
			measured = true
			ratio := g.rate / g.raw
			fmt.Fprintf(b, "\n  - %s, %d MiB: %s MiB/s against %s MiB/s (%.0f%%) — %s", st, g.size, mibps(g.rate), mibps(g.raw), 100*ratio,
				benchutil.Verdict(ratio >= transferTargetRatio))
			if g.channel > 0 {
				fmt.Fprintf(b, " (the data channel alone: %s MiB/s, %s of raw TCP; the transfer is %s of it)",
					mibps(g.channel), percent(g.channel, g.raw), percent(g.rate, g.channel))
			}
		}
	}
	if !measured {
		b.WriteString(" not measured in this run")
	}
	b.WriteString("\n")

	fmt.Fprintf(b, "- each agent's resident memory under %s during a %d MiB move:", benchutil.MiB(rssTarget), rssTargetSize)
	measured = false
	for _, st := range strategies {
		if g, ok := r.find(rssTargetSize, toolOf(st)); ok {
			measured = true
			fmt.Fprintf(b, "\n  - %s: source %s, destination %s — %s", st, benchutil.MiB(g.peak[0]), benchutil.MiB(g.peak[1]),
				benchutil.Verdict(g.peak[0] < rssTarget && g.peak[1] < rssTarget))
		}
	}
	if !measured {
		fmt.Fprintf(b, " not measured in this run (it needs --sizes with %d)", rssTargetSize)
	}
	b.WriteString("\n")

	fmt.Fprintf(b, "- post-copy downtime (probe) at %d MiB at most %.1f times its downtime at %d MiB: ",
		postCopyLargeSize, postCopyGrowth, postCopySmallSize)
	small, okSmall := r.find(postCopySmallSize, toolOf(migrate.PostCopy))
	large, okLarge := r.find(postCopyLargeSize, toolOf(migrate.PostCopy))
	switch {
	case okSmall && okLarge:
		ratio := large.median.probeDowntime.Seconds() / small.median.probeDowntime.Seconds()
		fmt.Fprintf(b, "%s against %s (%.2fx) — %s\n", seconds(large.median.probeDowntime), seconds(small.median.probeDowntime), ratio,
			benchutil.Verdict(ratio <= postCopyGrowth))
	case !slices.Contains(strategies, migrate.PostCopy):
		b.WriteString("not measured in this run (post-copy was not measured)\n")
	default:
		fmt.Fprintf(b, "not measured in this run (it needs --sizes with %d and %d)\n", postCopySmallSize, postCopyLargeSize)
	}
}

// strategies names godwit's strategies in the rows, in the order they
// were measured.
func (r report) strategies() []migrate.Strategy {
	var out []migrate.Strategy
	for _, x := range r.rows {
		if isGodwit(x.tool) && !slices.Contains(out, strategyOf(x.tool)) {
			out = append(out, strategyOf(x.tool))
		}
	}
	return out
}

// baselines names the hand-scripted baselines in the rows, in the order
// they were measured.
func (r report) baselines() []string {
	var out []string
	for _, x := range r.rows {
		if !isGodwit(x.tool) && !slices.Contains(out, x.tool) {
			out = append(out, x.tool)
		}
	}
	return out
}

// tool returns the rows of one tool, in the order they were measured.
func (r report) tool(name string) []row {
	var out []row
	for _, x := range r.rows {
		if x.tool == name {
			out = append(out, x)
		}
	}
	return out
}

// find returns the row of tool at size.
func (r report) find(size int, tool string) (row, bool) {
	for _, x := range r.rows {
		if x.size == size && x.tool == tool {
			return x, true
		}
	}
	return row{}, false
}

// median is the median of each measure separately.
func median(samples []sample) sample {
	if len(samples) == 0 {
		return sample{}
	}
	dur := func(f func(sample) time.Duration) time.Duration {
		v := make([]time.Duration, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	num := func(f func(sample) int64) int64 {
		v := make([]int64, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	var phases map[migrate.Phase]time.Duration
	for _, step := range phaseSteps {
		if slices.ContainsFunc(samples, func(s sample) bool { _, ok := s.phases[step.phase]; return ok }) {
			if phases == nil {
				phases = map[migrate.Phase]time.Duration{}
			}
			phases[step.phase] = dur(func(s sample) time.Duration { return s.phases[step.phase] })
		}
	}
	return sample{
		phases:         phases,
		probeDowntime:  dur(func(s sample) time.Duration { return s.probeDowntime }),
		engineDowntime: dur(func(s sample) time.Duration { return s.engineDowntime }),
		total:          dur(func(s sample) time.Duration { return s.total }),
		transfer:       dur(func(s sample) time.Duration { return s.transfer }),
		checkpoint:     dur(func(s sample) time.Duration { return s.checkpoint }),
		restore:        dur(func(s sample) time.Duration { return s.restore }),
		bytes:          num(func(s sample) int64 { return s.bytes }),
		moved:          num(func(s sample) int64 { return s.moved }),
		pages:          num(func(s sample) int64 { return s.pages }),
		rssSource:      num(func(s sample) int64 { return s.rssSource }),
		rssDestination: num(func(s sample) int64 { return s.rssDestination }),
	}
}

// medianFloat is the median of v, 0 for none.
func medianFloat(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

// busy says how many of the host's cores a link measurement kept busy
// (the median of cores), "" when none was measured.
func busy(cores []float64, of int) string {
	if len(cores) == 0 {
		return ""
	}
	return fmt.Sprintf(" (it kept %.1f of the host's %d CPUs busy, both ends and the kernel's work for them)", medianFloat(cores), of)
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// mibps writes a throughput in bytes/s as MiB/s, "—" when unknown.
func mibps(bps float64) string {
	if bps <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f", bps/(1<<20))
}

// percent writes a/b as a percentage, "—" when either is unknown.
func percent(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "—"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}
