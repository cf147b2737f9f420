package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const fakeRuncRecordEnv = "GODWIT_RUNTIME_TEST_RUNC_RECORD"

// fakeRunc imitates runc's command line for the driver's unit tests: ids
// "missing" and "busy" fail the way runc does, the others succeed. Every
// invocation is appended to the file named by fakeRuncRecordEnv.
func fakeRunc(args []string) int {
	if f, err := os.OpenFile(os.Getenv(fakeRuncRecordEnv), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		fmt.Fprintln(f, strings.Join(args, " "))
		f.Close()
	}
	var logPath string
	for len(args) >= 2 && strings.HasPrefix(args[0], "--") {
		if args[0] == "--log" {
			logPath = args[1]
		}
		args = args[2:]
	}
	fail := func(msg string, code int) int {
		line := fmt.Sprintf(`{"level":"error","msg":%q,"time":"2026-01-01T00:00:00Z"}`, msg)
		if logPath != "" {
			_ = os.WriteFile(logPath, []byte(line+"\n"), 0o600)
			fmt.Fprintln(os.Stderr, msg) // runc also prints it plainly then
		} else {
			fmt.Fprintln(os.Stderr, line)
		}
		return code
	}
	const runcFailure = 255
	sub, rest := args[0], args[1:]
	switch sub {
	case "state":
		switch rest[0] {
		case "missing":
			return fail("container does not exist", 1)
		case "garbage":
			fmt.Println("not json")
			return 0
		}
		fmt.Printf(`{"ociVersion":"1.2.1","id":%q,"pid":4242,"status":"running","bundle":"/b/%s","rootfs":"/r","created":"2026-01-02T03:04:05.000000006Z","annotations":{"org.godwit.name":"web"},"owner":""}`+"\n", rest[0], rest[0])
	case "list":
		fmt.Println(`[{"ociVersion":"1.2.1","id":"c1","pid":1,"status":"running","bundle":"/b/c1","created":"2026-01-02T03:04:05Z"},{"ociVersion":"1.2.1","id":"c2","pid":0,"status":"stopped","bundle":"/b/c2","created":"2026-01-02T03:04:05Z"}]`)
	case "kill", "delete":
		id := rest[len(rest)-1]
		if sub == "kill" {
			id = rest[len(rest)-2]
		}
		switch id {
		case "missing":
			return fail("container does not exist", 1)
		case "busy":
			return fail("cannot delete container busy that is not stopped: running", 1)
		}
	case "exec":
		for len(rest) > 0 && strings.HasPrefix(rest[0], "--") {
			rest = rest[2:]
		}
		id, argv := rest[0], rest[1:]
		if id == "missing" {
			return fail("exec failed: container does not exist", runcFailure)
		}
		switch argv[0] {
		case "echo":
			fmt.Println(strings.Join(argv[1:], " "))
		case "fail":
			fmt.Fprintln(os.Stderr, "oops")
			return 7
		}
	default:
		return fail("unknown command "+sub, 1)
	}
	return 0
}

// newFakeRunc returns a driver whose binary is the fake, and the file that
// records its invocations.
func newFakeRunc(t *testing.T, root string) (*Runc, string) {
	t.Helper()
	record := filepath.Join(t.TempDir(), "calls")
	t.Setenv(testHelperEnv, helperFakeRunc)
	t.Setenv(fakeRuncRecordEnv, record)
	return &Runc{Binary: os.Args[0], Root: root}, record
}

func readRecord(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestRuncState(t *testing.T) {
	root := t.TempDir()
	r, record := newFakeRunc(t, root)
	ctx := context.Background()

	st, err := r.State(ctx, "c1")
	if err != nil {
		t.Fatalf("State: %v", err)
	}
	want := State{ID: "c1", Pid: 4242, Status: StatusRunning, Bundle: "/b/c1",
		Created: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
	if st.ID != want.ID || st.Pid != want.Pid || st.Status != want.Status || st.Bundle != want.Bundle ||
		!st.Created.Equal(want.Created) || st.Annotations[AnnotationName] != "web" {
		t.Errorf("State = %+v, want %+v with name annotation", st, want)
	}
	if got := readRecord(t, record); !strings.Contains(got, "--root "+root+" state c1") {
		t.Errorf("runc called as %q, want the node's --root", got)
	}

	tests := []struct {
		name, id     string
		wantNotExist bool
		wantText     string
	}{
		{"unknown container", "missing", true, "container does not exist"},
		{"unreadable output", "garbage", false, "unreadable state"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.State(ctx, tc.id)
			if err == nil {
				t.Fatal("State succeeded")
			}
			if errors.Is(err, ErrNotExist) != tc.wantNotExist {
				t.Errorf("errors.Is(%v, ErrNotExist) = %v, want %v", err, !tc.wantNotExist, tc.wantNotExist)
			}
			if !strings.Contains(err.Error(), tc.id) || !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("err = %q, want the id %q and %q", err, tc.id, tc.wantText)
			}
		})
	}
}

