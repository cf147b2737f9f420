package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/agent/doctor"
)

func init() { register(newDoctorCommand) }

// exitDoctorFailed is doctor's exit status when a required check failed.
const exitDoctorFailed = 1

func newDoctorCommand(*globalOptions) *cobra.Command {
	var opts doctor.Options
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "doctor [-o json] [--data-dir DIR]",
		Short: "Check that this host can run godwit, and which migration strategies it supports",
		Long: `Check this host: root, kernel, CRIU (version and criu check), runc, cgroups,
overlayfs, btrfs, network namespaces, CRIU's network lock (iptables or
nftables), IP forwarding, userfaultfd, soft-dirty tracking,
fs.pipe-max-size and a CRIU page server started through go-criu. Each
failing check says how to fix it. Then list the
migration strategies this host supports (stop-copy, stream, pre-copy,
post-copy) and why not where not.

Run it as root on the node itself; it talks to no agent. It exits non-zero
only when a required check fails (those that running containers and
stop-copy need), never for a strategy that is unavailable.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			report := doctor.Run(cmd.Context(), opts)
			var err error
			if *out == outputJSON {
				err = printJSON(cmd.OutOrStdout(), report)
			} else {
				err = writeDoctorReport(cmd.OutOrStdout(), report)
			}
			if err != nil {
				return err
			}
			if !report.OK {
				fmt.Fprintf(cmd.ErrOrStderr(), "godwit doctor: required checks failed: %s; this host cannot run containers until they pass\n",
					strings.Join(failedRequired(report), ", "))
				return exitError{code: exitDoctorFailed}
			}
			return nil
		},
	}
	out = addOutputFlag(cmd)
	f := cmd.Flags()
	f.StringVar(&opts.DataDir, "data-dir", "", "the agent's data directory: test overlayfs there and report its filesystem")
	f.StringVar(&opts.Runc, "runc", "runc", "runc binary")
	f.StringVar(&opts.CRIU, "criu", "criu", "criu binary")
	return cmd
}

// writeDoctorReport prints one line per check, then the strategies:
//
//	PASS  criu           4.2.1 (criu check: looks good)
//	FAIL  pipe-max-size  1048576 < 4194304  fix: sysctl -w fs.pipe-max-size=4194304
//
//	Migration strategies:
//	yes  stop-copy
//	no   stream     needs pipe-max-size: ...
func writeDoctorReport(w io.Writer, r doctor.Report) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range r.Checks {
		line := c.Detail
		if c.Fix != "" && c.Status != doctor.StatusPass {
			line += "  fix: " + c.Fix
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", strings.ToUpper(string(c.Status)), c.Name, line)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nMigration strategies:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, s := range r.Strategies {
		if s.Supported {
			fmt.Fprintf(tw, "yes\t%s\n", s.Name)
			continue
		}
		fmt.Fprintf(tw, "no\t%s\t%s\n", s.Name, s.Reason)
	}
	return tw.Flush()
}

func failedRequired(r doctor.Report) []string {
	var names []string
	for _, c := range r.Checks {
		if c.Required && c.Status == doctor.StatusFail {
			names = append(names, c.Name)
		}
	}
	return names
}
