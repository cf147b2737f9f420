package runtime

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/godwit/godwit/agent/internal/mountinfo"
)

const cgroupPerm = 0o755

// cgroupMount is one mounted cgroup hierarchy.
type cgroupMount struct {
	dir    string // where it is mounted
	v2     bool
	cpuset bool // a v1 hierarchy with the cpuset controller
}

// cgroupMounts lists the mounted cgroup hierarchies, v1 and v2, so that
// hybrid hosts are handled like pure ones.
func cgroupMounts() ([]cgroupMount, error) {
	mounts, err := mountinfo.Read()
	if err != nil {
		return nil, fmt.Errorf("list cgroup mounts: %w", err)
	}
	var out []cgroupMount
	seen := make(map[string]bool)
	for _, mi := range mounts {
		if mi.FSType != "cgroup" && mi.FSType != "cgroup2" {
			continue
		}
		// Several mounts of one hierarchy are one hierarchy.
		key := mi.FSType + " " + mi.SuperOptions
		if seen[key] {
			continue
		}
		seen[key] = true
		m := cgroupMount{dir: mi.MountPoint, v2: mi.FSType == "cgroup2"}
		for _, opt := range strings.Split(mi.SuperOptions, ",") {
			if opt == "cpuset" {
				m.cpuset = true
			}
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy is mounted")
	}
	return out, nil
}

// joinCgroup moves pid into cgroup path in every mounted hierarchy,
// creating it where missing.
func joinCgroup(path string, pid int) error {
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	for _, m := range mounts {
		dir := filepath.Join(m.dir, path)
		if err := os.MkdirAll(dir, cgroupPerm); err != nil {
			return fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		if m.cpuset {
			if err := inheritCpuset(m.dir, path); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("join cgroup %s: %w", dir, err)
		}
	}
	return nil
}

// inheritCpuset fills empty cpuset.cpus and cpuset.mems from the parent,
// top down: a v1 cpuset cgroup with empty sets accepts no process.
func inheritCpuset(mount, path string) error {
	parent := mount
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		dir := filepath.Join(parent, part)
		for _, file := range []string{"cpuset.cpus", "cpuset.mems"} {
			cur, err := os.ReadFile(filepath.Join(dir, file))
			if err != nil {
				return fmt.Errorf("read %s: %w", filepath.Join(dir, file), err)
			}
			if len(bytes.TrimSpace(cur)) > 0 {
				continue
			}
			val, err := os.ReadFile(filepath.Join(parent, file))
			if err != nil {
				return fmt.Errorf("read %s: %w", filepath.Join(parent, file), err)
			}
			if err := os.WriteFile(filepath.Join(dir, file), val, 0); err != nil {
				return fmt.Errorf("set %s: %w", filepath.Join(dir, file), err)
			}
		}
		parent = dir
	}
	return nil
}

// RemoveCgroup removes cgroup path (as given to ShimConfig.Cgroup or
// SpecOptions.CgroupsPath) from every mounted hierarchy. It fails while a
// process is still in it; a path that does not exist is already removed.
func RemoveCgroup(path string) error {
	if !filepath.IsAbs(path) || filepath.Clean(path) == "/" {
		return fmt.Errorf("remove cgroup %q: want an absolute path below the root", path)
	}
	mounts, err := cgroupMounts()
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		dir := filepath.Join(m.dir, path)
		// ENOTDIR: a component is a file, so no such cgroup exists.
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
		}
	}
	return errors.Join(errs...)
}
