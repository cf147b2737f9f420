package network

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustPrefix(t *testing.T, cidr string) netip.Prefix {
	t.Helper()
	_, n, err := net.ParseCIDR(cidr)
	if err != nil {
		t.Fatal(err)
	}
	p, err := prefixFromIPNet(n)
	if err != nil {
		t.Fatalf("prefix %s: %v", cidr, err)
	}
	return p
}

func newTestIPAM(t *testing.T, dir, cidr string) *ipam {
	t.Helper()
	a, err := loadIPAM(filepath.Join(dir, ipamFileName), mustPrefix(t, cidr), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("load ipam: %v", err)
	}
	return a
}

func TestIPAMAllocationOrder(t *testing.T) {
	tests := []struct {
		name string
		cidr string
		// ops: "+id" reserves the lowest free address, "-id" releases.
		ops  []string
		want map[string]string
	}{
		{
			name: "skips network and node addresses",
			cidr: "10.250.1.0/24",
			ops:  []string{"+a", "+b", "+c"},
			want: map[string]string{"a": "10.250.1.2", "b": "10.250.1.3", "c": "10.250.1.4"},
		},
		{
			name: "reuses the lowest released address",
			cidr: "10.250.1.0/24",
			ops:  []string{"+a", "+b", "+c", "-b", "+d"},
			want: map[string]string{"a": "10.250.1.2", "c": "10.250.1.4", "d": "10.250.1.3"},
		},
		{
			name: "last usable address is below broadcast",
			cidr: "10.250.1.0/29",
			ops:  []string{"+a", "+b", "+c", "+d", "+e"},
			want: map[string]string{"a": "10.250.1.2", "b": "10.250.1.3", "c": "10.250.1.4", "d": "10.250.1.5", "e": "10.250.1.6"},
		},
		{
			name: "cidr given with host bits is masked",
			cidr: "10.250.1.77/30",
			ops:  []string{"+a"},
			want: map[string]string{"a": "10.250.1.78"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestIPAM(t, t.TempDir(), tt.cidr)
			for _, op := range tt.ops {
				id := op[1:]
				var err error
				if op[0] == '+' {
					_, err = a.reserve(id, netip.Addr{}, record{})
				} else {
					err = a.release(id)
				}
				if err != nil {
					t.Fatalf("%s: %v", op, err)
				}
			}
			got := map[string]string{}
			for id, rec := range a.byID {
				got[id] = rec.IP.String()
			}
			if len(got) != len(tt.want) {
				t.Fatalf("reservations = %v, want %v", got, tt.want)
			}
			for id, ip := range tt.want {
				if got[id] != ip {
					t.Errorf("%s got %s, want %s", id, got[id], ip)
				}
			}
		})
	}
}

func TestIPAMExhaustion(t *testing.T) {
	a := newTestIPAM(t, t.TempDir(), "10.250.2.0/30") // one usable address
	if _, err := a.reserve("a", netip.Addr{}, record{}); err != nil {
		t.Fatalf("first reservation: %v", err)
	}
	_, err := a.reserve("b", netip.Addr{}, record{})
	if !errors.Is(err, ErrNoAddresses) {
		t.Fatalf("second reservation: err = %v, want ErrNoAddresses", err)
	}
	if !strings.Contains(err.Error(), "widen --container-cidr") {
		t.Errorf("error %q does not tell the operator to widen --container-cidr", err)
	}
	if _, ok := a.lookup("b"); ok {
		t.Errorf("failed reservation left a record")
	}
	if err := a.release("a"); err != nil {
		t.Fatal(err)
	}
	if ip, err := a.reserve("b", netip.Addr{}, record{}); err != nil || ip.String() != "10.250.2.2" {
		t.Fatalf("after release: got %v, %v; want 10.250.2.2", ip, err)
	}
}

