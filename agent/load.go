package agent

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/godwit/godwit/agent/internal/mountinfo"
)

// Load is one sample of what the node and its containers use: soft state
// for the scheduler's balancer, never persisted.
type Load struct {
	Sampled time.Time
	// CPUMillis is the CPU used, in thousandths of a CPU, averaged since
	// the previous sample (since boot for the first).
	CPUMillis int64
	// MemoryBytes is the memory in use: MemTotal minus MemAvailable.
	MemoryBytes int64
	// Containers are the running containers whose cgroups could be read,
	// by ID.
	Containers []ContainerLoad
}

// ContainerLoad is one container's share of a Load.
type ContainerLoad struct {
	ID string
	// CPUMillis is averaged since the previous sample, or since the
	// container started for its first.
	CPUMillis int64
	// MemoryBytes is the cgroup's memory minus its inactive file cache,
	// which the kernel reclaims first: what the container needs to keep.
	MemoryBytes int64
}

// Load samples the node's and its running containers' CPU and memory. A
// container whose cgroup cannot be read is left out, and why is returned
// beside the rest of the sample.
func (a *Agent) Load(ctx context.Context) (Load, error) {
	return a.sample(ctx, a.snapshotContainers())
}

// sample samples the load of the node and of those of containers that
// run (a migrating container's cgroup is still here, frozen or not).
func (a *Agent) sample(ctx context.Context, containers []containerSnapshot) (Load, error) {
	var targets []loadTarget
	for _, c := range containers {
		if c.State == StateRunning || c.State == StateMigrating {
			targets = append(targets, loadTarget{ID: c.ID, Cgroup: a.cfg.cgroupsPath(c.ID), Started: c.Started})
		}
	}
	if err := ctx.Err(); err != nil {
		return Load{}, err
	}
	return a.sampler().sample(time.Now(), targets)
}

func (a *Agent) sampler() *loadSampler {
	a.report.once.Do(func() {
		src, err := detectLoadSources()
		if err != nil {
			a.log.Warn("container load will not be reported: no cgroup hierarchy found", "err", err)
		}
		a.report.sampler = newLoadSampler(src)
	})
	return a.report.sampler
}

// containerMemory is the memory container id uses, as
// ContainerLoad.MemoryBytes, or 0 when its cgroup cannot be read.
func (a *Agent) containerMemory(id string) int64 {
	n, err := a.sampler().memoryInUse(a.cfg.cgroupsPath(id))
	if err != nil {
		return 0
	}
	return n
}

// loadSources locate what the sampler reads. Each cgroup field is a
// mount point, empty when that hierarchy is not mounted; a container's
// cgroup path (Config.cgroupsPath) is relative to each.
type loadSources struct {
	// Proc is procfs: stat and meminfo.
	Proc string
	// CPUAcct is the v1 hierarchy with the cpuacct controller.
	CPUAcct string
	// Memory is the v1 hierarchy with the memory controller.
	Memory string
	// Unified is the cgroup v2 hierarchy.
	Unified string
}

// detectLoadSources finds the cgroup hierarchies in this mount
// namespace. A hybrid host has v1 controllers and a v2 hierarchy beside
// them; the v1 ones are read first, since v2 has no controllers there.
func detectLoadSources() (loadSources, error) {
	src := loadSources{Proc: "/proc"}
	mounts, err := mountinfo.Read()
	if err != nil {
		return src, err
	}
	for _, m := range mounts {
		switch m.FSType {
		case "cgroup2":
			if src.Unified == "" {
				src.Unified = m.MountPoint
			}
		case "cgroup":
			for _, opt := range strings.Split(m.SuperOptions, ",") {
				switch {
				case opt == "cpuacct" && src.CPUAcct == "":
					src.CPUAcct = m.MountPoint
				case opt == "memory" && src.Memory == "":
					src.Memory = m.MountPoint
				}
			}
		}
	}
	if src.CPUAcct == "" && src.Memory == "" && src.Unified == "" {
		return src, errors.New("no cgroup hierarchy is mounted")
	}
	return src, nil
}

