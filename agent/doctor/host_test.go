package doctor

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"os"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/godwit/godwit/internal/testutil"
)

// TestRunOnThisHost runs the real probes. On a host set up with
// scripts/install-deps.sh every required check must pass, and the
// soft-dirty verdict must agree with the test's own look at the kernel.
func TestRunOnThisHost(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "criu", "runc")
	dataDir := t.TempDir()

	r := Run(t.Context(), Options{DataDir: dataDir})

	for _, c := range r.Checks {
		t.Logf("%-4s %-13s %s %s", c.Status, c.Name, c.Detail, c.Fix)
		if c.Required && c.Status != StatusPass {
			t.Errorf("required check %s: %s: %s (fix: %s)", c.Name, c.Status, c.Detail, c.Fix)
		}
	}
	if !r.OK {
		t.Error("report not OK on a host with the project's dependencies installed")
	}
	if !r.Supports(StopCopy) {
		s, _ := r.Strategy(StopCopy)
		t.Errorf("stop-copy unsupported: %s", s.Reason)
	}

	kernelTracks := pagemapSoftDirtyProbe(t)
	if cfg, ok := kernelConfig(t, "CONFIG_MEM_SOFT_DIRTY"); ok && (cfg == "y") != kernelTracks {
		t.Fatalf("test's pagemap probe says soft-dirty=%v but the kernel config has CONFIG_MEM_SOFT_DIRTY=%q", kernelTracks, cfg)
	}
	c := findCheck(t, r, CheckSoftDirty)
	if !kernelTracks && c.Status == StatusPass {
		t.Errorf("soft-dirty passed on a kernel that does not track soft-dirty pages: %s", c.Detail)
	}
	if kernelTracks && strings.Contains(c.Detail, "does not mark written pages soft-dirty") {
		t.Errorf("soft-dirty says the kernel lacks it, but it tracks: %s", c.Detail)
	}
	if r.Supports(PreCopy) && !kernelTracks {
		t.Error("pre-copy supported without soft-dirty tracking")
	}
	if !kernelTracks {
		if s, _ := r.Strategy(PreCopy); !strings.Contains(s.Reason, "soft-dirty") {
			t.Errorf("pre-copy unsupported without naming soft-dirty: %q", s.Reason)
		}
	}
	// DESIGN.md section 7: go-criu starts page servers on this CRIU.
	if ps := findCheck(t, r, CheckPageServer); ps.Status != StatusPass {
		t.Errorf("page-server: %s: %s", ps.Status, ps.Detail)
	}

	// The overlay test mount cleaned up after itself.
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("data dir %s not empty after doctor: %v", dataDir, entries)
	}
}

// pagemapSoftDirtyProbe looks at the kernel independently of the package's
// probe: a fresh stdlib mapping, written after clearing the soft-dirty
// bits, read back by page frame through pagemap.
func pagemapSoftDirtyProbe(t *testing.T) bool {
	t.Helper()
	const (
		pages        = 2
		softDirtyBit = 55
		presentBit   = 63
	)
	size := pages * os.Getpagesize()
	mem, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	t.Cleanup(func() { syscall.Munmap(mem) })
	for i := range pages {
		mem[i*os.Getpagesize()] = 1
	}
	if err := os.WriteFile("/proc/self/clear_refs", []byte("4\n"), 0); err != nil {
		t.Fatalf("clear soft-dirty: %v", err)
	}
	// Dirty only the second page: the first must stay clean on a kernel
	// that tracks, so a bit that is always set would not pass for tracking.
	last := (pages - 1) * os.Getpagesize()
	mem[last] = 2

	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	first := uint64(uintptr(unsafe.Pointer(&mem[0]))) / uint64(os.Getpagesize())
	buf := make([]byte, 8*pages)
	if _, err := f.ReadAt(buf, int64(first*8)); err != nil {
		t.Fatalf("read pagemap: %v", err)
	}
	clean := binary.LittleEndian.Uint64(buf[0:8])
	dirty := binary.LittleEndian.Uint64(buf[8:16])
	if dirty>>presentBit&1 == 0 {
		t.Fatalf("written page not present in pagemap: %#x", dirty)
	}
	tracks := dirty>>softDirtyBit&1 == 1
	if tracks && clean>>softDirtyBit&1 == 1 {
		t.Fatalf("soft-dirty bit set on an unwritten page after clear_refs: %#x", clean)
	}
	return tracks
}

// kernelConfig reads one option from /proc/config.gz, when the kernel has it.
func kernelConfig(t *testing.T, option string) (string, bool) {
	t.Helper()
	f, err := os.Open("/proc/config.gz")
	if err != nil {
		return "", false
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("read /proc/config.gz: %v", err)
	}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, option+"="); ok {
			return v, true
		}
		if line == "# "+option+" is not set" {
			return "n", true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /proc/config.gz: %v", err)
	}
	return "n", true
}
