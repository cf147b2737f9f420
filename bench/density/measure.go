package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// memory is one process's memory, in bytes. RSS counts every page the
// process maps, shared ones in full; PSS divides each shared page among
// the processes that map it (every shim maps the same godwit binary); USS
// counts only the pages no other process maps, what one more shim costs.
type memory struct {
	RSS, PSS, USS, Peak int64
}

// readMemory reads pid's memory from /proc/PID/status (VmRSS, VmHWM) and
// /proc/PID/smaps_rollup (Pss, Private_*).
func readMemory(pid int) (memory, error) {
	status, err := procFields(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memory{}, err
	}
	rollup, err := procFields(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return memory{}, err
	}
	return memory{
		RSS:  status["VmRSS"],
		Peak: status["VmHWM"],
		PSS:  rollup["Pss"],
		USS:  rollup["Private_Clean"] + rollup["Private_Dirty"],
	}, nil
}

// procFields parses the "Key:   123 kB" lines of a /proc file into bytes.
// Lines whose value is not a number of kB are skipped.
func procFields(path string) (map[string]int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, value, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		num, unit, _ := strings.Cut(strings.TrimSpace(value), " ")
		if unit != "kB" {
			continue
		}
		if v, err := strconv.ParseInt(num, 10, 64); err == nil {
			out[key] = v << 10
		}
	}
	return out, sc.Err()
}

// readPid reads a pid file.
func readPid(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s holds %q", path, data)
	}
	return pid, nil
}

// quantile returns the q-quantile (0..1) of v by the nearest-rank method;
// v need not be sorted. It is the zero value for an empty v.
func quantile[T int64 | time.Duration](v []T, q float64) T {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	rank := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(rank, 0), len(s)-1)]
}

// field picks one number out of each memory.
func field(ms []memory, f func(memory) int64) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = f(m)
	}
	return out
}
