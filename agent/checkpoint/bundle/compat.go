package bundle

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/godwit/godwit/agent/internal/version"
)

// HostInfo is what restore compatibility depends on: the node's tools, its
// kernel and its CPU. A manifest records the dumping host's; the restoring
// agent passes its own to CheckCompatibility.
type HostInfo struct {
	Node        string `json:"node"`
	CRIUVersion string `json:"criu_version"`
	RuncVersion string `json:"runc_version"`
	Kernel      string `json:"kernel"`
	CPU         CPU    `json:"cpu"`
}

// CPU identifies a processor and the features user space may have used.
// Flags are /proc/cpuinfo's "flags" (x86) or "Features" (arm64) words,
// sorted; CRIU's own cpuinfo image, when it writes one, travels in CRIUDir.
type CPU struct {
	Vendor string   `json:"vendor,omitempty"`
	Model  string   `json:"model,omitempty"`
	Flags  []string `json:"flags,omitempty"`
}

// IncompatibleError lists every reason a checkpoint cannot be restored on
// this host. It matches ErrIncompatible.
type IncompatibleError struct {
	// MissingLayers are the image layers this node lacks, in image order;
	// the agent may fetch them from a peer and check again.
	MissingLayers []digest.Digest
	// MissingCPUFlags are CPU features the dumping host had and this one
	// lacks; the restored process may be using them.
	MissingCPUFlags []string
	// Problems are operator-facing sentences, one per difference, each
	// saying what to do.
	Problems []string
}

func (e *IncompatibleError) Error() string {
	return "checkpoint cannot be restored on this host: " + strings.Join(e.Problems, "; ")
}

func (e *IncompatibleError) Is(target error) bool { return target == ErrIncompatible }

// CheckCompatibility decides whether m can be restored on host. It refuses
// (an *IncompatibleError) when an image layer is missing (hasLayer reports
// whether the node has one), when this host's CRIU is older than the
// dumping host's or its runc has another major version, when the CPU lacks
// a feature the dumping CPU had, or when a version is unreadable. Lesser
// differences (kernel version, runc minor version, CPU model) come back as
// warnings, which the caller shows and restores anyway.
func CheckCompatibility(m *Manifest, host HostInfo, hasLayer func(digest.Digest) bool) (warnings []string, err error) {
	ie := &IncompatibleError{}
	for _, d := range m.Image.Layers {
		if !hasLayer(d) {
			ie.MissingLayers = append(ie.MissingLayers, d)
		}
	}
	if len(ie.MissingLayers) > 0 {
		ie.Problems = append(ie.Problems, fmt.Sprintf("image %s: %d of its %d layers are missing on this node (%s): import the image first (`godwit image import FILE --name %s`)",
			m.Image.Name, len(ie.MissingLayers), len(m.Image.Layers), joinDigests(ie.MissingLayers), m.Image.Name))
	}

	ie.Problems = append(ie.Problems, checkCRIU(m.Host, host)...)
	w, problems := checkRunc(m.Host, host)
	warnings = append(warnings, w...)
	ie.Problems = append(ie.Problems, problems...)

	if m.Host.Kernel != host.Kernel {
		warnings = append(warnings, fmt.Sprintf("kernel differs: dumped on %s, this host runs %s; restore usually works, but a kernel feature the process used may be missing",
			m.Host.Kernel, host.Kernel))
	}

	w, ie.MissingCPUFlags = checkCPU(m.Host.CPU, host.CPU)
	warnings = append(warnings, w...)
	if len(ie.MissingCPUFlags) > 0 {
		ie.Problems = append(ie.Problems, fmt.Sprintf("this host's CPU lacks features the dumping host (%s) had: %s; restore on a node with the same CPU features",
			m.Host.Node, strings.Join(ie.MissingCPUFlags, " ")))
	}

	if len(ie.Problems) > 0 {
		return warnings, ie
	}
	return warnings, nil
}

