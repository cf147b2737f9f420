package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeHost is a fake procfs and cgroup tree under a temporary directory,
// laid out like a v1 host (cpuacct and memory hierarchies), a v2 host
// (one unified hierarchy) or a hybrid one (both).
type fakeHost struct {
	t   *testing.T
	src loadSources
}

const (
	fakeV1     = "v1"
	fakeV2     = "v2"
	fakeHybrid = "hybrid"
)

func newFakeHost(t *testing.T, layout string) *fakeHost {
	root := t.TempDir()
	src := loadSources{Proc: filepath.Join(root, "proc")}
	if layout == fakeV1 || layout == fakeHybrid {
		src.CPUAcct = filepath.Join(root, "cgroup", "cpuacct")
		src.Memory = filepath.Join(root, "cgroup", "memory")
	}
	if layout == fakeV2 || layout == fakeHybrid {
		src.Unified = filepath.Join(root, "cgroup", "unified")
	}
	h := &fakeHost{t: t, src: src}
	h.write(filepath.Join(src.Proc, "meminfo"), "MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    400 kB\n")
	return h
}

func (h *fakeHost) write(path, data string) {
	h.t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// procStat writes /proc/stat for two CPUs with the given busy (user) and
// idle ticks in all.
func (h *fakeHost) procStat(busy, idle int) {
	h.write(filepath.Join(h.src.Proc, "stat"), strings.Join([]string{
		// user nice system idle iowait irq softirq steal guest guest_nice
		"cpu  " + itoa(busy) + " 0 0 " + itoa(idle) + " 0 0 0 0 " + itoa(busy) + " 0",
		"cpu0 1 0 0 1 0 0 0 0 0 0",
		"cpu1 1 0 0 1 0 0 0 0 0 0",
		"intr 12345",
		"ctxt 678",
	}, "\n")+"\n")
}

// v1 writes a container's cgroup in the v1 hierarchies: CPU used in
// nanoseconds, memory in use and inactive file cache in bytes.
func (h *fakeHost) v1(cgroup string, cpuNs, usage, inactive int64) {
	h.write(filepath.Join(h.src.CPUAcct, cgroup, "cpuacct.usage"), itoa(cpuNs)+"\n")
	h.write(filepath.Join(h.src.Memory, cgroup, "memory.usage_in_bytes"), itoa(usage)+"\n")
	h.write(filepath.Join(h.src.Memory, cgroup, "memory.stat"),
		"cache 1\nrss 2\ninactive_file 999999\ntotal_cache 3\ntotal_inactive_file "+itoa(inactive)+"\n")
}

// v2 writes a container's cgroup in the unified hierarchy.
func (h *fakeHost) v2(cgroup string, cpuUs, current, inactive int64) {
	h.write(filepath.Join(h.src.Unified, cgroup, "cpu.stat"), "usage_usec "+itoa(cpuUs)+"\nuser_usec 1\nsystem_usec 2\n")
	h.write(filepath.Join(h.src.Unified, cgroup, "memory.current"), itoa(current)+"\n")
	h.write(filepath.Join(h.src.Unified, cgroup, "memory.stat"), "anon 5\nfile 6\nactive_file 7\ninactive_file "+itoa(inactive)+"\n")
}

func itoa[N int | int64](n N) string { return strconv.FormatInt(int64(n), 10) }

func TestLoadSamplerRates(t *testing.T) {
	const (
		cg  = "/godwit/n1/c1"
		mib = int64(1 << 20)
	)
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	started := t0.Add(-4 * time.Second)
	tests := []struct {
		name   string
		layout string
		// first and second write the container's counters before each
		// sample, one second apart.
		first, second func(h *fakeHost)
	}{
		{
			name:   "cgroup v1",
			layout: fakeV1,
			first:  func(h *fakeHost) { h.v1(cg, 2e9, 100*mib, 30*mib) },
			second: func(h *fakeHost) { h.v1(cg, 2.5e9, 120*mib, 40*mib) },
		},
		{
			name:   "cgroup v2",
			layout: fakeV2,
			first:  func(h *fakeHost) { h.v2(cg, 2e6, 100*mib, 30*mib) },
			second: func(h *fakeHost) { h.v2(cg, 2.5e6, 120*mib, 40*mib) },
		},
		{
			name:   "hybrid reads the v1 controllers",
			layout: fakeHybrid,
			first: func(h *fakeHost) {
				h.v1(cg, 2e9, 100*mib, 30*mib)
				h.v2(cg, 9e6, 900*mib, 0) // no controllers in v2 on a hybrid host: not read
			},
			second: func(h *fakeHost) { h.v1(cg, 2.5e9, 120*mib, 40*mib) },
		},
		{
			name:   "hybrid falls back to v2 for a cgroup v1 lacks",
			layout: fakeHybrid,
			first:  func(h *fakeHost) { h.v2(cg, 2e6, 100*mib, 30*mib) },
			second: func(h *fakeHost) { h.v2(cg, 2.5e6, 120*mib, 40*mib) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(t, tt.layout)
			s := newLoadSampler(h.src)
			targets := []loadTarget{{ID: "c1", Cgroup: cg, Started: started}}

			h.procStat(100, 300)
			tt.first(h)
			first, err := s.sample(t0, targets)
			if err != nil {
				t.Fatal(err)
			}
			// Since boot: 100 busy ticks of 400 on two CPUs.
			if first.CPUMillis != 500 {
				t.Errorf("first node CPU = %d millis, want 500 (the average since boot)", first.CPUMillis)
			}
			if first.MemoryBytes != 600*1024 {
				t.Errorf("node memory = %d, want %d (MemTotal - MemAvailable)", first.MemoryBytes, 600*1024)
			}
			if len(first.Containers) != 1 {
				t.Fatalf("first sample has %d containers, want 1: %+v", len(first.Containers), first.Containers)
			}
			// 2 s of CPU in the 4 s since the container started.
			if c := first.Containers[0]; c.CPUMillis != 500 || c.MemoryBytes != 70*mib {
				t.Errorf("first container sample = %+v, want 500 millis (since start) and 70 MiB (usage - inactive file)", c)
			}

			h.procStat(100+150, 300+50)
			tt.second(h)
			second, err := s.sample(t0.Add(time.Second), targets)
			if err != nil {
				t.Fatal(err)
			}
			// 150 busy ticks of 200 on two CPUs.
			if second.CPUMillis != 1500 {
				t.Errorf("second node CPU = %d millis, want 1500", second.CPUMillis)
			}
			if len(second.Containers) != 1 {
				t.Fatalf("second sample has %d containers, want 1", len(second.Containers))
			}
			// 0.5 s of CPU in 1 s.
			if c := second.Containers[0]; c.ID != "c1" || c.CPUMillis != 500 || c.MemoryBytes != 80*mib {
				t.Errorf("second container sample = %+v, want c1 at 500 millis and 80 MiB", c)
			}
		})
	}
}

func TestLoadSamplerCountersStartingOver(t *testing.T) {
	const cg = "/godwit/n1/c1"
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	h := newFakeHost(t, fakeV2)
	h.procStat(100, 300)
	s := newLoadSampler(h.src)

	h.v2(cg, 8e6, 1, 0)
	if _, err := s.sample(t0, []loadTarget{{ID: "c1", Cgroup: cg, Started: t0.Add(-10 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	// Restored: a new cgroup whose counter starts again, the container
	// started 2 s ago.
	h.v2(cg, 1e6, 1, 0)
	got, err := s.sample(t0.Add(time.Second), []loadTarget{{ID: "c1", Cgroup: cg, Started: t0.Add(-time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Containers) != 1 || got.Containers[0].CPUMillis != 500 {
		t.Fatalf("after the counter went back: %+v, want 500 millis (1 s of CPU in the 2 s since the restore), never a negative rate", got.Containers)
	}
}

func TestLoadSamplerLeavesOutContainersWithoutACgroup(t *testing.T) {
	h := newFakeHost(t, fakeV1)
	h.procStat(100, 300)
	h.v1("/godwit/n1/c1", 1e9, 10, 0)
	s := newLoadSampler(h.src)
	got, err := s.sample(time.Now(), []loadTarget{
		{ID: "c1", Cgroup: "/godwit/n1/c1"},
		{ID: "gone", Cgroup: "/godwit/n1/gone"}, // exited between the listing and the sample
	})
	if err != nil {
		t.Fatalf("a container whose cgroup went away is not an error: %v", err)
	}
	if len(got.Containers) != 1 || got.Containers[0].ID != "c1" {
		t.Fatalf("containers = %+v, want c1 alone", got.Containers)
	}
}

func TestLoadSamplerReportsUnreadableFilesWithTheRest(t *testing.T) {
	h := newFakeHost(t, fakeV2)
	h.procStat(100, 300)
	h.v2("/godwit/n1/c1", 1e6, 10, 0)
	h.v2("/godwit/n1/bad", 1e6, 10, 0)
	h.write(filepath.Join(h.src.Unified, "/godwit/n1/bad", "memory.stat"), "anon 5\n") // no inactive_file
	s := newLoadSampler(h.src)
	got, err := s.sample(time.Now(), []loadTarget{{ID: "c1", Cgroup: "/godwit/n1/c1"}, {ID: "bad", Cgroup: "/godwit/n1/bad"}})
	if err == nil || !strings.Contains(err.Error(), "inactive_file") {
		t.Fatalf("err = %v, want one naming the missing inactive_file", err)
	}
	if len(got.Containers) != 1 || got.Containers[0].ID != "c1" || got.MemoryBytes != 600*1024 {
		t.Fatalf("sample = %+v, want the node and c1 despite the bad cgroup", got)
	}
}

func TestDetectLoadSourcesOnThisHost(t *testing.T) {
	src, err := detectLoadSources()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{src.CPUAcct, src.Memory, src.Unified} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("detected hierarchy %s: %v", dir, err)
		}
	}
	// The sampler reads this host's own counters.
	got, err := newLoadSampler(src).sample(time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.MemoryBytes <= 0 || got.CPUMillis < 0 {
		t.Fatalf("this host's load = %+v: want memory in use and a CPU rate", got)
	}
}
