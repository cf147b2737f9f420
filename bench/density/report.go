package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
)

// conditions are what the numbers depend on, beyond what the agent reports
// of its node.
type conditions struct {
	date       time.Time
	dataDirFS  string
	cgroupMode string
}

// hostConditions describes this host now, with workDir holding the data.
func hostConditions(workDir string) conditions {
	return conditions{date: time.Now().UTC(), dataDirFS: benchutil.Filesystem(workDir), cgroupMode: benchutil.CgroupMode()}
}

// renderReport writes the results as markdown: conditions, one table with
// godwit and bare runc side by side, and the targets.
func renderReport(o options, c conditions, gw, base *result) string {
	var b strings.Builder
	info := gw.info
	mib := benchutil.MiB
	fmt.Fprintf(&b, "Agent density: %d idle containers (`%s`), run one after another.\n\n", o.n, strings.Join(workload, " "))
	fmt.Fprintf(&b, "- date: %s\n", c.date.Format(time.RFC3339))
	fmt.Fprintf(&b, "- host: %d CPUs, %s memory, kernel %s, cgroup %s\n",
		info.GetCpus(), mib(info.GetMemoryBytes()), info.GetKernelVersion(), c.cgroupMode)
	fmt.Fprintf(&b, "- runc %s, CRIU %s, godwit %s (CGO_ENABLED=0)\n",
		info.GetRuncVersion(), info.GetCriuVersion(), info.GetGodwitVersion())
	api := "mutual TLS (a throwaway CA)"
	if o.insecure {
		api = "`--insecure` (plaintext)"
	}
	fmt.Fprintf(&b, "- godwit: %s snapshotter, data dir on %s; a netns, veth and shim per container; API over %s\n",
		info.GetSnapshotter(), c.dataDirFS, api)
	fmt.Fprintf(&b, "- bare runc: `runc run --detach` of the same spec without a netns path (runc makes an empty one), "+
		"rootfs a directory of hard links to one busybox tree; bundles written beforehand, untimed\n\n")

	row := func(name, g, r, diff string) { fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, g, r, diff) }
	dur := func(name string, g, r time.Duration) { row(name, ms(g), ms(r), signed(ms, g-r)) }
	mem := func(name string, g, r int64) { row(name, mib(g), mib(r), signed(mib, g-r)) }
	only := func(name string, g string) { row(name, g, "—", "") }
	rss := func(m memory) int64 { return m.RSS }
	pss := func(m memory) int64 { return m.PSS }
	uss := func(m memory) int64 { return m.USS }

	row("", "godwit", "bare runc", "godwit − runc")
	b.WriteString("|---|---:|---:|---:|\n")
	dur("run → running, first (godwit: unpacks the image)", gw.runs[0], base.runs[0])
	dur("run → running, min", quantile(gw.runs, 0), quantile(base.runs, 0))
	dur("run → running, median", quantile(gw.runs, 0.5), quantile(base.runs, 0.5))
	dur("run → running, p95", quantile(gw.runs, 0.95), quantile(base.runs, 0.95))
	dur("run → running, max", quantile(gw.runs, 1), quantile(base.runs, 1))
	row(fmt.Sprintf("all %d, one after another", o.n), seconds(gw.total), seconds(base.total), signed(seconds, gw.total-base.total))
	only("agent RSS, image imported, no containers", mib(gw.agentIdle.RSS))
	only(fmt.Sprintf("agent RSS / PSS, %d running", o.n), mib(gw.agent.RSS)+" / "+mib(gw.agent.PSS))
	only("agent peak RSS (VmHWM)", mib(gw.agent.Peak))
	only("shim RSS, median / max", mib(quantile(field(gw.shims, rss), 0.5))+" / "+mib(quantile(field(gw.shims, rss), 1)))
	only("shim PSS, median / max", mib(quantile(field(gw.shims, pss), 0.5))+" / "+mib(quantile(field(gw.shims, pss), 1)))
	only("shim private (USS), median / max", mib(quantile(field(gw.shims, uss), 0.5))+" / "+mib(quantile(field(gw.shims, uss), 1)))
	mem("container process RSS, median", quantile(field(gw.inits, rss), 0.5), quantile(field(base.inits, rss), 0.5))
	mem("host memory per container (MemAvailable fall / N)", gw.hostPerContainer, base.hostPerContainer)

	shimMax, agentRSS := quantile(field(gw.shims, rss), 1), max(gw.agent.RSS, gw.agent.Peak)
	fmt.Fprintf(&b, "\nTargets (issue 2):\n\n")
	fmt.Fprintf(&b, "- each shim at most %s resident: largest %s — %s\n", mib(shimRSSTarget), mib(shimMax), benchutil.Verdict(shimMax <= shimRSSTarget))
	fmt.Fprintf(&b, "- agent at most %s resident: %s with %d running, peak %s — %s\n",
		mib(agentRSSTarget), mib(gw.agent.RSS), o.n, mib(gw.agent.Peak), benchutil.Verdict(agentRSS <= agentRSSTarget))
	return b.String()
}

// signed formats a difference with its sign.
func signed[T int64 | time.Duration](format func(T) string, v T) string {
	if v < 0 {
		return "−" + format(-v)
	}
	return "+" + format(v)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func seconds(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