// loadTarget is a container to sample: its cgroup path below each
// hierarchy's root, and when it started (for its first CPU rate).
type loadTarget struct {
	ID      string
	Cgroup  string
	Started time.Time
}

// loadSampler turns the kernel's cumulative CPU counters into rates: it
// keeps each counter's previous value. Safe for concurrent use.
type loadSampler struct {
	src loadSources

	mu       sync.Mutex
	node     nodeCPU
	haveNode bool
	prev     map[string]cpuCounter
}

// nodeCPU is /proc/stat's aggregate line in clock ticks: time busy, all
// time, and the CPUs the time is spread over.
type nodeCPU struct {
	busy, total uint64
	cpus        int
}

// cpuCounter is a container's cumulative CPU time and when it was read.
type cpuCounter struct {
	usage time.Duration
	at    time.Time
}

func newLoadSampler(src loadSources) *loadSampler {
	return &loadSampler{src: src, prev: map[string]cpuCounter{}}
}

// millisPerCPU is one whole CPU in the unit of CPU rates.
const millisPerCPU = 1000

// sample reads the node's and each target's counters at now. Targets
// whose cgroup is gone (the container just exited) are left out; other
// failures are returned, joined, with what could be read.
func (s *loadSampler) sample(now time.Time, targets []loadTarget) (Load, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	load := Load{Sampled: now}
	var errs []error

	if cpu, err := readProcStat(filepath.Join(s.src.Proc, "stat")); err != nil {
		errs = append(errs, err)
	} else {
		base := nodeCPU{cpus: cpu.cpus} // first sample: the average since boot
		if s.haveNode && cpu.total > s.node.total && cpu.busy >= s.node.busy {
			base = s.node
		}
		if dt := cpu.total - base.total; dt > 0 {
			load.CPUMillis = int64(float64(cpu.busy-base.busy) / float64(dt) * float64(cpu.cpus) * millisPerCPU)
		}
		s.node, s.haveNode = cpu, true
	}
	if mem, err := readMemInUse(filepath.Join(s.src.Proc, "meminfo")); err != nil {
		errs = append(errs, err)
	} else {
		load.MemoryBytes = mem
	}

	next := make(map[string]cpuCounter, len(targets))
	for _, t := range targets {
		usage, err := s.cpuUsage(t.Cgroup)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("container %.12s: %w", t.ID, err))
			continue
		}
		mem, err := s.memoryInUse(t.Cgroup)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("container %.12s: %w", t.ID, err))
			continue
		}
		cur := cpuCounter{usage: usage, at: now}
		next[t.ID] = cur
		base, ok := s.prev[t.ID]
		if !ok || usage < base.usage || !now.After(base.at) {
			// First sample, or a new cgroup under the same ID (a restore):
			// the average since the container started.
			base = cpuCounter{at: t.Started}
		}
		cl := ContainerLoad{ID: t.ID, MemoryBytes: mem}
		if elapsed := now.Sub(base.at); !base.at.IsZero() && elapsed > 0 {
			cl.CPUMillis = int64(float64(usage-base.usage) / float64(elapsed) * millisPerCPU)
		}
		load.Containers = append(load.Containers, cl)
	}
	s.prev = next // containers gone are forgotten
	return load, errors.Join(errs...)
}

// cpuUsage is the cgroup's cumulative CPU time: v1 cpuacct.usage
// (nanoseconds), else v2 cpu.stat's usage_usec. fs.ErrNotExist: the
// cgroup is in neither hierarchy.
func (s *loadSampler) cpuUsage(cgroup string) (time.Duration, error) {
	if s.src.CPUAcct != "" {
		ns, err := readUint(filepath.Join(s.src.CPUAcct, cgroup, "cpuacct.usage"))
		if !errors.Is(err, fs.ErrNotExist) {
			return time.Duration(ns), err
		}
	}
	if s.src.Unified != "" {
		us, err := readKey(filepath.Join(s.src.Unified, cgroup, "cpu.stat"), "usage_usec")
		return time.Duration(us) * time.Microsecond, err
	}
	return 0, fmt.Errorf("CPU usage of cgroup %s: %w", cgroup, fs.ErrNotExist)
}

