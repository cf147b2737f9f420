package network

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
)

const (
	// ipamFileName is the file under the state dir that holds reservations.
	ipamFileName = "ipam.json"
	// ipamVersion is the format of ipam.json; a file with another version is
	// refused rather than misread.
	ipamVersion = 1
	// ipv4Bits is the length of an IPv4 address in bits.
	ipv4Bits = 32
	// reservedAddresses are the addresses of a CIDR that no container gets:
	// the network address, the node's address (the first host) and the
	// broadcast address.
	reservedAddresses = 3
	// maxPrefixLen is the longest prefix that leaves one container address
	// once the reserved ones are taken.
	maxPrefixLen = 30
	// stateFileMode keeps reservations private to root.
	stateFileMode = 0o600
	// stateDirMode is used when the state dir does not exist yet.
	stateDirMode = 0o700
)

// record is what the node remembers about one container's network. The
// names of the kernel objects are stored rather than recomputed so that a
// later change of the naming scheme still finds the objects of containers
// set up before it.
type record struct {
	IP        netip.Addr `json:"ip"`
	HostVeth  string     `json:"hostVeth"`
	NetnsPath string     `json:"netnsPath"`
	// Detached means the container's kernel objects were removed on purpose
	// while it keeps its address (see Manager.Detach). Absent in files
	// written before detaching existed, which correctly reads as attached.
	Detached bool `json:"detached,omitempty"`
	// Unrouted means the kernel objects exist but the node does not route
	// the address to the container yet (see Manager.SetupUnrouted).
	Unrouted bool `json:"unrouted,omitempty"`
}

// ipamFile is the on-disk form of the reservations.
type ipamFile struct {
	Version   int               `json:"version"`
	CIDR      string            `json:"cidr"`
	Endpoints map[string]record `json:"endpoints"`
}

// ipam hands out container addresses from one IPv4 CIDR and persists every
// change before reporting success. It is not safe for concurrent use; the
// Manager serializes calls.
type ipam struct {
	prefix netip.Prefix
	path   string
	byID   map[string]record
	byIP   map[netip.Addr]string
}

// prefixFromIPNet converts and validates the configured CIDR.
func prefixFromIPNet(cidr *net.IPNet) (netip.Prefix, error) {
	if cidr == nil {
		return netip.Prefix{}, errors.New("no --container-cidr given; give an IPv4 CIDR such as 10.88.0.0/24")
	}
	ones, bits := cidr.Mask.Size()
	addr, ok := netip.AddrFromSlice(cidr.IP)
	if !ok || bits == 0 {
		return netip.Prefix{}, fmt.Errorf("--container-cidr %s: not an IP network", cidr)
	}
	addr = addr.Unmap()
	if !addr.Is4() || bits != ipv4Bits {
		return netip.Prefix{}, fmt.Errorf("--container-cidr %s: only IPv4 is supported; give an IPv4 CIDR such as 10.88.0.0/24", cidr)
	}
	if ones > maxPrefixLen {
		return netip.Prefix{}, fmt.Errorf("--container-cidr %s: too small, the network, node and broadcast addresses leave no container address; use /%d or wider", cidr, maxPrefixLen)
	}
	return netip.PrefixFrom(addr, ones).Masked(), nil
}

// loadIPAM reads the reservations in path, or starts empty when the file does
// not exist. Reservations outside prefix (the operator changed
// --container-cidr) are kept, since their containers still use them.
func loadIPAM(path string, prefix netip.Prefix, log *slog.Logger) (*ipam, error) {
	a := &ipam{
		prefix: prefix,
		path:   path,
		byID:   map[string]record{},
		byIP:   map[netip.Addr]string{},
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read address reservations: %w", err)
	}
	var f ipamFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse address reservations %s: %w; restore it from a backup, or move it aside only if no container of this node is running", path, err)
	}
	if f.Version != ipamVersion {
		return nil, fmt.Errorf("address reservations %s have version %d, this agent reads version %d; run the agent version that wrote it", path, f.Version, ipamVersion)
	}
	for id, rec := range f.Endpoints {
		if !rec.IP.Is4() {
			return nil, fmt.Errorf("address reservations %s: container %s has no valid IPv4 address; fix or remove its entry", path, id)
		}
		if other, dup := a.byIP[rec.IP]; dup {
			return nil, fmt.Errorf("address reservations %s: %s is reserved by both %s and %s; remove the entry of the container that no longer runs", path, rec.IP, other, id)
		}
		if !prefix.Contains(rec.IP) {
			log.Warn("container address outside --container-cidr kept until the container is removed",
				"container", id, "ip", rec.IP, "cidr", prefix)
		}
		a.byID[id] = rec
		a.byIP[rec.IP] = id
	}
	return a, nil
}

// bounds returns the first and last address a container may get.
func (a *ipam) bounds() (first, last netip.Addr) {
	base := binary.BigEndian.Uint32(a.prefix.Addr().AsSlice())
	size := uint32(1) << (ipv4Bits - a.prefix.Bits())
	return addrFromUint32(base + 2), addrFromUint32(base + size - 2)
}

