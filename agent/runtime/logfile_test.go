package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRotatingLog(t *testing.T) {
	const maxBytes, maxFiles, lines = 400, 2, 60
	dir := t.TempDir()
	l, err := openRotatingLog(dir, maxBytes, maxFiles)
	if err != nil {
		t.Fatal(err)
	}
	for i := range lines {
		if err := l.writeLine(StreamStdout, fmt.Appendf(nil, "line-%03d", i), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	for _, name := range []string{LogFileName, LogFileName + ".1", LogFileName + ".2"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if st.Size() > maxBytes {
			t.Errorf("%s is %d bytes, over the %d limit", name, st.Size(), maxBytes)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, LogFileName+".3")); err == nil {
		t.Errorf("%s.3 exists: only %d rotated files may be kept", LogFileName, maxFiles)
	}

	var out bytes.Buffer
	if err := ReadLogs(context.Background(), dir, false, &out); err != nil {
		t.Fatalf("ReadLogs: %v", err)
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	// The oldest lines were dropped; the rest must be the newest, in order.
	if len(got) == 0 || got[len(got)-1] != fmt.Sprintf("line-%03d", lines-1) {
		t.Fatalf("ReadLogs ends with %q, want line-%03d", got[len(got)-1], lines-1)
	}
	first, _ := strconv.Atoi(strings.TrimPrefix(got[0], "line-"))
	for i, line := range got {
		if want := fmt.Sprintf("line-%03d", first+i); line != want {
			t.Fatalf("line %d = %q, want %q: lines lost or out of order across rotated files", i, line, want)
		}
	}
}

func TestCopyStream(t *testing.T) {
	dir := t.TempDir()
	l, err := openRotatingLog(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", maxLogLineBytes+10)
	input := "hello world\n\nno newline at end " + long
	copyStream(l, StreamStderr, strings.NewReader(input), func(err error) { t.Error(err) })
	l.Close()

	raw, err := os.ReadFile(filepath.Join(dir, LogFileName))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("log has %d lines, want 4 (a long line is split): %q", len(lines), raw)
	}
	ts, rest, _ := strings.Cut(lines[0], " ")
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		t.Errorf("line %q does not start with an RFC 3339 time: %v", lines[0], err)
	}
	if rest != "stderr hello world" {
		t.Errorf("line = %q, want stream then text", rest)
	}

	var out bytes.Buffer
	if err := ReadLogs(context.Background(), dir, false, &out); err != nil {
		t.Fatal(err)
	}
	if strings.ReplaceAll(out.String(), "\n", "") != strings.ReplaceAll(input, "\n", "") {
		t.Errorf("ReadLogs lost text")
	}
	if !strings.HasPrefix(out.String(), "hello world\n\nno newline at end ") {
		t.Errorf("ReadLogs = %.60q...", out.String())
	}
}

func TestReadLogsEmptyStateDir(t *testing.T) {
	var out bytes.Buffer
	if err := ReadLogs(context.Background(), t.TempDir(), true, &out); err != nil || out.Len() != 0 {
		t.Errorf("ReadLogs = %q, %v; want nothing (no shim, no log)", out.String(), err)
	}
}

// fakeShim starts a process whose command line names dir as a shim's state
// dir and records it as the shim, so that ShimAlive reports it alive.
func fakeShim(t *testing.T, dir string) *exec.Cmd {
	t.Helper()
	// "; true" keeps sh itself running (a lone command would be exec'd,
	// and the process would lose the --state-dir argument ShimAlive checks).
	cmd := exec.Command("sh", "-c", "sleep 60; true", "--"+ShimFlagStateDir, dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := os.WriteFile(filepath.Join(dir, shimPidFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func TestReadLogsFollowAcrossRotation(t *testing.T) {
	// About ten lines fit in a file; the writer fills roughly one file per
	// poll of the follower, which holds the current file open and finds
	// the files rotated meanwhile. (A follower slower than all kept files
	// loses the dropped ones, as with any size-rotated log.)
	const lines, maxBytes, maxFiles = 300, 512, 4
	dir := t.TempDir()
	fakeShim(t, dir)
	l, err := openRotatingLog(dir, maxBytes, maxFiles)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got lockedBuffer
	done := make(chan error, 1)
	go func() { done <- ReadLogs(ctx, dir, true, &got) }()

	var want strings.Builder
	for i := range lines {
		text := fmt.Sprintf("line-%03d", i)
		want.WriteString(text + "\n")
		if err := l.writeLine(StreamStdout, []byte(text), time.Now()); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			time.Sleep(logFollowInterval / 4)
		}
	}
	l.Close()
	if err := writeExit(dir, ExitStatus{Code: 0, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("ReadLogs: %v", err)
	}
	if got.String() != want.String() {
		t.Errorf("followed %d bytes, want all %d lines in order; got:\n%s", got.Len(), lines, got.String())
	}
}

func TestReadLogsFollowEndsWithContext(t *testing.T) {
	dir := t.TempDir()
	fakeShim(t, dir)
	l, err := openRotatingLog(dir, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_ = l.writeLine(StreamStdout, []byte("before"), time.Now())

	ctx, cancel := context.WithTimeout(context.Background(), 3*logFollowInterval)
	defer cancel()
	var out bytes.Buffer
	err = ReadLogs(ctx, dir, true, &out)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("ReadLogs = %v, want the context's error while the container runs", err)
	}
	if out.String() != "before\n" {
		t.Errorf("ReadLogs wrote %q", out.String())
	}
}

func TestShimAlive(t *testing.T) {
	t.Run("no shim", func(t *testing.T) {
		if pid, alive := ShimAlive(t.TempDir()); pid != 0 || alive {
			t.Errorf("ShimAlive = %d, %v; want 0, false", pid, alive)
		}
	})
	t.Run("running shim", func(t *testing.T) {
		dir := t.TempDir()
		cmd := fakeShim(t, dir)
		if pid, alive := ShimAlive(dir + "/"); pid != cmd.Process.Pid || !alive {
			t.Errorf("ShimAlive = %d, %v; want %d, true", pid, alive, cmd.Process.Pid)
		}
	})
	t.Run("pid now used by another process", func(t *testing.T) {
		dir := t.TempDir()
		other := fakeShim(t, t.TempDir())
		_ = os.WriteFile(filepath.Join(dir, shimPidFile), []byte(strconv.Itoa(other.Process.Pid)), 0o600)
		if _, alive := ShimAlive(dir); alive {
			t.Error("a process that is not this dir's shim counts as alive")
		}
	})
	t.Run("exited shim", func(t *testing.T) {
		dir := t.TempDir()
		cmd := fakeShim(t, dir)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if _, alive := ShimAlive(dir); alive {
			t.Error("an exited shim counts as alive")
		}
	})
	t.Run("zombie shim", func(t *testing.T) {
		dir := t.TempDir()
		cmd := fakeShim(t, dir)
		_ = cmd.Process.Kill() // not reaped yet: a zombie
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, alive := ShimAlive(dir); !alive {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("a zombie shim counts as alive")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// lockedBuffer is a bytes.Buffer safe for a writer and a reader goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *lockedBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}
