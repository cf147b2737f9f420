package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
)

const (
	// rssInterval is how often the agents' resident memory is sampled
	// during a move.
	rssInterval = 100 * time.Millisecond
	// clearPeakRSS, written to /proc/PID/clear_refs, resets the process's
	// VmHWM to its current RSS, so that the kernel's own peak covers the
	// move alone.
	clearPeakRSS = "5"
)

// rssSampler reads the VmRSS of some processes every rssInterval and keeps
// each one's peak. The kernel's VmHWM, reset when sampling starts, gives
// the exact peak between two samples; the report gives the larger.
type rssSampler struct {
	pids  []int
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	peaks []int64
	err   error
}

// sampleRSS resets the processes' peak and starts sampling; Stop ends it.
func sampleRSS(pids ...int) *rssSampler {
	s := &rssSampler{pids: pids, stop: make(chan struct{}), done: make(chan struct{}), peaks: make([]int64, len(pids))}
	for _, pid := range pids {
		// Without the reset, VmHWM would count what the agent held before
		// the move: the sampled peaks still stand.
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte(clearPeakRSS), 0)
	}
	s.sample(fieldVmRSS)
	go s.run()
	return s
}

func (s *rssSampler) run() {
	defer close(s.done)
	tick := time.NewTicker(rssInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-tick.C:
			s.sample(fieldVmRSS)
		}
	}
}

// sample raises each process's peak to its field (VmRSS or VmHWM) now.
func (s *rssSampler) sample(field string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, pid := range s.pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err == nil {
			var v int64
			if v, err = statusBytes(data, field); err == nil {
				s.peaks[i] = max(s.peaks[i], v)
				continue
			}
		}
		if s.err == nil {
			s.err = fmt.Errorf("memory of pid %d: %w", pid, err)
		}
	}
}

// Stop ends sampling and returns each process's peak resident memory, in
// bytes, in the order of the pids: the largest VmRSS sampled, or VmHWM
// when larger.
func (s *rssSampler) Stop() ([]int64, error) {
	close(s.stop)
	<-s.done
	s.sample(fieldVmHWM)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peaks, s.err
}

// Fields of /proc/PID/status.
const (
	fieldVmRSS = "VmRSS:"
	fieldVmHWM = "VmHWM:"
)

// statusBytes reads a memory field ("VmRSS:", "VmHWM:") of a
// /proc/PID/status file, in bytes.
func statusBytes(status []byte, field string) (int64, error) {
	for line := range bytes.Lines(status) {
		f := bytes.Fields(line)
		if len(f) < 2 || string(f[0]) != field {
			continue
		}
		if len(f) != 3 || string(f[2]) != "kB" {
			return 0, fmt.Errorf("%s %q: want a number of kB", field, bytes.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s %q: %w", field, bytes.TrimSpace(line), err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no " + field + " line (a kernel thread, or a process that has exited)")
}
