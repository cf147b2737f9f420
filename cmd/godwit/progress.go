package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// progressUI shows a long call's progress on stderr: a bar per phase
// (bytes, rate and time left) when stderr is a terminal, otherwise one
// plain line per phase, so that logs stay readable.
type progressUI struct {
	w     io.Writer
	tty   bool
	label string
	phase string
	bar   *progressbar.ProgressBar
	max   int64 // the bar's total; -1 while unknown
}

func newProgressUI(w io.Writer, label string) *progressUI {
	f, ok := w.(*os.File)
	return &progressUI{w: w, tty: ok && term.IsTerminal(int(f.Fd())), label: label}
}

// update shows that phase has done of total bytes (total 0: unknown).
// The agent's closing "done" phase is not shown.
func (p *progressUI) update(phase string, done, total int64) {
	if phase == "done" {
		return
	}
	if phase != p.phase {
		p.finish()
		p.phase = phase
		if !p.tty {
			fmt.Fprintf(p.w, "%s: %s\n", p.label, phase)
			return
		}
		p.max = -1
		p.bar = progressbar.NewOptions64(p.max,
			progressbar.OptionSetDescription(p.label+": "+phase),
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionShowBytes(true),
			progressbar.OptionUseIECUnits(true), // as units.FormatBytes prints sizes
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(progressRedraw),
			progressbar.OptionClearOnFinish(),
		)
	}
	if p.bar == nil {
		return
	}
	max := total
	if max <= 0 {
		max = -1 // a spinner
	}
	if max != p.max {
		p.max = max
		p.bar.ChangeMax64(max)
	}
	_ = p.bar.Set64(done)
}

// finish clears the current phase's bar.
func (p *progressUI) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}

// interruptible ends the command's context on Ctrl-C or SIGTERM, so that
// a long call is cancelled on the agent and partial files are removed.
func interruptible(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}
