package doctor

import (
	"path"
	"slices"
	"strings"
)

// cgroupMode is how the cgroup hierarchies are mounted.
type cgroupMode string

const (
	cgroupNone cgroupMode = "none"
	// cgroupV1: only v1 controller hierarchies.
	cgroupV1 cgroupMode = "v1"
	// cgroupV2: the unified hierarchy on /sys/fs/cgroup itself.
	cgroupV2 cgroupMode = "v2"
	// cgroupHybrid: v1 controllers, plus a v2 hierarchy (usually
	// /sys/fs/cgroup/unified) that holds no controllers. runc uses v1.
	cgroupHybrid cgroupMode = "hybrid"
)

const freezerController = "freezer"

type cgroupInfo struct {
	mode          cgroupMode
	v1Controllers []string // sorted; "name=systemd" hierarchies excluded
}

func (c cgroupInfo) has(controller string) bool {
	_, found := slices.BinarySearch(c.v1Controllers, controller)
	return found
}

// detectCgroups reads a mount table in /proc/self/mounts format and sees
// which cgroup filesystems are mounted under /sys/fs/cgroup. Mounts
// elsewhere (a test's own cgroup2 mount, say) do not count: runc looks there.
func detectCgroups(mounts string) cgroupInfo {
	var v2Root, v2Beside, v1 bool
	var controllers []string
	for line := range strings.Lines(mounts) {
		// device mountpoint fstype options dump pass
		fields := strings.Fields(line)
		if len(fields) < 4 {
			continue
		}
		mountpoint, fstype, options := path.Clean(fields[1]), fields[2], fields[3]
		under := mountpoint == pathCgroupRoot || strings.HasPrefix(mountpoint, pathCgroupRoot+"/")
		if !under {
			continue
		}
		switch fstype {
		case "cgroup2":
			if mountpoint == pathCgroupRoot {
				v2Root = true
			} else {
				v2Beside = true
			}
		case "cgroup":
			v1 = true
			for opt := range strings.SplitSeq(options, ",") {
				if isV1Controller(opt) && !slices.Contains(controllers, opt) {
					controllers = append(controllers, opt)
				}
			}
		}
	}
	slices.Sort(controllers)
	info := cgroupInfo{mode: cgroupNone, v1Controllers: controllers}
	switch {
	case v2Root:
		info.mode = cgroupV2
	case v1 && v2Beside:
		info.mode = cgroupHybrid
	case v1:
		info.mode = cgroupV1
	}
	// A cgroup2 mount only below /sys/fs/cgroup, with no v1 beside it, is
	// none: runc takes a non-cgroup2 /sys/fs/cgroup for v1 and finds no
	// controllers.
	return info
}

// v1MountOptions are the generic options of a cgroup v1 mount; every other
// option without "=" names a controller.
var v1MountOptions = []string{"rw", "ro", "relatime", "noatime", "nodiratime", "strictatime",
	"nosuid", "nodev", "noexec", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods"}

func isV1Controller(opt string) bool {
	return opt != "" && !strings.Contains(opt, "=") && !slices.Contains(v1MountOptions, opt)
}
