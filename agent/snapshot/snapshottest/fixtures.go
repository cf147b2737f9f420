package snapshottest

import (
	"log/slog"
	"testing"

	"github.com/godwit/godwit/agent/internal/mountinfo"
)

// Logger logs to the test's output, so a snapshotter's warnings show with
// the test that caused them.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Mounted reports whether path is a mount point in this process's mount
// namespace.
func Mounted(t testing.TB, path string) bool {
	t.Helper()
	mounted, err := mountinfo.IsMountPoint(path)
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	return mounted
}
