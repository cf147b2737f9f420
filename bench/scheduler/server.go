package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/server"
	"github.com/godwit/godwit/scheduler/state"
)

// defaultCallers are the numbers of concurrent callers the scheduler's
// placement queue is measured with: a few, and as many as one entry
// holds (server.DefaultMaxPlaceBatch).
const defaultCallers = "16,256"

// placerBackend is a committer as the server.Placer's backend: the
// leader's raft and state, or the FSM alone.
type placerBackend struct{ c committer }

var _ server.PlaceBackend = placerBackend{}

func (b placerBackend) VerifyLeader(ctx context.Context) error { return b.c.verifyLeader(ctx) }
func (b placerBackend) Snapshot() *state.Snapshot              { return b.c.store().Snapshot() }

func (b placerBackend) Apply(ctx context.Context, cmd fsm.Command) (any, error) {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return nil, err
	}
	res, err := b.c.commit(ctx, data)
	if err != nil {
		return nil, err
	}
	return res.Value, res.Err
}

// measureServer places containers through a server.Placer on c, as the
// scheduler's Run does, from cfg.callers goroutines that each place one
// container per call, until cfg.placements are placed or cfg.duration
// has passed; then it checks that the state holds all of them within
// capacity and that the replicas agree. A sample's latencies are each
// call's, from Place to its answer (the wait for the batch, the
// decision and the commit), its entries the Placer's batches, its
// placing and verifying the Placer's time deciding and confirming its
// leadership.
func measureServer(ctx context.Context, c committer, cfg loadConfig, log *slog.Logger) (throughputSample, error) {
	p := server.NewPlacer(server.PlacerConfig{Backend: placerBackend{c}, Logger: quiet(log)})
	runCtx, stop := context.WithCancel(ctx)
	var running sync.WaitGroup
	running.Go(func() { p.Run(runCtx) })
	defer func() {
		stop()
		running.Wait()
	}()

	var next, placed atomic.Int64
	var mu sync.Mutex
	var s throughputSample
	errs := make([]error, cfg.callers)
	var wg sync.WaitGroup
	runtime.GC()
	cpu0 := benchutil.ProcessCPU()
	start := time.Now()
	for i := range cfg.callers {
		wg.Go(func() {
			var lat []time.Duration
			defer func() {
				mu.Lock()
				s.latencies = append(s.latencies, lat...)
				mu.Unlock()
			}()
			for ctx.Err() == nil && (cfg.duration == 0 || time.Since(start) < cfg.duration) {
				k := int(next.Add(1) - 1)
				if k >= cfg.placements {
					return
				}
				t := time.Now()
				_, err := p.Place(ctx, server.PlaceRequest{Spec: simSpec(k), Name: containerName(k), Algorithm: placement.BinPack})
				lat = append(lat, time.Since(t))
				if err != nil {
					errs[i] = fmt.Errorf("place container %d: %w", k, err)
					return
				}
				placed.Add(1)
			}
			errs[i] = ctx.Err()
		})
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	s.cpu = benchutil.ProcessCPU() - cpu0
	stats := p.Stats()
	s.entries = int(stats.Batches)
	s.placing, s.verifying = stats.Deciding, stats.Verifying
	s.placements = int(placed.Load())
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	if s.placements == 0 {
		return s, errors.New("nothing was placed: give the measurement more time")
	}
	if int(stats.Placed) != s.placements {
		return s, fmt.Errorf("the placer committed %d containers, its callers were told %d", stats.Placed, s.placements)
	}
	if err := c.settle(ctx); err != nil {
		return s, err
	}
	return s, checkPlaced(c.store().Snapshot(), s.placements)
}
