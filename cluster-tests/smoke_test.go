package clustertests

import (
	"context"
	"io"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// This package's ranges, apart from every other test's.
var (
	smokeSubnet     = netip.MustParsePrefix("10.77.1.0/24")
	smokeContainers = netip.MustParsePrefix("10.78.1.0/24")
)

const (
	// serverPort is where the containers' HTTP servers listen.
	serverPort = "8080"
	// reachTimeout bounds the wait for a container's server to answer:
	// it starts a moment after RunContainer returns.
	reachTimeout = 10 * time.Second
	// requestTimeout bounds one request to a server.
	requestTimeout = 2 * time.Second
	// unreachableWait is how long a request with no route may hang
	// before it counts as not answered.
	unreachableWait = time.Second
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// TestContainerIsReachableFromAnotherHost is the routing model that
// migrations rely on: a container on host A, with a cluster-wide address,
// is reached by a client on host C through the cluster route via A, and
// by the root namespace, where tests run; when the address moves to host
// B (here: the container is replaced by one on B, as a restore would
// bring it up), B's agent routes it although B still has the cluster
// route via A, and moving the cluster route makes C reach it on B.
func TestContainerIsReachableFromAnotherHost(t *testing.T) {
	c := devclustertest.Start(t, devcluster.Config{Name: "cts", Subnet: smokeSubnet, ContainerCIDR: smokeContainers}, "a", "b", "c")
	a, b, client := c.Host("a"), c.Host("b"), c.Host("c")
	for _, h := range []*devcluster.Host{a, b} {
		if _, err := h.StartAgent(context.Background(), devcluster.AgentOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	devclustertest.ImportBusybox(t, a.Agent(), b.Agent())
	ip, err := c.ContainerIP()
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ip.String() + ":" + serverPort + "/"
	runServer(t, a, ip)

	t.Run("without the cluster route host c cannot reach it", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), unreachableWait)
		defer cancel()
		out, err := get(ctx, client, url)
		// The same command reaches the server below once the route is
		// set: here it fails on the network, not on its own.
		if err == nil || (ctx.Err() == nil && !strings.Contains(string(out), "can't connect")) {
			t.Fatalf("GET %s from host c with no route to it = %q, %v; want no connection", url, out, err)
		}
	})

	if err := c.Route(context.Background(), netip.PrefixFrom(ip, 32), a); err != nil {
		t.Fatal(err)
	}

	t.Run("host c reaches it via host a", func(t *testing.T) {
		if body := waitFor(t, client, url); body != served(a) {
			t.Fatalf("GET %s from host c = %q, want %q", url, body, served(a))
		}
	})

	t.Run("host b reaches it via host a", func(t *testing.T) {
		if body := waitFor(t, b, url); body != served(a) {
			t.Fatalf("GET %s from host b = %q, want %q", url, body, served(a))
		}
	})

	t.Run("the root namespace reaches it", func(t *testing.T) {
		hc := &http.Client{Timeout: requestTimeout}
		resp, err := hc.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || strings.TrimSpace(string(body)) != served(a) {
			t.Fatalf("GET %s from the root namespace = %q, %v; want %q", url, body, err, served(a))
		}
	})

	t.Run("its address moves to host b", func(t *testing.T) {
		if _, err := a.Agent().Client().RemoveContainer(context.Background(), &pb.RemoveContainerRequest{Ref: "web", Force: true}); err != nil {
			t.Fatal(err)
		}
		// b still routes the address via a here.
		runServer(t, b, ip)
		if err := c.Route(context.Background(), netip.PrefixFrom(ip, 32), b); err != nil {
			t.Fatal(err)
		}
		for _, from := range []*devcluster.Host{client, a} {
			if body := waitFor(t, from, url); body != served(b) {
				t.Fatalf("GET %s from host %s = %q, want %q", url, from.Name(), body, served(b))
			}
		}
	})
}

// served is what the server on host h answers.
func served(h *devcluster.Host) string { return "served-by-" + h.Name() }

// runServer runs an HTTP server answering served(h) on h, with address ip.
func runServer(t *testing.T, h *devcluster.Host, ip netip.Addr) {
	t.Helper()
	ct, err := h.Agent().Client().RunContainer(context.Background(), &pb.RunContainerRequest{
		Name:  "web",
		Image: devclustertest.BusyboxImage,
		Args:  []string{"sh", "-c", "echo " + served(h) + " > /www/index.html && exec httpd -f -p " + serverPort + " -h /www"},
		Ip:    ip.String(),
	})
	if err != nil {
		t.Fatalf("run the server on host %s: %v", h.Name(), err)
	}
	if ct.GetIp() != ip.String() || ct.GetNode() != h.Node() {
		t.Fatalf("container runs on %s with IP %s, want %s with %s", ct.GetNode(), ct.GetIp(), h.Node(), ip)
	}
}

// get fetches url with busybox wget run on host h. (Not wget's -T: the
// busybox 1.35 of Debian 12 crashes with it; ctx bounds the request.)
func get(ctx context.Context, h *devcluster.Host, url string) ([]byte, error) {
	return h.Exec(ctx, "/bin/busybox", "wget", "-q", "-O", "-", url)
}

// waitFor fetches url from host h until it answers or reachTimeout
// passes, and returns the answer, trimmed.
func waitFor(t *testing.T, h *devcluster.Host, url string) string {
	t.Helper()
	deadline := time.Now().Add(reachTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		out, err := get(ctx, h, url)
		cancel()
		if err == nil {
			return strings.TrimSpace(string(out))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not reachable from host %s within %s: %v", url, h.Name(), reachTimeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
