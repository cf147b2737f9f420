package benchutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/testutil"
)

// writeFile writes content to dir/name, making the directories on the way.
func writeFile(t *testing.T, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// mountTmpfs mounts a tmpfs at dir until the test ends.
func mountTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs at %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

func TestCPUModel(t *testing.T) {
	tests := []struct {
		name, cpuinfo, want string
	}{
		{"first model name", "processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n\nprocessor\t: 1\nmodel name\t: other\n",
			"AMD EPYC 9654 96-Core Processor"},
		{"none named (arm64)", "processor\t: 0\nBogoMIPS\t: 50.00\n", "unknown"},
		{"unreadable", "", "unknown"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cpuinfo")
			if tc.cpuinfo != "" {
				writeFile(t, filepath.Dir(path), "cpuinfo", tc.cpuinfo)
			}
			if got := cpuModel(path); got != tc.want {
				t.Errorf("cpuModel = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMemAvailable(t *testing.T) {
	tests := []struct {
		name, meminfo string
		want          int64
		wantErr       string
	}{
		{"in bytes", "MemTotal:       16384000 kB\nMemFree:  100 kB\nMemAvailable:    2048 kB\n", 2 << 20, ""},
		{"missing", "MemTotal:       16384000 kB\nMemFree:  100 kB\n", 0, "no MemAvailable"},
		{"not a number", "MemAvailable:    lots kB\n", 0, "MemAvailable in"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "meminfo", tc.meminfo)
			got, err := memAvailable(filepath.Join(dir, "meminfo"))
			if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("memAvailable = %d, %v; want %d, error containing %q", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestMemAvailableOnThisHost(t *testing.T) {
	avail, err := MemAvailable()
	if err != nil {
		t.Fatal(err)
	}
	if total := MemoryTotal(); avail <= 0 || avail > total {
		t.Errorf("MemAvailable = %d, want more than 0 and at most MemoryTotal %d", avail, total)
	}
}

func TestCgroupMode(t *testing.T) {
	tests := []struct {
		name  string
		files []string
		want  string
	}{
		{"v2 alone", []string{"cgroup.controllers"}, "v2"},
		{"hybrid", []string{"cpu/tasks", "unified/cgroup.controllers"}, "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)"},
		{"v1 alone", []string{"cpu/tasks", "memory/tasks"}, "v1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for _, f := range tc.files {
				writeFile(t, root, f, "")
			}
			if got := cgroupMode(root); got != tc.want {
				t.Errorf("cgroupMode = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFilesystem(t *testing.T) {
	tests := []struct {
		name, dir, want string
	}{
		{"one it does not name", "/proc", "filesystem type 0x9fa0"},
		{"missing", "/nonexistent-benchutil-test", "unknown (no such file or directory)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Filesystem(tc.dir); got != tc.want {
				t.Errorf("Filesystem(%s) = %q, want %q", tc.dir, got, tc.want)
			}
		})
	}
	t.Run("tmpfs", func(t *testing.T) {
		testutil.RequireRoot(t)
		dir := filepath.Join(t.TempDir(), "mnt")
		mountTmpfs(t, dir)
		if got := Filesystem(dir); got != "tmpfs" {
			t.Errorf("Filesystem of a tmpfs = %q, want tmpfs", got)
		}
	})
}

func TestKernelIsUname(t *testing.T) {
	data, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		testutil.Missing(t, "/proc/sys/kernel/osrelease to compare with: "+err.Error())
	}
	if got, want := Kernel(), strings.TrimSpace(string(data)); got != want {
		t.Errorf("Kernel = %q, want %q", got, want)
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		name, got, want string
	}{
		{"MiB whole", MiB(512 << 20), "512.0 MiB"},
		{"MiB fraction", MiB(3 << 19), "1.5 MiB"},
		{"MiB zero", MiB(0), "0.0 MiB"},
		{"target met", Verdict(true), "met"},
		{"target missed", Verdict(false), "NOT met"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}
