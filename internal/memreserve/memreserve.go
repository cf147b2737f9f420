// Package memreserve faults memory in ahead of the moment a migration
// needs it, and hands it back to the kernel at that moment.
//
// On a virtual machine whose balloon reports free pages to the hypervisor
// (virtio-balloon free page reporting, common on cloud hosts), a page the
// guest has not touched for a while is no longer backed by the host: the
// first write to it exits to the hypervisor, which allocates and zeroes a
// host page. Writing hundreds of MiB into fresh memory then runs at a
// fraction of memory speed (about 450 MiB/s against 7 GiB/s on the
// benchmark host, docs/benchmarks.md), and a migration does that inside
// the container's freeze: a stop-copy source dumps the container's memory
// into its page cache. A Reserve takes that cost before the freeze: it
// maps and writes the memory while the container still runs, and Close
// frees it into the guest's free lists, where the kernel hands it out
// again before pages it has reported (those are queued last), so the
// writes inside the freeze find backed pages.
//
// On a host without free page reporting a Reserve costs the zeroing of
// its pages, once, outside the freeze, and gains little; the agent takes
// one only where the balloon reports free pages (Reporting).
//
// A Reserve counts as the resident memory of the process that maps it.
// The agent holds its reserves in child processes (Start, which runs
// the godwit binary's hidden Command, Serve), so that its own footprint
// stays what it works with, a reserve shows in the process table as what
// it is, and it ends with the agent.
package memreserve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Reserve is memory faulted in and held until closed. It is not safe for
// concurrent use; a nil Reserve holds nothing.
type Reserve struct {
	mem []byte
}

// Take maps n bytes of anonymous memory (rounded up to whole pages) and
// writes every page of it, asking for transparent huge pages so that what
// Close frees comes back as whole 2 MiB blocks, which a tmpfs with huge
// pages and the restored container can take as they are.
func Take(n int64) (*Reserve, error) {
	if n <= 0 {
		return &Reserve{}, nil
	}
	page := int64(os.Getpagesize())
	n = (n + page - 1) / page * page
	mem, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, fmt.Errorf("map %d bytes to reserve: %w", n, err)
	}
	// Huge pages are also what makes Close quick: freeing 1 GiB of 4 KiB
	// pages takes about 0.2 s here, of huge pages a few ms.
	_ = unix.Madvise(mem, unix.MADV_HUGEPAGE) // a kernel without THP keeps 4 KiB pages
	if err := unix.Madvise(mem, unix.MADV_POPULATE_WRITE); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			unix.Munmap(mem)
			return nil, fmt.Errorf("fault in %d bytes to reserve: %w", n, err)
		}
		// Before Linux 5.14: write one byte per page.
		for i := int64(0); i < n; i += page {
			mem[i] = 1
		}
	}
	return &Reserve{mem: mem}, nil
}

// Close frees r's memory.
func (r *Reserve) Close() error {
	if r == nil || r.mem == nil {
		return nil
	}
	err := unix.Munmap(r.mem)
	r.mem = nil
	return err
}

// virtioBalloon is virtio's device ID of a memory balloon, and
// balloonFreePageReporting the feature bit of its free page reporting
// (the virtio specification, section 5.5.3).
const (
	virtioBalloon            = "0x0005"
	balloonFreePageReporting = 5
)

// Reporting reports whether this machine's memory balloon reports free
// pages to the hypervisor, read from sysfs (root is "/" but in tests).
func Reporting(root string) bool {
	devices, _ := filepath.Glob(filepath.Join(root, "sys/bus/virtio/devices/*"))
	for _, d := range devices {
		id, err := os.ReadFile(filepath.Join(d, "device"))
		if err != nil || strings.TrimSpace(string(id)) != virtioBalloon {
			continue
		}
		features, err := os.ReadFile(filepath.Join(d, "features"))
		if err != nil {
			continue
		}
		// One character per feature bit, bit 0 first.
		if f := strings.TrimSpace(string(features)); len(f) > balloonFreePageReporting && f[balloonFreePageReporting] == '1' {
			return true
		}
	}
	return false
}
