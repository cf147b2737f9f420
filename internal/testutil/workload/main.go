// Command workload is the process godwit's checkpoint tests and benchmarks
// run inside a container. It keeps state that a checkpoint must carry over
// and that a client can check from outside:
//
//   - a counter in memory, incremented every -tick, printed as "count N"
//     every countEvery ticks;
//   - -mem MiB of pseudo-random bytes (zstd cannot shrink them, so archive
//     sizes and times are those of real memory), every page touched, with a
//     checksum taken at start-up that can be compared with one taken now;
//   - optionally a file in its root filesystem (-file), written at start-up;
//   - optionally a CPU load (-burn, a fraction of one CPU kept busy), as
//     a balancer's test load;
//   - a TCP server on -listen speaking one line per request:
//     COUNT answers the counter, PID the process id, CHECKSUM "<at start>
//     <now>" of the memory, anything else is echoed back.
//
// It is static (build it with CGO_ENABLED=0) and needs nothing from its
// root filesystem, so a busybox rootfs with /workload in it is enough.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"log"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

const (
	// countEvery is how many ticks pass between two "count N" lines.
	countEvery = 10
	// mib is the unit of -mem.
	mib = 1 << 20
)

func main() {
	listen := flag.String("listen", ":7000", "TCP address of the line-protocol server")
	memMiB := flag.Int("mem", 0, "MiB of incompressible memory to allocate and keep")
	file := flag.String("file", "", "write \"pid=<pid> started=<time>\" to this file at start-up")
	tick := flag.Duration("tick", 100*time.Millisecond, "how often the counter increments")
	burn := flag.Float64("burn", 0, "fraction of one CPU to keep busy (0 to 1)")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("workload: ")

	if *memMiB < 0 || *tick <= 0 || *burn < 0 || *burn > 1 {
		log.Fatal("-mem must be >= 0, -burn between 0 and 1, -tick > 0")
	}
	if *burn > 0 {
		go burnCPU(*burn)
	}
	mem := fillMemory(*memMiB)
	startSum := crc32.ChecksumIEEE(mem)

	if *file != "" {
		if err := writeStartFile(*file); err != nil {
			log.Fatal(err)
		}
	}

	// CRIU cannot dump multipath TCP sockets ("Unsupported proto 262"),
	// which Go uses for listeners by default since 1.24.
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("listening %s pid %d mem %d MiB\n", ln.Addr(), os.Getpid(), *memMiB)

	var count atomic.Int64
	go func() {
		for range time.Tick(*tick) {
			if n := count.Add(1); n%countEvery == 0 {
				fmt.Printf("count %d\n", n)
			}
		}
	}()

	s := &server{count: &count, mem: mem, startSum: startSum}
	for {
		conn, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go s.serve(conn)
	}
}

// burnPeriod is the duty cycle of -burn: busy for the fraction of each
// period, idle for the rest.
const burnPeriod = 100 * time.Millisecond

// burnCPU keeps fraction of one CPU busy for ever, spinning for that
// share of every burnPeriod and sleeping the rest.
func burnCPU(fraction float64) {
	busy := time.Duration(fraction * float64(burnPeriod))
	var x uint64
	for {
		start := time.Now()
		for time.Since(start) < busy {
			x = x*6364136223846793005 + 1442695040888963407
		}
		if x == 1 {
			fmt.Print("") // never: keeps the loop from being optimised away
		}
		time.Sleep(burnPeriod - busy)
	}
}

// fillMemory allocates n MiB of pseudo-random bytes. Writing every byte
// also touches every page, so all of it is resident and a checkpoint must
// dump it. PCG is fast enough that 2 GiB takes seconds, not minutes.
func fillMemory(n int) []byte {
	mem := make([]byte, n*mib)
	seed := uint64(time.Now().UnixNano())
	rng := rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)
	for i := 0; i+8 <= len(mem); i += 8 {
		binary.LittleEndian.PutUint64(mem[i:], rng.Uint64())
	}
	return mem
}

// writeStartFile records who started and when, synced, so a test can find
// the file in the rootfs after a checkpoint even if the host crashed.
func writeStartFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "pid=%d started=%s\n", os.Getpid(), time.Now().Format(time.RFC3339Nano))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// server answers the line protocol; one goroutine serves each connection,
// so a connection held open across a checkpoint keeps its own state.
type server struct {
	count    *atomic.Int64
	mem      []byte
	startSum uint32
}

func (s *server) serve(conn net.Conn) {
	defer conn.Close()
	in := bufio.NewScanner(conn)
	for in.Scan() {
		if _, err := fmt.Fprintf(conn, "%s\n", s.answer(in.Text())); err != nil {
			return
		}
	}
}

// answer is the reply to one request line, both without their newline.
// Commands may carry a trailing \r (telnet, nc -C); echoes are verbatim.
func (s *server) answer(line string) string {
	switch strings.TrimSpace(line) {
	case "COUNT":
		return fmt.Sprint(s.count.Load())
	case "PID":
		return fmt.Sprint(os.Getpid())
	case "CHECKSUM":
		return fmt.Sprintf("%08x %08x", s.startSum, crc32.ChecksumIEEE(s.mem))
	default:
		return line
	}
}
