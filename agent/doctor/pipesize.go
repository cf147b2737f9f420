package doctor

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// RaisePipeMaxSize raises fs.pipe-max-size to the pipe size CRIU's page
// server asks for, when it is lower, so that stream and post-copy
// migrations work on this host (without it the page server dies with
// "splice: -1: Bad file descriptor"). It needs root; the agent calls it
// at start and logs what it did. before and after are the values read and
// left; they are equal when nothing had to change.
func RaisePipeMaxSize() (before, after int, err error) {
	return raisePipeMaxSize(pathPipeMaxSize, criuPipeSize)
}

func raisePipeMaxSize(path string, want int) (before, after int, err error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("read %s: %w", path, err)
	}
	before, err = strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0, 0, fmt.Errorf("parse %s %q: %w", path, raw, err)
	}
	if before >= want {
		return before, before, nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(want)), 0); err != nil {
		return before, before, fmt.Errorf("raise %s from %d to %d (stream and post-copy migrations need it): %w; run `sysctl -w fs.pipe-max-size=%d` as root",
			path, before, want, err, want)
	}
	return before, want, nil
}
