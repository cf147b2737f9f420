package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"time"

	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/netnsutil"
)

const (
	// rawBuffer is the size of the raw measurement's writes and reads:
	// large, so that the measurement is of the link, not of syscalls.
	rawBuffer = 4 << 20
	// rawTimeout bounds one raw TCP measurement.
	rawTimeout = 5 * time.Minute
)

// rawTCP measures the TCP throughput from host a to host b, in bytes per
// second: n bytes from memory in a process in a's network namespace to a
// listener in b's, which discards them and acknowledges the last byte; the
// time runs from the first write to the acknowledgement. It is what the
// link between the two hosts carries with nothing else in the way: no
// disk, no checksums.
func (b *bench) rawTCP(ctx context.Context, n int64) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, rawTimeout)
	defer cancel()
	ln, err := listenIn(ctx, b.b)
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	deadline, _ := ctx.Deadline()

	received := make(chan error, 1)
	go func() { received <- receive(ln, n, deadline) }()

	conn, err := b.a.Dial(ctx, "tcp4", ln.Addr().String())
	if err != nil {
		ln.Close() // ends the receiver's Accept
		return 0, errors.Join(err, <-received)
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	buf := make([]byte, rawBuffer)
	_, _ = rand.NewChaCha8([32]byte{}).Read(buf) // never fails
	start := time.Now()
	for left := n; left > 0; {
		chunk := buf[:min(left, int64(len(buf)))]
		if _, err := conn.Write(chunk); err != nil {
			conn.Close() // ends the receiver's reads
			return 0, errors.Join(fmt.Errorf("send to host b: %w", err), <-received)
		}
		left -= int64(len(chunk))
	}
	var ack [1]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		conn.Close()
		return 0, errors.Join(fmt.Errorf("host b's acknowledgement: %w", err), <-received)
	}
	elapsed := time.Since(start)
	if err := <-received; err != nil {
		return 0, err
	}
	return float64(n) / elapsed.Seconds(), nil
}

// receive accepts one connection on ln, reads n bytes from it and
// acknowledges them with one byte.
func receive(ln net.Listener, n int64, deadline time.Time) error {
	conn, err := ln.Accept()
	if err != nil {
		return fmt.Errorf("accept in host b: %w", err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(deadline)
	buf := make([]byte, rawBuffer)
	for got := int64(0); got < n; {
		m, err := conn.Read(buf)
		got += int64(m)
		if err != nil && got < n {
			return fmt.Errorf("receive in host b after %d of %d bytes: %w", got, n, err)
		}
	}
	if _, err := conn.Write([]byte{1}); err != nil {
		return fmt.Errorf("acknowledge from host b: %w", err)
	}
	return nil
}

// listenIn listens on a free port of host h's address, inside its network
// namespace, as a server on h would.
func listenIn(ctx context.Context, h *devcluster.Host) (net.Listener, error) {
	ns, err := netns.GetFromPath(h.NetnsPath())
	if err != nil {
		return nil, fmt.Errorf("open host %s's network namespace: %w", h.Name(), err)
	}
	defer ns.Close()
	var ln net.Listener
	err = netnsutil.Run(ns, func() error {
		var lc net.ListenConfig
		// Plain TCP, as the agents' data connections and nc use.
		lc.SetMultipathTCP(false)
		var err error
		ln, err = lc.Listen(ctx, "tcp4", net.JoinHostPort(h.Addr().String(), "0"))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen in host %s: %w", h.Name(), err)
	}
	return ln, nil
}
