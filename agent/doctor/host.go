package doctor

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/internal/memreserve"
)

// host is every way the checks look at the machine. Tests replace the
// fields with fakes; realHost probes the running kernel.
type host struct {
	// readFile returns a file's contents (/proc, /sys).
	readFile func(path string) ([]byte, error)
	// stat returns an error when path does not exist.
	stat func(path string) error
	// writable returns nil when this process may open path for writing
	// (access(2) with W_OK: permissions and read-only mounts).
	writable func(path string) error
	// statfsType returns the f_type magic number of the filesystem at path.
	statfsType func(path string) (int64, error)
	// lookPath resolves a command name in PATH, like exec.LookPath.
	lookPath func(file string) (string, error)
	// command runs a program to its end and returns what it printed and its
	// exit code. err is non-nil only when it could not run or did not exit
	// by itself (not found, killed, ctx done).
	command func(ctx context.Context, name string, args ...string) (cmdResult, error)
	geteuid func() int
	// kernelRelease is uname -r.
	kernelRelease func() (string, error)
	// userfaultfd returns nil when the userfaultfd(2) syscall gives this
	// process a descriptor (closed again at once).
	userfaultfd func() error
	// softDirty reports whether the kernel marks a page this process writes
	// as soft-dirty after its soft-dirty bits were cleared.
	softDirty func() (bool, error)
	// setPipeSize returns nil when this process may size a pipe to size
	// bytes, as CRIU's page server does.
	setPipeSize func(size int) error
	// mountOverlay mounts an overlay inside the existing directory dir,
	// checks that it works, and unmounts it again.
	mountOverlay func(dir string) error
	// pageServer starts a CRIU page server through go-criu with the CRIU
	// binary at criu, reaches it and lets it end.
	pageServer func(ctx context.Context, criu string) (pageServerProbe, error)
	// freePageReporting reports whether the machine's memory balloon
	// reports free pages to the hypervisor.
	freePageReporting func() bool
}

func realHost() host {
	return host{
		readFile: os.ReadFile,
		stat: func(path string) error {
			_, err := os.Stat(path)
			return err
		},
		writable: func(path string) error { return unix.Access(path, unix.W_OK) },
		statfsType: func(path string) (int64, error) {
			var st unix.Statfs_t
			if err := unix.Statfs(path, &st); err != nil {
				return 0, fmt.Errorf("statfs %s: %w", path, err)
			}
			return int64(st.Type), nil
		},
		lookPath:          exec.LookPath,
		command:           runCommand,
		geteuid:           os.Geteuid,
		kernelRelease:     kernelRelease,
		userfaultfd:       openUserfaultfd,
		softDirty:         probeSoftDirty,
		setPipeSize:       trySetPipeSize,
		mountOverlay:      tryOverlayMount,
		pageServer:        startPageServer,
		freePageReporting: func() bool { return memreserve.Reporting("/") },
	}
}

// cmdResult is what a finished command printed and how it exited.
type cmdResult struct {
	stdout, stderr string
	exitCode       int
}

func runCommand(ctx context.Context, name string, args ...string) (cmdResult, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cmdResult{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.Exited() {
		res.exitCode = exit.ExitCode()
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("run %s: %w", name, err)
	}
	return res, nil
}

func kernelRelease() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", fmt.Errorf("uname: %w", err)
	}
	return unix.ByteSliceToString(u.Release[:]), nil
}

func openUserfaultfd() error {
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		return fmt.Errorf("userfaultfd: %w", errno)
	}
	return unix.Close(int(fd))
}

const (
	// clearRefsSoftDirty, written to /proc/PID/clear_refs, clears the
	// soft-dirty bit of every page of that process.
	clearRefsSoftDirty = "4"
	// pagemapEntrySize is the size of one /proc/PID/pagemap entry.
	pagemapEntrySize = 8
	// pagemapSoftDirty and pagemapPresent are bits of a pagemap entry
	// (Documentation/admin-guide/mm/pagemap.rst).
	pagemapSoftDirty = 1 << 55
	pagemapPresent   = 1 << 63
)

