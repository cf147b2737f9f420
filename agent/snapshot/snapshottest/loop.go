package snapshottest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/snapshot"
	"github.com/godwit/godwit/internal/testutil"
)

const (
	// loopImageSize is the sparse image behind a test filesystem: big
	// enough for mkfs.btrfs's minimum and a few container trees, and it
	// costs only the blocks written.
	loopImageSize = 256 << 20
	// loopAttachAttempts bounds retries when another process takes the
	// free loop device between LOOP_CTL_GET_FREE and LOOP_CONFIGURE.
	loopAttachAttempts = 8
	// loopFileNameTag is recorded as the loop device's backing file name
	// (losetup -l shows it), so a leaked device says who made it.
	loopFileNameTag = "godwit-snapshottest:"
)

// NewLoopBtrfs makes a fresh btrfs filesystem on a sparse image file,
// attaches it to a loop device and mounts it on a temporary directory,
// whose path it returns. Cleanup unmounts it and frees the loop device.
// Without root, mkfs.btrfs or btrfs support in the kernel, the test is
// skipped (failed under CI=true).
func NewLoopBtrfs(t testing.TB) string {
	t.Helper()
	return NewLoopFilesystem(t, "btrfs", "btrfs-progs")
}

// NewLoopFilesystem is NewLoopBtrfs for any filesystem type that has a
// mkfs.<fstype> that accepts -q (btrfs, ext4); pkg names the
// package that provides it, for the message when it is missing.
func NewLoopFilesystem(t testing.TB, fstype, pkg string) string {
	t.Helper()
	return MountLoopFilesystem(t, fstype, pkg, loopImageSize, t.TempDir())
}

// MountLoopFilesystem is NewLoopFilesystem with an image of size bytes,
// mounted on the directory mnt: a small one fills up, for tests of a full
// disk.
func MountLoopFilesystem(t testing.TB, fstype, pkg string, size int64, mnt string) string {
	t.Helper()
	testutil.RequireRoot(t)
	mkfs, err := exec.LookPath("mkfs." + fstype)
	if err != nil {
		testutil.Missing(t, fmt.Sprintf("needs mkfs.%s: install %s", fstype, pkg))
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testutil.Missing(t, "needs /dev/loop-control: load the loop module")
	}

	img := filepath.Join(t.TempDir(), fstype+".img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("create %s image: %v", fstype, err)
	}
	args := []string{"-q", img}
	if fstype == "ext4" {
		args = []string{"-q", "-F", img} // -F: it is a file, not a device
	}
	if out, err := exec.Command(mkfs, args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.%s %s: %v\n%s", fstype, img, err, out)
	}

	dev, loop := attachLoop(t, img)
	t.Cleanup(func() {
		if err := snapshot.Unmount(mnt); err != nil {
			t.Errorf("unmount test %s: %v", fstype, err)
		}
		detachLoop(t, dev, loop)
	})
	if err := unix.Mount(dev, mnt, fstype, 0, ""); err != nil {
		if errors.Is(err, unix.ENODEV) {
			testutil.Missing(t, "needs "+fstype+" in the kernel: load its module")
		}
		t.Fatalf("mount %s (%s) on %s: %v", dev, fstype, mnt, err)
	}
	return mnt
}

// attachLoop binds img to a free loop device with LOOP_CONFIGURE and
// returns the device's path and an open handle. The device is
// auto-clearing: it detaches by itself once unmounted and closed, so even
// a crashed test leaks it only while its mount lives.
func attachLoop(t testing.TB, img string) (string, *os.File) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open loop control: %v", err)
	}
	defer ctl.Close()
	backing, err := os.OpenFile(img, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open btrfs image: %v", err)
	}
	defer backing.Close() // the loop device holds its own reference

	var lastErr error
	for range loopAttachAttempts {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			t.Fatalf("find a free loop device: %v", err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		loop, err := os.OpenFile(dev, os.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s: %v", dev, err)
		}
		cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], loopFileNameTag+t.Name())
		err = unix.IoctlLoopConfigure(int(loop.Fd()), &cfg)
		if err == nil {
			return dev, loop
		}
		loop.Close()
		if !errors.Is(err, unix.EBUSY) {
			t.Fatalf("attach %s to %s: %v", img, dev, err)
		}
		lastErr = err // another process took it first; ask for another
	}
	t.Fatalf("attach %s to a loop device: gave up after %d tries: %v", img, loopAttachAttempts, lastErr)
	return "", nil
}

func detachLoop(t testing.TB, dev string, loop *os.File) {
	t.Helper()
	if err := unix.IoctlSetInt(int(loop.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		t.Errorf("detach %s: %v", dev, err)
	}
	loop.Close()
}
