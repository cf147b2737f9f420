package criuimg

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	sk_inet "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-inet"
	"golang.org/x/sys/unix"
)

// tcpStates names the kernel's socket states (include/net/tcp_states.h),
// which CRIU records for TCP and UNIX sockets alike.
var tcpStates = map[uint32]string{
	1:  "ESTABLISHED",
	2:  "SYN_SENT",
	3:  "SYN_RECV",
	4:  "FIN_WAIT1",
	5:  "FIN_WAIT2",
	6:  "TIME_WAIT",
	7:  "CLOSE",
	8:  "CLOSE_WAIT",
	9:  "LAST_ACK",
	10: "LISTEN",
	11: "CLOSING",
	12: "NEW_SYN_RECV",
}

var sockTypes = map[uint32]string{
	unix.SOCK_STREAM:    "STREAM",
	unix.SOCK_DGRAM:     "DGRAM",
	unix.SOCK_SEQPACKET: "SEQPACKET",
	unix.SOCK_RAW:       "RAW",
	unix.SOCK_RDM:       "RDM",
	unix.SOCK_PACKET:    "PACKET",
}

var inetProtocols = map[uint32]string{
	unix.IPPROTO_TCP:     "TCP",
	unix.IPPROTO_UDP:     "UDP",
	unix.IPPROTO_UDPLITE: "UDPLITE",
	unix.IPPROTO_ICMP:    "ICMP",
	unix.IPPROTO_ICMPV6:  "ICMPV6",
	unix.IPPROTO_RAW:     "RAW",
	unix.IPPROTO_MPTCP:   "MPTCP",
}

var netlinkProtocols = map[uint32]string{
	unix.NETLINK_ROUTE:          "ROUTE",
	unix.NETLINK_SOCK_DIAG:      "SOCK_DIAG",
	unix.NETLINK_NETFILTER:      "NETFILTER",
	unix.NETLINK_KOBJECT_UEVENT: "KOBJECT_UEVENT",
	unix.NETLINK_GENERIC:        "GENERIC",
	unix.NETLINK_AUDIT:          "AUDIT",
	unix.NETLINK_XFRM:           "XFRM",
}

// name looks v up in names, falling back to its number.
func name(names map[uint32]string, v uint32) string {
	if n, ok := names[v]; ok {
		return n
	}
	return strconv.FormatUint(uint64(v), 10)
}

// socketOf describes a socket descriptor; ok is false for other files.
func socketOf(fd int, typ fdinfo.FdTypes, f *fdinfo.FileEntry) (s Socket, ok bool) {
	s.FD = fd
	switch typ {
	case fdinfo.FdTypes_INETSK:
		inetSocket(&s, f.GetIsk())
	case fdinfo.FdTypes_UNIXSK:
		u := f.GetUsk()
		s.Family = "UNIX"
		s.Type = name(sockTypes, u.GetType())
		if u.GetType() == unix.SOCK_STREAM || u.GetType() == unix.SOCK_SEQPACKET {
			s.State = name(tcpStates, u.GetState())
		}
		s.Path = unixName(u.GetName())
		s.Inode = u.GetIno()
		s.PeerInode = u.GetPeer()
	case fdinfo.FdTypes_NETLINKSK:
		n := f.GetNlsk()
		s.Family = "NETLINK"
		s.Type = "RAW"
		s.Protocol = name(netlinkProtocols, n.GetProtocol())
		s.Inode = n.GetIno()
	case fdinfo.FdTypes_PACKETSK:
		p := f.GetPsk()
		s.Family = "PACKET"
		s.Type = name(sockTypes, p.GetType())
	default:
		return Socket{}, false
	}
	return s, true
}

func inetSocket(s *Socket, isk *sk_inet.InetSkEntry) {
	switch isk.GetFamily() {
	case unix.AF_INET:
		s.Family = "IPv4"
	case unix.AF_INET6:
		s.Family = "IPv6"
	default:
		s.Family = strconv.FormatUint(uint64(isk.GetFamily()), 10)
	}
	s.Type = name(sockTypes, isk.GetType())
	s.Protocol = name(inetProtocols, isk.GetProto())
	if isk.GetProto() == unix.IPPROTO_TCP {
		s.State = name(tcpStates, isk.GetState())
	}
	s.LocalAddr = inetAddr(isk.GetSrcAddr())
	s.LocalPort = int(isk.GetSrcPort())
	if isk.GetDstPort() != 0 { // unconnected sockets have no peer
		s.RemoteAddr = inetAddr(isk.GetDstAddr())
		s.RemotePort = int(isk.GetDstPort())
	}
	s.Inode = isk.GetIno()
}

// inetAddr formats an address as CRIU stores it: the kernel's network
// order bytes copied into one (IPv4) or four (IPv6) uint32s in the dumping
// host's byte order, which is this host's: images are read on the
// architecture that wrote them.
func inetAddr(words []uint32) string {
	var b [16]byte
	for i, w := range words {
		if i >= len(b)/4 {
			return ""
		}
		binary.NativeEndian.PutUint32(b[4*i:], w)
	}
	switch len(words) {
	case 1:
		return netip.AddrFrom4([4]byte(b[:4])).String()
	case 4:
		return netip.AddrFrom16(b).String()
	default:
		return ""
	}
}

// unixName formats a UNIX socket name; abstract names start with a NUL,
// shown as @ the way ss and /proc/net/unix do.
func unixName(b []byte) string {
	if len(b) > 0 && b[0] == 0 {
		return "@" + strings.TrimRight(string(b[1:]), "\x00")
	}
	return strings.TrimRight(string(b), "\x00")
}
