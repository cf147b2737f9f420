package snapshottest

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Missing stops a test whose requirement what is not met: it fails when the
// environment variable CI is "true", where every requirement must be
// installed, and skips otherwise.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("missing requirement: %s", what)
	}
	t.Skipf("missing requirement: %s (with CI=true this fails)", what)
}

// RequireRoot stops the test (see Missing) unless it runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root: run the tests as root")
	}
}

// Logger logs to the test's output, so a snapshotter's warnings show with
// the test that caused them.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mountInfoPathField is the index of the mount point in a line of
// /proc/self/mountinfo.
const mountInfoPathField = 4

// Mounted reports whether path is a mount point in this process's mount
// namespace.
func Mounted(t testing.TB, path string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	defer f.Close()
	return mountedIn(t, f, path)
}

func mountedIn(t testing.TB, r io.Reader, path string) bool {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > mountInfoPathField && unescapeOctal(fields[mountInfoPathField]) == path {
			return true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	return false
}

// unescapeOctal undoes mountinfo's \NNN escapes of spaces and such.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
