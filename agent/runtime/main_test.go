package runtime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/testutil"
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
	testutil.RemoveBuilds()
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

// godwitBinary returns the godwit binary the shim runs from: the one named
// by GODWIT_TEST_BINARY, else ./cmd/godwit built once per test run.
func godwitBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(testBinaryEnv); p != "" {
		return p
	}
	return testutil.Godwit(t)
}

// requireIntegrationHost checks what the integration tests need: root,
// runc, a static busybox and mounted cgroups.
func requireIntegrationHost(t *testing.T) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc")
	if _, err := os.Stat(busyboxPath); err != nil {
		testutil.Missing(t, "needs "+busyboxPath+" (busybox-static)")
	}
	if _, err := cgroupMounts(); err != nil {
		testutil.Missing(t, fmt.Sprintf("needs mounted cgroups (%v)", err))
	}
}
