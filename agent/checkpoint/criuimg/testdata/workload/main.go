// Command workload is the process tree the criuimg integration test dumps
// with CRIU: it keeps a file open, listens on a TCP port on 127.0.0.1,
// holds an established TCP connection to itself and has one child
// process. When everything is in place it writes "PORT\n" to the ready
// file, then waits to be killed.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"time"
)

// idle is how long the processes wait; the test kills them long before.
const idle = time.Hour

func main() {
	child := flag.Bool("child", false, "run as the idle child process")
	file := flag.String("file", "", "file to keep open")
	ready := flag.String("ready", "", "file to write the listening port to once ready")
	flag.Parse()
	if *child {
		time.Sleep(idle)
		return
	}
	if err := run(*file, *ready); err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}

func run(file, ready string) error {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()

	// Go enables multipath TCP on listeners by default since 1.24, and
	// CRIU cannot dump MPTCP sockets ("unsupported proto 262").
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	var d net.Dialer
	d.SetMultipathTCP(false)
	client, err := d.Dial("tcp4", ln.Addr().String())
	if err != nil {
		return err
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		return err
	}
	defer server.Close()

	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-child")
	if err := cmd.Start(); err != nil {
		return err
	}

	port := ln.Addr().(*net.TCPAddr).Port
	tmp := ready + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d\n", port), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, ready); err != nil {
		return err
	}
	time.Sleep(idle)
	return nil
}
