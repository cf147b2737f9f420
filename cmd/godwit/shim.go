package main

import (
	"github.com/spf13/cobra"

	"github.com/godwit/godwit/agent/runtime"
)

func init() { register(newShimCommand) }

// newShimCommand is `godwit shim`, the per-container process the agent
// starts through runtime.StartShim. It is hidden: operators never run it.
func newShimCommand(*globalOptions) *cobra.Command {
	var c runtime.ShimConfig
	cmd := &cobra.Command{
		Use:    runtime.ShimCommand,
		Short:  "Run one container's shim (internal; started by the agent)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runtime.RunShim(cmd.Context(), c)
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.ID, runtime.ShimFlagID, "", "runc container id")
	f.StringVar(&c.Bundle, runtime.ShimFlagBundle, "", "absolute OCI bundle directory")
	f.StringVar(&c.RuncRoot, runtime.ShimFlagRuncRoot, "", "runc --root of the node")
	f.StringVar(&c.RuncBinary, runtime.ShimFlagRuncBinary, "", `runc executable (default "runc" from PATH)`)
	f.StringVar(&c.StateDir, runtime.ShimFlagStateDir, "", "absolute per-container directory for pid files, exit status and logs")
	f.Int64Var(&c.LogMaxBytes, runtime.ShimFlagLogMaxBytes, 0, "rotate the container log at this size (0: default)")
	f.IntVar(&c.LogMaxFiles, runtime.ShimFlagLogMaxFiles, 0, "rotated container log files to keep (0: default)")
	f.StringVar(&c.Cgroup, runtime.ShimFlagCgroup, "", "cgroup path the shim moves itself into (a leaf, not a container's)")
	f.StringVar(&c.RestoreFrom, runtime.ShimFlagRestoreFrom, "", "restore the container from these CRIU images instead of creating it")
	f.StringVar(&c.RestoreWorkPath, runtime.ShimFlagRestoreWorkPath, "", "CRIU work directory of the restore (default: in the state dir)")
	f.BoolVar(&c.RestoreTCPEstablished, runtime.ShimFlagRestoreTCPEstablished, false, "restore established TCP connections")
	for _, name := range []string{runtime.ShimFlagID, runtime.ShimFlagBundle, runtime.ShimFlagStateDir} {
		_ = cmd.MarkFlagRequired(name)
	}
	return cmd
}
