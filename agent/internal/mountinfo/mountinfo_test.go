package mountinfo

import (
	"slices"
	"strings"
	"testing"
)

const sample = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:35 / /tmp/with\040space rw shared:20 - tmpfs tmpfs rw
41 22 0:36 / /tmp/plain rw shared:21 - tmpfs tmpfs rw
42 22 0:37 / /tmp/back\134slash rw - tmpfs tmpfs rw
43 22 0:38 / /tmp/not\08escape rw - tmpfs tmpfs rw
44 22 0:39 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
45 22 0:40 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw,nsdelegate
46 22 0:41 / /tmp/no-separator rw
short line
`

func TestParseMountPoints(t *testing.T) {
	mounts, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/tmp/with space", true},
		{"/tmp/plain", true},
		{"/tmp", false},
		{"/tmp/with\\040space", false},
		{`/tmp/back\slash`, true},
		{`/tmp/not\08escape`, true},
		{"/tmp/no-separator", true},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			got := slices.ContainsFunc(mounts, func(m Mount) bool { return m.MountPoint == tc.path })
			if got != tc.want {
				t.Errorf("mounted(%q) = %t, want %t", tc.path, got, tc.want)
			}
		})
	}
}

func TestParseFields(t *testing.T) {
	mounts, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	byPoint := map[string]Mount{}
	for _, m := range mounts {
		byPoint[m.MountPoint] = m
	}
	cases := []struct {
		name string
		want Mount
	}{
		{"root", Mount{MountPoint: "/", FSType: "ext4", Source: "/dev/vda", SuperOptions: "rw"}},
		{"cgroup v1", Mount{MountPoint: "/sys/fs/cgroup/cpu,cpuacct", FSType: "cgroup", Source: "cgroup", SuperOptions: "rw,cpu,cpuacct"}},
		{"cgroup v2", Mount{MountPoint: "/sys/fs/cgroup/unified", FSType: "cgroup2", Source: "cgroup2", SuperOptions: "rw,nsdelegate"}},
		{"no separator", Mount{MountPoint: "/tmp/no-separator"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := byPoint[tc.want.MountPoint]; got != tc.want {
				t.Errorf("mount at %s = %+v, want %+v", tc.want.MountPoint, got, tc.want)
			}
		})
	}
	if len(mounts) != 8 {
		t.Errorf("parsed %d mounts, want 8 (the short line passed over)", len(mounts))
	}
}

func TestIsMountPointOnThisHost(t *testing.T) {
	cases := []struct {
		path string
		want bool
	}{
		{"/", true},
		{"/proc", true},
		{"/proc/self", false},
	}
	for _, tc := range cases {
		t.Run(tc.path, func(t *testing.T) {
			got, err := IsMountPoint(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("IsMountPoint(%q) = %t, want %t", tc.path, got, tc.want)
			}
		})
	}
}
