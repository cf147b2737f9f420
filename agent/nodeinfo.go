package agent

import (
	"context"
	"os/exec"
	goruntime "runtime"
	"strings"

	"golang.org/x/sys/unix"
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
	info := NodeInfo{
		Name:          a.cfg.Name,
		Address:       a.cfg.Advertise,
		Snapshotter:   a.snapshotter,
		ContainerCIDR: a.cfg.ContainerCIDR.String(),
		Labels:        a.cfg.Labels,
		RuncVersion:   commandVersion(ctx, a.cfg.Runc, "--version", "runc version "),
		CRIUVersion:   commandVersion(ctx, "criu", "--version", "Version: "),
		CPUs:          goruntime.NumCPU(),
		GodwitVersion: Version,
	}
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		info.KernelVersion = unix.ByteSliceToString(uts.Release[:])
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
