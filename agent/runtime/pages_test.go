package runtime

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCRIUConfigWrite(t *testing.T) {
	tests := []struct {
		name    string
		cfg     CRIUConfig
		want    []string // the option lines, in order
		wantErr bool
	}{
		{name: "held", cfg: CRIUConfig{LeaveStopped: true}, want: []string{"leave-stopped"}},
		{name: "held, lazily", cfg: CRIUConfig{LeaveStopped: true, LazyPages: true, WorkDir: "/data/migrations/m1.pages/lazy"},
			want: []string{"leave-stopped", "lazy-pages", "work-dir /data/migrations/m1.pages/lazy"}},
		{name: "a work dir CRIU would split", cfg: CRIUConfig{LazyPages: true, WorkDir: "/data/my dir"}, wantErr: true},
		{name: "a work dir with a quote", cfg: CRIUConfig{WorkDir: `/data/it's`}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "criu.conf")
			err := tt.cfg.Write(path)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Write: %v, want an error: %v", err, tt.wantErr)
			}
			if tt.wantErr {
				if _, err := os.Stat(path); err == nil {
					t.Error("a refused configuration was written")
				}
				return
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, line := range strings.Split(string(data), "\n") {
				if line != "" && !strings.HasPrefix(line, "#") {
					got = append(got, line)
				}
			}
			if strings.Join(got, "|") != strings.Join(tt.want, "|") {
				t.Errorf("options %q, want %q", got, tt.want)
			}
		})
	}
}

func TestAlive(t *testing.T) {
	if !Alive(os.Getpid()) {
		t.Error("this process is not alive")
	}
	cmd := exec.Command("sleep", "0")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Exited but not reaped yet: a zombie serves nothing any more.
	deadline := time.Now().Add(5 * time.Second)
	for !zombie(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d never exited", pid)
		}
		time.Sleep(time.Millisecond)
	}
	if Alive(pid) {
		t.Errorf("zombie %d alive", pid)
	}
	cmd.Wait()
	if Alive(pid) || Alive(0) || Alive(-1) {
		t.Error("a reaped pid, 0 or -1 alive")
	}
}

func zombie(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && strings.Contains(string(stat[strings.LastIndexByte(string(stat), ')'):]), ") Z ")
}

func TestCRIUErrors(t *testing.T) {
	dir := t.TempDir()
	clean := filepath.Join(dir, "clean.log")
	failed := filepath.Join(dir, "failed.log")
	os.WriteFile(clean, []byte("(00.000001) Warn  (criu/kerndat.c:1): something odd\n(00.2) page-xfer: Session over\n"), 0o600)
	os.WriteFile(failed, []byte("(00.1) page-xfer: Adding\n(00.2) Error (criu/page-xfer.c:1215): page-xfer: Can't read pagemap from socket: Connection reset by peer\n"), 0o600)
	if got := criuErrors(clean); got != "" {
		t.Errorf("clean log: errors %q", got)
	}
	if got := criuErrors(failed); !strings.Contains(got, "Can't read pagemap") {
		t.Errorf("failed log: errors %q, want the error line", got)
	}
	if got := criuErrors(filepath.Join(dir, "missing.log")); got != "" {
		t.Errorf("missing log: errors %q", got)
	}
}