func TestRuncList(t *testing.T) {
	ctx := context.Background()
	t.Run("lists every container", func(t *testing.T) {
		r, _ := newFakeRunc(t, t.TempDir())
		list, err := r.List(ctx)
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		if len(list) != 2 || list[0].ID != "c1" || list[1].Status != StatusStopped {
			t.Errorf("List = %+v", list)
		}
	})
	t.Run("a root not yet created has no containers", func(t *testing.T) {
		r, record := newFakeRunc(t, filepath.Join(t.TempDir(), "absent"))
		list, err := r.List(ctx)
		if err != nil || len(list) != 0 {
			t.Errorf("List = %v, %v; want none", list, err)
		}
		if _, err := os.Stat(record); err == nil {
			t.Error("runc was called for a root that does not exist")
		}
	})
}

func TestRuncKillAndDelete(t *testing.T) {
	ctx := context.Background()
	r, record := newFakeRunc(t, t.TempDir())

	if err := r.Kill(ctx, "c1", syscall.SIGKILL, true); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	if got := readRecord(t, record); !strings.Contains(got, "kill --all c1 9") {
		t.Errorf("runc called as %q, want kill --all c1 9", got)
	}
	if err := r.Kill(ctx, "missing", syscall.SIGTERM, false); !errors.Is(err, ErrNotExist) {
		t.Errorf("Kill(missing) = %v, want ErrNotExist", err)
	}
	if err := r.Delete(ctx, "missing", false); err != nil {
		t.Errorf("Delete(missing) = %v, want nil: deleting twice must succeed", err)
	}
	err := r.Delete(ctx, "busy", false)
	if err == nil || !strings.Contains(err.Error(), "runc delete busy") || !strings.Contains(err.Error(), "not stopped") {
		t.Errorf("Delete(busy) = %v, want runc's message naming the container", err)
	}
	if err := r.Delete(ctx, "c1", true); err != nil {
		t.Errorf("Delete(c1, force) = %v", err)
	}
	if got := readRecord(t, record); !strings.Contains(got, "delete --force c1") {
		t.Errorf("runc called as %q, want delete --force c1", got)
	}
}

func TestRuncExecFake(t *testing.T) {
	ctx := context.Background()
	r, record := newFakeRunc(t, t.TempDir())
	tests := []struct {
		name                 string
		id                   string
		p                    ExecProcess
		wantCode             int
		wantOut, wantErrText string
		wantNotExist         bool
	}{
		{name: "output and success", id: "c1", p: ExecProcess{Args: []string{"echo", "hi"}, Env: []string{"A=1"}, Cwd: "/tmp"}, wantOut: "hi\n"},
		{name: "the process's exit code", id: "c1", p: ExecProcess{Args: []string{"fail"}}, wantCode: 7},
		{name: "unknown container", id: "missing", p: ExecProcess{Args: []string{"echo"}}, wantCode: -1, wantErrText: "runc exec missing", wantNotExist: true},
		{name: "no command", id: "c1", p: ExecProcess{}, wantCode: -1, wantErrText: "no command"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code, err := r.Exec(ctx, tc.id, tc.p, &out, &errOut)
			if code != tc.wantCode {
				t.Errorf("code = %d, want %d", code, tc.wantCode)
			}
			if tc.wantErrText == "" && err != nil {
				t.Errorf("err = %v", err)
			}
			if tc.wantErrText != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErrText)) {
				t.Errorf("err = %v, want it to contain %q", err, tc.wantErrText)
			}
			if errors.Is(err, ErrNotExist) != tc.wantNotExist {
				t.Errorf("errors.Is(err, ErrNotExist) = %v", !tc.wantNotExist)
			}
			if tc.wantOut != "" && out.String() != tc.wantOut {
				t.Errorf("stdout = %q, want %q", out.String(), tc.wantOut)
			}
		})
	}
	if got := readRecord(t, record); !strings.Contains(got, "exec --cwd /tmp --env A=1 c1 echo hi") {
		t.Errorf("runc called as %q", got)
	}
}
