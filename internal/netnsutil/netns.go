package netnsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// fileMode is the mode of the empty file a namespace is pinned on.
	fileMode = 0o444
	// dirMode is the mode of a pin's directory when Create makes it.
	dirMode = 0o755
)

// Current opens the network namespace of the calling goroutine's thread.
// The caller closes the handle.
func Current() (netns.NsHandle, error) {
	// Locked so that the thread whose namespace is opened is the caller's
	// for the whole call.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("open current network namespace: %w", err)
	}
	return ns, nil
}

// Run runs fn on a locked OS thread switched into ns, then switches the
// thread back, and returns fn's error. Sockets fn creates keep ns and may
// be used from any goroutine afterwards; anything else fn starts on other
// goroutines (a name lookup, a goroutine of its own) runs in the caller's
// namespace, not in ns.
func Run(ns netns.NsHandle, fn func() error) error {
	return onSwitchedThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return nil
	}, fn)
}

// onSwitchedThread runs enter and then fn on one locked OS thread, and
// then returns the thread to the network namespace it started in. enter
// moves the thread into another namespace; when it fails it must leave the
// thread where it was. Other goroutines never run in that namespace: the
// thread stays locked for the whole call, and if it cannot be switched
// back it stays locked when its goroutine ends, which makes the Go runtime
// discard it rather than hand it to another goroutine.
func onSwitchedThread(enter, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := enter(); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		fnErr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(fnErr, fmt.Errorf("return to original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- fnErr
	}()
	return <-errc
}

// NetlinkHandle opens a routing netlink socket inside ns. A socket keeps
// the namespace it was created in, so the handle may then be used from any
// thread. (netlink.NewHandleAt would do the same, but it unlocks its
// thread even when switching back failed, leaving a thread in ns to other
// goroutines.)
func NetlinkHandle(ns netns.NsHandle) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := Run(ns, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return h, nil
}

// Create creates a new, empty network namespace and pins it with a bind
// mount on path, which must not exist; missing parent directories are
// made. The namespace lives as long as the mount, independent of any
// process. On error nothing is left at path.
func Create(path string) error {
	return create(path, unshareNetns)
}

// unshareNetns moves the calling locked thread alone into a new network
// namespace.
func unshareNetns() error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare network namespace: %w", err)
	}
	return nil
}

// create is Create with the step that moves the thread into the new
// namespace given, so that tests can make it fail.
func create(path string, enter func() error) error {
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	if err := f.Close(); err != nil {
		return errors.Join(fmt.Errorf("create netns file: %w", err), os.Remove(path))
	}
	err = onSwitchedThread(enter, func() error {
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount network namespace on %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return errors.Join(err, Remove(path))
	}
	return nil
}

// Remove unmounts and removes a namespace pinned by Create. A path that is
// not mounted or does not exist is not an error, so it can finish a
// removal that was interrupted. The namespace itself goes once no process
// is left in it and no handle holds it open.
func Remove(path string) error {
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount netns %s: %w", path, err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove netns file %s: %w", path, err))
	}
	return errors.Join(errs...)
}

// PinnedInode identifies the namespace pinned at path by its inode, the
// number /proc/PID/ns/net names ("net:[INODE]"). ok is false when no
// namespace is pinned there: no file, or an empty file whose mount is
// gone.
func PinnedInode(path string) (ino uint64, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, false
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		return 0, false
	}
	return st.Ino, true
}
