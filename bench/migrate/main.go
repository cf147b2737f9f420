// Command migrate measures live migration between two agents (issue 4,
// item 9). On a devcluster of three hosts (agents on a and b, a TCP probe
// on c) it moves containers of 64 MiB, 512 MiB and 2 GiB of
// incompressible memory from a to b with each of godwit's strategies
// that both agents support (stop-copy, stream, post-copy; pre-copy where
// the kernel tracks soft-dirty pages), and, in the same run with the same workload on the same hosts, does what an
// operator would script by hand: `runc checkpoint`, tar of the images to
// host b (straight over a TCP connection, and through busybox nc),
// `runc restore` (back on host a: see moveBaseline). For each it reports
// the downtime a client sees (the longest gap between the replies of a
// probe asking every 10 ms over one TCP connection held through the
// move), the downtime godwit measures itself, the total time, the bytes
// sent and the transfer's throughput (for stream and post-copy: the
// memory pages' bytes over the time from their first byte to their last
// at the destination, which its agent logs) against the raw TCP throughput
// between hosts a and b measured in the same run (and, with TLS, against
// the throughput of the agents' own data connection between them, memory
// to memory: the most any transfer through TLS could reach), and the
// agents' peak resident memory during each move.
//
// Every move is checked, not only timed: the probe's connection is
// answered after it, the workload's counter never went back, and its
// memory is the same bytes.
//
// It needs root, runc, CRIU, iptables, nsenter, busybox-static and GNU
// tar, and leaves nothing behind:
//
//	go run ./bench/migrate [--godwit bin/godwit] [--sizes 64,512,2048] [--runs 3]
//		[--strategies stop-copy,stream,post-copy] [--baselines tcp,nc] [--raw-mib 1024] [--cool 20s] [--out FILE]
//
// --cool waits before each move: in a VM whose memory balloon reports
// free pages, the memory one move freed is fast to write for a few
// seconds after, and the next move would find it so; cooled, every move
// writes fresh memory, as a node that sat idle does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/internal/testutil"
	"github.com/godwit/godwit/migrate"
)

const (
	// defaultSizes are issue 4's container sizes, in MiB.
	defaultSizes = "64,512,2048"
	// defaultRuns is how many times each size is measured per tool; the
	// report shows the medians.
	defaultRuns = 3
	// defaultRawMiB is how much one raw TCP measurement sends.
	defaultRawMiB = 1024
)

type options struct {
	godwit    string
	sizes     []int
	baselines []copyMethod
	// strategies are godwit's strategies to measure; nil means every
	// one both agents support.
	strategies []migrate.Strategy
	runs       int
	rawMiB     int
	workDir    string
	out        string
	// insecure runs the agents with --insecure instead of mutual TLS.
	insecure bool
	// cool is the wait before each move (bench.cool).
	cool time.Duration
}

