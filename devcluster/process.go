package devcluster

import (
	"os/exec"
	"syscall"
	"time"
)

// The daemons a host runs (an agent, a scheduler) are processes the
// cluster started: these are the steps both take to watch, kill and stop
// them. done is closed once the process has exited and been reaped.

// exited reports whether the process whose done channel is done has
// exited.
func exited(done <-chan struct{}) bool {
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// killProcess sends SIGKILL, as a crash would, and waits for the exit.
func killProcess(cmd *exec.Cmd, done <-chan struct{}) {
	if !exited(done) {
		// An error means it has exited already.
		_ = cmd.Process.Signal(syscall.SIGKILL)
	}
	<-done
}

// stopProcess stops the process as a service manager would: SIGTERM,
// then SIGKILL if it has not exited within timeout. It reports whether it
// exited in time (true too for one that had exited already).
func stopProcess(cmd *exec.Cmd, done <-chan struct{}, timeout time.Duration) bool {
	if exited(done) {
		return true
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return false
	}
}
