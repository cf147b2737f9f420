package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestExitStatusFrom(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		ws   unix.WaitStatus
		want ExitStatus
	}{
		{"clean exit", 0, ExitStatus{Code: 0, At: at}},
		{"exit 3", 3 << 8, ExitStatus{Code: 3, At: at}},
		{"killed by SIGKILL", unix.WaitStatus(unix.SIGKILL), ExitStatus{Code: 137, Signal: "SIGKILL", At: at}},
		{"killed by SIGTERM", unix.WaitStatus(unix.SIGTERM), ExitStatus{Code: 143, Signal: "SIGTERM", At: at}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := exitStatusFrom(tc.ws, at); got != tc.want {
				t.Errorf("exitStatusFrom = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestExitStatusRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if st, ok, err := ReadExit(dir); st != nil || ok || err != nil {
		t.Fatalf("ReadExit before exit = %v, %v, %v; want nothing", st, ok, err)
	}
	want := ExitStatus{Code: 137, Signal: "SIGKILL", At: time.Now().UTC().Truncate(time.Microsecond)}
	if err := writeExit(dir, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := ReadExit(dir)
	if err != nil || !ok || !got.At.Equal(want.At) || got.Code != want.Code || got.Signal != want.Signal {
		t.Errorf("ReadExit = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	if err := ClearExit(dir); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := ReadExit(dir); ok {
		t.Error("exit status still recorded after ClearExit")
	}
	if err := ClearExit(dir); err != nil {
		t.Errorf("ClearExit twice: %v", err)
	}
}

func TestParseShimReport(t *testing.T) {
	c := ShimConfig{ID: "c1", StateDir: "/run/c1"}
	tests := []struct {
		name     string
		report   string
		wantPid  int
		wantText string
	}{
		{"started", "ok 1234\n", 1234, ""},
		{"runc failed", "error runc create c1: exec: \"/nope\": no such file\n", 0, `exec: "/nope"`},
		{"shim died silently", "", 0, "/run/c1/shim.log"},
		{"garbled", "ok abc", 0, "bad report"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pid, err := parseShimReport(c, tc.report)
			if pid != tc.wantPid {
				t.Errorf("pid = %d, want %d", pid, tc.wantPid)
			}
			if tc.wantText == "" {
				if err != nil {
					t.Errorf("err = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantText) || !strings.Contains(err.Error(), "c1") {
				t.Errorf("err = %v, want it to name c1 and contain %q", err, tc.wantText)
			}
		})
	}
	if _, err := parseShimReport(c, "error boom"); !errors.Is(err, ErrShimFailed) {
		t.Errorf("err = %v, want ErrShimFailed", err)
	}
}

func TestShimConfigArgs(t *testing.T) {
	c := ShimConfig{ID: "c1", Bundle: "/b", StateDir: "/s", RuncRoot: "/r", LogMaxBytes: 1024, LogMaxFiles: 2, Cgroup: "/g/shims"}
	got := strings.Join(c.Args(), " ")
	want := "--id c1 --bundle /b --state-dir /s --runc-root /r --log-max-bytes 1024 --log-max-files 2 --cgroup /g/shims"
	if got != want {
		t.Errorf("Args = %q, want %q", got, want)
	}
	for _, bad := range []ShimConfig{
		{Bundle: "/b", StateDir: "/s"},
		{ID: "c1", Bundle: "b", StateDir: "/s"},
		{ID: "c1", Bundle: "/b", StateDir: "s"},
		{ID: "c1", Bundle: "/b", StateDir: "/s", Cgroup: "shims"},
		{ID: "c1", Bundle: "/b", StateDir: "/s", RestoreFrom: "images"},
		{ID: "c1", Bundle: "/b", StateDir: "/s", RestoreFrom: "/i", RestoreWorkPath: "work"},
		{ID: "c1", Bundle: "/b", StateDir: "/s", RestoreTCPEstablished: true},
	} {
		if err := bad.validate(); err == nil {
			t.Errorf("validate(%+v) = nil, want an error", bad)
		}
	}
}

func TestShimConfigRestoreArgs(t *testing.T) {
	c := ShimConfig{ID: "c1", Bundle: "/b", StateDir: "/s", RestoreFrom: "/i", RestoreWorkPath: "/w", RestoreTCPEstablished: true}
	got := strings.Join(c.Args(), " ")
	want := "--id c1 --bundle /b --state-dir /s --restore-from /i --restore-work-path /w --restore-tcp-established"
	if got != want {
		t.Errorf("Args = %q, want %q", got, want)
	}
	if err := c.validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
}

func TestStartShimWaitsForPreviousShim(t *testing.T) {
	dir := t.TempDir()
	fakeShim(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 5*previousShimPoll)
	defer cancel()
	c := ShimConfig{ID: "c1", Bundle: "/nonexistent/bundle", StateDir: dir}
	// The self binary would fail at once; the call must not get that far
	// while the previous shim of dir lives.
	_, err := StartShim(ctx, "/bin/false", c)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("StartShim = %v, want it to wait for the previous shim until ctx ended", err)
	}
}
