package doctor

import (
	"context"
	"sync"
	"time"
)

// probeTimeout bounds one Run on behalf of a Cache: Run bounds each command
// itself, this bounds the whole, so that a stuck probe cannot leave every
// later caller waiting.
const probeTimeout = 2 * time.Minute

// Cache runs the probes once and keeps the Report for the life of the
// process: the agent asks for its migration capabilities on every
// NodeInfo, and the host does not change under a running agent in ways the
// probes see (they take about a second, run `criu check` and start a page
// server). A zero Cache is not usable; NewCache makes one.
type Cache struct {
	opts Options
	run  func(context.Context, Options) Report

	once   sync.Once
	done   chan struct{}
	report Report
}

// NewCache returns a Cache that probes this host with o on first use.
func NewCache(o Options) *Cache {
	return &Cache{opts: o, run: Run, done: make(chan struct{})}
}

// Report returns the cached Report, probing the host first if no caller
// did yet. The probe runs on its own context (bounded by probeTimeout), so
// that a caller that gives up does not leave a half-probed Report behind
// for the others: Report then returns ctx's error, and the probe finishes
// for the next caller.
func (c *Cache) Report(ctx context.Context) (Report, error) {
	c.once.Do(func() {
		go func() {
			defer close(c.done)
			pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), probeTimeout)
			defer cancel()
			c.report = c.run(pctx, c.opts)
		}()
	})
	select {
	case <-c.done:
		return c.report, nil
	case <-ctx.Done():
		return Report{}, ctx.Err()
	}
}
