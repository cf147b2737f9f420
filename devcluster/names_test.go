package devcluster

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestClusterNames(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"dcx", true},
		{"a1", true},
		{"abcdefghijk", true},   // 11: the bridge is gwd-abcdefghijk, 15 bytes
		{"abcdefghijkl", false}, // 12: the bridge's name would not fit
		{"", false},
		{"1dcx", false},
		{"dc-x", false}, // a dash would let gwd-dc-* match cluster dc's namespaces
		{"DCX", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := validateClusterName(tt.name)
			if (err == nil) != tt.ok {
				t.Fatalf("validateClusterName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
			if tt.ok && len(bridgeName(tt.name)) > maxIfNameLen {
				t.Fatalf("bridge name %q is longer than an interface name may be", bridgeName(tt.name))
			}
		})
	}
}

func TestHostNames(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"a", true},
		{"node-1", true},
		{strings.Repeat("a", 32), true},
		{strings.Repeat("a", 33), false},
		{"-a", false},
		{"a-", false},
		{"a/b", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := validateHostName(tt.name); (err == nil) != tt.ok {
				t.Fatalf("validateHostName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
			}
		})
	}
}

func TestVethNamesFitAndDiffer(t *testing.T) {
	seen := map[string]string{}
	for _, cluster := range []string{"dcx", "abcdefghijk"} {
		for _, host := range []string{"a", "b", strings.Repeat("h", 32)} {
			n := vethName(cluster, host)
			if len(n) > maxIfNameLen {
				t.Errorf("veth name %q for %s/%s is longer than an interface name may be", n, cluster, host)
			}
			if other, dup := seen[n]; dup {
				t.Errorf("veth name %q for %s/%s is also %s's", n, cluster, host, other)
			}
			seen[n] = cluster + "/" + host
		}
	}
}

func TestNthAddr(t *testing.T) {
	p := netip.MustParsePrefix("10.77.0.0/30")
	tests := []struct {
		name string
		n    int
		want string // empty: out of range
	}{
		{"bridge", 1, "10.77.0.1"},
		{"first host", 2, "10.77.0.2"},
		{"broadcast is not usable", 3, ""},
		{"past the end", 4, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nthAddr(p, tt.n)
			if tt.want == "" {
				if !errors.Is(err, ErrNoAddress) {
					t.Fatalf("nthAddr(%s, %d) = %v, %v; want ErrNoAddress", p, tt.n, got, err)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("nthAddr(%s, %d) = %v, %v; want %s", p, tt.n, got, err, tt.want)
			}
		})
	}
}

func TestValidatePrefixes(t *testing.T) {
	tests := []struct {
		name             string
		subnet, contains string
		ok               bool
	}{
		{"disjoint", "10.77.0.0/24", "10.78.0.0/24", true},
		{"overlapping", "10.77.0.0/16", "10.77.5.0/24", false},
		{"IPv6 subnet", "fd00::/64", "10.78.0.0/24", false},
		{"missing container CIDR", "10.77.0.0/24", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			subnet, _ := netip.ParsePrefix(tt.subnet)
			containers, _ := netip.ParsePrefix(tt.contains)
			if err := validatePrefixes(subnet, containers); (err == nil) != tt.ok {
				t.Fatalf("validatePrefixes(%q, %q) = %v, want ok=%v", tt.subnet, tt.contains, err, tt.ok)
			}
		})
	}
}

func TestContainerIPsAreDistinctAndUsable(t *testing.T) {
	c := &Cluster{containerCIDR: netip.MustParsePrefix("10.78.0.0/29")}
	var err error
	if c.nextIP, err = nthAddr(c.containerCIDR, firstContainerOffset); err != nil {
		t.Fatal(err)
	}
	// .0 is the network, .1 the agents' node address, .7 the broadcast.
	want := []string{"10.78.0.2", "10.78.0.3", "10.78.0.4", "10.78.0.5", "10.78.0.6"}
	for _, w := range want {
		got, err := c.ContainerIP()
		if err != nil || got.String() != w {
			t.Fatalf("ContainerIP() = %v, %v; want %s", got, err, w)
		}
	}
	if got, err := c.ContainerIP(); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("ContainerIP() past the end = %v, %v; want ErrNoAddress", got, err)
	}
}

func TestBridgeMACIsUnicastAndLocal(t *testing.T) {
	for _, name := range []string{"dcx", "cts", "abcdefghijk"} {
		mac := bridgeMAC(name)
		if len(mac) != 6 || mac[0]&multicastBit != 0 || mac[0]&locallyAdministeredBit == 0 {
			t.Errorf("bridge MAC of %s is %s, want a locally administered unicast address", name, mac)
		}
	}
	if bridgeMAC("dcx").String() == bridgeMAC("cts").String() {
		t.Errorf("two clusters' bridges have the same MAC %s", bridgeMAC("dcx"))
	}
}
