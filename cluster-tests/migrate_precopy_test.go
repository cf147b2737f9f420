package clustertests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/godwit/godwit/agent/doctor"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// TestPreCopyThereAndBack moves a workload from host a to host b and back
// by pre-copy, with a client on host c connected: the rounds ran and
// stopped on a named rule, the counter went on, the memory is the same
// bytes, the connection still answers, and exactly one copy runs. It needs
// the kernel's soft-dirty tracking and is skipped, naming it, where the
// kernel lacks it (this project's build machine does).
func TestPreCopyThereAndBack(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireKernelFeature(t, "soft-dirty", doctor.SoftDirty)
	m := startMoveCluster(t, "cpq", 41, devcluster.AgentOptions{}, devcluster.AgentOptions{})
	hosts := []*devcluster.Host{m.a, m.b}
	for i, hop := range []struct{ from, to *devcluster.Host }{{m.a, m.b}, {m.b, m.a}} {
		before := m.client.Count()
		res, err := migrate.Drive(context.Background(), migrate.Migration{
			ID: fmt.Sprintf("m-pre-copy-%d", i), Container: "w", Strategy: migrate.PreCopy,
		}, migrationAgent(hop.from), migrationAgent(hop.to), migrate.DriveOptions{})
		if err != nil {
			t.Fatalf("pre-copy %s -> %s: %v", hop.from.Name(), hop.to.Name(), err)
		}
		if pc := res.PreCopy; pc == nil || len(pc.Rounds) == 0 || pc.Rule == "" {
			t.Fatalf("pre-copy %s -> %s ran no rounds, or none stopped by a rule: %+v", hop.from.Name(), hop.to.Name(), pc)
		}
		assertOneCopy(t, "w", hop.to, hosts)
		m.assertWentOn(t, before)
		m.route(t, hop.to)
		if got := m.client.Ask("still-here"); got != "still-here" {
			t.Errorf("echo after the move = %q", got)
		}
		t.Logf("pre-copy %s -> %s: %d rounds (%s: %s), downtime %s, total %s", hop.from.Name(), hop.to.Name(),
			len(res.PreCopy.Rounds), res.PreCopy.Rule, res.PreCopy.Detail, res.Downtime, res.Total)
	}
}

// TestPreCopyRefusedWithoutSoftDirty is the other side of the same kernel
// feature: where the kernel lacks it, `godwit migrate --strategy
// pre-copy` is refused before anything stops, naming soft-dirty, and
// leaves nothing recorded; auto falls back to a strategy both agents
// support, says why not pre-copy, and moves the container. Where the
// kernel has it, both agents report pre-copy supported instead
// (TestPreCopyThereAndBack moves with it).
func TestPreCopyRefusedWithoutSoftDirty(t *testing.T) {
	testutil.RequireRoot(t)
	tracks, err := doctor.SoftDirty()
	if err != nil {
		t.Fatalf("probe the kernel for soft-dirty: %v", err)
	}
	m := startMoveCluster(t, "cpn", 42, devcluster.AgentOptions{}, devcluster.AgentOptions{})
	hosts := []*devcluster.Host{m.a, m.b}
	if tracks {
		for _, h := range hosts {
			if sup, why := preCopySupport(t, h); !sup {
				t.Errorf("agent of %s reports pre-copy unsupported (%s) on a kernel with soft-dirty tracking", h.Name(), why)
			}
		}
		return
	}
	journal := t.TempDir()
	godwit := func(args ...string) (stdout, stderr string, err error) {
		cmd := exec.Command(testutil.Godwit(t), append(args, "--from-agent", m.a.Agent().Addr(), "--to-agent", m.b.Agent().Addr(), "--journal", journal)...)
		cmd.Env = append(os.Environ(), m.c.TLSEnv()...)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		return out.String(), errOut.String(), err
	}

	before := m.client.Count()
	_, stderr, err := godwit("migrate", "w", "--strategy", "pre-copy", "--id", "m-pre-copy-refused")
	if err == nil || !strings.Contains(stderr, "soft-dirty") || !strings.Contains(stderr, "nothing was stopped") {
		t.Fatalf("migrate --strategy pre-copy: %v, want a refusal naming soft-dirty:\n%s", err, stderr)
	}
	if entries, _ := os.ReadDir(journal); len(entries) > 0 {
		t.Errorf("a refused migration left %d files in the journal", len(entries))
	}
	assertOneCopy(t, "w", m.a, hosts)
	m.assertWentOn(t, before)

	before = m.client.Count()
	stdout, stderr, err := godwit("migrate", "w", "--id", "m-pre-copy-fallback", "-o", "json")
	if err != nil {
		t.Fatalf("migrate (auto): %v\n%s", err, stderr)
	}
	var v struct {
		Strategy       string `json:"strategy"`
		StrategyReason string `json:"strategy_reason"`
		Phase          string `json:"phase"`
	}
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("migrate -o json: %v\n%s", err, stdout)
	}
	if v.Strategy == string(migrate.PreCopy) || v.Phase != string(migrate.PhaseDone) ||
		!strings.Contains(v.StrategyReason, "not pre-copy") || !strings.Contains(v.StrategyReason, "soft-dirty") {
		t.Errorf("auto chose %s (%q), phase %s: want a fallback, done, saying why not pre-copy", v.Strategy, v.StrategyReason, v.Phase)
	}
	if !strings.Contains(stderr, "strategy "+v.Strategy+": auto") {
		t.Errorf("stderr does not say which strategy and why before the progress:\n%s", stderr)
	}
	assertOneCopy(t, "w", m.b, hosts)
	m.assertWentOn(t, before)
}

// preCopySupport is what the agent of host h reports of pre-copy.
func preCopySupport(t *testing.T, h *devcluster.Host) (supported bool, reason string) {
	t.Helper()
	info, err := h.Agent().Client().NodeInfo(context.Background(), &pb.NodeInfoRequest{Strategies: true})
	if err != nil {
		t.Fatalf("node info of %s: %v", h.Name(), err)
	}
	for _, s := range info.GetStrategies() {
		if s.GetName() == string(migrate.PreCopy) {
			return s.GetSupported(), s.GetReason()
		}
	}
	t.Fatalf("agent of %s does not report pre-copy", h.Name())
	return false, ""
}
