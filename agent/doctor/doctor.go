package doctor

import (
	"context"
	"log/slog"
	"strings"
)

// Status is the outcome of one check.
type Status string

const (
	// StatusPass: the host has what the check looks for.
	StatusPass Status = "pass"
	// StatusFail: the host lacks it. Only a failed Required check makes the
	// host unfit (Report.OK false); other failures cost a migration strategy
	// or a feature.
	StatusFail Status = "fail"
	// StatusWarn: worth the operator's attention, never failing: an optional
	// feature that is absent and costs no strategy (btrfs, for example).
	StatusWarn Status = "warn"
)

// Check is the result of probing one host requirement.
type Check struct {
	Name     string `json:"name"`
	Status   Status `json:"status"`
	Required bool   `json:"required"` // running containers or stop-copy needs it
	Detail   string `json:"detail"`   // what was found, for a human
	Fix      string `json:"fix,omitempty"`
}

// Strategy says whether this host supports one migration strategy.
type Strategy struct {
	Name      string `json:"name"`
	Supported bool   `json:"supported"`
	Reason    string `json:"reason,omitempty"` // why not, with the fix; empty when supported
}

// Report is the full result of Run.
type Report struct {
	Checks     []Check    `json:"checks"`
	Strategies []Strategy `json:"strategies"`
	// OK is true when every Required check passed: the host can run
	// containers and migrate them by stop-copy.
	OK bool `json:"ok"`
}

// Options tell Run what to look at.
type Options struct {
	// DataDir is the agent's data directory. When set, the overlay test
	// mount is made inside it and the btrfs check reports its filesystem.
	// It need not exist yet: its nearest existing parent is used.
	DataDir string
	// CRIU and Runc name the binaries, as a path or a name looked up in
	// PATH. Empty means "criu" and "runc".
	CRIU, Runc string
	// Logger receives one debug record per command run. Nil discards.
	Logger *slog.Logger
}

// Migration strategies, from the simplest to the one with the least downtime.
const (
	// StopCopy freezes the container, dumps it whole, copies and restores.
	StopCopy = "stop-copy"
	// Stream is stop-copy with the memory sent through CRIU's page server
	// while it is dumped, instead of through files.
	Stream = "stream"
	// PreCopy dumps memory while the container runs, then only the pages it
	// dirtied since; it needs the kernel's soft-dirty page tracking.
	PreCopy = "pre-copy"
	// PostCopy restores the container before its memory has arrived and
	// fetches pages on fault through userfaultfd (CRIU lazy pages).
	PostCopy = "post-copy"
)

// Names of the checks, as they appear in Check.Name.
const (
	CheckRoot        = "root"
	CheckKernel      = "kernel"
	CheckCRIU        = "criu"
	CheckRunc        = "runc"
	CheckCgroups     = "cgroups"
	CheckOverlayfs   = "overlayfs"
	CheckBtrfs       = "btrfs"
	CheckNetns       = "netns"
	CheckNetworkLock = "network-lock"
	CheckIPForward   = "ip-forward"
	CheckUserfaultfd = "userfaultfd"
	CheckLazyPages   = "lazy-pages"
	CheckSoftDirty   = "soft-dirty"
	CheckPipeMaxSize = "pipe-max-size"
	CheckPageServer  = "page-server"
	// CheckFreePageReporting says whether a stop-copy source faults its
	// dump's memory in ahead of the freeze (migrate/README.md); it never
	// fails.
	CheckFreePageReporting = "free-page-reporting"
)

// strategyNeeds lists, for each strategy, the checks it needs beyond the
// required ones (every strategy needs those: it checkpoints with CRIU and
// restores with runc).
var strategyNeeds = []struct {
	name  string
	needs []string
}{
	{StopCopy, nil},
	{Stream, []string{CheckPageServer, CheckPipeMaxSize}},
	{PreCopy, []string{CheckSoftDirty}},
	// Lazy pages are served by a page server on the source.
	{PostCopy, []string{CheckUserfaultfd, CheckLazyPages, CheckPageServer, CheckPipeMaxSize}},
}

// Run probes this host and reports every check and the migration strategies
// it supports. It never fails: a probe that errors is a failed check whose
// Detail says why. It needs root for a complete answer (CRIU refuses to run
// otherwise), and takes well under a second on a healthy host.
func Run(ctx context.Context, o Options) Report {
	return run(ctx, o, realHost())
}

func run(ctx context.Context, o Options, h host) Report {
	if o.CRIU == "" {
		o.CRIU = "criu"
	}
	if o.Runc == "" {
		o.Runc = "runc"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &prober{ctx: ctx, opts: o, host: h, log: o.Logger}
	probes := p.checks()
	checks := make([]Check, 0, len(probes))
	for _, probe := range probes {
		checks = append(checks, probe())
	}
	return Report{Checks: checks, Strategies: DeriveStrategies(checks), OK: requiredPass(checks)}
}

// DeriveStrategies decides which migration strategies the given checks
// allow. It is pure, so the migration engine can apply it to a report that
// another node sent. A strategy whose needed check is missing from checks is
// unsupported.
func DeriveStrategies(checks []Check) []Strategy {
	byName := make(map[string]Check, len(checks))
	var failedRequired []string
	for _, c := range checks {
		byName[c.Name] = c
		if c.Required && c.Status == StatusFail {
			failedRequired = append(failedRequired, c.Name)
		}
	}
	out := make([]Strategy, 0, len(strategyNeeds))
	for _, s := range strategyNeeds {
		var reasons []string
		if len(failedRequired) > 0 {
			reasons = append(reasons, "required checks failed: "+strings.Join(failedRequired, ", "))
		}
		for _, name := range s.needs {
			c, ok := byName[name]
			switch {
			case !ok:
				reasons = append(reasons, "needs "+name+": not checked")
			case c.Status != StatusPass:
				reasons = append(reasons, "needs "+describeFailure(c))
			}
		}
		out = append(out, Strategy{Name: s.name, Supported: len(reasons) == 0, Reason: strings.Join(reasons, "; ")})
	}
	return out
}

func describeFailure(c Check) string {
	s := c.Name + ": " + c.Detail
	if c.Fix != "" {
		s += " (fix: " + c.Fix + ")"
	}
	return s
}

func requiredPass(checks []Check) bool {
	for _, c := range checks {
		if c.Required && c.Status == StatusFail {
			return false
		}
	}
	return true
}

// Strategy returns the named strategy's entry, and false when the report has
// none of that name.
func (r Report) Strategy(name string) (Strategy, bool) {
	for _, s := range r.Strategies {
		if s.Name == name {
			return s, true
		}
	}
	return Strategy{}, false
}

// Supports reports whether the named strategy is supported on this host.
func (r Report) Supports(name string) bool {
	s, ok := r.Strategy(name)
	return ok && s.Supported
}

// Check returns the named check, and false when the report has none.
func (r Report) Check(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}
