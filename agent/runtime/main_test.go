package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testHelperEnv makes the test binary act as a helper process instead of
// running tests: a fake runc, or an "agent" that starts a shim and is then
// killed.
const (
	testHelperEnv   = "GODWIT_RUNTIME_TEST_HELPER"
	helperFakeRunc  = "fake-runc"
	helperAgent     = "agent"
	helperConfigEnv = "GODWIT_RUNTIME_TEST_SHIM_CONFIG"

	// testBinaryEnv names a prebuilt godwit binary to use as the shim
	// instead of building ./cmd/godwit.
	testBinaryEnv = "GODWIT_TEST_BINARY"
	// testCgroupParent holds every cgroup these tests create.
	testCgroupParent = "/godwit-test-runtime"
)

func TestMain(m *testing.M) {
	switch os.Getenv(testHelperEnv) {
	case helperFakeRunc:
		os.Exit(fakeRunc(os.Args[1:]))
	case helperAgent:
		os.Exit(runHelperAgent())
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if os.Geteuid() == 0 {
		_ = RemoveCgroup(testCgroupParent) // best effort: fails while another package's run uses it
	}
	os.Exit(code)
}

// runHelperAgent plays an agent: it starts a shim, prints its pid and then
// waits to be killed.
func runHelperAgent() int {
	var c ShimConfig
	if err := json.Unmarshal([]byte(os.Getenv(helperConfigEnv)), &c); err != nil {
		fmt.Fprintln(os.Stderr, "helper agent:", err)
		return 2
	}
	pid, err := StartShim(context.Background(), os.Getenv(testBinaryEnv), c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper agent:", err)
		return 1
	}
	fmt.Println(pid)
	time.Sleep(time.Hour) // until the test kills this "agent"
	return 0
}

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// godwitBinary returns the godwit binary the shim runs from: the one named
// by GODWIT_TEST_BINARY, else ./cmd/godwit built once per test run.
func godwitBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(testBinaryEnv); p != "" {
		return p
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "godwit-runtime-test-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "godwit")
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = fmt.Errorf("find the go command: %w", err)
			return
		}
		cmd := exec.Command(goBin, "build", "-o", buildPath, "./cmd/godwit")
		cmd.Dir = filepath.Join("..", "..") // the module root
		// godwit ships as one static binary; build it the same way, so the
		// shim's memory is measured as it will run.
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/godwit: %w\n%s", err, strings.TrimSpace(string(out)))
		}
	})
	if buildErr != nil {
		t.Fatalf("build the godwit binary for the shim: %v", buildErr)
	}
	return buildPath
}

// require skips the test, or fails it under CI, when what names is missing.
func require(t *testing.T, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing requirement: %s", what)
	}
	t.Skipf("missing requirement: %s", what)
}

// requireRoot checks what the integration tests need: root, runc, a static
// busybox and mounted cgroups.
func requireRoot(t *testing.T) {
	t.Helper()
	require(t, os.Geteuid() == 0, "root")
	_, err := exec.LookPath("runc")
	require(t, err == nil, "runc in PATH")
	_, err = os.Stat(busyboxPath)
	require(t, err == nil, busyboxPath+" (busybox-static)")
	_, err = cgroupMounts()
	require(t, err == nil, "mounted cgroups")
}
