package clustertests

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/testutil"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// TestTLSAgents runs the cluster's agents over mutual TLS, as devcluster
// starts them by default: a stop-copy move between two of them goes
// through, its images on a TLS data connection; an agent whose
// certificate another CA signed (a node of another cluster) cannot send
// to them, and the move fails before the dump with its container running
// on; and the CLI without certificates is told what to pass.
func TestTLSAgents(t *testing.T) {
	m := startMoveCluster(t, "ctt", 11, devcluster.AgentOptions{}, devcluster.AgentOptions{})
	for _, h := range []*devcluster.Host{m.a, m.b} {
		if h.Agent().Insecure() {
			t.Fatalf("the agent on host %s runs --insecure: devcluster's agents must serve TLS by default", h.Name())
		}
	}

	t.Run("stop-copy between two TLS agents", func(t *testing.T) {
		before := m.client.Count()
		res, err := migrate.Drive(context.Background(), migrate.Migration{ID: "m-tls", Container: "w", Strategy: migrate.StopCopy},
			migrationAgent(m.a), migrationAgent(m.b), migrate.DriveOptions{})
		if err != nil {
			t.Fatalf("move a -> b over TLS: %v", err)
		}
		assertOneCopy(t, "w", m.b, []*devcluster.Host{m.a, m.b})
		m.assertWentOn(t, before)
		m.route(t, m.b)
		if got := m.client.Ask("over-tls"); got != "over-tls" {
			t.Errorf("echo after the move = %q", got)
		}
		t.Logf("stop-copy over TLS: downtime %s, total %s, %d bytes", res.Downtime, res.Total, res.BytesSent)
	})

	t.Run("an agent of another CA cannot send", func(t *testing.T) {
		ctx := context.Background()
		other, err := pki.NewCA("another cluster")
		if err != nil {
			t.Fatal(err)
		}
		x, err := m.c.AddHost(ctx, "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := x.StartAgent(ctx, devcluster.AgentOptions{CA: other}); err != nil {
			t.Fatal(err)
		}
		importWorkload(t, x.Agent())
		ip, err := m.c.ContainerIP()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := x.Agent().Client().RunContainer(ctx, &pb.RunContainerRequest{
			Name: "v", Image: workloadImage, Args: []string{testutil.WorkloadPath, "-mem", "16"}, Ip: ip.String(),
		}); err != nil {
			t.Fatal(err)
		}
		hosts := []*devcluster.Host{x, m.b}
		assertOneCopy(t, "v", x, hosts)

		res, err := migrate.Drive(ctx, migrate.Migration{ID: "m-stranger", Container: "v", Strategy: migrate.StopCopy},
			migrationAgent(x), migrationAgent(m.b), quickAbort)
		if err == nil {
			t.Fatal("an agent of another CA sent a container to the cluster's agent")
		}
		t.Logf("the refused move: %v", err)
		for _, want := range []string{"cannot open a data connection to the destination", "certificate"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("move error %q does not say %q", err, want)
			}
		}
		if res == nil || res.Record == nil {
			t.Fatalf("no record of the refused move: %v", res)
		}
		if _, dumped := res.Record.Started[migrate.PhaseDump]; dumped || res.Record.Phase != migrate.PhaseAborted {
			t.Errorf("the refused move reached phase %s (dump started: %v); want aborted before the dump", res.Record.Phase, dumped)
		}
		assertOneCopy(t, "v", x, hosts)
		if log := m.b.Agent().LogTail(); !strings.Contains(log, "TLS handshake failed") {
			t.Errorf("the destination did not log the refused handshake; its log ends:\n%s", log)
		}
	})

	t.Run("the CLI without certificates is told what to pass", func(t *testing.T) {
		godwit := func(env []string, args ...string) (string, error) {
			cmd := exec.Command(testutil.Godwit(t), append([]string{"--agent", m.b.Agent().Addr()}, args...)...)
			cmd.Env = append(os.Environ(), "GODWIT_TLS_CA=", "GODWIT_TLS_CERT=", "GODWIT_TLS_KEY=")
			cmd.Env = append(cmd.Env, env...)
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		out, err := godwit(nil, "ps")
		if err == nil {
			t.Fatalf("a plaintext CLI listed a TLS agent's containers:\n%s", out)
		}
		for _, want := range []string{"serves TLS", "--tls-ca", "GODWIT_TLS_CA"} {
			if !strings.Contains(out, want) {
				t.Errorf("plaintext CLI against a TLS agent says %q, want %q in it", strings.TrimSpace(out), want)
			}
		}
		out, err = godwit(m.c.TLSEnv(), "ps", "-o", "json")
		if err != nil || !strings.Contains(out, `"name": "w"`) {
			t.Errorf("godwit ps with the cluster's TLS files: %v\n%s\nwant the moved container w listed", err, out)
		}
	})
}
