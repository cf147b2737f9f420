package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/testutil"
)

const (
	// counterScript prints 1, 2, 3, ... ten times a second, keeping the
	// count only in the shell's memory: a restored container that goes on
	// from its count, rather than from 1, was restored, not restarted.
	counterScript = "i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done"
	// counterWait bounds how long a test waits for the counter to reach a
	// value.
	counterWait = 15 * time.Second
	// checkpointTimeout bounds one checkpoint or restore.
	checkpointTimeout = 60 * time.Second
	// unreachablePageServer is a CRIU page server address nothing listens
	// on, to make a dump fail inside CRIU.
	unreachablePageServer = "127.0.0.1:1"
)

// requireCRIU checks for criu on top of the integration host.
func requireCRIU(t *testing.T) {
	t.Helper()
	requireIntegrationHost(t)
	testutil.RequireTools(t, "criu")
}

// counterValues returns the counter's outputs in the container's log, in
// order.
func counterValues(t *testing.T, c *testContainer) []int {
	t.Helper()
	var vals []int
	for _, line := range strings.Split(c.logs(t), "\n") {
		if n, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
			vals = append(vals, n)
		}
	}
	return vals
}

// waitCounter waits until the counter has printed a value of at least n,
// and returns every value printed so far.
func waitCounter(t *testing.T, c *testContainer, n int) []int {
	t.Helper()
	deadline := time.Now().Add(counterWait)
	for {
		vals := counterValues(t, c)
		if len(vals) > 0 && vals[len(vals)-1] >= n {
			return vals
		}
		if time.Now().After(deadline) {
			t.Fatalf("counter did not reach %d within %s; values %v", n, counterWait, vals)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCheckpointRestoreThroughShim(t *testing.T) {
	requireCRIU(t)
	c := newTestContainer(t, []string{"sh", "-c", counterScript}, nil, nil)
	c.start(t)
	const beforeCheckpoint = 5
	waitCounter(t, c, beforeCheckpoint)
	st, err := c.runc.State(context.Background(), c.id)
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	oldInit := st.Pid

	images := filepath.Join(t.TempDir(), "images")
	ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
	defer cancel()
	if err := c.runc.Checkpoint(ctx, c.id, CheckpointOptions{ImagePath: images}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}

	// The container is gone: its init is dead, runc forgets it (or holds
	// it stopped) and the old shim records the exit.
	// Dead, or a zombie its shim has yet to reap (on a loaded machine
	// the reaping may lag the checkpoint's return).
	if !gone(oldInit, initReapWait) {
		t.Errorf("init %d still runs %s after checkpoint", oldInit, initReapWait)
	}
	if st, err := c.runc.State(ctx, c.id); err == nil && st.Status != StatusStopped {
		t.Errorf("runc state after checkpoint = %s, want gone or stopped", st.Status)
	} else if err != nil && !errors.Is(err, ErrNotExist) {
		t.Errorf("State after checkpoint: %v", err)
	}
	c.waitExit(t)
	if err := c.runc.Delete(ctx, c.id, true); err != nil {
		t.Fatalf("Delete after checkpoint: %v", err)
	}
	before := counterValues(t, c)
	if len(before) == 0 {
		t.Fatal("no counter values logged before the checkpoint")
	}
	lastBefore := before[len(before)-1]

	c.cfg.RestoreFrom = images
	c.start(t) // waits for the old shim to be gone
	if c.shimPid <= 0 {
		t.Fatalf("StartShim returned shim pid %d", c.shimPid)
	}
	st, err = c.runc.State(ctx, c.id)
	if err != nil || st.Status != StatusRunning {
		t.Fatalf("State after restore = %+v, %v; want running", st, err)
	}
	if _, ok, _ := ReadExit(c.stateDir); ok {
		t.Error("the old run's exit status is still recorded after restore")
	}

	after := waitCounter(t, c, lastBefore+beforeCheckpoint)[len(before):]
	if len(after) == 0 || after[0] != lastBefore+1 {
		t.Errorf("counter after restore starts at %v, want %d (continuing from %d); before: %v",
			after, lastBefore+1, lastBefore, before)
	}
	for i := 1; i < len(after); i++ {
		if after[i] != after[i-1]+1 {
			t.Errorf("counter after restore jumps from %d to %d: %v", after[i-1], after[i], after)
			break
		}
	}

	if err := c.runc.Kill(ctx, c.id, syscall.SIGKILL, false); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if exit := c.waitExit(t); exit.Signal != "SIGKILL" || exit.Code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit recorded by the new shim = %+v, want SIGKILL (137)", exit)
	}
}

func TestCheckpointLeaveRunning(t *testing.T) {
	requireCRIU(t)
	c := newTestContainer(t, []string{"sh", "-c", counterScript}, nil, nil)
	c.start(t)
	waitCounter(t, c, 2)
	images := filepath.Join(t.TempDir(), "images")
	ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
	defer cancel()

	// A dump that CRIU fails (its page server is unreachable: nothing
	// listens on port 1) names the container and CRIU's log, and leaves
	// the container running.
	failWork := filepath.Join(t.TempDir(), "work")
	err := c.runc.Checkpoint(ctx, c.id, CheckpointOptions{
		ImagePath: images, WorkPath: failWork, LeaveRunning: true,
		ExtraArgs: []string{"--page-server", unreachablePageServer},
	})
	if err == nil {
		t.Fatal("Checkpoint with an unreachable page server = nil, want an error")
	}
	for _, want := range []string{c.id, filepath.Join(failWork, CRIUDumpLog), unreachablePageServer} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Checkpoint error %q does not mention %q", err, want)
		}
	}
	if errors.Is(err, ErrNotExist) {
		t.Errorf("a CRIU failure is reported as an unknown container: %v", err)
	}

	if err := c.runc.Checkpoint(ctx, c.id, CheckpointOptions{ImagePath: images, LeaveRunning: true}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	vals := counterValues(t, c)
	waitCounter(t, c, vals[len(vals)-1]+3)
	if st, err := c.runc.State(ctx, c.id); err != nil || st.Status != StatusRunning {
		t.Errorf("State after checkpoint --leave-running = %+v, %v; want running", st, err)
	}
	if _, err := os.Stat(filepath.Join(images, "inventory.img")); err != nil {
		t.Errorf("no CRIU images written: %v", err)
	}
}

func TestCheckpointErrors(t *testing.T) {
	requireCRIU(t)
	r := &Runc{Root: filepath.Join(t.TempDir(), "runc")}
	id := uniqueID(t)
	tests := []struct {
		name     string
		id       string
		opts     CheckpointOptions
		notExist bool
		want     []string
	}{
		{
			name:     "unknown container",
			id:       id,
			opts:     CheckpointOptions{ImagePath: filepath.Join(t.TempDir(), "images")},
			notExist: true,
			want:     []string{id, "does not exist"},
		},
		{
			name: "relative image path",
			id:   id,
			opts: CheckpointOptions{ImagePath: "images"},
			want: []string{id, "not an absolute path"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := r.Checkpoint(context.Background(), tc.id, tc.opts)
			if err == nil {
				t.Fatal("Checkpoint = nil, want an error")
			}
			if got := errors.Is(err, ErrNotExist); got != tc.notExist {
				t.Errorf("errors.Is(%v, ErrNotExist) = %v, want %v", err, got, tc.notExist)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestCriuLogTail(t *testing.T) {
	dir := t.TempDir()
	var lines []string
	for i := range 3 * criuLogTailLines {
		lines = append(lines, "line "+strconv.Itoa(i))
	}
	full := filepath.Join(dir, "full.log")
	if err := os.WriteFile(full, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		want []string
		not  []string
	}{
		{"last lines of a long log", full, []string{full, "line 29", "line 20"}, []string{"line 19\n"}},
		{"missing log", filepath.Join(dir, "none.log"), []string{"no log at", "none.log"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := withCRIULog("runc failed", tc.path)
			for _, w := range append([]string{"runc failed"}, tc.want...) {
				if !strings.Contains(got, w) {
					t.Errorf("withCRIULog = %q, lacks %q", got, w)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(got, n) {
					t.Errorf("withCRIULog = %q, should not hold %q", got, n)
				}
			}
		})
	}
}

func TestRestoreFailureIsReported(t *testing.T) {
	requireCRIU(t)
	empty := t.TempDir()
	c := newTestContainer(t, []string{"sh", "-c", counterScript}, nil, func(cfg *ShimConfig) { cfg.RestoreFrom = empty })
	ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
	defer cancel()
	_, err := StartShim(ctx, godwitBinary(t), c.cfg)
	if !errors.Is(err, ErrShimFailed) {
		t.Fatalf("StartShim restoring from an empty directory = %v, want ErrShimFailed", err)
	}
	for _, want := range []string{c.id, CRIURestoreLog} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if st, err := c.runc.State(ctx, c.id); err == nil && st.Status != StatusStopped {
		t.Errorf("runc state after a failed restore = %s, want gone or stopped", st.Status)
	}
}

// TestRestoreHeldStopped restores a counter with CRIU's leave-stopped:
// it must stay frozen, not counting, until Resume, then go on from where
// it was dumped. A migration's destination holds its copy this way until
// the move is committed.
func TestRestoreHeldStopped(t *testing.T) {
	requireCRIU(t)
	c := newTestContainer(t, []string{"sh", "-c", counterScript}, nil, nil)
	c.start(t)
	waitCounter(t, c, 3)
	images := filepath.Join(t.TempDir(), "images")
	ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
	defer cancel()
	if err := c.runc.Checkpoint(ctx, c.id, CheckpointOptions{ImagePath: images}); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	c.waitExit(t)
	if err := c.runc.Delete(ctx, c.id, true); err != nil {
		t.Fatal(err)
	}
	before := counterValues(t, c)
	lastBefore := before[len(before)-1]

	conf := filepath.Join(t.TempDir(), "criu.conf")
	if err := (CRIUConfig{LeaveStopped: true}).Write(conf); err != nil {
		t.Fatal(err)
	}
	setBundleCRIUConfig(t, c.cfg.Bundle, conf)
	c.cfg.RestoreFrom = images
	c.start(t)
	st, err := c.runc.State(ctx, c.id)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // ten ticks, were it running
	if held := counterValues(t, c); len(held) != len(before) {
		t.Fatalf("the container counted while held stopped: %v after %v", held[len(before):], lastBefore)
	}
	if state := procState(t, st.Pid); state != "T" {
		t.Errorf("restored init is in state %q, want T (stopped)", state)
	}

	setBundleCRIUConfig(t, c.cfg.Bundle, "")
	if err := c.runc.Resume(ctx, c.id); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	after := waitCounter(t, c, lastBefore+3)[len(before):]
	if after[0] != lastBefore+1 {
		t.Errorf("after Resume the counter went on at %d, want %d", after[0], lastBefore+1)
	}
}

// setBundleCRIUConfig points the bundle's spec at a CRIU configuration
// file, or removes the annotation.
func setBundleCRIUConfig(t *testing.T, bundle, path string) {
	t.Helper()
	s, err := ReadBundle(bundle)
	if err != nil {
		t.Fatal(err)
	}
	SetCRIUConfig(s, path)
	if err := WriteBundle(bundle, s); err != nil {
		t.Fatal(err)
	}
}

// procState is the state letter of process pid (R, S, T, ...).
func procState(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	// The command name may hold spaces; the state follows its ")".
	fields := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	return fields[0]
}

// initReapWait bounds how long a checkpointed container's init may stay
// a zombie before its shim reaps it.
const initReapWait = 5 * time.Second

// gone reports whether process pid has exited (reaped, or a zombie)
// within wait.
func gone(pid int, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return true
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A dump cancelled while CRIU works on a paused container (a stream
// move's source whose driver went away) returns only once CRIU has
// ended: CRIU puts the freezer back as it found it when it ends, so a
// caller that thawed the container as soon as Checkpoint returned would
// find it frozen again if CRIU were still at work.
func TestCheckpointCancelledReturnsOnceCRIUEnded(t *testing.T) {
	requireCRIU(t)
	c := newTestContainer(t, []string{"sh", "-c", counterScript}, nil, nil)
	c.start(t)
	waitCounter(t, c, 2)
	bg, cancelAll := context.WithTimeout(context.Background(), checkpointTimeout)
	defer cancelAll()
	if err := c.runc.Pause(bg, c.id); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "work")
	ctx, cancel := context.WithCancel(bg)
	go func() {
		// Cancel as soon as CRIU has begun: its log exists.
		for ctx.Err() == nil {
			if _, err := os.Stat(filepath.Join(work, CRIUDumpLog)); err == nil {
				cancel()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	err := c.runc.Checkpoint(ctx, c.id, CheckpointOptions{ImagePath: filepath.Join(t.TempDir(), "images"), WorkPath: work, LeaveRunning: true})
	cancel()
	t.Logf("cancelled Checkpoint: %v", err)
	log, rerr := os.ReadFile(filepath.Join(work, CRIUDumpLog))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if !bytes.Contains(log, []byte("Dumping finished successfully")) && !bytes.Contains(log, []byte("Dumping FAILED")) {
		t.Fatalf("Checkpoint returned (%v) while CRIU was still dumping: its log does not end the dump:\n%s", err, lastLines(log, 5))
	}

	if err := c.runc.Unpause(bg, c.id); err != nil {
		t.Fatal(err)
	}
	vals := counterValues(t, c)
	waitCounter(t, c, vals[len(vals)-1]+3)
	if st, err := c.runc.State(bg, c.id); err != nil || st.Status != StatusRunning {
		t.Errorf("State after a cancelled dump and a thaw = %+v, %v; want running", st, err)
	}
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
