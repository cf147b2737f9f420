package main

import (
	"fmt"
	"os"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/godwit/godwit/internal/memreserve"
)

func init() { register(newReserveMemoryCommand) }

// newReserveMemoryCommand is `godwit reserve-memory BYTES`, the process
// in which the agent faults memory in ahead of a migration's freeze
// (agent/internal/memreserve). It is hidden: operators never run it.
func newReserveMemoryCommand(*globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:    memreserve.Command + " BYTES",
		Short:  "Hold memory faulted in until standard input ends (internal; started by the agent)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("reserve-memory: %q is not a number of bytes", args[0])
			}
			return memreserve.Serve(n, os.Stdin, os.Stdout)
		},
	}
}
