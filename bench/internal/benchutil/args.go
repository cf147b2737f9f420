package benchutil

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ParseSizes reads a --sizes flag, "64,512,2048", as MiB.
func ParseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive sizes in MiB such as 64,512,2048", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// ParseChoices reads a comma-separated list of allowed values (such as
// "godwit,podman"), in any order, each kept once.
func ParseChoices[T ~string](s string, allowed ...T) ([]T, error) {
	var out []T
	for _, f := range strings.Split(s, ",") {
		v := T(strings.TrimSpace(f))
		if !slices.Contains(allowed, v) {
			names := make([]string, len(allowed))
			for i, a := range allowed {
				names[i] = string(a)
			}
			return nil, fmt.Errorf("%q: want one or more of %s", f, strings.Join(names, ", "))
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out, nil
}

// MemHeadroom is what a measured size must leave of MemAvailable: the
// host, the agents and the page cache of the images being written.
const MemHeadroom = 1 << 30

// CannotFit says why a container of sizeMiB cannot be measured on this
// host now, or "" when it can: the memory it fills must be there (without
// swap, or it measures swapping), and workDir's disk must hold copies
// copies of it.
func CannotFit(workDir string, sizeMiB, copies int) string {
	size := int64(sizeMiB) << 20
	if avail, err := MemAvailable(); err != nil {
		return err.Error()
	} else if avail < size+MemHeadroom {
		return fmt.Sprintf("needs %d MiB of memory available, the host has %d MiB", (size+MemHeadroom)>>20, avail>>20)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(workDir, &st); err != nil {
		return err.Error()
	}
	need := int64(copies)*size + MemHeadroom
	if free := int64(st.Bavail) * st.Bsize; free < need {
		return fmt.Sprintf("needs %d MiB free on %s, it has %d MiB", need>>20, workDir, free>>20)
	}
	return ""
}

// Sleep waits d unless ctx ends first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
