package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/pki"
)

// transferPagesMiB is the pages image BenchmarkTransfer moves.
const transferPagesMiB = 256

// BenchmarkTransfer moves a checkpoint of transferPagesMiB between two
// data-channel endpoints in this process, as two agents do (bufio of
// 1 MiB on both sides, the datachan Mux and Dialer, with and without
// mutual TLS), in the export archive (Export, Import) and in the
// migration transfer framing (Send, Receive; with sha256 or CRC-32C
// checksums), each with what the
// migration's freeze then does before and after: seal the dump (digest
// every file, or list their sizes only) and verify it before restore
// (digest every file again, or check the receipt). It reports each
// phase's wall time and the CPU time of the whole, which is the steadier
// measure on a shared machine; -cpuprofile shows where it goes.
//
// The images are in BENCH_DIR when set (a tmpfs, say), else in the
// test's temporary directory.
func BenchmarkTransfer(b *testing.B) {
	ca, err := pki.NewCA("bench-transfer")
	if err != nil {
		b.Fatal(err)
	}
	f, err := ca.IssueTo(filepath.Join(b.TempDir(), "node"), pki.CertRequest{Name: "node", Role: pki.RoleAgent, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		b.Fatal(err)
	}
	id, err := pki.Load(f)
	if err != nil {
		b.Fatal(err)
	}
	server, err := id.ServerConfig()
	if err != nil {
		b.Fatal(err)
	}
	for _, link := range []struct {
		name string
		cfg  datachan.Config
	}{
		{"plaintext", datachan.Config{}},
		{"TLS", datachan.Config{TLS: server, ClientTLS: id.ClientConfig()}},
	} {
		for _, way := range transferWays {
			b.Run(link.name+"/"+way.name, func(b *testing.B) { benchmarkTransfer(b, link.cfg, way) })
		}
	}
}

// transferWay is one way of moving a checkpoint: how the source seals
// it, sends it, and how the destination takes it and verifies it, and the
// buffering of the data connection on either side (bufio, as the agent
// has it; 0: none).
type transferWay struct {
	name                      string
	sendBuffer, receiveBuffer int
	seal                      func(dir string, m *bundle.Manifest) error
	send                      func(dir string, w io.Writer) error
	receive                   func(r io.Reader, dest string) (verify func() error, err error)
}

var transferWays = []transferWay{
	{
		name:       "export-import-verify",
		sendBuffer: 1 << 20, receiveBuffer: 1 << 20,
		seal: bundle.WriteManifest,
		send: func(dir string, w io.Writer) error {
			return bundle.Export(context.Background(), dir, w, bundle.ExportOptions{Compression: bundle.NoCompression})
		},
		receive: func(r io.Reader, dest string) (func() error, error) {
			_, err := bundle.Import(context.Background(), r, dest, bundle.ImportOptions{})
			return func() error { _, err := bundle.Verify(dest); return err }, err
		},
	},
	sendReceiveReceipt("send-receive-receipt", bundle.ChecksumSHA256),
	sendReceiveReceipt("send-receive-receipt-crc32c", bundle.ChecksumCRC32C),
}

// sendReceiveReceipt is a migration's transfer, checksummed with c.
func sendReceiveReceipt(name string, c bundle.Checksum) transferWay {
	return transferWay{
		name:       name,
		sendBuffer: 0, receiveBuffer: 4 << 10,
		seal: bundle.WritePendingManifest,
		send: func(dir string, w io.Writer) error {
			return bundle.Send(context.Background(), dir, w, bundle.SendOptions{Checksum: c})
		},
		receive: func(r io.Reader, dest string) (func() error, error) {
			_, receipt, err := bundle.Receive(context.Background(), r, dest)
			return func() error { _, err := receipt.Verify(dest); return err }, err
		},
	}
}

func benchmarkTransfer(b *testing.B, cfg datachan.Config, way transferWay) {
	root := os.Getenv("BENCH_DIR")
	if root == "" {
		root = b.TempDir()
	} else {
		var err error
		if root, err = os.MkdirTemp(root, "bench-transfer-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(root) })
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	mux := datachan.Listen(l, cfg)
	defer mux.Close()
	pages := make([]byte, transferPagesMiB<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := 0; i < len(pages); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			pages[i+j] = byte(v >> (8 * j))
		}
	}
	b.SetBytes(int64(len(pages)))
	var sealT, transferT, verifyT, cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		src, dest := filepath.Join(root, "src"), filepath.Join(root, "dest")
		os.RemoveAll(src)
		os.RemoveAll(dest)
		writeBenchCheckpoint(b, src, pages)
		b.StartTimer()
		cpu0 := benchutil.ProcessCPU()

		t0 := time.Now()
		if err := way.seal(src, benchManifest()); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		token, err := datachan.NewToken()
		if err != nil {
			b.Fatal(err)
		}
		sent := make(chan error, 1)
		go func() {
			c, err := mux.Dial(context.Background(), mux.Addr().String(), token)
			if err != nil {
				sent <- err
				return
			}
			var w io.Writer = c
			var bw *bufio.Writer
			if way.sendBuffer > 0 {
				bw = bufio.NewWriterSize(c, way.sendBuffer)
				w = bw
			}
			err = way.send(src, w)
			if err == nil && bw != nil {
				err = bw.Flush()
			}
			c.Close()
			sent <- err
		}()
		c, err := mux.Accept(context.Background(), token)
		if err != nil {
			b.Fatal(err)
		}
		var r io.Reader = c
		if way.receiveBuffer > 0 {
			r = bufio.NewReaderSize(c, way.receiveBuffer)
		}
		verify, err := way.receive(r, dest)
		c.Close()
		if err != nil {
			b.Fatal(err)
		}
		if err := <-sent; err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if err := verify(); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		cpu += benchutil.ProcessCPU() - cpu0
		sealT += t1.Sub(t0)
		transferT += t2.Sub(t1)
		verifyT += t3.Sub(t2)
	}
	n := float64(b.N)
	b.ReportMetric(sealT.Seconds()*1e3/n, "seal-ms/op")
	b.ReportMetric(transferT.Seconds()*1e3/n, "transfer-ms/op")
	b.ReportMetric(verifyT.Seconds()*1e3/n, "verify-ms/op")
	b.ReportMetric(cpu.Seconds()*1e3/n, "cpu-ms/op")
}

// writeBenchCheckpoint writes a dump's files: a spec, a few small CRIU
// images and the pages.
func writeBenchCheckpoint(b *testing.B, dir string, pages []byte) {
	b.Helper()
	files := map[string][]byte{
		bundle.SpecName:          []byte("{}\n"),
		bundle.RootfsDiffName:    make([]byte, 10<<10),
		"criu/inventory.img":     make([]byte, 64),
		"criu/core-1.img":        make([]byte, 2<<10),
		"criu/pagemap-1.img":     make([]byte, 4<<10),
		"criu/pages-1.img":       pages,
		"criu/tcp-stream-1.img":  make([]byte, 300),
		"criu/mountpoints-1.img": make([]byte, 900),
	}
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
}

// benchManifest is a complete manifest but for its files.
func benchManifest() *bundle.Manifest {
	var m bundle.Manifest
	err := json.Unmarshal([]byte(`{"id": "bench", "container": {"name": "bench"}, "image": {"name": "bench"},
		"host": {"node": "a", "criu_version": "4.2.1", "runc_version": "1.3.6", "kernel": "6.18"}, "spec": "config.json",
		"rootfs_diff": "rootfs-diff.tar"}`), &m)
	if err != nil {
		panic(err)
	}
	m.Image.Layers = []digest.Digest{digest.FromString("layer")}
	return &m
}
