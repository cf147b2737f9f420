package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"time"

	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/netnsutil"
	"github.com/godwit/godwit/internal/pki"
)

const (
	// linkBuffer is the size of a link measurement's writes and reads:
	// large, so that the measurement is of the link, not of syscalls.
	linkBuffer = 4 << 20
	// linkTimeout bounds one link measurement.
	linkTimeout = 5 * time.Minute
)

// opener opens one connection from host a to host b: a's end, which
// sends, and b's, which receives; close releases what else it made.
type opener func(ctx context.Context) (send, receive net.Conn, close func(), err error)

// linkRate is what one link measurement found.
type linkRate struct {
	// bytesPerSec is the throughput.
	bytesPerSec float64
	// cores is this process's CPU time over the measurement, both ends
	// and the kernel's work on their system calls, per second of it: how
	// many of the host's CPUs the link kept busy. Near the host's count,
	// the link is bound by CPU, not by the network.
	cores float64
}

// rawTCP measures the TCP throughput from host a to host b
// (measureLink): what the link between the two hosts carries with
// nothing else in the way: no TLS, no disk, no checksums.
func (b *bench) rawTCP(ctx context.Context, n int64) (linkRate, error) {
	return measureLink(ctx, n, b.openTCP)
}

// dataChannel measures the throughput of a data connection from host a
// to host b as two agents open it (internal/datachan: mutual TLS with
// node certificates of the cluster's CA, its records batched as the
// agents' are), memory to memory (measureLink): what any transfer
// between the agents could reach, with no disk and no checksum. It is
// the cost of the TLS the agents add to the link.
func (b *bench) dataChannel(ctx context.Context, n int64) (linkRate, error) {
	return measureLink(ctx, n, b.openDataChannel)
}

// measureLink sends n bytes from memory over a connection open opens to
// a receiver that discards them and acknowledges the last byte, and
// returns the bytes per second from the first write to the
// acknowledgement, and the CPUs busy meanwhile.
func measureLink(ctx context.Context, n int64, open opener) (linkRate, error) {
	ctx, cancel := context.WithTimeout(ctx, linkTimeout)
	defer cancel()
	conn, peer, closeLink, err := open(ctx)
	if err != nil {
		return linkRate{}, err
	}
	defer closeLink()
	defer conn.Close()
	defer peer.Close()
	deadline, _ := ctx.Deadline()
	_ = conn.SetDeadline(deadline)
	_ = peer.SetDeadline(deadline)

	received := make(chan error, 1)
	go func() { received <- receive(peer, n) }()
	buf := make([]byte, linkBuffer)
	_, _ = rand.NewChaCha8([32]byte{}).Read(buf) // never fails
	cpu := benchutil.ProcessCPU()
	start := time.Now()
	for left := n; left > 0; {
		chunk := buf[:min(left, int64(len(buf)))]
		if _, err := conn.Write(chunk); err != nil {
			peer.Close() // ends the receiver's reads
			return linkRate{}, errors.Join(fmt.Errorf("send to host b: %w", err), <-received)
		}
		left -= int64(len(chunk))
	}
	var ack [1]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		peer.Close()
		return linkRate{}, errors.Join(fmt.Errorf("host b's acknowledgement: %w", err), <-received)
	}
	elapsed := time.Since(start)
	cpu = benchutil.ProcessCPU() - cpu
	if err := <-received; err != nil {
		return linkRate{}, err
	}
	return linkRate{bytesPerSec: float64(n) / elapsed.Seconds(), cores: cpu.Seconds() / elapsed.Seconds()}, nil
}

// receive reads n bytes from conn and acknowledges them with one byte.
func receive(conn net.Conn, n int64) error {
	buf := make([]byte, linkBuffer)
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

// openTCP opens a plain TCP connection from host a to a listener in
// host b.
func (b *bench) openTCP(ctx context.Context) (net.Conn, net.Conn, func(), error) {
	ln, err := listenIn(ctx, b.b)
	if err != nil {
		return nil, nil, nil, err
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			acceptErr <- fmt.Errorf("accept in host b: %w", err)
			return
		}
		accepted <- c
	}()
	conn, err := b.a.Dial(ctx, "tcp4", ln.Addr().String())
	if err != nil {
		ln.Close() // ends the Accept
		return nil, nil, nil, errors.Join(err, <-acceptErr)
	}
	select {
	case peer := <-accepted:
		return conn, peer, func() {}, nil
	case err := <-acceptErr:
		conn.Close()
		return nil, nil, nil, err
	}
}

// openDataChannel opens a data connection from host a to a datachan.Mux
// in host b, both with node certificates of the cluster's CA, as agents
// on a and b hold them.
func (b *bench) openDataChannel(ctx context.Context) (_, _ net.Conn, _ func(), err error) {
	serverTLS, clientTLS, err := b.dataChannelTLS()
	if err != nil {
		return nil, nil, nil, err
	}
	ln, err := listenIn(ctx, b.b)
	if err != nil {
		return nil, nil, nil, err
	}
	mux := datachan.Listen(ln, datachan.Config{TLS: serverTLS, ClientTLS: clientTLS})
	defer func() {
		if err != nil {
			mux.Close()
		}
	}()
	token, err := datachan.NewToken()
	if err != nil {
		return nil, nil, nil, err
	}
	type accepted struct {
		c   net.Conn
		err error
	}
	acc := make(chan accepted, 1)
	go func() {
		c, err := mux.Accept(ctx, token)
		acc <- accepted{c, err}
	}()
	ns, err := netns.GetFromPath(b.a.NetnsPath())
	if err != nil {
		return nil, nil, nil, fmt.Errorf("open host %s's network namespace: %w", b.a.Name(), err)
	}
	defer ns.Close()
	var conn net.Conn
	err = netnsutil.Run(ns, func() error {
		var err error
		conn, err = datachan.Dialer{TLS: clientTLS}.Dial(ctx, ln.Addr().String(), token)
		return err
	})
	if err != nil {
		mux.Close() // ends the Accept
		return nil, nil, nil, errors.Join(fmt.Errorf("data connection from host %s: %w", b.a.Name(), err), (<-acc).err)
	}
	a := <-acc
	if a.err != nil {
		conn.Close()
		return nil, nil, nil, fmt.Errorf("data connection in host %s: %w", b.b.Name(), a.err)
	}
	return conn, a.c, func() { mux.Close() }, nil
}

// dataChannelTLS is the TLS of a data connection from host a to host b:
// b's server configuration and a's client one, each of a node
// certificate of the cluster's CA, as agents on a and b hold them;
// issued into the bench's work dir on the first call.
func (b *bench) dataChannelTLS() (server, client *tls.Config, err error) {
	if b.linkTLS[0] != nil {
		return b.linkTLS[0], b.linkTLS[1], nil
	}
	var ids [2]*pki.Identity
	for i, h := range []*devcluster.Host{b.b, b.a} {
		f, err := b.cluster.CA().IssueTo(filepath.Join(b.work, "link-tls", h.Name()),
			pki.CertRequest{Name: h.Node(), Role: pki.RoleAgent, Hosts: []string{h.Addr().String()}})
		if err != nil {
			return nil, nil, fmt.Errorf("node certificate for host %s: %w", h.Name(), err)
		}
		if ids[i], err = pki.Load(f); err != nil {
			return nil, nil, err
		}
	}
	if server, err = ids[0].ServerConfig(); err != nil {
		return nil, nil, err
	}
	b.linkTLS = [2]*tls.Config{server, ids[1].ClientConfig()}
	return b.linkTLS[0], b.linkTLS[1], nil
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