// probeSoftDirty does what CRIU's pre-dump relies on: clear the soft-dirty
// bits, write one page of two, and read both bits from pagemap. A kernel
// built without CONFIG_MEM_SOFT_DIRTY accepts the clear and never sets the
// bit; the page left alone makes sure a bit that is always set does not pass
// for tracking.
func probeSoftDirty() (bool, error) {
	pageSize := os.Getpagesize()
	// A private mapping of our own, rather than Go heap, so that nothing
	// else writes to the pages or moves them while we watch.
	mem, err := unix.Mmap(-1, 0, 2*pageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return false, fmt.Errorf("mmap probe pages: %w", err)
	}
	defer unix.Munmap(mem)
	untouched, written := mem[:pageSize], mem[pageSize:]
	untouched[0], written[0] = 1, 1 // fault both in
	if err := os.WriteFile("/proc/self/clear_refs", []byte(clearRefsSoftDirty), 0); err != nil {
		return false, fmt.Errorf("clear soft-dirty bits: %w", err)
	}
	written[0] = 2 // the write soft-dirty must see

	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return false, fmt.Errorf("open pagemap: %w", err)
	}
	defer f.Close()
	var entries [2 * pagemapEntrySize]byte
	firstPage := uintptr(unsafe.Pointer(&mem[0])) / uintptr(pageSize)
	if _, err := f.ReadAt(entries[:], int64(firstPage)*pagemapEntrySize); err != nil {
		return false, fmt.Errorf("read pagemap: %w", err)
	}
	clean := binary.LittleEndian.Uint64(entries[:pagemapEntrySize])
	dirty := binary.LittleEndian.Uint64(entries[pagemapEntrySize:])
	if clean&pagemapPresent == 0 || dirty&pagemapPresent == 0 {
		return false, errors.New("probe pages not present in pagemap after writes")
	}
	if dirty&pagemapSoftDirty == 0 {
		return false, nil
	}
	if clean&pagemapSoftDirty != 0 {
		return false, errors.New("soft-dirty bit set on a page not written since it was cleared: clear_refs does not work")
	}
	return true, nil
}

func trySetPipeSize(size int) error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe: %w", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[0]), unix.F_SETPIPE_SZ, size); err != nil {
		return fmt.Errorf("F_SETPIPE_SZ %d: %w", size, err)
	}
	return nil
}

// tryOverlayMount mounts lower+upper on merged in a fresh directory under
// dir, writes through it, and checks that the write reached upper.
func tryOverlayMount(dir string) (err error) {
	tmp, err := os.MkdirTemp(dir, "godwit-doctor-overlay-")
	if err != nil {
		return fmt.Errorf("make test directory: %w", err)
	}
	mounted := false
	defer func() {
		if mounted {
			// Never remove files through a mount that is still there.
			return
		}
		if rmErr := os.RemoveAll(tmp); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove test directory: %w", rmErr))
		}
	}()
	lower, upper, work, merged := filepath.Join(tmp, "lower"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "work"), filepath.Join(tmp, "merged")
	for _, d := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("make test directory: %w", err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay in %s: %w", tmp, err)
	}
	mounted = true
	defer func() {
		if umErr := unix.Unmount(merged, unix.MNT_DETACH); umErr != nil {
			err = errors.Join(err, fmt.Errorf("unmount test overlay %s (remove it by hand): %w", merged, umErr))
			return
		}
		mounted = false
	}()
	const probe = "probe"
	if err := os.WriteFile(filepath.Join(merged, probe), nil, 0o600); err != nil {
		return fmt.Errorf("write through overlay: %w", err)
	}
	if _, err := os.Stat(filepath.Join(upper, probe)); err != nil {
		return fmt.Errorf("overlay write did not reach the upper layer: %w", err)
	}
	return nil
}

// SoftDirty reports whether this kernel tracks soft-dirty pages, as the
// soft-dirty check probes it (pre-copy needs it): tests gate on it.
func SoftDirty() (bool, error) { return probeSoftDirty() }
