package runtime

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseStartupPages drops what the shim needed only to start: the heap
// freed since start-up, and the page-table entries of read-only file
// mappings (the executable's code and read-only data, and a C library's if
// the binary links one). godwit is one binary, and every package's init
// (gRPC, protobuf registries, ...) touches code and data the shim never runs
// again; without this a shim would show the whole binary's start-up pages
// as resident. The pages stay in the page cache, shared by every godwit
// process, and the few the shim still uses fault back in at once.
//
// Only read-only private mappings without a single anonymous page are
// dropped: such a mapping holds nothing but unmodified file pages. A
// mapping that was written before being made read-only (a dynamic linker's
// RELRO, a relocated GOT) has anonymous pages and is kept, since dropping it
// would revert it to the file's content.
func releaseStartupPages() error {
	debug.FreeOSMemory()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return fmt.Errorf("release start-up pages: %w", err)
	}
	var start, end uint64
	candidate := false
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		if key, value, ok := strings.Cut(line, ":"); ok && !strings.Contains(key, " ") && !strings.Contains(key, "-") {
			if key != "Anonymous" || !candidate {
				continue
			}
			candidate = false
			if strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(value), "kB")) != "0" {
				continue
			}
			if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); errno != 0 {
				return fmt.Errorf("release start-up pages: madvise: %w", errno)
			}
			continue
		}
		// A mapping's header: start-end perms offset dev inode [path]
		f := strings.Fields(line)
		candidate = false
		if len(f) < 6 || !strings.HasPrefix(f[5], "/") || (f[1] != "r-xp" && f[1] != "r--p") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || e <= s {
			continue
		}
		start, end, candidate = s, e, true
	}
	return nil
}
