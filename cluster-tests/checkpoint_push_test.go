package clustertests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// pushRanges is this file's N in 10.77.N.0/24 (hosts) and 10.78.N.0/24
// (containers), apart from every other test's.
const pushRanges = 70

// checkpointTimeout bounds the checkpoint of the test's workload.
const checkpointTimeout = 2 * time.Minute

// pushedView is what `godwit checkpoint push -o json` and `checkpoint
// ls -o json` print, as far as this test reads it.
type pushedView struct {
	ID             string `json:"id"`
	Container      string `json:"container"`
	Node           string `json:"node"`
	ManifestDigest string `json:"manifest_digest"`
	AlreadyPresent bool   `json:"already_present"`
	KeptOn         string `json:"kept_on"`
}

// TestCheckpointPushedAndRestoredElsewhere: the workload, checkpointed
// (stopped) on host a, is pushed by a's agent to b's (over mutual TLS,
// with a's node certificate), which lists the checkpoint under the same
// ID; restored on b, a node it never ran on, it counts on from where it
// was with the same memory, answering the connection a client on host c
// held open all along; a still lists its own copy, and pushing again
// changes nothing.
func TestCheckpointPushedAndRestoredElsewhere(t *testing.T) {
	m := startMoveCluster(t, "ctp", pushRanges, devcluster.AgentOptions{}, devcluster.AgentOptions{})
	hosts := []*devcluster.Host{m.a, m.b}
	before := m.client.Count()

	ctx, cancel := context.WithTimeout(context.Background(), checkpointTimeout)
	defer cancel()
	cp, err := agentclient.Checkpoint(ctx, m.a.Agent().Client(), &pb.CheckpointRequest{Container: "w"}, nil)
	if err != nil {
		t.Fatalf("checkpoint the workload on a: %v", err)
	}
	if running := runningOn(t, "w", hosts); len(running) != 0 {
		t.Fatalf("the workload runs on %v after its checkpoint, want stopped", running)
	}

	godwit := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command(testutil.Godwit(t), args...)
		cmd.Env = append(os.Environ(), m.c.TLSEnv()...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("godwit %v: %v\n%s%s", args, err, out, stderr.Bytes())
		}
		return out
	}
	push := func() pushedView {
		t.Helper()
		var v pushedView
		out := godwit("--agent", m.a.Agent().Addr(), "checkpoint", "push", cp.GetId(), "--to", m.b.Agent().Addr(), "-o", "json")
		if err := json.Unmarshal(out, &v); err != nil {
			t.Fatalf("checkpoint push -o json: %v: %s", err, out)
		}
		return v
	}
	listed := func(h *devcluster.Host) []pushedView {
		t.Helper()
		var vs []pushedView
		out := godwit("--agent", h.Agent().Addr(), "checkpoint", "ls", "-o", "json")
		if err := json.Unmarshal(out, &vs); err != nil {
			t.Fatalf("checkpoint ls -o json on %s: %v: %s", h.Name(), err, out)
		}
		return vs
	}
	has := func(vs []pushedView) bool {
		return slices.ContainsFunc(vs, func(v pushedView) bool {
			return v.ID == cp.GetId() && v.Container == "w" && v.Node == m.a.Node()
		})
	}

	pushed := push()
	if pushed.ID != cp.GetId() || pushed.KeptOn != m.b.Node() || pushed.AlreadyPresent || pushed.ManifestDigest == "" {
		t.Fatalf("push = %+v, want checkpoint %s newly kept on %s with its digest", pushed, cp.GetId(), m.b.Node())
	}
	if vs := listed(m.b); !has(vs) {
		t.Fatalf("checkpoint ls on b = %+v, want checkpoint %s of w, dumped on %s", vs, cp.GetId(), m.a.Node())
	}
	if vs := listed(m.a); !has(vs) {
		t.Fatalf("checkpoint ls on a = %+v, want its own copy of %s still", vs, cp.GetId())
	}
	if again := push(); !again.AlreadyPresent || again.ManifestDigest != pushed.ManifestDigest {
		t.Fatalf("push again = %+v, want already present with digest %s", again, pushed.ManifestDigest)
	}

	godwit("--agent", m.b.Agent().Addr(), "restore", "w", "--checkpoint", cp.GetId())
	m.route(t, m.b)
	assertOneCopy(t, "w", m.b, hosts)
	m.assertWentOn(t, before)
	if got := m.client.Ask("pushed"); got != "pushed" {
		t.Errorf("echo after the restore on b = %q", got)
	}
}
