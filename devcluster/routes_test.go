package devcluster_test

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/netnsutil"
)

// TestSyncRoutes moves a container's route between hosts with
// SyncRoutes and then drops it, from the cluster's name alone: the root
// namespace and every host route it via the host that runs it, which
// itself has no cluster route to it; a route SyncRoutes did not set is
// left alone.
func TestSyncRoutes(t *testing.T) {
	ctx := context.Background()
	c := devclustertest.Start(t, schedConfig(), "a", "b", "c")
	a, b, third := c.Host("a"), c.Host("b"), c.Host("c")
	root, err := netnsutil.Current()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	ip := netip.MustParseAddr("10.78.38.9")
	// Another route in the container CIDR, not a cluster route: the
	// agents' own routes are like it.
	if out, err := third.Exec(ctx, "ip", "route", "add", "10.78.38.10/32", "dev", "lo"); err != nil {
		t.Fatalf("%v: %s", err, out)
	}

	for _, step := range []struct {
		name string
		via  *devcluster.Host // nil: no route
	}{
		{"routed via a", a},
		{"moved to b", b},
		{"removed", nil},
	} {
		t.Run(step.name, func(t *testing.T) {
			want := map[netip.Addr]netip.Addr{}
			if step.via != nil {
				want[ip] = step.via.Addr()
			}
			if err := devcluster.SyncRoutes(ctx, schedClusterName, root, want); err != nil {
				t.Fatal(err)
			}
			// Twice changes nothing, and fails in nothing.
			if err := devcluster.SyncRoutes(ctx, schedClusterName, root, want); err != nil {
				t.Fatalf("second sync: %v", err)
			}
			expect := func(where, got string, via *devcluster.Host) {
				t.Helper()
				has := strings.Contains(got, ip.String()+" via ")
				switch {
				case via == nil && has:
					t.Errorf("%s routes %s after it was removed:\n%s", where, ip, got)
				case via != nil && !strings.Contains(got, ip.String()+" via "+via.Addr().String()+" "):
					t.Errorf("%s does not route %s via host %s (%s):\n%s", where, ip, via.Name(), via.Addr(), got)
				}
			}
			out, err := exec.Command("ip", "route", "show", "dev", "gwd-"+schedClusterName).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			expect("the root namespace", string(out), step.via)
			for _, h := range []*devcluster.Host{a, b, third} {
				out, err := h.Exec(ctx, "ip", "route")
				if err != nil {
					t.Fatal(err)
				}
				via := step.via
				if via == h {
					via = nil // its agent routes its own containers
				}
				expect("host "+h.Name(), string(out), via)
				if h == third && !strings.Contains(string(out), "10.78.38.10 dev lo") {
					t.Errorf("host c lost a route SyncRoutes did not set:\n%s", out)
				}
			}
		})
	}
}
