package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/migrate"
)

// sample is one move of one container.
type sample struct {
	// probeDowntime is the longest gap between the probe's replies
	// during the move.
	probeDowntime time.Duration
	// engineDowntime is godwit's own measure (migrate.Result.Downtime:
	// from the dump's start to the commit's end); zero for the baseline.
	engineDowntime time.Duration
	// total is the move from start to end: Drive's duration, or the
	// baseline's script.
	total time.Duration
	// bytes is what went over the network: the checkpoint godwit sent
	// (with the memory pages that stream and post-copy send beside it),
	// or the CRIU images the baseline copied.
	bytes int64
	// moved is the bytes the transfer's throughput counts: the
	// checkpoint (stop-copy), the memory pages (stream, post-copy), the
	// images (baselines).
	moved int64
	// transfer is how long moving them took: stop-copy's transfer phase
	// (sent, received, digests checked); for stream and post-copy, the
	// memory pages from their first byte at the destination to their
	// last (the destination agent's log); the baseline's tar and nc.
	transfer time.Duration
	// pages is the memory pages' bytes that stream and post-copy moved
	// beside the checkpoint.
	pages int64
	// checkpoint and restore are the baseline's other steps.
	checkpoint, restore time.Duration
	// rssSource and rssDestination are the agents' peak resident memory
	// during godwit's move.
	rssSource, rssDestination int64
	// phases is how long each phase of godwit's move lasted.
	phases map[migrate.Phase]time.Duration
}

// phaseSteps are the phases the report breaks godwit's move into, with
// what each one's time is spent on: a phase lasts until the next begins.
var phaseSteps = []struct {
	phase migrate.Phase
	label string
}{
	{migrate.PhasePrepare, "prepare"},
	{migrate.PhaseSync, "sync"},
	{migrate.PhaseDump, "dump"},
	{migrate.PhaseTransfer, "transfer"},
	{migrate.PhaseRestore, "restore"},
	{migrate.PhaseReady, "commit"},
	{migrate.PhaseCommitted, "finish on the source"},
}

// throughput is the transfer's rate in bytes per second, 0 when unknown.
func (s sample) throughput() float64 {
	if s.transfer <= 0 {
		return 0
	}
	return float64(s.moved) / s.transfer.Seconds()
}

// moveGodwit runs a workload of sizeMiB on host a and moves it to host b
// with migrate.Drive and strategy st while the probe on host c asks it every
// 10 ms; the cluster's route follows it to b right after Drive returns
// (until then the source forwards the IP to b). It checks that the probe's
// connection is answered after the move, the counter went on and the
// memory is the same bytes, then removes the container.
func (b *bench) moveGodwit(ctx context.Context, st migrate.Strategy, sizeMiB, run int) (s sample, err error) {
	name := fmt.Sprintf("g%s%d-%d", strategyTag[st], sizeMiB, run)
	defer func() { err = errors.Join(err, b.remove(name)) }()
	w, conn, err := b.runWorkload(ctx, name, sizeMiB)
	if err != nil {
		return s, err
	}
	defer conn.Close()
	cl := newClient(conn)
	if err := cl.checkMemory(); err != nil {
		return s, fmt.Errorf("before the move: %w", err)
	}
	if err := benchutil.Sleep(ctx, b.cool); err != nil {
		return s, err
	}
	p := startProbe(cl, probeInterval)
	defer p.Abort()
	if err := benchutil.Sleep(ctx, probeWarmup); err != nil {
		return s, err
	}

	rss := sampleRSS(b.a.Agent().Pid(), b.b.Agent().Pid())
	start := time.Now()
	id := "bmig-" + name
	res, err := migrate.Drive(ctx, migrate.Migration{ID: id, Container: name, Strategy: st},
		migrationAgent(b.a), migrationAgent(b.b), migrate.DriveOptions{})
	end := time.Now()
	peaks, rssErr := rss.Stop()
	if err != nil {
		return s, fmt.Errorf("move from host a to b: %w\nagent a's log ends with:\n%s\nagent b's log ends with:\n%s",
			err, b.a.Agent().LogTail(), b.b.Agent().LogTail())
	}
	if rssErr != nil {
		return s, rssErr
	}
	for _, warning := range res.Warnings {
		b.log.Warn("move finished with a warning", "container", name, "warning", warning)
	}
	if err := b.cluster.Route(ctx, netip.PrefixFrom(w.ip, 32), b.b); err != nil {
		return s, err
	}

	if s.probeDowntime, err = b.verify(ctx, p, cl, start, end); err != nil {
		return s, err
	}
	s.engineDowntime = res.Downtime
	s.total = res.Total
	s.bytes, s.moved = res.BytesSent, res.BytesSent
	s.transfer = res.Phases[migrate.PhaseTransfer]
	if _, beside := pagesLogLine[st]; beside {
		if s.pages, s.transfer, err = pagesMoved(ctx, b.b.Agent().LogPath(), id, st); err != nil {
			return s, err
		}
		s.bytes += s.pages
		s.moved = s.pages
	}
	s.rssSource, s.rssDestination = peaks[0], peaks[1]
	s.phases = res.Phases
	return s, nil
}

// strategyTag shortens a strategy in container names.
var strategyTag = map[migrate.Strategy]string{
	migrate.StopCopy: "sc", migrate.Stream: "st", migrate.PreCopy: "pr", migrate.PostCopy: "pc",
}

// verify waits for the probe's first reply after end, lets it run
// probeSettle more, and checks the move as a user would: the longest gap
// the probe saw between start and end (returned), a counter that never
// went back and went on, and the memory checksum.
func (b *bench) verify(ctx context.Context, p *probe, cl *client, start, end time.Time) (gap time.Duration, err error) {
	if err := p.waitReplyAfter(ctx, end, probeAnswerTimeout); err != nil {
		return 0, fmt.Errorf("after the move: %w", err)
	}
	if err := benchutil.Sleep(ctx, probeSettle); err != nil {
		return 0, err
	}
	replies, err := p.Stop()
	if err != nil {
		return 0, err
	}
	if gap, err = longestGap(replies, start, end); err != nil {
		return 0, err
	}
	if err := checkCounter(replies, start); err != nil {
		return 0, err
	}
	if err := cl.checkMemory(); err != nil {
		return 0, fmt.Errorf("after the move: %w", err)
	}
	return gap, nil
}

func migrationAgent(h *devcluster.Host) *agentclient.MigrationAgent {
	return &agentclient.MigrationAgent{Client: h.Agent().Client(), Addr: h.Agent().Addr()}
}
