package agent

import (
	"context"
	"fmt"
	"os/exec"
	goruntime "runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/doctor"
	"github.com/godwit/godwit/migrate"
)

// Version is godwit's version, set at build time with -ldflags.
var Version = "dev"

// NodeInfo describes the node to operators and, later, to the scheduler.
type NodeInfo struct {
	Name          string
	Address       string
	Snapshotter   string
	ContainerCIDR string
	Labels        map[string]string
	RuncVersion   string
	CRIUVersion   string
	KernelVersion string
	CPUs          int
	MemoryBytes   int64
	GodwitVersion string
}

// NodeInfo reports the node's identity, versions and capacity.
func (a *Agent) NodeInfo(ctx context.Context) NodeInfo {
	host := a.host() // versions read once per agent (readHostInfo)
	info := NodeInfo{
		Name:          a.cfg.Name,
		Address:       a.cfg.Advertise,
		Snapshotter:   a.snapshotter,
		ContainerCIDR: a.cfg.ContainerCIDR.String(),
		Labels:        a.cfg.Labels,
		RuncVersion:   host.RuncVersion,
		CRIUVersion:   host.CRIUVersion,
		KernelVersion: host.Kernel,
		CPUs:          goruntime.NumCPU(),
		GodwitVersion: Version,
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		info.MemoryBytes = int64(si.Totalram) * int64(si.Unit)
	}
	return info
}

// commandVersion runs `bin flag` and returns what follows prefix on the
// line that starts with it, or "" when the tool is missing.
func commandVersion(ctx context.Context, bin, flag, prefix string) string {
	out, err := exec.CommandContext(ctx, bin, flag).Output()
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
			return v
		}
	}
	return ""
}

// StrategySupport says whether this agent can carry out one migration
// strategy on its host, and if not why, with the fix.
type StrategySupport struct {
	Strategy  migrate.Strategy
	Supported bool
	Reason    string
}

// strategyOrder is the order MigrationStrategies reports them in, from the
// simplest to the one with the least downtime, as `godwit doctor` does.
var strategyOrder = []migrate.Strategy{migrate.StopCopy, migrate.Stream, migrate.PreCopy, migrate.PostCopy}

// unimplementedStrategies are the strategies the host may support but
// this agent does not carry out yet, with what to use instead. Whoever
// implements one deletes its entry.
var unimplementedStrategies = map[migrate.Strategy]string{}

// capabilityProbe is the agent's host probe for migration strategies, run
// once per agent process (doctor.Cache).
type capabilityProbe struct {
	once  sync.Once
	cache *doctor.Cache
}

// MigrationStrategies reports, for each migration strategy, whether this
// agent can carry it out here: the host's support as `godwit doctor` probes
// it (once per agent process; the first call takes about a second) and
// what the agent implements. It fails only when ctx ends before the first
// probe is done.
func (a *Agent) MigrationStrategies(ctx context.Context) ([]StrategySupport, error) {
	a.caps.once.Do(func() {
		a.caps.cache = doctor.NewCache(doctor.Options{DataDir: a.cfg.DataDir, Runc: a.cfg.Runc, Logger: a.log})
	})
	report, err := a.caps.cache.Report(ctx)
	if err != nil {
		return nil, fmt.Errorf("probe node %s for migration strategies: %w", a.cfg.Name, err)
	}
	return agentStrategies(report), nil
}

// agentStrategies combines the host's report with what this agent
// implements.
func agentStrategies(report doctor.Report) []StrategySupport {
	out := make([]StrategySupport, 0, len(strategyOrder))
	for _, s := range strategyOrder {
		sup := StrategySupport{Strategy: s}
		host, ok := report.Strategy(string(s))
		switch why, missing := unimplementedStrategies[s]; {
		case missing:
			sup.Reason = why
		case !ok:
			sup.Reason = "the host probe does not know it"
		default:
			sup.Supported, sup.Reason = host.Supported, host.Reason
		}
		out = append(out, sup)
	}
	return out
}
