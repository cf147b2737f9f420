// Command density measures what idle containers cost on one godwit node
// (issue 2, item 10): the agent's and every shim's memory, and the time
// from a RunContainer request to its reply, which comes once the container
// runs. In the same run it starts the same workload with bare
// `runc run --detach`, so the report shows godwit's overhead (snapshot,
// network namespace and veth, shim) next to what runc alone costs.
//
// It needs root, runc and busybox-static, and leaves nothing behind:
//
//	go run ./bench/density [-n 100] [--godwit bin/godwit] [--out FILE]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
)

const (
	// defaultContainers is issue 2's density target.
	defaultContainers = 100
	// idleSeconds keeps each container's only process asleep far longer
	// than the benchmark runs.
	idleSeconds = "100000"
	// settleTime lets the last shims finish starting (a shim releases its
	// start-up pages once its container runs) before memory is read.
	settleTime = 2 * time.Second

	// Targets from issue 2.
	shimRSSTarget  = 8 << 20
	agentRSSTarget = 100 << 20
)

// workload is the idle process every container runs, godwit's and runc's.
var workload = []string{"sleep", idleSeconds}

type options struct {
	godwit string
	runc   string
	n      int
	cidr   string
	out    string
	// insecure runs the agent with --insecure instead of mutual TLS.
	insecure bool
}

func main() {
	var o options
	flag.StringVar(&o.godwit, "godwit", "", "godwit binary to measure (default: build ./cmd/godwit with CGO_ENABLED=0)")
	flag.StringVar(&o.runc, "runc", "runc", "runc binary, for godwit's agent and for the baseline")
	flag.IntVar(&o.n, "n", defaultContainers, "how many idle containers to run")
	flag.StringVar(&o.cidr, "container-cidr", "10.252.0.0/22", "the agent's container addresses (must hold -n addresses)")
	flag.StringVar(&o.out, "out", "", "also write the markdown report to this file")
	flag.BoolVar(&o.insecure, "insecure", false, "run the agent with --insecure (plaintext) instead of mutual TLS, as production runs it")
	flag.Parse()

	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, log); err != nil {
		log.Error("density benchmark failed", "err", err)
		os.Exit(1)
	}
}

// run measures godwit, then the baseline, each cleaned up before the next
// starts so that neither's containers weigh on the other's numbers.
// godwit goes first: its first container also meets a cold runc binary,
// which errs on the side of showing more overhead, not less.
func run(ctx context.Context, o options, log *slog.Logger) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the density benchmark runs containers: run it as root")
	}
	if o.n < 1 {
		return fmt.Errorf("-n %d: run at least one container", o.n)
	}
	if _, err := exec.LookPath(o.runc); err != nil {
		return fmt.Errorf("runc not found (scripts/install-deps.sh installs it): %w", err)
	}
	work, err := os.MkdirTemp("", "godwit-bench-density-")
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, benchutil.RemoveWorkDir(work)) }()

	if o.godwit == "" {
		if o.godwit, err = benchutil.BuildGodwit(ctx, work); err != nil {
			return err
		}
	}
	if o.godwit, err = filepath.Abs(o.godwit); err != nil {
		return err
	}

	log.Info("measuring godwit", "containers", o.n)
	gw, err := measureGodwit(ctx, o, filepath.Join(work, "godwit"), log)
	if err != nil {
		return fmt.Errorf("godwit: %w", err)
	}
	log.Info("measuring bare runc", "containers", o.n)
	base, err := measureBaseline(ctx, o, filepath.Join(work, "runc"), log)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}

	report := renderReport(o, hostConditions(work), gw, base)
	fmt.Print(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return fmt.Errorf("write report: %w", err)
		}
	}
	return nil
}