func joinDigests(ds []digest.Digest) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	return strings.Join(s, ", ")
}

func checkCRIU(dumped, here HostInfo) []string {
	want, err := version.Parse(dumped.CRIUVersion)
	if err != nil {
		return []string{fmt.Sprintf("the checkpoint's CRIU version is unreadable (%v): take a new checkpoint", err)}
	}
	have, err := version.Parse(here.CRIUVersion)
	if err != nil {
		return []string{fmt.Sprintf("this host's CRIU version is unknown (%v): install CRIU %s or newer", err, want)}
	}
	if have.Less(want) {
		return []string{fmt.Sprintf("CRIU %s on this host is older than CRIU %s that dumped the checkpoint on %s: upgrade CRIU to %s or newer",
			have, want, dumped.Node, want)}
	}
	return nil
}

func checkRunc(dumped, here HostInfo) (warnings, problems []string) {
	want, err := version.Parse(dumped.RuncVersion)
	if err != nil {
		return nil, []string{fmt.Sprintf("the checkpoint's runc version is unreadable (%v): take a new checkpoint", err)}
	}
	have, err := version.Parse(here.RuncVersion)
	if err != nil {
		return nil, []string{fmt.Sprintf("this host's runc version is unknown (%v): install runc %d.x", err, want.Major)}
	}
	switch {
	case have.Major != want.Major:
		return nil, []string{fmt.Sprintf("runc %s on this host and runc %s that dumped the checkpoint differ in major version: install runc %d.x",
			have, want, want.Major)}
	case have != want:
		return []string{fmt.Sprintf("runc differs: dumped with %s, this host has %s", want, have)}, nil
	}
	return nil, nil
}

// checkCPU returns the flags the dumping CPU had and this one lacks, plus
// warnings for what cannot be checked or merely differs.
func checkCPU(dumped, here CPU) (warnings, missing []string) {
	if len(dumped.Flags) == 0 {
		return []string{"the checkpoint records no CPU features, so they were not checked"}, nil
	}
	for _, f := range dumped.Flags {
		if !slices.Contains(here.Flags, f) {
			missing = append(missing, f)
		}
	}
	if dumped.Vendor != here.Vendor || dumped.Model != here.Model {
		warnings = append(warnings, fmt.Sprintf("CPU differs: dumped on %q (%s), this host has %q (%s)",
			dumped.Model, dumped.Vendor, here.Model, here.Vendor))
	}
	return warnings, missing
}

// ParseCPUInfo reads the first processor of a /proc/cpuinfo listing: vendor,
// model name and feature flags (x86 "vendor_id", "model name", "flags";
// arm64 "CPU implementer", "CPU part", "Features"). Flags come back sorted
// and without duplicates.
func ParseCPUInfo(r io.Reader) (CPU, error) {
	var cpu CPU
	sc := bufio.NewScanner(r)
	// A flags line is a few KiB on current x86 CPUs.
	sc.Buffer(make([]byte, 0, cpuinfoLineMax), cpuinfoLineMax)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" && (cpu.Flags != nil || cpu.Vendor != "") {
			break // end of the first processor's block
		}
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch strings.TrimSpace(key) {
		case "vendor_id", "CPU implementer":
			cpu.Vendor = value
		case "model name", "CPU part":
			cpu.Model = value
		case "flags", "Features":
			cpu.Flags = strings.Fields(value)
		}
	}
	if err := sc.Err(); err != nil {
		return CPU{}, fmt.Errorf("read cpuinfo: %w", err)
	}
	if len(cpu.Flags) == 0 {
		return CPU{}, errNoCPUFlags
	}
	slices.Sort(cpu.Flags)
	cpu.Flags = slices.Compact(cpu.Flags)
	return cpu, nil
}

// cpuinfoLineMax bounds one /proc/cpuinfo line.
const cpuinfoLineMax = 64 << 10

var errNoCPUFlags = errors.New("cpuinfo has no flags or Features line")
