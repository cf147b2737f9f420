package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// godwitPrefix starts the name of every godwit row of the report.
const godwitPrefix = "godwit "

// toolOf names godwit's move with strategy s in the report.
func toolOf(s migrate.Strategy) string { return godwitPrefix + string(s) }

// isGodwit tells godwit's rows from the baselines'.
func isGodwit(tool string) bool { return strings.HasPrefix(tool, godwitPrefix) }

// strategyOf is the strategy of a godwit row's tool.
func strategyOf(tool string) migrate.Strategy {
	return migrate.Strategy(strings.TrimPrefix(tool, godwitPrefix))
}

// strategyOrder is the order the strategies are measured and reported in.
var strategyOrder = []migrate.Strategy{migrate.StopCopy, migrate.Stream, migrate.PreCopy, migrate.PostCopy}

// unmeasured is a strategy the run left out, and why.
type unmeasured struct {
	strategy migrate.Strategy
	why      string
}

// parseStrategies reads --strategies: a comma-separated list of
// strategies, each once, in strategyOrder; empty means every strategy.
func parseStrategies(s string) ([]migrate.Strategy, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []migrate.Strategy
	for _, f := range strings.Split(s, ",") {
		st, err := migrate.ParseStrategy(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		if st == migrate.Auto {
			return nil, errors.New("auto is no strategy of its own: name the strategies to measure, or leave --strategies out for all")
		}
		if !slices.Contains(out, st) {
			out = append(out, st)
		}
	}
	slices.SortFunc(out, func(a, b migrate.Strategy) int {
		return slices.Index(strategyOrder, a) - slices.Index(strategyOrder, b)
	})
	return out, nil
}

// pickStrategies keeps the strategies of want (all when empty) that both
// agents report supported, and says why each other one is left out.
func pickStrategies(want []migrate.Strategy, src, dst *pb.NodeInfoResponse) (use []migrate.Strategy, left []unmeasured) {
	support := func(info *pb.NodeInfoResponse, s migrate.Strategy) (bool, string) {
		for _, x := range info.GetStrategies() {
			if x.GetName() == string(s) {
				return x.GetSupported(), x.GetReason()
			}
		}
		return false, "not reported by the agent"
	}
	all := len(want) == 0
	for _, s := range strategyOrder {
		if !all && !slices.Contains(want, s) {
			continue
		}
		okA, whyA := support(src, s)
		okB, whyB := support(dst, s)
		switch {
		case okA && okB:
			use = append(use, s)
		case !okA && !okB && whyA == whyB:
			left = append(left, unmeasured{s, "neither host supports it: " + whyA})
		case !okA:
			left = append(left, unmeasured{s, "host a does not support it: " + whyA})
		default:
			left = append(left, unmeasured{s, "host b does not support it: " + whyB})
		}
	}
	return use, left
}

// Log lines of the destination's agent that end a transfer of pages
// beside CRIU (agent/migration_stream.go, agent/migration_postcopy.go),
// with its bytes and pages_time: from the first byte to the last.
var pagesLogLine = map[migrate.Strategy]string{
	migrate.Stream:   `msg="memory pages received from the source"`,
	migrate.PostCopy: `msg="every memory page fetched from the source"`,
}

const (
	// pagesLogWait bounds waiting for that line once Drive returned: a
	// post-copy destination logs it when its lazy-pages daemon exits, a
	// moment after the source saw its last page go.
	pagesLogWait = 30 * time.Second
	// pagesLogPoll is how often the log is read meanwhile.
	pagesLogPoll = 50 * time.Millisecond
)

// pagesMoved reads, from the destination agent's log at logPath, how
// many bytes of memory pages migration id moved beside CRIU and how long
// they took; it waits for the line up to pagesLogWait.
func pagesMoved(ctx context.Context, logPath, id string, s migrate.Strategy) (int64, time.Duration, error) {
	msg, ok := pagesLogLine[s]
	if !ok {
		return 0, 0, nil
	}
	deadline := time.Now().Add(pagesLogWait)
	for {
		bytes, took, found, err := findPagesLine(logPath, msg, id)
		if err != nil || found {
			return bytes, took, err
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("migration %s: the destination's log %s has no %s line within %s of the move's end", id, logPath, msg, pagesLogWait)
		}
		if err := benchutil.Sleep(ctx, pagesLogPoll); err != nil {
			return 0, 0, err
		}
	}
}

// findPagesLine looks for the line with msg of migration id in the log
// and reads its bytes and pages_time.
func findPagesLine(logPath, msg, id string) (bytes int64, took time.Duration, found bool, err error) {
	f, err := os.Open(logPath)
	if err != nil {
		return 0, 0, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, msg) || !slices.Contains(strings.Fields(line), "migration="+id) {
			continue
		}
		bytes, took, err = parsePagesLine(line)
		return bytes, took, true, err
	}
	return 0, 0, false, sc.Err()
}

// parsePagesLine reads bytes=N and pages_time=D off a log line.
func parsePagesLine(line string) (bytes int64, took time.Duration, err error) {
	var haveBytes, haveTime bool
	for _, f := range strings.Fields(line) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "bytes":
			if bytes, err = strconv.ParseInt(v, 10, 64); err != nil {
				return 0, 0, fmt.Errorf("log line %q: bytes: %w", line, err)
			}
			haveBytes = true
		case "pages_time":
			if took, err = time.ParseDuration(v); err != nil {
				return 0, 0, fmt.Errorf("log line %q: pages_time: %w", line, err)
			}
			haveTime = true
		}
	}
	if !haveBytes || !haveTime {
		return 0, 0, fmt.Errorf("log line %q: want bytes= and pages_time= (an agent older than the benchmark?)", line)
	}
	return bytes, took, nil
}
