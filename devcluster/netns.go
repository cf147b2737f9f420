package devcluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

const (
	// netnsDir is where `ip netns` pins named namespaces, so an operator
	// can inspect a host with `ip -n gwd-CLUSTER-HOST addr` or enter it
	// with `nsenter --net=/run/netns/gwd-CLUSTER-HOST`.
	netnsDir = "/run/netns"
	// netnsDirMode is the mode of netnsDir when it does not exist yet.
	netnsDirMode = 0o755
	// netnsFileMode is the mode of the empty file a namespace is pinned on.
	netnsFileMode = 0o444
	// procSysIPv4 is where the kernel shows the IPv4 settings of the
	// network namespace of the thread that opens the file.
	procSysIPv4 = "/proc/sys/net/ipv4"
)

// currentNetns opens the network namespace of the calling goroutine's
// thread: the namespace the cluster's bridge lives in.
func currentNetns() (netns.NsHandle, error) {
	// Locked so that the thread read is the caller's for the whole call.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ns, err := netns.Get()
	if err != nil {
		return netns.None(), fmt.Errorf("open current network namespace: %w", err)
	}
	return ns, nil
}

// inNetns runs fn on a locked OS thread switched into ns, then switches
// the thread back. No other goroutine ever runs in ns: if the thread cannot
// be switched back it stays locked when its goroutine ends, and the Go
// runtime then discards it.
func inNetns(ns netns.NsHandle, fn func() error) error {
	return onSwitchedThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter network namespace: %w", err)
		}
		return nil
	}, fn)
}

// onSwitchedThread runs enter and then fn on one locked OS thread, and
// returns the thread to the network namespace it started in (see inNetns).
// enter must leave the thread where it was when it fails.
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

// pinNewNetns creates an empty network namespace and pins it with a bind
// mount on path, which must not exist, so that it lives without any
// process in it. On error nothing is left at path.
func pinNewNetns(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), netnsDirMode); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, netnsFileMode)
	if err != nil {
		return fmt.Errorf("create netns file: %w", err)
	}
	if err := f.Close(); err != nil {
		return errors.Join(fmt.Errorf("create netns file: %w", err), os.Remove(path))
	}
	err = onSwitchedThread(func() error {
		// unshare moves this locked thread alone into a new namespace.
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
		return errors.Join(err, unpinNetns(path))
	}
	return nil
}

// unpinNetns unmounts and removes a namespace pinned by pinNewNetns. A
// path that is not mounted or does not exist is not an error, so it can
// finish a removal that was interrupted. The namespace itself goes once no
// process is left in it.
func unpinNetns(path string) error {
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

// netnsInode identifies the namespace pinned at path, as /proc/PID/ns/net
// names it ("net:[INODE]"). ok is false when nothing is pinned there.
func netnsInode(path string) (ino uint64, ok bool) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, false
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil || fs.Type != unix.NSFS_MAGIC {
		return 0, false // an empty file whose mount is gone
	}
	return st.Ino, true
}

// netlinkIn opens a routing netlink socket inside ns. A socket keeps the
// namespace it was created in, so the handle may be used from any thread.
func netlinkIn(ns netns.NsHandle) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := inNetns(ns, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return h, nil
}

// setSysctl sets an IPv4 setting of ns; key is relative to net/ipv4, such
// as "ip_forward".
func setSysctl(ns netns.NsHandle, key, value string) error {
	err := inNetns(ns, func() error {
		return os.WriteFile(filepath.Join(procSysIPv4, key), []byte(value), 0)
	})
	if err != nil {
		return fmt.Errorf("set net.ipv4.%s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

// dialIn connects to address from inside ns. The socket is created on a
// thread in ns and keeps that namespace; the connection is then usable
// from any goroutine. address must be an IP literal and port: a name
// lookup would run on other threads, in another namespace.
func dialIn(ctx context.Context, ns netns.NsHandle, network, address string) (net.Conn, error) {
	var conn net.Conn
	err := inNetns(ns, func() error {
		// A single literal address makes the dialer connect on this
		// goroutine, on the switched thread.
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	return conn, err
}
