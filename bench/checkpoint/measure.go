package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/testutil"
)

const (
	// readyBase and readyPerGiB bound how long a new container may take to
	// answer: the workload fills its memory before it listens.
	readyBase   = 30 * time.Second
	readyPerGiB = 30 * time.Second
	// restoredTimeout bounds how long a restored container may take to
	// answer once its restore command returned: it should answer at once.
	restoredTimeout = 10 * time.Second
	// queryTimeout bounds one request to the workload.
	queryTimeout = 2 * time.Second
	pollInterval = 100 * time.Millisecond

	// diskPerSize is how many copies of a container's memory a run keeps
	// on disk at once: CRIU's images at the source, the archive, and the
	// images unpacked at the destination.
	diskPerSize = 4
)

// engine is one tool under test. Every method blocks until the tool's
// command returned; measure times Checkpoint and Restore only.
type engine interface {
	// Name is how the report names the tool.
	Name() string
	// Versions describes the tool and what it runs on, for the report.
	Versions() []string
	// Run starts a container called name from the workload image,
	// running args, and returns its IP once the tool says it runs.
	Run(ctx context.Context, name string, args []string) (ip string, err error)
	// Checkpoint checkpoints the running container into the archive file,
	// which the container does not survive.
	Checkpoint(ctx context.Context, name, archive string) error
	// Release frees what the checkpointed container still holds on its
	// source so that the archive can be restored (untimed).
	Release(ctx context.Context, name string) error
	// Restore brings the archive back as a running container and returns
	// its IP.
	Restore(ctx context.Context, name, archive string) (ip string, err error)
	// Remove removes every copy of the container, running or not; a
	// container that does not exist is not an error.
	Remove(ctx context.Context, name string) error
	// Close removes what the tool's setup made: images, networks, daemons.
	Close(ctx context.Context) error
}

// sample is one checkpoint and restore of one container.
type sample struct {
	checkpoint, restore time.Duration
	archive             int64
}

func (s sample) total() time.Duration { return s.checkpoint + s.restore }

// measure runs one container of sizeMiB under e, checkpoints it to
// archive and restores it, timing both, and checks that what came back is
// the same process with the same memory. The container and the archive
// are removed whatever happens.
func measure(ctx context.Context, e engine, name string, sizeMiB int, archive string, log *slog.Logger) (s sample, err error) {
	defer func() {
		err = errors.Join(err, e.Remove(context.WithoutCancel(ctx), name))
		if rmErr := os.Remove(archive); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
	}()
	ip, err := e.Run(ctx, name, workloadArgs(sizeMiB))
	if err != nil {
		return s, fmt.Errorf("run: %w", err)
	}
	addr := net.JoinHostPort(ip, strconv.Itoa(testutil.WorkloadPort))
	readyTimeout := readyBase + time.Duration(sizeMiB)*readyPerGiB/1024
	if _, err := waitAnswer(ctx, addr, readyTimeout); err != nil {
		return s, fmt.Errorf("the new container: %w", err)
	}
	before, err := checksums(ctx, addr)
	if err != nil {
		return s, err
	}
	countBefore, err := count(ctx, addr)
	if err != nil {
		return s, err
	}

	// Dirty pages of earlier steps would otherwise be written back while
	// the next step is timed.
	unix.Sync()
	start := time.Now()
	if err := e.Checkpoint(ctx, name, archive); err != nil {
		return s, fmt.Errorf("checkpoint: %w", err)
	}
	s.checkpoint = time.Since(start)
	st, err := os.Stat(archive)
	if err != nil {
		return s, fmt.Errorf("the checkpoint wrote no archive: %w", err)
	}
	s.archive = st.Size()
	if err := e.Release(ctx, name); err != nil {
		return s, err
	}

	unix.Sync()
	start = time.Now()
	restoredIP, err := e.Restore(ctx, name, archive)
	if err != nil {
		return s, fmt.Errorf("restore: %w", err)
	}
	s.restore = time.Since(start)
	if restoredIP != ip {
		return s, fmt.Errorf("the container ran at %s and was restored at %s: a restore keeps the IP", ip, restoredIP)
	}
	countAfter, err := waitAnswer(ctx, addr, restoredTimeout)
	if err != nil {
		return s, fmt.Errorf("the restored container: %w", err)
	}
	if countAfter < countBefore {
		return s, fmt.Errorf("the counter was %d before the checkpoint and %d after the restore: the process restarted instead of continuing", countBefore, countAfter)
	}
	after, err := checksums(ctx, addr)
	if err != nil {
		return s, err
	}
	if after.start != before.start || after.now != before.start {
		return s, fmt.Errorf("memory checksum %s before the checkpoint, %s at start-up and %s now after the restore: memory did not come back byte for byte",
			before.start, after.start, after.now)
	}
	log.Debug("restore verified", "tool", e.Name(), "count_before", countBefore, "count_after", countAfter)
	return s, nil
}

// workloadArgs is the container's command: the workload holding sizeMiB.
func workloadArgs(sizeMiB int) []string {
	return []string{testutil.WorkloadPath, "-mem", strconv.Itoa(sizeMiB)}
}

// memSums are the workload's checksums of its memory: taken when it
// started, and now.
type memSums struct{ start, now string }

func checksums(ctx context.Context, addr string) (memSums, error) {
	reply, err := query(ctx, addr, "CHECKSUM")
	if err != nil {
		return memSums{}, err
	}
	f := strings.Fields(reply)
	if len(f) != 2 {
		return memSums{}, fmt.Errorf("CHECKSUM answered %q, want two checksums", reply)
	}
	return memSums{start: f[0], now: f[1]}, nil
}

func count(ctx context.Context, addr string) (int64, error) {
	reply, err := query(ctx, addr, "COUNT")
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(reply, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("COUNT answered %q, want a number", reply)
	}
	return n, nil
}

// waitAnswer asks addr for COUNT until it answers, for at most timeout.
func waitAnswer(ctx context.Context, addr string, timeout time.Duration) (int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		n, err := count(ctx, addr)
		if err == nil {
			return n, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the workload at %s did not answer within %s: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(pollInterval):
		}
	}
}

// query sends one line to the workload on a new connection and returns
// its one-line answer.
func query(ctx context.Context, addr, line string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	if _, err := fmt.Fprintf(conn, "%s\n", line); err != nil {
		return "", err
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s to %s: %w", line, addr, err)
	}
	return strings.TrimSuffix(reply, "\n"), nil
}

// median is the median of each measure separately, so a slow checkpoint
// in one run and a slow restore in another do not make one row.
func median(samples []sample) sample {
	mid := func(f func(sample) int64) int64 {
		v := make([]int64, len(samples))
		for i, s := range samples {
			v[i] = f(s)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	return sample{
		checkpoint: time.Duration(mid(func(s sample) int64 { return int64(s.checkpoint) })),
		restore:    time.Duration(mid(func(s sample) int64 { return int64(s.restore) })),
		archive:    mid(func(s sample) int64 { return s.archive }),
	}
}
