package devcluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netns"

	"github.com/godwit/godwit/internal/netnsutil"
)

const (
	// netnsDir is where `ip netns` pins named namespaces, so an operator
	// can inspect a host with `ip -n gwd-CLUSTER-HOST addr` or enter it
	// with `nsenter --net=/run/netns/gwd-CLUSTER-HOST`.
	netnsDir = "/run/netns"
	// procSysIPv4 is where the kernel shows the IPv4 settings of the
	// network namespace of the thread that opens the file.
	procSysIPv4 = "/proc/sys/net/ipv4"
)

// setSysctl sets an IPv4 setting of ns; key is relative to net/ipv4, such
// as "ip_forward".
func setSysctl(ns netns.NsHandle, key, value string) error {
	err := netnsutil.Run(ns, func() error {
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
	err := netnsutil.Run(ns, func() error {
		// A single literal address makes the dialer connect on this
		// goroutine, on the switched thread.
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, address)
		return err
	})
	return conn, err
}