func TestIPAMRequestedAddress(t *testing.T) {
	tests := []struct {
		name    string
		ip      string
		wantErr error
	}{
		{name: "free address inside the cidr", ip: "10.250.3.200"},
		{name: "last usable address", ip: "10.250.3.254"},
		{name: "held by another container", ip: "10.250.3.2", wantErr: ErrAddressInUse},
		{name: "outside the cidr", ip: "10.250.4.9", wantErr: ErrOutOfRange},
		{name: "network address", ip: "10.250.3.0", wantErr: ErrOutOfRange},
		{name: "node address", ip: "10.250.3.1", wantErr: ErrOutOfRange},
		{name: "broadcast address", ip: "10.250.3.255", wantErr: ErrOutOfRange},
		{name: "ipv6", ip: "fd00::2", wantErr: ErrOutOfRange},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestIPAM(t, t.TempDir(), "10.250.3.0/24")
			if _, err := a.reserve("holder", netip.Addr{}, record{}); err != nil {
				t.Fatal(err)
			}
			got, err := a.reserve("c", netip.MustParseAddr(tt.ip), record{})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if _, ok := a.lookup("c"); ok {
					t.Errorf("refused request left a record")
				}
				return
			}
			if err != nil || got.String() != tt.ip {
				t.Fatalf("got %v, %v; want %s", got, err, tt.ip)
			}
		})
	}
}

