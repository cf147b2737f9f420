package testutil

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestWorkloadClientAgainstTheWorkload(t *testing.T) {
	addr, _ := startWorkload(t, "-mem", "1", "-tick", "10ms")
	var d net.Dialer
	attempts := 0
	// The first attempts fail as they would before the server listens.
	dial := func(ctx context.Context, network, address string) (net.Conn, error) {
		if attempts++; attempts <= 2 {
			return nil, errors.New("connection refused")
		}
		return d.DialContext(ctx, network, address)
	}
	w := DialWorkload(t, dial, addr)
	if attempts != 3 {
		t.Errorf("DialWorkload dialed %d times, want 3 (two refusals, then the server)", attempts)
	}

	if got := w.Ask("hello there"); got != "hello there" {
		t.Errorf("Ask(hello there) = %q, want it echoed", got)
	}
	first := w.Count()
	time.Sleep(100 * time.Millisecond) // 10 ticks
	if second := w.Count(); second <= first {
		t.Errorf("Count went from %d to %d, want it to increase", first, second)
	}
	w.CheckMemory() // the real workload's memory never changes
}

// recordingTB records failures instead of failing the test; Fatal ends
// the calling goroutine as testing.T's does.
type recordingTB struct {
	testing.TB
	mu       sync.Mutex
	failures []string
	fatal    bool
	skipped  string // what Skipf said
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.mu.Lock()
	r.fatal = true
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recordingTB) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

func (r *recordingTB) Skipf(format string, args ...any) {
	r.mu.Lock()
	r.skipped = fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

// fakeWorkload answers each request line with answers[line] on one end of
// a pipe and returns the other end; a request it has no answer for closes
// the connection.
func fakeWorkload(t *testing.T, answers map[string]string) net.Conn {
	client, server := net.Pipe()
	t.Cleanup(func() { server.Close() })
	go func() {
		defer server.Close()
		sc := bufio.NewScanner(server)
		for sc.Scan() {
			a, ok := answers[sc.Text()]
			if !ok {
				return
			}
			if _, err := fmt.Fprintf(server, "%s\n", a); err != nil {
				return
			}
		}
	}()
	return client
}

func TestWorkloadClientReportsWhatWentWrong(t *testing.T) {
	tests := []struct {
		name    string
		answers map[string]string
		call    func(w *WorkloadClient)
		// wantFailure is part of the recorded failure; "" wants none.
		wantFailure string
		wantFatal   bool
	}{
		{
			name:    "same checksums pass",
			answers: map[string]string{"CHECKSUM": "0badf00d 0badf00d"},
			call:    (*WorkloadClient).CheckMemory,
		},
		{
			name:        "changed memory is an error, not fatal",
			answers:     map[string]string{"CHECKSUM": "0badf00d 12345678"},
			call:        (*WorkloadClient).CheckMemory,
			wantFailure: "memory changed",
		},
		{
			name:        "a count that is not a number is fatal",
			answers:     map[string]string{"COUNT": "lots"},
			call:        func(w *WorkloadClient) { w.Count() },
			wantFailure: `COUNT answered "lots"`,
			wantFatal:   true,
		},
		{
			name:        "a closed connection is fatal",
			answers:     map[string]string{},
			call:        func(w *WorkloadClient) { w.Ask("anyone?") },
			wantFailure: `answer to "anyone?"`,
			wantFatal:   true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recordingTB{TB: t}
			w := NewWorkloadClient(rec, fakeWorkload(t, tc.answers))
			done := make(chan struct{})
			go func() {
				defer close(done)
				tc.call(w)
			}()
			<-done
			rec.mu.Lock()
			defer rec.mu.Unlock()
			got := strings.Join(rec.failures, "; ")
			switch {
			case tc.wantFailure == "" && got != "":
				t.Errorf("recorded failure %q, want none", got)
			case tc.wantFailure != "" && !strings.Contains(got, tc.wantFailure):
				t.Errorf("recorded failure %q, want one containing %q", got, tc.wantFailure)
			}
			if rec.fatal != tc.wantFatal {
				t.Errorf("fatal = %v, want %v", rec.fatal, tc.wantFatal)
			}
		})
	}
}
