// Package testutil holds what godwit's tests share: gating tests on root
// and host tools (skip on a developer's machine, fail under CI=true), the
// godwit binary built once per test binary, and busybox root filesystems.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/godwit/godwit/internal/busybox"
)

// inCI reports whether the tests run in CI, where a missing requirement is
// a failure, never a skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// Missing skips t, or fails it under CI=true, naming what is missing.
func Missing(t testing.TB, what string) {
	t.Helper()
	if inCI() {
		t.Fatalf("%s (CI=true: missing requirements fail; run scripts/install-deps.sh as root)", what)
	}
	t.Skipf("skipped: %s", what)
}

// RequireRoot stops t unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root")
	}
}

// RequireTools stops t unless every named program is on PATH.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			Missing(t, "needs "+n+" on PATH")
		}
	}
}

// RequireKernelFeature stops t unless probe finds the kernel feature named
// feature. A kernel without it SKIPS t even under CI=true: unlike a missing
// package, no install script can add it, and the project runs on kernels
// that lack some features (this one has no soft-dirty tracking). A probe
// that cannot tell fails t, since a broken probe would skip a test for
// ever.
func RequireKernelFeature(t testing.TB, feature string, probe func() (bool, error)) {
	t.Helper()
	ok, err := probe()
	if err != nil {
		t.Fatalf("probe the kernel for %s: %v", feature, err)
	}
	if !ok {
		t.Skipf("skipped: this kernel lacks %s", feature)
	}
}

// ModuleRoot is the repository's root directory.
func ModuleRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
	buildOut  []byte
)

// Godwit builds the godwit binary once per test binary and returns its
// path. It outlives single tests (shims run from it), so a package that
// calls it removes it from TestMain with RemoveBuilds.
func Godwit(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "godwit-test-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "godwit")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/godwit")
		cmd.Dir = ModuleRoot()
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // static, as `make build` makes it
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("build godwit: %v\n%s", buildErr, buildOut)
	}
	return buildPath
}

// RemoveBuilds deletes what Godwit and BuildWorkload built; call it from
// TestMain after m.Run.
func RemoveBuilds() {
	for _, p := range []string{buildPath, workloadPath} {
		if p != "" {
			_ = os.RemoveAll(filepath.Dir(p))
		}
	}
}

// BusyboxRootfs makes a minimal root filesystem in dir (busybox.WriteRootfs).
func BusyboxRootfs(t testing.TB, dir string) {
	t.Helper()
	if _, err := os.Stat(busybox.Path); err != nil {
		Missing(t, "needs busybox-static at "+busybox.Path)
	}
	if err := busybox.WriteRootfs(dir); err != nil {
		t.Fatal(err)
	}
}

// BusyboxTar writes a plain rootfs tarball of a busybox root filesystem to
// path (busybox.WriteTar).
func BusyboxTar(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(busybox.Path); err != nil {
		Missing(t, "needs busybox-static at "+busybox.Path)
	}
	if err := busybox.WriteTar(path); err != nil {
		t.Fatal(err)
	}
}

// StatusBytes is a kB field of /proc/PID/status (VmRSS, RssAnon, ...) in
// bytes; pid 0 is this process.
func StatusBytes(t testing.TB, pid int, field string) int64 {
	t.Helper()
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("%s: %s: %v", path, field, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("%s has no %s", path, field)
	return 0
}
