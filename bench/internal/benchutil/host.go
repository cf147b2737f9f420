package benchutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/godwit/godwit/agent/doctor"

	"golang.org/x/sys/unix"
)

// unknown is what a host fact reads as when the host does not say.
const unknown = "unknown"

// CPUModel is the first "model name" of /proc/cpuinfo, or "unknown" where
// there is none (some architectures do not name one).
func CPUModel() string { return cpuModel("/proc/cpuinfo") }

func cpuModel(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return unknown
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return unknown
}

// Kernel is the running kernel's release (uname -r), or "unknown".
func Kernel() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return unknown
	}
	return unix.ByteSliceToString(u.Release[:])
}

// MemoryTotal is the host's RAM in bytes, or 0 where the kernel does not
// say.
func MemoryTotal() int64 {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0
	}
	return int64(si.Totalram) * int64(si.Unit)
}

// MemAvailable is the kernel's estimate of memory available for new work
// (MemAvailable in /proc/meminfo), in bytes. Unlike MemFree it counts the
// page cache that could be dropped, so its fall while a benchmark runs is
// what the benchmark's work costs the host, kernel objects included.
func MemAvailable() (int64, error) { return memAvailable("/proc/meminfo") }

func memAvailable(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("MemAvailable in %s: %w", path, err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("no MemAvailable in %s (kernels before 3.14 lack it)", path)
}

// CgroupMode names the host's cgroup layout: "v2" alone, "v1" alone, or
// the hybrid one (v1 controllers, v2 mounted at /sys/fs/cgroup/unified).
func CgroupMode() string { return cgroupMode("/sys/fs/cgroup") }

func cgroupMode(root string) string {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return "v2"
	}
	if _, err := os.Stat(filepath.Join(root, "unified", "cgroup.controllers")); err == nil {
		return "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)"
	}
	return "v1"
}

// Filesystem names the filesystem dir is on: ext4, btrfs, xfs, tmpfs or
// overlayfs, another by its magic number, and "unknown (why)" where dir
// cannot be read. Snapshots, CRIU images and archives all go through it,
// so a report states it.
func Filesystem(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return unknown + " (" + err.Error() + ")"
	}
	return doctor.FilesystemName(int64(st.Type))
}

// LoadAverage is the 1, 5 and 15 minute load averages, or "unknown": a
// report says how busy the machine was around a measurement.
func LoadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(data)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

// Revision is the commit the running program was built from, as the go
// command stamped it ("+ changes" when the tree was modified), or "the
// working tree" when it did not (go run does not stamp).
func Revision() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "the working tree"
	}
	var rev, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "the working tree"
	}
	if len(rev) > 7 {
		rev = rev[:7]
	}
	if modified == "true" {
		rev += " + changes"
	}
	return "commit " + rev
}

// ProcessCPU is the CPU time this process has used so far, user and
// system; 0 where the kernel does not say.
func ProcessCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
