package testutil

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	code := m.Run()
	RemoveBuilds()
	os.Exit(code)
}

// startWorkload runs the workload on the host on a free loopback port and
// returns its address and the lines it prints; it is killed at cleanup.
func startWorkload(t *testing.T, args ...string) (addr string, stdout <-chan string) {
	t.Helper()
	cmd := exec.Command(BuildWorkload(t), append([]string{"-listen", "127.0.0.1:0"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody reads count lines any more: drop them
			}
		}
	}()
	select {
	case first, ok := <-lines:
		// "listening 127.0.0.1:PORT pid N mem M MiB"
		f := strings.Fields(first)
		if !ok || len(f) < 2 || f[0] != "listening" {
			t.Fatalf("workload's first line = %q, want \"listening ADDR ...\"", first)
		}
		return f[1], lines
	case <-time.After(30 * time.Second):
		t.Fatal("the workload printed no listening line in 30 s")
	}
	return "", nil
}

// ask sends one request line on conn and returns the reply line.
func ask(t *testing.T, conn net.Conn, r *bufio.Reader, line string) string {
	t.Helper()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "%s\n", line); err != nil {
		t.Fatalf("send %q: %v", line, err)
	}
	reply, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("reply to %q: %v", line, err)
	}
	return strings.TrimSuffix(reply, "\n")
}

func TestWorkloadProtocol(t *testing.T) {
	startFile := filepath.Join(t.TempDir(), "started")
	addr, stdout := startWorkload(t, "-mem", "8", "-tick", "10ms", "-file", startFile)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)

	count := func() int {
		t.Helper()
		n, err := strconv.Atoi(ask(t, conn, r, "COUNT"))
		if err != nil {
			t.Fatalf("COUNT: %v", err)
		}
		return n
	}
	first := count()
	time.Sleep(200 * time.Millisecond) // 20 ticks
	if second := count(); second <= first {
		t.Errorf("COUNT went from %d to %d, want it to increase", first, second)
	}

	pid := ask(t, conn, r, "PID")
	if _, err := strconv.Atoi(pid); err != nil {
		t.Errorf("PID = %q, want a number", pid)
	}

	tests := []struct{ name, send, want string }{
		{"word", "hello", "hello"},
		{"spaces kept", "  two words ", "  two words "},
		{"lowercase command is echoed", "count", "count"},
		{"empty line", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ask(t, conn, r, tc.send); got != tc.want {
				t.Errorf("echo of %q = %q, want %q", tc.send, got, tc.want)
			}
		})
	}

	sums := strings.Fields(ask(t, conn, r, "CHECKSUM"))
	if len(sums) != 2 || len(sums[0]) != 8 || sums[0] != sums[1] {
		t.Errorf("CHECKSUM = %q, want two equal 8-digit hex sums", sums)
	}

	// A second connection is served while the first stays open.
	conn2, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	if got := ask(t, conn2, bufio.NewReader(conn2), "PID"); got != pid {
		t.Errorf("PID on a second connection = %q, want %q", got, pid)
	}

	data, err := os.ReadFile(startFile)
	if err != nil {
		t.Fatalf("the -file was not written: %v", err)
	}
	if !strings.HasPrefix(string(data), "pid="+pid+" started=") || !strings.HasSuffix(string(data), "\n") {
		t.Errorf("-file holds %q, want \"pid=%s started=<time>\\n\"", data, pid)
	}

	deadline := time.After(10 * time.Second)
	for {
		select {
		case line, ok := <-stdout:
			if !ok {
				t.Fatal("stdout closed before a \"count N\" line")
			}
			if strings.HasPrefix(line, "count ") {
				return
			}
		case <-deadline:
			t.Fatal("no \"count N\" line on stdout in 10 s")
		}
	}
}

func TestWorkloadTar(t *testing.T) {
	path := filepath.Join(t.TempDir(), "workload.tar")
	WorkloadTar(t, path)

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string]*tar.Header{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		entries[hdr.Name] = hdr
	}
	want := map[string]byte{
		"." + WorkloadPath: tar.TypeReg,
		"./bin/busybox":    tar.TypeReg,
		"./bin/sh":         tar.TypeSymlink,
		"./tmp/":           tar.TypeDir,
	}
	for name, typ := range want {
		hdr, ok := entries[name]
		switch {
		case !ok:
			t.Errorf("%s missing from the tarball", name)
		case hdr.Typeflag != typ:
			t.Errorf("%s has type %q, want %q", name, hdr.Typeflag, typ)
		case typ == tar.TypeReg && hdr.Mode&0o111 == 0:
			t.Errorf("%s has mode %o, want it executable", name, hdr.Mode)
		}
	}
}
