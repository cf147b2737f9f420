package testutil

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	// WorkloadAnswerTimeout bounds one request on a WorkloadClient: a TCP
	// connection restored from a checkpoint may need a retransmission or
	// two, each after a backed-off timeout, before it answers again.
	WorkloadAnswerTimeout = 20 * time.Second
	// WorkloadReachTimeout bounds DialWorkload's retries: the workload's
	// server starts a moment after its container does.
	WorkloadReachTimeout = 15 * time.Second
	// workloadDialTimeout bounds one connection attempt.
	workloadDialTimeout = 2 * time.Second
	// workloadDialRetry is the pause between two connection attempts.
	workloadDialRetry = 100 * time.Millisecond
)

// DialFunc opens a connection like net.Dialer.DialContext; devcluster's
// Host.Dial, which dials from inside a host of a cluster, is one.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// WorkloadClient holds one TCP connection to the line server of the
// workload (internal/testutil/workload) that a test keeps open across
// checkpoints, restores and moves: every request on it that is answered
// proves the connection survived. A failed request fails the test.
type WorkloadClient struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// NewWorkloadClient speaks the workload's protocol on conn, which it
// closes when the test ends.
func NewWorkloadClient(t testing.TB, conn net.Conn) *WorkloadClient {
	t.Cleanup(func() { conn.Close() })
	return &WorkloadClient{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// DialWorkload connects with dial to the workload's server at addr
// ("IP:PORT", the port being WorkloadPort unless the workload was given
// -listen) over tcp4, retrying for up to WorkloadReachTimeout, and fails
// t if it never answers.
func DialWorkload(t testing.TB, dial DialFunc, addr string) *WorkloadClient {
	t.Helper()
	var conn net.Conn
	var err error
	for deadline := time.Now().Add(WorkloadReachTimeout); ; time.Sleep(workloadDialRetry) {
		ctx, cancel := context.WithTimeout(context.Background(), workloadDialTimeout)
		conn, err = dial(ctx, "tcp4", addr)
		cancel()
		if err == nil || !time.Now().Before(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("connect to the workload at %s: %v", addr, err)
	}
	return NewWorkloadClient(t, conn)
}

// Ask sends one request line and returns the answer, trimmed of spaces.
// Anything but COUNT, PID and CHECKSUM is echoed back.
func (w *WorkloadClient) Ask(line string) string {
	w.t.Helper()
	if err := w.conn.SetDeadline(time.Now().Add(WorkloadAnswerTimeout)); err != nil {
		w.t.Fatal(err)
	}
	if _, err := fmt.Fprintf(w.conn, "%s\n", line); err != nil {
		w.t.Fatalf("send %q on the connection held open to the workload: %v", line, err)
	}
	answer, err := w.r.ReadString('\n')
	if err != nil {
		w.t.Fatalf("read the answer to %q on the connection held open to the workload: %v", line, err)
	}
	return strings.TrimSpace(answer)
}

// Count returns the workload's counter, which goes up every tick while it
// runs and stands still while it is frozen.
func (w *WorkloadClient) Count() int {
	w.t.Helper()
	answer := w.Ask("COUNT")
	v, err := strconv.Atoi(answer)
	if err != nil {
		w.t.Fatalf("COUNT answered %q, want a number: %v", answer, err)
	}
	return v
}

// CheckMemory fails the test, without stopping it, unless the workload's
// memory holds the bytes it held at start: the checksum of its buffer then
// and now are the same.
func (w *WorkloadClient) CheckMemory() {
	w.t.Helper()
	if sums := strings.Fields(w.Ask("CHECKSUM")); len(sums) != 2 || sums[0] != sums[1] {
		w.t.Errorf("CHECKSUM = %v: the workload's memory changed since it started", sums)
	}
}
