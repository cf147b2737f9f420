package clustertests

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/internal/testutil"
)

// demoTimeout bounds the README's main job: about 20 s here.
const demoTimeout = 5 * time.Minute

// TestDemo runs the README's main job, scripts/demo.sh (`make demo`), with
// the binary under test: two agents on this machine over mutual TLS, a
// container moved from n1 to n2 and back with its counter, checkpointed
// into an encrypted archive and removed. The script stops at the first
// step that fails; the test also checks that both moves were made and
// that nothing is left.
func TestDemo(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireTools(t, "criu", "runc", "iptables", "busybox")
	ctx, cancel := context.WithTimeout(context.Background(), demoTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "../scripts/demo.sh")
	// Ports of their own, and none of the caller's agent or credentials.
	cmd.Env = append(os.Environ(), "GODWIT_BIN="+testutil.Godwit(t), "GODWIT_DEMO_PORT=17701",
		"GODWIT_AGENT=", "GODWIT_TLS_CA=", "GODWIT_TLS_CERT=", "GODWIT_TLS_KEY=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/demo.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"migrated c1 from 127.0.0.1:17701 to 127.0.0.1:17702", // there, as text
		`"phase": "done"`, // and back, as JSON
		"demo done",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
}
