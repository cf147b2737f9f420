package main

import (
	"errors"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/clictx"
	"github.com/godwit/godwit/internal/pki"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func TestResolveTarget(t *testing.T) {
	ctxTLS := pki.Files{CA: "/dev/ca.pem", Cert: "/dev/op.pem", Key: "/dev/op-key.pem"}
	flagTLS := pki.Files{CA: "/flag/ca.pem", Cert: "/flag/op.pem", Key: "/flag/op-key.pem"}
	dev := &clictx.File{Path: "/cfg/contexts.json", CurrentName: "dev",
		Contexts: []clictx.Context{{Name: "dev", Addr: "10.0.0.1:7700", TLS: ctxTLS}, {Name: "lab", Addr: "127.0.0.1:7700", Insecure: true}}}
	lab := &clictx.File{Path: dev.Path, CurrentName: "lab", Contexts: dev.Contexts}
	none := &clictx.File{Path: dev.Path}
	gone := &clictx.File{Path: dev.Path, CurrentName: "old", Contexts: dev.Contexts}
	const defaultAgent = "127.0.0.1:7701"
	tests := []struct {
		name string
		in   targetInputs
		file *clictx.File
		// fileErr fails loading the contexts file.
		fileErr error
		want    target
		wantErr string
	}{
		{name: "--addr beats the environment and the context", file: dev,
			in:   targetInputs{addrGiven: true, addr: "10.9.9.9:7700", envAgent: "10.0.0.5:7701", envAddr: "10.0.0.6:7700"},
			want: target{kind: clusterTarget, addr: "10.9.9.9:7700", from: "--addr", tls: ctxTLS, tlsContext: "dev"}},
		{name: "--agent beats GODWIT_ADDR", file: none,
			in:   targetInputs{agentGiven: true, agent: "10.0.0.7:7701", envAddr: "10.0.0.6:7700"},
			want: target{kind: agentTarget, addr: "10.0.0.7:7701", from: "--agent"}},
		{name: "GODWIT_ADDR beats the context", file: dev, in: targetInputs{agent: defaultAgent, envAddr: "10.0.0.6:7700"},
			want: target{kind: clusterTarget, addr: "10.0.0.6:7700", from: "GODWIT_ADDR", tls: ctxTLS, tlsContext: "dev"}},
		{name: "GODWIT_AGENT beats the context", file: dev, in: targetInputs{agent: "10.0.0.5:7701", envAgent: "10.0.0.5:7701"},
			want: target{kind: agentTarget, addr: "10.0.0.5:7701", from: "GODWIT_AGENT", tls: ctxTLS, tlsContext: "dev"}},
		{name: "the current context", file: dev, in: targetInputs{agent: defaultAgent},
			want: target{kind: clusterTarget, addr: "10.0.0.1:7700", from: "context dev", tls: ctxTLS, tlsContext: "dev"}},
		{name: "an insecure context gives no TLS", file: lab, in: targetInputs{agent: defaultAgent},
			want: target{kind: clusterTarget, addr: "127.0.0.1:7700", from: "context lab"}},
		{name: "TLS flags beat the context's", file: dev, in: targetInputs{agent: defaultAgent, tls: flagTLS},
			want: target{kind: clusterTarget, addr: "10.0.0.1:7700", from: "context dev", tls: flagTLS}},
		{name: "nothing: the default agent, as before contexts", file: none, in: targetInputs{agent: defaultAgent},
			want: target{kind: agentTarget, addr: defaultAgent, from: fromDefault}},
		{name: "an explicit target with TLS flags never reads the file", fileErr: errors.New("broken"),
			in:   targetInputs{agentGiven: true, agent: "10.0.0.7:7701", tls: flagTLS},
			want: target{kind: agentTarget, addr: "10.0.0.7:7701", from: "--agent", tls: flagTLS}},
		{name: "both flags", file: none, in: targetInputs{addrGiven: true, agentGiven: true, addr: "a:1", agent: "b:2"},
			wantErr: "--addr and --agent both given"},
		{name: "both variables", file: none, in: targetInputs{agent: "b:2", envAddr: "a:1", envAgent: "b:2"},
			wantErr: "GODWIT_ADDR and GODWIT_AGENT are both set"},
		{name: "an empty --addr", file: none, in: targetInputs{addrGiven: true, agent: defaultAgent}, wantErr: "--addr is empty"},
		{name: "the current context is gone", file: gone, in: targetInputs{agent: defaultAgent}, wantErr: `the current context "old" is not in /cfg/contexts.json`},
		{name: "a broken file without a target", fileErr: errors.New("contexts file: bad JSON"), in: targetInputs{agent: defaultAgent},
			wantErr: "bad JSON; or give --addr"},
		{name: "a broken file with a target and no TLS flags", fileErr: errors.New("contexts file: bad JSON"),
			in: targetInputs{addrGiven: true, addr: "a:1"}, wantErr: "bad JSON; or give --tls-ca"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.contexts = func() (*clictx.File, error) { return tt.file, tt.fileErr }
			got, err := resolveTarget(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolveTarget: %+v, %v; want an error saying %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("resolveTarget = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestTargetSelectionEndToEnd runs `godwit ps` with flags, environment
// and a context pointing at different servers, and checks which one
// answered: flag > environment > context.
func TestTargetSelectionEndToEnd(t *testing.T) {
	container := func(name string) *pb.Container {
		return &pb.Container{Name: name, State: pb.ContainerState_CONTAINER_STATE_RUNNING}
	}
	type servers struct{ flagCluster, envCluster, ctxCluster, agent string }
	tests := []struct {
		name string
		args func(s servers) []string
		env  func(s servers) map[string]string
		want string
	}{
		{name: "--addr over GODWIT_AGENT",
			args: func(s servers) []string { return []string{"--addr", s.flagCluster} },
			env:  func(s servers) map[string]string { return map[string]string{envAgentAddr: s.agent} },
			want: "flag-cluster"},
		{name: "--agent over GODWIT_ADDR and the context",
			args: func(s servers) []string { return []string{"--agent", s.agent} },
			env:  func(s servers) map[string]string { return map[string]string{envClusterAddr: s.envCluster} },
			want: "agent"},
		{name: "GODWIT_ADDR over the context",
			env:  func(s servers) map[string]string { return map[string]string{envClusterAddr: s.envCluster} },
			want: "env-cluster"},
		{name: "GODWIT_AGENT over the context",
			env:  func(s servers) map[string]string { return map[string]string{envAgentAddr: s.agent} },
			want: "agent"},
		{name: "the context", want: "context-cluster"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateCLI(t)
			s := servers{
				flagCluster: serveCluster(t, &fakeCluster{containers: []*pb.Container{container("flag-cluster")}}, nil),
				envCluster:  serveCluster(t, &fakeCluster{containers: []*pb.Container{container("env-cluster")}}, nil),
				ctxCluster:  serveCluster(t, &fakeCluster{containers: []*pb.Container{container("context-cluster")}}, nil),
				agent:       serveListAgent(t, container("agent")),
			}
			if err := clictx.Save(clictx.Context{Name: "dev", Addr: s.ctxCluster, Insecure: true}, true); err != nil {
				t.Fatal(err)
			}
			var args []string
			if tt.args != nil {
				args = tt.args(s)
			}
			if tt.env != nil {
				for k, v := range tt.env(s) {
					t.Setenv(k, v)
				}
			}
			out, _, err := runCLI(t, append(args, "ps")...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out, tt.want) {
				t.Errorf("ps printed\n%s\nwant the container of %s", out, tt.want)
			}
		})
	}
}

// TestClusterTLS talks to a scheduler that serves mutual TLS with the
// context's files or the flags', and checks what each mismatch says.
func TestClusterTLS(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	schedulerID, err := pki.Load(issueFiles(t, ca, "s1", pki.RoleScheduler))
	if err != nil {
		t.Fatal(err)
	}
	serverCfg, err := schedulerID.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	agentID, err := pki.Load(issueFiles(t, ca, "n1", pki.RoleAgent))
	if err != nil {
		t.Fatal(err)
	}
	agentCfg, err := agentID.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	operator, stranger := issueFiles(t, ca, "op", pki.RoleOperator), issueFiles(t, other, "op", pki.RoleOperator)
	flagsFor := func(f pki.Files) []string {
		return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}
	}
	f := sampleCluster()
	tlsScheduler := serveCluster(t, f, serverCfg)
	plainScheduler := serveCluster(t, sampleCluster(), nil)
	agentAsScheduler := serveCluster(t, sampleCluster(), agentCfg)

	tests := []struct {
		name string
		// ctx is the current context, if any.
		ctx  *clictx.Context
		args []string
		// want are parts of the error; none for success.
		want []string
	}{
		{name: "the context's TLS files", ctx: &clictx.Context{Name: "prod", Addr: tlsScheduler, TLS: operator}},
		{name: "flags override the context's files", ctx: &clictx.Context{Name: "prod", Addr: tlsScheduler, TLS: stranger},
			args: flagsFor(operator)},
		{name: "--addr with the flags", args: append([]string{"--addr", tlsScheduler}, flagsFor(operator)...)},
		{name: "plaintext to a TLS scheduler", args: []string{"--addr", tlsScheduler},
			want: []string{"the scheduler at " + tlsScheduler + " (from --addr)", "serves TLS", "--tls-ca", "GODWIT_TLS_CA"}},
		{name: "TLS to a plaintext scheduler", args: append([]string{"--addr", plainScheduler}, flagsFor(operator)...),
			want: []string{"serves plaintext", "--insecure"}},
		{name: "another CA's files, from a context", ctx: &clictx.Context{Name: "prod", Addr: tlsScheduler, TLS: stranger},
			want: []string{"not trusted", "--tls-ca", "(from context prod)", "the TLS files came from context prod"}},
		{name: "an agent posing as a scheduler", args: append([]string{"--addr", agentAsScheduler}, flagsFor(operator)...),
			want: []string{`the peer "n1" has the agent role`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateCLI(t)
			if tt.ctx != nil {
				if err := clictx.Save(*tt.ctx, true); err != nil {
					t.Fatal(err)
				}
			}
			out, _, err := runCLI(t, append(tt.args, "node", "ls")...)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("node ls: %v", err)
				}
				if !strings.Contains(out, "10.0.0.11:7701") {
					t.Errorf("node ls printed %q, want the nodes", out)
				}
				return
			}
			if err == nil {
				t.Fatal("node ls succeeded, want refused")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestUnreachableSchedulerSaysWhichTarget(t *testing.T) {
	tests := []struct {
		name    string
		ctx     bool
		args    []string
		env     string
		wantSrc string
		advice  string
	}{
		{name: "from a context", ctx: true, wantSrc: "(from context dev)", advice: "godwit context show dev"},
		{name: "from --addr", args: []string{"--addr", "ADDR"}, wantSrc: "(from --addr)", advice: "Check --addr"},
		{name: "from GODWIT_ADDR", env: "ADDR", wantSrc: "(from GODWIT_ADDR)", advice: "Check GODWIT_ADDR"},
	}
	dead := deadAddress(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateCLI(t)
			if tt.ctx {
				if err := clictx.Save(clictx.Context{Name: "dev", Addr: dead, Insecure: true}, true); err != nil {
					t.Fatal(err)
				}
			}
			if tt.env != "" {
				t.Setenv(envClusterAddr, dead)
			}
			args := make([]string, len(tt.args))
			for i, a := range tt.args {
				args[i] = strings.ReplaceAll(a, "ADDR", dead)
			}
			_, _, err := runCLI(t, append(args, "cluster", "status")...)
			want := []string{"cannot reach the scheduler at " + dead + " " + tt.wantSrc, "is `godwit scheduler` running there?", tt.advice}
			for _, w := range want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not say %q", err, w)
				}
			}
		})
	}
}

// deadAddress is a loopback address where nothing listens: a port the
// kernel handed out and that was closed again.
func deadAddress(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestTheDefaultAgentIsStillTheDefault: without --addr, --agent, their
// variables or a context, commands talk to the agent as before, and an
// unreachable one says it was the default.
func TestTheDefaultAgentIsStillTheDefault(t *testing.T) {
	path := isolateCLI(t)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("contexts file %s: %v", path, err)
	}
	root := newRootCommand()
	root.SetArgs([]string{"--agent", unreachableAgent, "ps"}) // the flag, not the default: the test must not dial a real agent
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "cannot reach the agent at "+unreachableAgent+" (from --agent)") {
		t.Errorf("ps: %v", err)
	}
	in := targetInputs{agent: "127.0.0.1:7701", contexts: clictx.Load}
	got, err := resolveTarget(in)
	if err != nil || got.kind != agentTarget || got.addr != "127.0.0.1:7701" || !strings.Contains(got.fromNote(), "no --addr, --agent or current context") {
		t.Errorf("no target: %+v, %v; want the default agent", got, err)
	}
}
