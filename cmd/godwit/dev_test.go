package main

import (
	"bytes"
	"errors"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func TestDevUpPlan(t *testing.T) {
	ok := devUpOptions{name: "dev", nodes: 3, schedulers: 3, subnet: defaultDevSubnet, containerCIDR: defaultDevContainerCIDR}
	tests := []struct {
		name    string
		change  func(*devUpOptions)
		wantErr string // empty: accepted
		// schedulers and nodes are the hosts of an accepted plan.
		schedulers, nodes []string
	}{
		{name: "three and three", change: func(*devUpOptions) {},
			schedulers: []string{"s1", "s2", "s3"}, nodes: []string{"n1", "n2", "n3"}},
		{name: "one scheduler", change: func(o *devUpOptions) { o.schedulers, o.nodes = 1, 1 },
			schedulers: []string{"s1"}, nodes: []string{"n1"}},
		{name: "no nodes", change: func(o *devUpOptions) { o.nodes = 0 }, wantErr: "--nodes 0"},
		{name: "an even number of schedulers", change: func(o *devUpOptions) { o.schedulers = 2 }, wantErr: "give 1, 3 or 5"},
		{name: "no schedulers", change: func(o *devUpOptions) { o.schedulers = 0 }, wantErr: "give 1, 3 or 5"},
		{name: "a subnet that is no prefix", change: func(o *devUpOptions) { o.subnet = "10.99.0.1" }, wantErr: "--subnet"},
		{name: "a container CIDR that is no prefix", change: func(o *devUpOptions) { o.containerCIDR = "x" }, wantErr: "--container-cidr"},
		// A /29 has 8 addresses: network, broadcast and the bridge's
		// leave 5 for hosts.
		{name: "a subnet just wide enough", change: func(o *devUpOptions) { o.subnet, o.nodes = "10.99.0.0/29", 2 },
			schedulers: []string{"s1", "s2", "s3"}, nodes: []string{"n1", "n2"}},
		{name: "a subnet too narrow", change: func(o *devUpOptions) { o.subnet = "10.99.0.0/29" }, wantErr: "holds 5 hosts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.change(&o)
			p, err := o.plan()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("plan: err = %v, want one saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.schedulerHosts, tt.schedulers) || !slices.Equal(p.nodeHosts, tt.nodes) {
				t.Errorf("hosts: schedulers %v, nodes %v; want %v and %v", p.schedulerHosts, p.nodeHosts, tt.schedulers, tt.nodes)
			}
			if p.cfg.Name != o.name || p.cfg.Subnet.String() != o.subnet || p.cfg.ContainerCIDR.String() != o.containerCIDR {
				t.Errorf("cluster config %+v does not carry the options %+v", p.cfg, o)
			}
		})
	}
}

func TestDevCommandsNeedRoot(t *testing.T) {
	saved := geteuid
	geteuid = func() int { return 1000 }
	t.Cleanup(func() { geteuid = saved })
	for _, args := range [][]string{
		{"dev", "up", "--nodes", "1"},
		{"dev", "down"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			root := newRootCommand()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs(args)
			err := root.Execute()
			if !errors.Is(err, errNeedRoot) || !strings.Contains(err.Error(), "sudo") {
				t.Fatalf("godwit %s as a user: err = %v, want errNeedRoot saying to use sudo", strings.Join(args, " "), err)
			}
		})
	}
}

func TestLastLines(t *testing.T) {
	tests := []struct {
		name, in, want string
		n              int
	}{
		{"fewer lines than asked", "a\nb\n", "a\nb", 5},
		{"the last ones", "a\nb\nc\nd\n", "c\nd", 2},
		{"no trailing newline", "a\nb\nc", "b\nc", 2},
		{"empty", "", "", 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lastLines(tt.in, tt.n); got != tt.want {
				t.Errorf("lastLines(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
		})
	}
}

func TestRouteTable(t *testing.T) {
	nodes := []*pb.Node{
		{Name: "dev-n1", Address: "10.99.0.5:7701"},
		{Name: "dev-n2", Address: "10.99.0.6"},
		{Name: "dev-n3", Address: "not an address"},
	}
	containers := []*pb.Container{
		{Name: "web", Ip: "10.98.0.2", Node: "dev-n1"},
		{Name: "db", Ip: "10.98.0.3", Node: "dev-n2"},
		{Name: "unplaced", Ip: "10.98.0.4"},
		{Name: "no address", Node: "dev-n1"},
		{Name: "on a node without an address", Ip: "10.98.0.5", Node: "dev-n3"},
		{Name: "on an unknown node", Ip: "10.98.0.6", Node: "dev-n9"},
	}
	want := map[netip.Addr]netip.Addr{
		netip.MustParseAddr("10.98.0.2"): netip.MustParseAddr("10.99.0.5"),
		netip.MustParseAddr("10.98.0.3"): netip.MustParseAddr("10.99.0.6"),
	}
	if got := routeTable(nodes, containers); !maps.Equal(got, want) {
		t.Errorf("routeTable = %v, want %v", got, want)
	}
}
