package network

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/agent/internal/mountinfo"
	"github.com/godwit/godwit/internal/netnsutil"
)

// procSysNet is where the kernel exposes the sysctls of the namespace of
// the thread that opens the file.
const procSysNet = "/proc/sys/net/ipv4"

// isMountPoint reports whether path is a mount point in this mount namespace.
func isMountPoint(path string) (bool, error) {
	// mountinfo shows paths with symlinks resolved.
	if dir, err := filepath.EvalSymlinks(filepath.Dir(path)); err == nil {
		path = filepath.Join(dir, filepath.Base(path))
	}
	return mountinfo.IsMountPoint(path)
}

// sysctlPath returns the /proc/sys file of an IPv4 setting; key is relative
// to net/ipv4, such as "ip_forward" or "conf/<dev>/proxy_arp".
func sysctlPath(key string) string {
	return filepath.Join(procSysNet, key)
}

// readSysctl reads an IPv4 sysctl of ns.
func readSysctl(ns netns.NsHandle, key string) (string, error) {
	var v string
	err := netnsutil.Run(ns, func() error {
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
	err := netnsutil.Run(ns, func() error {
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
