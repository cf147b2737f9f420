// Package failpoint lets tests make a godwit process fail at named points,
// so that fault tests can assert what happens when, say, a source agent
// dies right after its dump. Points are armed through the environment
// variable GODWIT_FAILPOINTS, a comma-separated list of NAME=ACTION. Hit
// carries out two actions itself: "kill" (the process sends itself
// SIGKILL, as a crash or an OOM kill would) and "pause" (it sends itself
// SIGSTOP, as a hung host or a debugger would, and goes on where it was
// once someone sends SIGCONT). Other actions ("corrupt", "fail") are the
// calling code's to carry out (Armed). Unarmed points cost a map lookup.
package failpoint

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
)

// EnvVar arms failpoints.
const EnvVar = "GODWIT_FAILPOINTS"

// The actions a point can be armed with.
const (
	ActionKill    = "kill"
	ActionPause   = "pause"
	ActionCorrupt = "corrupt"
	// ActionFail makes the calling code fail at the point with an error,
	// as a refused step would.
	ActionFail = "fail"
)

var (
	once  sync.Once
	armed map[string]string
)

func load() {
	armed = map[string]string{}
	for _, item := range strings.Split(os.Getenv(EnvVar), ",") {
		name, action, ok := strings.Cut(strings.TrimSpace(item), "=")
		if ok && name != "" {
			armed[name] = action
		}
	}
}

// Hit triggers the point name if it is armed: with "kill" the process
// dies here; with "pause" every thread of it stops here until SIGCONT, and
// Hit then returns. It is meant for the few places fault tests need.
func Hit(name string) {
	once.Do(load)
	switch armed[name] {
	case "":
	case ActionKill:
		fmt.Fprintf(os.Stderr, "failpoint %s: killing this process\n", name)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {} // SIGKILL cannot be caught; wait for it
	case ActionPause:
		fmt.Fprintf(os.Stderr, "failpoint %s: stopping this process (SIGSTOP) until SIGCONT\n", name)
		// The whole process stops before Kill returns: the signal is
		// delivered to the thread group, this thread included.
		_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		fmt.Fprintf(os.Stderr, "failpoint %s: continued\n", name)
	}
}

// Arm returns the environment entry that arms name with action, for a
// test starting a process.
func Arm(name, action string) string { return EnvVar + "=" + name + "=" + action }

// Armed returns the action point name is armed with, or "", for points
// whose action the calling code carries out itself (ActionCorrupt).
func Armed(name string) string {
	once.Do(load)
	return armed[name]
}
