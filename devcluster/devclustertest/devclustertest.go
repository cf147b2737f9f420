// Package devclustertest starts devcluster clusters for tests: gated on
// root and the tools the agents need, built from this tree's godwit, and
// removed when the test ends, whether it passed, failed or was stopped.
package devclustertest

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
)

// Start creates a cluster with cfg and the named hosts, and registers its
// Close with t.Cleanup; it removes first what an interrupted run of a
// cluster of the same name left behind (devcluster.New does). It skips t
// (fails it under CI=true) without root, runc or nsenter. An empty
// cfg.Bin is this tree's godwit, built once per test binary (the package
// calls testutil.RemoveBuilds from TestMain); a nil cfg.Log writes to the
// test's output. When t has failed, the end of every agent's and
// scheduler's log is printed before the cluster goes.
func Start(t testing.TB, cfg devcluster.Config, hosts ...string) *devcluster.Cluster {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc", "nsenter")
	if cfg.Bin == "" {
		cfg.Bin = testutil.Godwit(t)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx := context.Background()
	c, err := devcluster.New(ctx, cfg)
	if err != nil {
		t.Fatalf("create cluster %s: %v", cfg.Name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, h := range c.Hosts() {
				if a := h.Agent(); a != nil {
					t.Logf("log of agent %s (end):\n%s", a, a.LogTail())
				}
				if s := h.Scheduler(); s != nil {
					t.Logf("log of scheduler %s (end):\n%s", s, s.LogTail())
				}
			}
		}
		if err := c.Close(); err != nil {
			t.Errorf("remove cluster %s: %v", cfg.Name, err)
		}
	})
	for _, name := range hosts {
		if _, err := c.AddHost(ctx, name); err != nil {
			t.Fatalf("add host %s to cluster %s: %v", name, cfg.Name, err)
		}
	}
	return c
}

// StartAgents starts an agent with opts on every host of c and fails t if
// one does not come up.
func StartAgents(t testing.TB, c *devcluster.Cluster, opts devcluster.AgentOptions) {
	t.Helper()
	for _, h := range c.Hosts() {
		if _, err := h.StartAgent(context.Background(), opts); err != nil {
			t.Fatalf("start agent on host %s: %v", h.Name(), err)
		}
	}
}

// BusyboxImage is the name ImportBusybox gives the image.
const BusyboxImage = "busybox"

// ImportBusybox imports a busybox root filesystem (testutil.BusyboxTar) as
// the image BusyboxImage into each agent.
func ImportBusybox(t testing.TB, agents ...*devcluster.Agent) {
	t.Helper()
	tarball := filepath.Join(t.TempDir(), "busybox.tar")
	testutil.BusyboxTar(t, tarball)
	for _, a := range agents {
		f, err := os.Open(tarball)
		if err != nil {
			t.Fatal(err)
		}
		_, err = agentclient.ImportImage(context.Background(), a.Client(), f, BusyboxImage, 0)
		f.Close()
		if err != nil {
			t.Fatalf("import busybox into %s: %v", a, err)
		}
	}
}
