package devcluster

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"

	"golang.org/x/sys/unix"
)

// Every kernel object and path of a cluster derives from its name here,
// so that the removal of an interrupted run's leftovers finds them from the
// name alone.

const (
	// objectPrefix starts the name of every kernel object a cluster
	// creates, so an operator can tell them apart in `ip link` and
	// `ip netns`.
	objectPrefix = "gwd"
	// maxIfNameLen is the kernel's limit on an interface name (IFNAMSIZ
	// less the terminating NUL).
	maxIfNameLen = unix.IFNAMSIZ - 1
	// maxClusterNameLen keeps the bridge's name, objectPrefix-NAME, within
	// maxIfNameLen.
	maxClusterNameLen = maxIfNameLen - len(objectPrefix) - 1
	// vethHashLen is how many hex digits of a hash of the cluster and host
	// names follow objectPrefix in the root end of a host's veth.
	vethHashLen = 10
	// hostInterface is the host's end of its veth, inside its namespace.
	hostInterface = "eth0"
	// loopbackInterface is every namespace's loopback device.
	loopbackInterface = "lo"
	// runRoot holds each cluster's lock and record of what it created.
	runRoot = "/run/godwit-devcluster"
	// workDirPrefix names the default work dir under the system's
	// temporary directory. Short, since CRIU's sockets will live below it
	// and a socket path is limited to 107 bytes.
	workDirPrefix = "gwd-"
	// firstHostOffset is how far the first host's address is from the
	// subnet's network address: the network address is not used and the
	// next one is the bridge's.
	firstHostOffset = 2
	// firstContainerOffset is how far ContainerIP's first address is from
	// the container CIDR's network address: an agent reserves the network
	// address and the next one, the node's (agent/network's IPAM).
	firstContainerOffset = 2
)

// vethNameFits fails to compile if a host's root-side veth name could
// exceed the kernel's limit.
const vethNameFits = uint(maxIfNameLen - len(objectPrefix) - vethHashLen)

var (
	// clusterNamePattern has no dash, so the prefix objectPrefix-NAME- of
	// one cluster's namespaces never matches another cluster's.
	clusterNamePattern = regexp.MustCompile(`^[a-z][a-z0-9]*$`)
	// hostNamePattern keeps host names usable in namespace, node and
	// directory names.
	hostNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)
)

func validateClusterName(name string) error {
	if !clusterNamePattern.MatchString(name) || len(name) > maxClusterNameLen {
		return fmt.Errorf("cluster name %q: use 1 to %d lowercase letters and digits, starting with a letter", name, maxClusterNameLen)
	}
	return nil
}

func validateHostName(name string) error {
	if !hostNamePattern.MatchString(name) {
		return fmt.Errorf("host name %q: use 1 to 32 lowercase letters, digits and inner dashes", name)
	}
	return nil
}

// bridgeName is the cluster's bridge in the root network namespace.
func bridgeName(cluster string) string { return objectPrefix + "-" + cluster }

// netnsPath is where the host's network namespace is pinned.
func netnsPath(cluster, host string) string {
	return filepath.Join(netnsDir, netnsPrefix(cluster)+host)
}

// netnsPrefix starts the pinned namespace names of every host of cluster.
func netnsPrefix(cluster string) string { return objectPrefix + "-" + cluster + "-" }

// vethName is the root end of the host's veth, a port of the bridge. The
// names of two hosts are too long to spell out, so it is a hash; the link's
// alias (vethAlias) names the host.
func vethName(cluster, host string) string {
	sum := sha256.Sum256([]byte(cluster + "/" + host))
	return objectPrefix + hex.EncodeToString(sum[:])[:vethHashLen]
}

// vethAlias is the alias `ip link` shows on the host's root-side veth.
func vethAlias(cluster, host string) string { return "godwit devcluster " + cluster + "/" + host }

// nodeName is the agent's --name on the host. It names the agent's
// cgroups, so it carries the cluster's name to stay unique on the kernel.
func nodeName(cluster, host string) string { return cluster + "-" + host }

// lockPath is the file whose lock says a cluster is in use.
func lockPath(cluster string) string { return filepath.Join(runRoot, cluster+".lock") }

// recordPath is the file that records what a cluster created.
func recordPath(cluster string) string { return filepath.Join(runRoot, cluster+".json") }

// nthAddr returns the address n after p's network address, or an error if
// it is not a usable unicast address of p (the broadcast address is not).
func nthAddr(p netip.Prefix, n int) (netip.Addr, error) {
	a := p.Masked().Addr()
	for range n {
		a = a.Next()
	}
	if !a.IsValid() || !p.Contains(a) || !p.Contains(a.Next()) {
		return netip.Addr{}, fmt.Errorf("%s has no address %d: %w", p, n, ErrNoAddress)
	}
	return a, nil
}

// bridgeMAC is the bridge's hardware address, fixed: a bridge whose
// address is left to the kernel takes its lowest port's, and changes it
// as hosts come and go.
func bridgeMAC(cluster string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("bridge/" + cluster))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^multicastBit | locallyAdministeredBit
	return mac
}

const (
	// multicastBit and locallyAdministeredBit are flags of a MAC
	// address's first byte: a made-up unicast address has the first clear
	// and the second set.
	multicastBit           = 0x01
	locallyAdministeredBit = 0x02
)