func TestIPAMRefusesSecondReservation(t *testing.T) {
	a := newTestIPAM(t, t.TempDir(), "10.250.3.0/24")
	if _, err := a.reserve("c", netip.Addr{}, record{}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.reserve("c", netip.Addr{}, record{}); !errors.Is(err, ErrExists) {
		t.Fatalf("err = %v, want ErrExists", err)
	}
}

func TestIPAMPersistsAcrossNew(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "10.250.5.0/24")
	m1, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m1.mu.Lock()
	_, err1 := m1.ipam.reserve("kept", netip.Addr{}, record{HostVeth: "gwkept", NetnsPath: "/run/x/netns/kept"})
	_, err2 := m1.ipam.reserve("wanted", netip.MustParseAddr("10.250.5.50"), record{})
	_, err3 := m1.ipam.reserve("gone", netip.Addr{}, record{})
	err4 := m1.ipam.release("gone")
	m1.mu.Unlock()
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		t.Fatal(err)
	}
	if err := m1.Close(); err != nil {
		t.Fatal(err)
	}

	m2, err := New(cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(func() { m2.Close() })
	ep, err := m2.Lookup("kept")
	if err != nil {
		t.Fatalf("lookup after restart: %v", err)
	}
	want := Endpoint{ContainerID: "kept", NetnsPath: "/run/x/netns/kept", IP: net.ParseIP("10.250.5.2"), HostVeth: "gwkept"}
	if ep.ContainerID != want.ContainerID || ep.NetnsPath != want.NetnsPath || !ep.IP.Equal(want.IP) || ep.HostVeth != want.HostVeth {
		t.Errorf("lookup after restart = %+v, want %+v", *ep, want)
	}
	if _, err := m2.Lookup("gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("released container: err = %v, want ErrNotFound", err)
	}
	if got := len(m2.List()); got != 2 {
		t.Errorf("List has %d endpoints, want 2", got)
	}
	m2.mu.Lock()
	next, err := m2.ipam.reserve("new", netip.Addr{}, record{})
	_, inUse := m2.ipam.reserve("other", netip.MustParseAddr("10.250.5.50"), record{})
	m2.mu.Unlock()
	if err != nil || next.String() != "10.250.5.3" {
		t.Errorf("first allocation after restart = %v, %v; want 10.250.5.3 (10.250.5.2 is kept)", next, err)
	}
	if !errors.Is(inUse, ErrAddressInUse) {
		t.Errorf("requesting a persisted address: err = %v, want ErrAddressInUse", inUse)
	}
	entries, err := os.ReadDir(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != ipamFileName {
		t.Errorf("state dir holds %v, want only %s (no temporary files)", entries, ipamFileName)
	}
}

// TestIPAMDetachedPersists checks that the detached mark survives a reload
// and that a detached reservation still holds its address.
func TestIPAMDetachedPersists(t *testing.T) {
	dir := t.TempDir()
	a := newTestIPAM(t, dir, "10.250.9.0/24")
	ip, err := a.reserve("held", netip.Addr{}, record{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.reserve("attached", netip.Addr{}, record{}); err != nil {
		t.Fatal(err)
	}
	if err := a.setDetached("held", true); err != nil {
		t.Fatalf("setDetached: %v", err)
	}
	if err := a.setDetached("unknown", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("setDetached of an unknown container: err = %v, want ErrNotFound", err)
	}

	b := newTestIPAM(t, dir, "10.250.9.0/24")
	for _, tt := range []struct {
		id           string
		wantDetached bool
	}{
		{id: "held", wantDetached: true},
		{id: "attached", wantDetached: false},
	} {
		rec, ok := b.lookup(tt.id)
		if !ok || rec.Detached != tt.wantDetached {
			t.Errorf("%s after reload: record %+v, found %v; want detached = %v", tt.id, rec, ok, tt.wantDetached)
		}
	}
	if _, err := b.reserve("other", ip, record{}); !errors.Is(err, ErrAddressInUse) {
		t.Errorf("requesting the detached address: err = %v, want ErrAddressInUse", err)
	}
	if got, err := b.reserve("next", netip.Addr{}, record{}); err != nil || got == ip {
		t.Errorf("allocation after reload = %v, %v; want an address other than the detached %s", got, err, ip)
	}
}

func TestNewRefusesBadState(t *testing.T) {
	tests := []struct {
		name     string
		contents string
		wantMsg  string
	}{
		{name: "not json", contents: "{", wantMsg: "parse address reservations"},
		{name: "unknown version", contents: `{"version": 99}`, wantMsg: "version 99"},
		{name: "duplicate address", contents: `{"version":1,"endpoints":{"a":{"ip":"10.250.6.2"},"b":{"ip":"10.250.6.2"}}}`, wantMsg: "reserved by both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), "10.250.6.0/24")
			if err := os.MkdirAll(cfg.StateDir, stateDirMode); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(cfg.StateDir, ipamFileName), []byte(tt.contents), stateFileMode); err != nil {
				t.Fatal(err)
			}
			m, err := New(cfg)
			if err == nil {
				m.Close()
				t.Fatal("New accepted a bad ipam.json")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantMsg string
	}{
		{name: "no node name", mutate: func(c *Config) { c.NodeName = "" }, wantMsg: "node name"},
		{name: "no cidr", mutate: func(c *Config) { c.CIDR = nil }, wantMsg: "--container-cidr"},
		{name: "ipv6 cidr", mutate: func(c *Config) { _, c.CIDR, _ = net.ParseCIDR("fd00::/64") }, wantMsg: "only IPv4"},
		{name: "cidr too small", mutate: func(c *Config) { _, c.CIDR, _ = net.ParseCIDR("10.250.7.0/31") }, wantMsg: "too small"},
		{name: "no state dir", mutate: func(c *Config) { c.StateDir = "" }, wantMsg: "state dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, t.TempDir(), "10.250.7.0/24")
			tt.mutate(&cfg)
			m, err := New(cfg)
			if err == nil {
				m.Close()
				t.Fatal("New accepted the config")
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %v, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestHostVethName(t *testing.T) {
	a := HostVethName("node-a", "c1")
	tests := []struct {
		name      string
		got       string
		wantEqual bool
	}{
		{name: "deterministic", got: HostVethName("node-a", "c1"), wantEqual: true},
		{name: "other node, same container", got: HostVethName("node-b", "c1")},
		{name: "same node, other container", got: HostVethName("node-a", "c2")},
		{name: "no ambiguity from concatenation", got: HostVethName("node-ac", "1")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if len(tt.got) > maxIfNameLen || !strings.HasPrefix(tt.got, vethPrefix) {
				t.Errorf("name %q: want prefix %q and at most %d bytes", tt.got, vethPrefix, maxIfNameLen)
			}
			if (tt.got == a) != tt.wantEqual {
				t.Errorf("name %q vs %q: equal = %v, want %v", tt.got, a, tt.got == a, tt.wantEqual)
			}
		})
	}
}

func TestInvalidContainerID(t *testing.T) {
	m, err := New(testConfig(t, t.TempDir(), "10.250.8.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	tests := []struct{ name, id string }{
		{"empty", ""},
		{"dot", "."},
		{"dot dot", ".."},
		{"escapes the run dir", "../x"},
		{"slash", "a/b"},
		{"leading dash", "-x"},
		{"space", "a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Setup(t.Context(), tt.id, nil); !errors.Is(err, ErrInvalidID) {
				t.Errorf("Setup(%q): err = %v, want ErrInvalidID", tt.id, err)
			}
			if err := m.Teardown(t.Context(), tt.id); !errors.Is(err, ErrInvalidID) {
				t.Errorf("Teardown(%q): err = %v, want ErrInvalidID", tt.id, err)
			}
			if err := m.Detach(t.Context(), tt.id); !errors.Is(err, ErrInvalidID) {
				t.Errorf("Detach(%q): err = %v, want ErrInvalidID", tt.id, err)
			}
		})
	}
}