func main() {
	var o options
	var sizes, baselines, strategies string
	flag.StringVar(&o.godwit, "godwit", "", "godwit binary the agents run (default: build ./cmd/godwit with CGO_ENABLED=0)")
	flag.StringVar(&sizes, "sizes", defaultSizes, "container memory sizes in MiB, comma-separated")
	flag.StringVar(&baselines, "baselines", string(copyTCP)+","+string(copyNC),
		"hand-scripted baselines, comma-separated: tcp (tar straight into a TCP connection), nc (tar | busybox nc)")
	flag.StringVar(&strategies, "strategies", "",
		"godwit's strategies to measure, comma-separated: stop-copy, stream, pre-copy, post-copy (default: every one both agents report supported)")
	flag.IntVar(&o.runs, "runs", defaultRuns, "moves per size and tool (the report shows the medians)")
	flag.IntVar(&o.rawMiB, "raw-mib", defaultRawMiB, "MiB sent by each raw TCP measurement between hosts a and b")
	flag.StringVar(&o.workDir, "work-dir", "", "directory for the baseline's images and the workload image (default: a new one in $TMPDIR); its filesystem is reported")
	flag.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	flag.BoolVar(&o.insecure, "insecure", false, "run the agents with --insecure (plaintext data connections) instead of mutual TLS, as production runs them")
	flag.DurationVar(&o.cool, "cool", 0, "wait this long before each move, the container running, so that where a memory balloon reports free pages "+
		"the hypervisor takes back the memory earlier moves freed and every move writes fresh memory, as on nodes that sat idle (20s does here)")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	if o.sizes, err = benchutil.ParseSizes(sizes); err != nil {
		log.Error("bad --sizes", "err", err)
		os.Exit(2)
	}
	if o.baselines, err = parseCopyMethods(baselines); err != nil {
		log.Error("bad --baselines", "err", err)
		os.Exit(2)
	}
	if o.strategies, err = parseStrategies(strategies); err != nil {
		log.Error("bad --strategies", "err", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("migration benchmark failed", "err", err)
		os.Exit(1)
	}
}

// run builds the cluster, measures every size with each tool in turn (so
// that a drift of the host over the run affects both alike), and reports.
func run(ctx context.Context, o options, log *slog.Logger) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the migration benchmark creates network namespaces and runs containers: run it as root")
	}
	if o.runs < 1 {
		return fmt.Errorf("--runs %d: measure at least once", o.runs)
	}
	if o.rawMiB < 1 {
		return fmt.Errorf("--raw-mib %d: send at least 1 MiB", o.rawMiB)
	}
	work, err := os.MkdirTemp(o.workDir, "godwit-bench-migrate-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, benchutil.RemoveWorkDir(work)) }()

	if o.godwit == "" {
		if o.godwit, err = benchutil.BuildGodwit(ctx, work); err != nil {
			return err
		}
	}
	workloadBin := filepath.Join(work, "workload")
	if err := testutil.BuildWorkloadTo(ctx, workloadBin); err != nil {
		return err
	}
	rootfsTar := filepath.Join(work, "workload.tar")
	if err := testutil.WriteWorkloadTar(rootfsTar, workloadBin); err != nil {
		return err
	}

	b, err := newBench(ctx, o.godwit, work, rootfsTar, o.insecure, log)
	if err != nil {
		return err
	}
	b.cool = o.cool
	defer func() { err = errors.Join(err, b.Close()) }()

	strats, left, err := b.strategies(ctx, o.strategies)
	if err != nil {
		return err
	}
	for _, u := range left {
		log.Warn("strategy not measured", "strategy", u.strategy, "why", u.why)
	}
	if len(strats) == 0 {
		return errors.New("none of the strategies asked for is supported by both agents: see the warnings above")
	}
	rep := report{conditions: b.conditions(), runs: o.runs, rawMiB: o.rawMiB, unmeasured: left}
	for _, size := range o.sizes {
		if why := benchutil.CannotFit(work, size, diskPerSize); why != "" {
			log.Warn("skipping size", "mib", size, "why", why)
			rep.skipped = append(rep.skipped, fmt.Sprintf("%d MiB: %s", size, why))
			continue
		}
		gw := make([][]sample, len(strats))
		base := make([][]sample, len(o.baselines))
		var raw, channel []float64
		for i := range o.runs {
			// measure measures one link from host a to host b, keeping
			// its throughput for this size and the CPUs it kept busy.
			measure := func(what string, link func(context.Context, int64) (linkRate, error), rates, cores *[]float64) error {
				log.Info("measuring "+what, "mib", o.rawMiB, "from", hostA, "to", hostB)
				r, err := link(ctx, int64(o.rawMiB)<<20)
				if err != nil {
					return fmt.Errorf("%s before %d MiB, run %d: %w", what, size, i+1, err)
				}
				*rates, *cores = append(*rates, r.bytesPerSec), append(*cores, r.cores)
				log.Info("measured "+what, "mib_per_s", fmt.Sprintf("%.0f", r.bytesPerSec/(1<<20)), "cpus_busy", fmt.Sprintf("%.2f", r.cores))
				return nil
			}
			if err := measure("raw TCP", b.rawTCP, &raw, &rep.rawCores); err != nil {
				return err
			}
			if !o.insecure {
				if err := measure("the agents' data channel", b.dataChannel, &channel, &rep.channelCores); err != nil {
					return err
				}
			}

			// The tools take turns going first, run after run: a move
			// leaves the host's memory and page cache otherwise than it
			// found them (in a VM whose freed memory goes back to the
			// hypervisor, the first to write gigabytes pays for fresh
			// pages), and no tool should always find them the same way.
			steps := make([]func() error, 0, len(strats)+len(o.baselines))
			for j, st := range strats {
				tool := toolOf(st)
				steps = append(steps, func() error {
					log.Info("measuring", "tool", tool, "mib", size, "run", i+1, "of", o.runs)
					s, err := b.moveGodwit(ctx, st, size, i)
					if err != nil {
						return fmt.Errorf("%s, %d MiB, run %d: %w", tool, size, i+1, err)
					}
					log.Info("measured", "tool", tool, "mib", size, "downtime_probe", s.probeDowntime, "downtime_engine", s.engineDowntime,
						"total", s.total, "transfer", s.transfer, "bytes", s.bytes, "pages", s.pages, "phases", s.phases,
						"rss_source", s.rssSource, "rss_destination", s.rssDestination)
					gw[j] = append(gw[j], s)
					return nil
				})
			}
			for j, m := range o.baselines {
				steps = append(steps, func() error {
					log.Info("measuring", "tool", m.tool(), "mib", size, "run", i+1, "of", o.runs)
					s, err := b.moveBaseline(ctx, m, size, i)
					if err != nil {
						return fmt.Errorf("%s, %d MiB, run %d: %w", m.tool(), size, i+1, err)
					}
					log.Info("measured", "tool", m.tool(), "mib", size, "downtime_probe", s.probeDowntime, "total", s.total,
						"checkpoint", s.checkpoint, "copy", s.transfer, "restore", s.restore, "bytes", s.bytes)
					base[j] = append(base[j], s)
					return nil
				})
			}
			for k := range steps {
				if err := steps[(i+k)%len(steps)](); err != nil {
					return err
				}
			}
		}
		for j, st := range strats {
			rep.rows = append(rep.rows, newRow(size, toolOf(st), gw[j], raw, channel))
		}
		for j, m := range o.baselines {
			rep.rows = append(rep.rows, newRow(size, m.tool(), base[j], raw, channel))
		}
	}

	text := rep.render()
	fmt.Print(text)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(text), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}
