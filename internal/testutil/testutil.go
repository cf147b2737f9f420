// Package testutil holds what godwit's tests share: gating tests on root
// and host tools (skip on a developer's machine, fail under CI=true), the
// godwit binary built once per test binary, and busybox root filesystems.
package testutil

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
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

// busyboxApplets are the commands the test images link to busybox.
var busyboxApplets = []string{
	"sh", "ash", "cat", "echo", "date", "sleep", "ls", "wc", "httpd", "nc", "mkdir",
	"rm", "true", "false", "env", "id", "hostname", "ps", "kill", "dd", "head", "tail", "seq", "yes",
}

// busybox is the static busybox the test images are built from.
const busybox = "/bin/busybox"

// BusyboxRootfs makes a minimal root filesystem in dir: /bin/busybox (the
// static one from Debian's busybox-static) and relative symlinks to it.
func BusyboxRootfs(t testing.TB, dir string) {
	t.Helper()
	if _, err := os.Stat(busybox); err != nil {
		Missing(t, "needs busybox-static at "+busybox)
	}
	if err := WriteBusyboxRootfs(dir); err != nil {
		t.Fatal(err)
	}
}

// BusyboxTar writes a plain rootfs tarball of a busybox root filesystem to
// path, as `tar -C ROOTFS -cf busybox.tar .` would.
func BusyboxTar(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(busybox); err != nil {
		Missing(t, "needs busybox-static at "+busybox)
	}
	if err := WriteBusyboxTar(path); err != nil {
		t.Fatal(err)
	}
}

// WriteBusyboxRootfs is BusyboxRootfs for programs that are not tests (the
// benchmarks): it returns what went wrong instead of failing a test.
func WriteBusyboxRootfs(dir string) error {
	for _, d := range []string{"bin", "tmp", "etc", "proc", "sys", "dev", "root", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	data, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("busybox-static is needed at %s (scripts/install-deps.sh installs it): %w", busybox, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), data, 0o755); err != nil {
		return err
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/:/bin/sh\n"), 0o644)
}

// WriteBusyboxTar is BusyboxTar for programs that are not tests.
func WriteBusyboxTar(path string) error {
	root, err := os.MkdirTemp("", "godwit-busybox-rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if err := WriteBusyboxRootfs(root); err != nil {
		return err
	}
	if err := tarDir(root, path); err != nil {
		return fmt.Errorf("write busybox tarball %s: %w", path, err)
	}
	return nil
}

// tarDir writes the tree under root to a plain tarball at path, with
// names relative to root ("./bin/sh"), as `tar -C root -cf path .` would.
func tarDir(root, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		hdr.Name = "./" + filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}
