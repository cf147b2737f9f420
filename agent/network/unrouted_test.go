package network

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestSetupUnroutedIsReachableOnlyAfterRoute(t *testing.T) {
	requireNetAdmin(t)
	m, nodePath := newNodeManager(t, "10.250.64.0/24")
	t.Cleanup(func() { _ = m.Teardown(context.Background(), "unrouted-c1") })
	ep, err := m.SetupUnrouted(t.Context(), "unrouted-c1", nil)
	if err != nil {
		t.Fatalf("SetupUnrouted: %v", err)
	}
	if !ep.Attached || ep.Routed {
		t.Errorf("SetupUnrouted returned %+v, want attached and not routed", *ep)
	}
	addr := serveEcho(t, ep)
	if err := echoFrom(t, nodePath, addr); err == nil {
		t.Error("the node reached a container whose network is not routed yet")
	}
	for _, l := range m.Leftovers(ep.ContainerID) {
		if strings.HasPrefix(l, "route ") {
			t.Errorf("unrouted network has %s", l)
		}
	}
	if _, err := m.Setup(t.Context(), "unrouted-c1", nil); !errors.Is(err, ErrExists) {
		t.Errorf("Setup of an unrouted container: %v, want ErrExists", err)
	}

	for i := range 2 { // the second Route does nothing
		if err := m.Route(t.Context(), "unrouted-c1"); err != nil {
			t.Fatalf("Route #%d: %v", i+1, err)
		}
	}
	if err := echoFrom(t, nodePath, addr); err != nil {
		t.Errorf("after Route: %v", err)
	}
	if got, err := m.Lookup("unrouted-c1"); err != nil || !got.Routed {
		t.Errorf("Lookup after Route = %+v, %v; want routed", got, err)
	}
	if err := m.Route(t.Context(), "unknown-c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Route of an unknown container: %v, want ErrNotFound", err)
	}
}
