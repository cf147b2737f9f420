// Command godwit is the single binary of godwit: the node agent, the shim it
// re-executes for each container, and the operator commands.
//
// This package holds flags and wiring only; behaviour lives in agent/ and
// the packages below it.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		var exit exitError
		if errors.As(err, &exit) {
			os.Exit(exit.code)
		}
		fmt.Fprintln(os.Stderr, "godwit:", err)
		os.Exit(1)
	}
}

// exitError asks main to exit with code after the command has already told
// the user what went wrong (doctor's failed checks, for example).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }
