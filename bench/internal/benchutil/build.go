package benchutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/godwit/godwit/internal/testutil"
)

// BuildGodwit builds ./cmd/godwit into dir/bin/godwit as `make build` does
// (CGO_ENABLED=0, a static binary) and returns that path. It builds the
// source tree this benchmark was compiled from, whatever the working
// directory, so it needs that tree and go on PATH; every error says how to
// do without: pass a built binary with the benchmark's --godwit flag.
func BuildGodwit(ctx context.Context, dir string) (string, error) {
	root := testutil.ModuleRoot()
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", fmt.Errorf("godwit's source is not at %s, where this benchmark was built from: "+
			"run it with `go run` from the repository, or pass --godwit: %w", root, err)
	}
	bin := filepath.Join(dir, "bin", "godwit")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/godwit")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build godwit (is go on PATH? or pass --godwit): %w\n%s", err, out)
	}
	return bin, nil
}

// RemoveWorkDir removes a benchmark's work dir and everything in it,
// unless something is still mounted under it (a cleanup that failed left
// a snapshot, a netns or a store mounted): removing files through a live
// mount could reach outside the directory, so then it removes nothing and
// returns an error naming the mount, for the operator to unmount.
func RemoveWorkDir(dir string) error {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// Field 5 of a mountinfo line is the mount point.
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			return fmt.Errorf("%s is still mounted: unmount what is under %s, then remove it", f[4], dir)
		}
	}
	return os.RemoveAll(dir)
}
