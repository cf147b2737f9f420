package network

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/internal/mountinfo"
)

const (
	// netnsFileMode is the mode of the empty file a namespace is pinned on.
	netnsFileMode = 0o444
	// netnsDirMode is the mode of <runDir>/netns.
	netnsDirMode = 0o755
	// procSysNet is where the kernel exposes the sysctls of the namespace of
	// the thread that opens the file.
	procSysNet = "/proc/sys/net/ipv4"
)

// runInNetns runs fn on an OS thread switched into ns, then switches the
// thread back.
func runInNetns(ns netns.NsHandle, fn func() error) error {
	return onNetnsThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return nil
	}, fn)
}

// onNetnsThread runs enter and then fn on one locked OS thread, and then
// returns the thread to the network namespace it started in. enter moves
// the thread into another namespace; when it fails it must leave the
// thread where it was. Other goroutines never run in that namespace: the
// thread stays locked for the whole call, and if it cannot be switched back
// it stays locked when its goroutine ends, which makes the Go runtime
// discard it.
func onNetnsThread(enter, fn func() error) error {
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

// createNetns creates a new, empty network namespace and pins it with a bind
// mount on path, which must not exist. The namespace lives as long as the
// mount, independent of any process. On error nothing is left at path.
func createNetns(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), netnsDirMode); err != nil {
		return fmt.Errorf("create netns dir: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, netnsFileMode)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("create netns file: %w", err)
	}

	// unshare moves the locked thread alone into the new namespace, which
	// the bind mount then pins.
	err = onNetnsThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		return nil
	}, func() error {
		self := fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())
		if err := unix.Mount(self, path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount network namespace on %s: %w", path, err)
		}
		return nil
	})
	if err != nil {
		return errors.Join(err, removeNetns(path))
	}
	return nil
}

// removeNetns unmounts and removes a namespace pinned by createNetns. A path
// that is not mounted or does not exist is not an error, so it can finish a
// removal that was interrupted.
func removeNetns(path string) error {
	var errs []error
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil &&
		!errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		errs = append(errs, fmt.Errorf("unmount netns %s: %w", path, err))
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove netns file: %w", err))
	}
	return errors.Join(errs...)
}

// isMountPoint reports whether path is a mount point in this mount namespace.
func isMountPoint(path string) (bool, error) {
	// mountinfo shows paths with symlinks resolved.
	if dir, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		path = filepath.Join(dir, filepath.Base(path))
	}
	return mountinfo.IsMountPoint(path)
}

// netlinkHandleAt opens a routing netlink socket inside ns. Sockets keep the
// namespace they were created in, so the handle may then be used from any
// thread.
func netlinkHandleAt(ns netns.NsHandle) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := runInNetns(ns, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return h, nil
}

// sysctlPath returns the /proc/sys file of an IPv4 setting; key is relative
// to net/ipv4, such as "ip_forward" or "conf/<dev>/proxy_arp".
func sysctlPath(key string) string {
	return filepath.Join(procSysNet, key)
}

// readSysctl reads an IPv4 sysctl of ns.
func readSysctl(ns netns.NsHandle, key string) (string, error) {
	var v string
	err := runInNetns(ns, func() error {
		b, err := os.ReadFile(sysctlPath(key))
		v = strings.TrimSpace(string(b))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read net.ipv4.%s: %w", strings.ReplaceAll(key, "/", "."), err)
	}
	return v, nil
}

// ensureSysctl sets an IPv4 sysctl of ns to value. It writes only when the
// value differs, so a node whose /proc/sys is read-only but already set up
// (an agent in a container) still works.
func ensureSysctl(ns netns.NsHandle, key, value string) error {
	err := runInNetns(ns, func() error {
		p := sysctlPath(key)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) == value {
			return nil
		}
		return os.WriteFile(p, []byte(value), 0)
	})
	if err != nil {
		return fmt.Errorf("set net.ipv4.%s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}
