package clustertests

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/testutil"
)

const (
	// agentDevReady bounds the dev agent's start: the embedded scheduler
	// elects itself, the agent registers, the busybox image is offered.
	agentDevReady = time.Minute
	// agentDevStop bounds its exit after SIGTERM.
	agentDevStop = 30 * time.Second
)

// TestAgentDevJustWorks is what a new user meets first: `godwit agent
// --dev &`, then `godwit run --name c1 busybox -- sleep 1000 && godwit
// ps`, with no certificate, flag or image to prepare, and no context left
// behind once the agent stops.
func TestAgentDevJustWorks(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "runc")
	bin := testutil.Godwit(t)
	dataDir := t.TempDir()
	contexts := filepath.Join(t.TempDir(), "contexts.json")
	env := devEnv(contexts)

	var log bytes.Buffer
	agent := exec.Command(bin, "agent", "--dev", "--data-dir", dataDir)
	agent.Env, agent.Stdout, agent.Stderr = env, &log, &log
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		agent.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(agentDevStop):
			agent.Process.Kill()
			<-exited
			t.Errorf("the dev agent did not stop within %s of SIGTERM", agentDevStop)
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("dev agent's log:\n%s", log.String())
		}
	})

	godwit := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Env = env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if err != nil {
			return out.String() + errOut.String(), err
		}
		return out.String(), nil
	}
	deadline := time.Now().Add(agentDevReady)
	for {
		out, err := godwit("image", "ls")
		if err == nil && strings.Contains(out, "busybox") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dev cluster has no busybox image %s after it started: %v\n%s", agentDevReady, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}

	if out, err := godwit("run", "--name", "devc1", "busybox", "--", "sleep", "1000"); err != nil {
		t.Fatalf("godwit run: %v\n%s", err, out)
	}
	t.Cleanup(func() { godwit("rm", "-f", "devc1") })
	out, err := godwit("ps", "-o", "json")
	if err != nil {
		t.Fatalf("godwit ps: %v\n%s", err, out)
	}
	var ps []struct{ Name, State, Node, IP string }
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("ps -o json: %v\n%s", err, out)
	}
	if len(ps) != 1 || ps[0].Name != "devc1" || ps[0].State != "running" || ps[0].Node != "dev" || ps[0].IP == "" {
		t.Fatalf("ps = %+v, want devc1 running on node dev with an address", ps)
	}
	// From the host, not from godwit: runc runs it.
	root := filepath.Join(dataDir, "agent", "run", "runc")
	list, err := exec.Command("runc", "--root", root, "list", "--format", "json").Output()
	if err != nil {
		t.Fatalf("runc list: %v", err)
	}
	if !bytes.Contains(list, []byte(`"org.godwit.name":"devc1"`)) || !bytes.Contains(list, []byte(`"status":"running"`)) {
		t.Fatalf("runc does not run devc1: %s", list)
	}
	if out, err := godwit("rm", "-f", "devc1"); err != nil {
		t.Fatalf("godwit rm: %v\n%s", err, out)
	}

	stop()
	data, err := os.ReadFile(contexts)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(`"dev"`)) {
		t.Errorf("the context dev is left after the dev agent stopped:\n%s", data)
	}
}
