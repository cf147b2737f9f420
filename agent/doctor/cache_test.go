package doctor

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

func TestCacheProbesOnce(t *testing.T) {
	var runs atomic.Int32
	release := make(chan struct{})
	c := NewCache(Options{DataDir: "/var/lib/godwit"})
	c.run = func(ctx context.Context, o Options) Report {
		runs.Add(1)
		<-release
		if ctx.Err() != nil {
			t.Error("the probe's context ended with its first caller's")
		}
		return Report{OK: true, Checks: []Check{{Name: CheckRoot, Detail: o.DataDir}}}
	}

	// A caller that gives up before the probe ends gets its context's
	// error, and does not spoil the report for the next one.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.Report(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Report with an expired context: %v, want DeadlineExceeded", err)
	}
	close(release)
	for range 3 {
		r, err := c.Report(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK || len(r.Checks) != 1 || r.Checks[0].Detail != "/var/lib/godwit" {
			t.Errorf("Report = %+v, want the probe's with its options", r)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Errorf("the host was probed %d times, want once", n)
	}
}
