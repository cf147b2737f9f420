package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/godwit/godwit/internal/busybox"
)

// WorkloadPath is where the workload binary lies in the rootfs that
// WorkloadTar and WriteWorkloadTar make: run it as "/workload -mem 64".
const WorkloadPath = "/workload"

// WorkloadPort is the port the workload listens on unless given -listen.
const WorkloadPort = 7000

var (
	workloadOnce sync.Once
	workloadPath string
	workloadErr  error
)

// BuildWorkload builds the checkpoint workload (internal/testutil/workload)
// once per test binary and returns its path. Like Godwit's build it
// outlives single tests, so RemoveBuilds deletes it.
func BuildWorkload(t testing.TB) string {
	t.Helper()
	workloadOnce.Do(func() {
		dir, err := os.MkdirTemp("", "godwit-test-workload-")
		if err != nil {
			workloadErr = err
			return
		}
		workloadPath = filepath.Join(dir, "workload")
		workloadErr = BuildWorkloadTo(context.Background(), workloadPath)
	})
	if workloadErr != nil {
		t.Fatal(workloadErr)
	}
	return workloadPath
}

// BuildWorkloadTo builds the workload as a static binary (CGO_ENABLED=0,
// so it runs in a rootfs without a libc) at path. It needs the go tool and
// this module's sources, as the benchmarks run from the repository.
func BuildWorkloadTo(ctx context.Context, path string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./internal/testutil/workload")
	cmd.Dir = ModuleRoot()
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the workload: %w\n%s", err, out)
	}
	return nil
}

// WorkloadTar writes a plain rootfs tarball to path: the busybox rootfs
// of BusyboxTar plus the workload binary at WorkloadPath. `godwit image
// import` and `podman import` both take it as an image.
func WorkloadTar(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(busybox.Path); err != nil {
		Missing(t, "needs busybox-static at "+busybox.Path)
	}
	if err := WriteWorkloadTar(path, BuildWorkload(t)); err != nil {
		t.Fatal(err)
	}
}

// WriteWorkloadTar is WorkloadTar for programs that are not tests (the
// benchmarks), given an already built workload binary.
func WriteWorkloadTar(path, workloadBin string) error {
	root, err := os.MkdirTemp("", "godwit-workload-rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if err := busybox.WriteRootfs(root); err != nil {
		return err
	}
	data, err := os.ReadFile(workloadBin)
	if err != nil {
		return fmt.Errorf("read the workload binary: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, WorkloadPath), data, 0o755); err != nil {
		return err
	}
	if err := busybox.TarDir(root, path); err != nil {
		return fmt.Errorf("write workload tarball %s: %w", path, err)
	}
	return nil
}