func addrFromUint32(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// usable is the number of container addresses in the CIDR.
func (a *ipam) usable() int {
	return 1<<(ipv4Bits-a.prefix.Bits()) - reservedAddresses
}

// reserve gives containerID the address want, or the lowest free address
// when want is the zero Addr, and persists the reservation together with the
// names of the container's kernel objects. It fails with ErrOutOfRange for an
// address that is outside the CIDR or reserved, ErrAddressInUse for one that
// another container holds, and ErrNoAddresses when the CIDR is full. Nothing
// changes when it fails.
func (a *ipam) reserve(containerID string, want netip.Addr, rec record) (netip.Addr, error) {
	if _, ok := a.byID[containerID]; ok {
		return netip.Addr{}, fmt.Errorf("%w; remove the container's network first", ErrExists)
	}
	ip := want
	if want.IsValid() {
		if err := a.checkRequested(want); err != nil {
			return netip.Addr{}, err
		}
	} else {
		var err error
		if ip, err = a.lowestFree(); err != nil {
			return netip.Addr{}, err
		}
	}
	rec.IP = ip
	a.byID[containerID] = rec
	a.byIP[ip] = containerID
	if err := a.save(); err != nil {
		delete(a.byID, containerID)
		delete(a.byIP, ip)
		return netip.Addr{}, err
	}
	return ip, nil
}

func (a *ipam) checkRequested(ip netip.Addr) error {
	ip = ip.Unmap()
	if !ip.Is4() || !a.prefix.Contains(ip) {
		return fmt.Errorf("%w: %s is outside --container-cidr %s; request an address inside it", ErrOutOfRange, ip, a.prefix)
	}
	first, last := a.bounds()
	if ip.Less(first) || last.Less(ip) {
		return fmt.Errorf("%w: %s is the network, node or broadcast address of %s; request an address from %s to %s", ErrOutOfRange, ip, a.prefix, first, last)
	}
	if holder, ok := a.byIP[ip]; ok {
		return fmt.Errorf("%w: %s is held by container %s; request another address or remove that container", ErrAddressInUse, ip, holder)
	}
	return nil
}

// lowestFree picks the lowest free address, so allocation is predictable and
// a freed address is the next one reused.
func (a *ipam) lowestFree() (netip.Addr, error) {
	first, last := a.bounds()
	for ip := first; !last.Less(ip); ip = ip.Next() {
		if _, used := a.byIP[ip]; !used {
			return ip, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: all %d container addresses of --container-cidr %s are in use; widen --container-cidr or remove containers", ErrNoAddresses, a.usable(), a.prefix)
}

// release frees containerID's address and persists the change. Releasing a
// container without a reservation is not an error.
func (a *ipam) release(containerID string) error {
	rec, ok := a.byID[containerID]
	if !ok {
		return nil
	}
	delete(a.byID, containerID)
	delete(a.byIP, rec.IP)
	if err := a.save(); err != nil {
		a.byID[containerID] = rec
		a.byIP[rec.IP] = containerID
		return err
	}
	return nil
}

// setDetached marks containerID's reservation detached or attached and
// persists the change; marking it as it already is changes nothing. It fails
// with ErrNotFound for a container without a reservation. Nothing changes
// when it fails.
func (a *ipam) setDetached(containerID string, detached bool) error {
	return a.update(containerID, func(r *record) { r.Detached = detached })
}

// setUnrouted marks containerID's reservation routed or not, as
// setDetached does.
func (a *ipam) setUnrouted(containerID string, unrouted bool) error {
	return a.update(containerID, func(r *record) { r.Unrouted = unrouted })
}

// update changes containerID's reservation with change and persists it;
// a change that changes nothing is not written. Nothing changes when it
// fails.
func (a *ipam) update(containerID string, change func(*record)) error {
	rec, ok := a.byID[containerID]
	if !ok {
		return fmt.Errorf("container %s: %w", containerID, ErrNotFound)
	}
	changed := rec
	change(&changed)
	if changed == rec {
		return nil
	}
	a.byID[containerID] = changed
	if err := a.save(); err != nil {
		a.byID[containerID] = rec
		return err
	}
	return nil
}

func (a *ipam) lookup(containerID string) (record, bool) {
	rec, ok := a.byID[containerID]
	return rec, ok
}

// save writes the reservations atomically: a crash leaves either the old or
// the new file, never a torn one.
func (a *ipam) save() error {
	data, err := json.MarshalIndent(ipamFile{
		Version:   ipamVersion,
		CIDR:      a.prefix.String(),
		Endpoints: a.byID,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode address reservations: %w", err)
	}
	return writeFileAtomic(a.path, data, stateFileMode)
}

// writeFileAtomic replaces path with data through a synced temporary file
// and a rename, then syncs the directory so the rename itself is durable.
func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err = d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
