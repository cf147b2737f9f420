package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	// probeInterval is the probe's pace: a request at most every 10 ms,
	// so a gap is measured to within about that (issue 4 asks for a sample
	// at least every 10 ms).
	probeInterval = 10 * time.Millisecond
	// probeAnswerTimeout bounds one probe request. A request sent while
	// the container is frozen is answered only after it runs again and
	// the client's next retransmission reaches it, which TCP backs off
	// exponentially: for a 2 GiB move that can be tens of seconds.
	probeAnswerTimeout = 2 * time.Minute
	// probeWarmup is how long the probe runs before a move starts, so
	// that the move starts with the connection in its steady state.
	probeWarmup = 300 * time.Millisecond
	// probeSettle is how long the probe goes on after its first reply
	// after the move: long enough for the workload's counter (100 ms
	// ticks) to prove it runs.
	probeSettle = 500 * time.Millisecond
	// queryTimeout bounds a single request outside the probe.
	queryTimeout = 10 * time.Second
)

// client speaks the workload's line protocol (COUNT, CHECKSUM, echo) on
// one connection, one request at a time.
type client struct {
	conn net.Conn
	r    *bufio.Reader
}

func newClient(conn net.Conn) *client { return &client{conn: conn, r: bufio.NewReader(conn)} }

// ask sends one line and returns the answer without its newline.
func (c *client) ask(line string, timeout time.Duration) (string, error) {
	if err := c.conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(c.conn, "%s\n", line); err != nil {
		return "", fmt.Errorf("send %s: %w", line, err)
	}
	answer, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("answer to %s: %w", line, err)
	}
	return strings.TrimSpace(answer), nil
}

// count asks the workload's counter, which goes up every 100 ms while it
// runs.
func (c *client) count(timeout time.Duration) (int64, error) {
	answer, err := c.ask("COUNT", timeout)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(answer, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("COUNT answered %q, want a number", answer)
	}
	return n, nil
}

// checkMemory fails unless the workload's memory holds the bytes it held
// at start-up: its checksum then and now are the same.
func (c *client) checkMemory() error {
	answer, err := c.ask("CHECKSUM", queryTimeout)
	if err != nil {
		return err
	}
	if sums := strings.Fields(answer); len(sums) != 2 || sums[0] != sums[1] {
		return fmt.Errorf("CHECKSUM answered %q (at start-up, now): the workload's memory is not the bytes it held", answer)
	}
	return nil
}

// reply is one answer the probe got: when its request went, when it came,
// and the counter it carried.
type reply struct {
	sent, at time.Time
	count    int64
}

// probe asks COUNT on one connection at most every probeInterval, and
// as soon as the previous answer came when that was later, recording
// every answer's time: a client of the service, held through a move.
type probe struct {
	cl       *client
	interval time.Duration
	stop     chan struct{}
	done     chan struct{}
	// answered receives a value (without blocking) after each reply.
	answered chan struct{}

	mu      sync.Mutex
	replies []reply
	err     error
}

// startProbe starts probing on cl; Stop ends it.
func startProbe(cl *client, interval time.Duration) *probe {
	p := &probe{cl: cl, interval: interval, stop: make(chan struct{}), done: make(chan struct{}), answered: make(chan struct{}, 1)}
	go p.run()
	return p
}

func (p *probe) run() {
	defer close(p.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-timer.C:
		}
		timer.Reset(p.interval)
		sent := time.Now()
		n, err := p.cl.count(probeAnswerTimeout)
		at := time.Now()
		p.mu.Lock()
		if err != nil {
			p.err = fmt.Errorf("the probe's connection from host c: %w", err)
		} else {
			p.replies = append(p.replies, reply{sent: sent, at: at, count: n})
		}
		p.mu.Unlock()
		if err != nil {
			return
		}
		select {
		case p.answered <- struct{}{}:
		default:
		}
	}
}

// waitReplyAfter waits until the probe got a reply after t, for at most
// timeout: the connection survived the move and the workload answers.
func (p *probe) waitReplyAfter(ctx context.Context, t time.Time, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		last, err := time.Time{}, p.err
		if n := len(p.replies); n > 0 {
			last = p.replies[n-1].at
		}
		p.mu.Unlock()
		switch {
		case last.After(t):
			return nil
		case err != nil:
			return err
		}
		select {
		case <-p.answered:
		case <-p.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("the probe got no reply within %s of the move's end", timeout)
		}
	}
}

// Stop ends the probe once its request in flight is answered, and
// returns the replies and the error that ended it, if any. The client is
// then free for other requests. Stop may be called more than once.
func (p *probe) Stop() ([]reply, error) {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.replies, p.err
}

// Abort ends the probe at once by closing its connection, for a move
// that failed: the request in flight might otherwise wait for
// probeAnswerTimeout.
func (p *probe) Abort() {
	p.cl.conn.Close()
	_, _ = p.Stop() // the error is the closed connection's
}

// longestGap is the downtime the probe saw during a move that ran from
// start to end: the longest time between two consecutive replies, from
// the last reply at or before start to the first one at or after end.
// replies must be in the order they came.
func longestGap(replies []reply, start, end time.Time) (time.Duration, error) {
	if end.Before(start) {
		return 0, fmt.Errorf("the move ended (%s) before it started (%s)", end.Format(time.RFC3339Nano), start.Format(time.RFC3339Nano))
	}
	first, last := -1, -1
	for i, r := range replies {
		if i > 0 && r.at.Before(replies[i-1].at) {
			return 0, fmt.Errorf("reply %d came before reply %d: replies must be in order", i, i-1)
		}
		if !r.at.After(start) {
			first = i
		}
		if last < 0 && !r.at.Before(end) {
			last = i
		}
	}
	switch {
	case first < 0:
		return 0, errors.New("the probe had no reply before the move started")
	case last < 0:
		return 0, errors.New("the probe had no reply after the move ended")
	}
	var gap time.Duration
	for i := first + 1; i <= last; i++ {
		gap = max(gap, replies[i].at.Sub(replies[i-1].at))
	}
	return gap, nil
}

// checkCounter fails unless the workload's counter, as the probe saw it
// through a move that started at start, never went back, and went on past
// the last value seen before start: the same process ran on, neither
// restarted nor stopped.
func checkCounter(replies []reply, start time.Time) error {
	before := int64(-1)
	for i, r := range replies {
		if i > 0 && r.count < replies[i-1].count {
			return fmt.Errorf("the counter went back from %d to %d: the workload restarted", replies[i-1].count, r.count)
		}
		if !r.at.After(start) {
			before = r.count
		}
	}
	switch {
	case before < 0:
		return errors.New("the probe had no reply before the move started")
	case replies[len(replies)-1].count <= before:
		return fmt.Errorf("the counter stood at %d before the move and still does after it: the workload does not run", before)
	}
	return nil
}