// memoryInUse is the cgroup's memory less its inactive file cache: v1
// memory.usage_in_bytes minus memory.stat's total_inactive_file, else v2
// memory.current minus inactive_file. fs.ErrNotExist: the cgroup is in
// neither hierarchy.
func (s *loadSampler) memoryInUse(cgroup string) (int64, error) {
	type source struct{ root, usage, inactive string }
	var sources []source
	if s.src.Memory != "" {
		sources = append(sources, source{s.src.Memory, "memory.usage_in_bytes", "total_inactive_file"})
	}
	if s.src.Unified != "" {
		sources = append(sources, source{s.src.Unified, "memory.current", "inactive_file"})
	}
	for _, src := range sources {
		dir := filepath.Join(src.root, cgroup)
		usage, err := readUint(filepath.Join(dir, src.usage))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, err
		}
		inactive, err := readKey(filepath.Join(dir, "memory.stat"), src.inactive)
		if err != nil {
			return 0, err
		}
		return int64(usage - min(inactive, usage)), nil
	}
	return 0, fmt.Errorf("memory of cgroup %s: %w", cgroup, fs.ErrNotExist)
}

// readUint reads a file holding one decimal number.
func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// readKey reads the value of key from a flat keyed file ("key value"
// lines: cpu.stat, memory.stat).
func readKey(path, key string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok || k != key {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", path, key, err)
		}
		return n, nil
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return 0, fmt.Errorf("%s has no %s", path, key)
}

// procStatIdleFields are the indexes, among the aggregate cpu line's
// numbers, of idle and iowait: time not spent running anything. The rest
// is busy, except guest and guest_nice (procStatGuestFrom on), which
// user and nice already count.
const (
	procStatIdle      = 3
	procStatIOWait    = 4
	procStatGuestFrom = 8
)

// readProcStat reads the aggregate CPU times of /proc/stat and counts
// the CPUs.
func readProcStat(path string) (nodeCPU, error) {
	f, err := os.Open(path)
	if err != nil {
		return nodeCPU{}, err
	}
	defer f.Close()
	var out nodeCPU
	found := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		if fields[0] != "cpu" {
			out.cpus++
			continue
		}
		found = true
		for i, v := range fields[1:] {
			if i >= procStatGuestFrom {
				break
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nodeCPU{}, fmt.Errorf("%s: cpu field %d: %w", path, i+1, err)
			}
			out.total += n
			if i != procStatIdle && i != procStatIOWait {
				out.busy += n
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nodeCPU{}, fmt.Errorf("%s: %w", path, err)
	}
	if !found || out.cpus == 0 {
		return nodeCPU{}, fmt.Errorf("%s has no cpu lines", path)
	}
	return out, nil
}

// readMemInUse is /proc/meminfo's MemTotal minus MemAvailable, in bytes.
func readMemInUse(path string) (int64, error) {
	total, err := readMeminfoKey(path, "MemTotal:")
	if err != nil {
		return 0, err
	}
	avail, err := readMeminfoKey(path, "MemAvailable:")
	if err != nil {
		return 0, err
	}
	return int64(total-min(avail, total)) * meminfoUnit, nil
}

// meminfoUnit is the unit of /proc/meminfo's sizes ("kB").
const meminfoUnit = 1024

func readMeminfoKey(path, key string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == key {
			n, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%s: %s %w", path, key, err)
			}
			return n, nil
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return 0, fmt.Errorf("%s has no %s", path, strings.TrimSuffix(key, ":"))
}
