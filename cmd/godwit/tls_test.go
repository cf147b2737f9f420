package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/pki"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// tlsEnv names the CLI's TLS environment variables.
var tlsEnv = []string{"GODWIT_TLS_CA", "GODWIT_TLS_CERT", "GODWIT_TLS_KEY"}

// clearTLSEnv makes the CLI under test start with no TLS files, whatever
// the test's environment holds.
func clearTLSEnv(t *testing.T) {
	for _, e := range tlsEnv {
		t.Setenv(e, "")
	}
}

func TestTLSFlagsFromEnvironment(t *testing.T) {
	clearTLSEnv(t)
	t.Setenv("GODWIT_TLS_CA", "/ca.pem")
	t.Setenv("GODWIT_TLS_CERT", "/cert.pem")
	t.Setenv("GODWIT_TLS_KEY", "/key.pem")
	root := newRootCommand()
	for flag, want := range map[string]string{"tls-ca": "/ca.pem", "tls-cert": "/cert.pem", "tls-key": "/key.pem"} {
		got, err := root.PersistentFlags().GetString(flag)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("--%s default = %q, want %q from the environment", flag, got, want)
		}
	}
}

func TestPartialTLSFilesNameWhatIsMissing(t *testing.T) {
	tests := []struct {
		name  string
		files pki.Files
		want  []string
	}{
		{"no key", pki.Files{CA: "ca.pem", Cert: "cert.pem"}, []string{"--tls-key (or GODWIT_TLS_KEY)"}},
		{"only the key", pki.Files{Key: "key.pem"}, []string{"--tls-ca (or GODWIT_TLS_CA)", "--tls-cert (or GODWIT_TLS_CERT)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := loadClientTLS(tt.files)
			if err == nil {
				t.Fatal("loaded half a TLS configuration")
			}
			for _, w := range append(tt.want, "give none to talk plaintext") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
	if cfg, err := loadClientTLS(pki.Files{}); cfg != nil || err != nil {
		t.Errorf("no files: %v, %v; want plaintext (nil, nil)", cfg, err)
	}
}

func TestAgentNeedsTLSOrInsecure(t *testing.T) {
	ca := mustCA(t)
	good := issueFiles(t, ca, "n1", pki.RoleAgent)
	scheduler := issueFiles(t, ca, "s1", pki.RoleScheduler)
	tests := []struct {
		name     string
		files    pki.Files
		insecure bool
		// want is a part of the error; empty for success.
		want string
	}{
		{"neither says exactly what to pass", pki.Files{}, false, "--tls-ca CA.pem --tls-cert NODE.pem --tls-key NODE-KEY.pem"},
		{"neither mentions --insecure", pki.Files{}, false, "--insecure"},
		{"a missing key", pki.Files{CA: good.CA, Cert: good.Cert}, false, "missing --tls-key"},
		{"TLS and --insecure", good, true, "drop one or the other"},
		{"a file that is not there", pki.Files{CA: good.CA, Cert: good.Cert + ".nope", Key: good.Key}, false, good.Cert + ".nope"},
		{"all three", good, false, ""},
		{"a scheduler's certificate", scheduler, false, "--role agent"},
		{"--insecure alone", pki.Files{}, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := agentIdentity(tt.files, tt.insecure)
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("agentIdentity: %v", err)
			case tt.want == "" && (id == nil) != tt.insecure:
				t.Fatalf("identity %v with --insecure %v", id, tt.insecure)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("agentIdentity: %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// nodeInfoAgent answers NodeInfo only.
type nodeInfoAgent struct {
	pb.UnimplementedAgentServiceServer
}

func (nodeInfoAgent) NodeInfo(context.Context, *pb.NodeInfoRequest) (*pb.NodeInfoResponse, error) {
	return &pb.NodeInfoResponse{Name: "n1", Address: "127.0.0.1:7701"}, nil
}

// serveAgent serves nodeInfoAgent behind a data channel Mux with the
// agent's identity id (nil: plaintext, --insecure), as `godwit agent`
// does, its policy included, and returns its address.
func serveAgent(t *testing.T, id *pki.Identity) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var cfg datachan.Config
	if id != nil {
		if cfg.TLS, err = id.ServerConfig(); err != nil {
			t.Fatal(err)
		}
		cfg.ClientTLS = id.ClientConfig()
	}
	mux := datachan.Listen(lis, cfg)
	t.Cleanup(func() { mux.Close() })
	srv := agentServer(mux, id, slog.New(slog.DiscardHandler))
	pb.RegisterAgentServiceServer(srv, nodeInfoAgent{})
	go func() { _ = srv.Serve(mux.RPCListener()) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// issueFiles issues name's certificate of ca with role, for 127.0.0.1
// when the role serves.
func issueFiles(t *testing.T, ca *pki.CA, name string, role pki.Role) pki.Files {
	t.Helper()
	req := pki.CertRequest{Name: name, Role: role}
	if role.Serves() {
		req.Hosts = []string{"127.0.0.1"}
	}
	f, err := ca.IssueTo(filepath.Join(t.TempDir(), name), req)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func loadIdentity(t *testing.T, f pki.Files) *pki.Identity {
	t.Helper()
	id, err := pki.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestCLIExplainsTLSMismatches runs `godwit node info` against agents
// that serve TLS or plaintext, with and without the CLI's TLS files: a
// match works; a mismatch says which flag or environment variable to
// change, never a bare "connection closed".
func TestCLIExplainsTLSMismatches(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	tlsAgent := serveAgent(t, loadIdentity(t, issueFiles(t, ca, "n1", pki.RoleAgent)))
	plainAgent := serveAgent(t, nil)
	operator, stranger := issueFiles(t, ca, "operator", pki.RoleOperator), issueFiles(t, other, "stranger", pki.RoleOperator)
	tests := []struct {
		name  string
		agent string
		files pki.Files
		// want are parts of the error; none for success.
		want []string
	}{
		{"TLS with the cluster's files", tlsAgent, operator, nil},
		{"plaintext to a plaintext agent", plainAgent, pki.Files{}, nil},
		{"plaintext to a TLS agent", tlsAgent, pki.Files{}, []string{"serves TLS", "--tls-ca", "GODWIT_TLS_CA"}},
		{"TLS to a plaintext agent", plainAgent, operator, []string{"serves plaintext", "--insecure", "GODWIT_TLS_CA"}},
		{"TLS with another CA's files", tlsAgent, stranger, []string{"--tls-ca", "not trusted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearTLSEnv(t)
			args := []string{"--agent", tt.agent}
			if !tt.files.IsZero() {
				args = append(args, "--tls-ca", tt.files.CA, "--tls-cert", tt.files.Cert, "--tls-key", tt.files.Key)
			}
			root := newRootCommand()
			var stdout, stderr bytes.Buffer
			root.SetOut(&stdout)
			root.SetErr(&stderr)
			root.SetArgs(append(args, "node", "info"))
			err := root.ExecuteContext(context.Background())
			if tt.want == nil {
				if err != nil {
					t.Fatalf("node info: %v", err)
				}
				if !strings.Contains(stdout.String(), "n1") {
					t.Errorf("node info printed %q, want the node's name", stdout.String())
				}
				return
			}
			if err == nil {
				t.Fatal("node info succeeded, want refused")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func mustCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestCLIIsToldWhichRoleItNeeds runs commands against an agent with
// certificates of each client role: a viewer reads, and its write is
// refused with the role to ask for; an operator's write reaches the
// agent.
func TestCLIIsToldWhichRoleItNeeds(t *testing.T) {
	ca := mustCA(t)
	agent := serveAgent(t, loadIdentity(t, issueFiles(t, ca, "n1", pki.RoleAgent)))
	viewer, operator := issueFiles(t, ca, "vera", pki.RoleViewer), issueFiles(t, ca, "otto", pki.RoleOperator)
	tests := []struct {
		name  string
		files pki.Files
		args  []string
		// want are parts of the error; none for success.
		want []string
	}{
		{"a viewer reads", viewer, []string{"node", "info"}, nil},
		{"a viewer stops a container", viewer, []string{"stop", "c1"},
			[]string{`viewer "vera" cannot call StopContainer`, "--role operator"}},
		// nodeInfoAgent serves nothing else: the operator's stop reaches
		// the agent, which answers Unimplemented.
		{"an operator stops a container", operator, []string{"stop", "c1"}, []string{"StopContainer not implemented"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearTLSEnv(t)
			root := newRootCommand()
			var stdout, stderr bytes.Buffer
			root.SetOut(&stdout)
			root.SetErr(&stderr)
			root.SetArgs(append([]string{"--agent", agent, "--tls-ca", tt.files.CA, "--tls-cert", tt.files.Cert, "--tls-key", tt.files.Key}, tt.args...))
			err := root.ExecuteContext(context.Background())
			if tt.want == nil {
				if err != nil {
					t.Fatalf("%v: %v", tt.args, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("%v succeeded, want refused", tt.args)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestTLSCreateCommands(t *testing.T) {
	clearTLSEnv(t)
	dir := filepath.Join(t.TempDir(), "ca")
	out, _, err := runGodwit(t, "tls", "ca", "create", "--dir", dir)
	if err != nil {
		t.Fatalf("tls ca create: %v", err)
	}
	if !strings.Contains(out, "godwit tls cert create --dir "+dir+" --role agent") {
		t.Errorf("tls ca create printed %q, want the next command", out)
	}
	for file, mode := range map[string]os.FileMode{pki.CAFile: pki.CertFileMode, pki.CAKeyFile: pki.KeyFileMode} {
		st, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if perm := st.Mode().Perm(); perm != mode {
			t.Errorf("%s has mode %#o, want %#o", file, perm, mode)
		}
	}
	caCert, _ := os.ReadFile(filepath.Join(dir, pki.CAFile))
	if _, _, err := runGodwit(t, "tls", "ca", "create", "--dir", dir); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("a second tls ca create in the same dir: %v, want refused", err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, pki.CAFile)); !bytes.Equal(caCert, again) {
		t.Error("the refused tls ca create replaced the CA")
	}

	tests := []struct {
		name string
		args []string
		// role and out are what a success writes, in out (relative to
		// dir); want is a part of the error of a refusal.
		role pki.Role
		out  string
		want string
	}{
		{"an agent", []string{"--role", "agent", "--name", "n1", "--host", "127.0.0.1", "--host", "n1.example"}, pki.RoleAgent, "n1", ""},
		{"a scheduler elsewhere", []string{"--role", "scheduler", "--name", "s1", "--host", "10.0.0.5", "--out", "elsewhere"}, pki.RoleScheduler, "elsewhere", ""},
		{"an operator", []string{"--role", "operator", "--name", "alice"}, pki.RoleOperator, "alice", ""},
		{"a viewer", []string{"--role", "viewer", "--name", "bob"}, pki.RoleViewer, "bob", ""},
		{"no role", []string{"--name", "n2", "--host", "127.0.0.1"}, "", "", `"role" not set`},
		{"an unknown role", []string{"--role", "admin", "--name", "n2"}, "", "", "scheduler|agent|operator|viewer"},
		{"an agent without --host", []string{"--role", "agent", "--name", "n2"}, "", "", "at least one host (--host)"},
		{"a scheduler without --host", []string{"--role", "scheduler", "--name", "s2"}, "", "", "at least one host (--host)"},
		{"an operator with --host", []string{"--role", "operator", "--name", "carol", "--host", "10.0.0.9"}, "", "", "drop the hosts (--host)"},
		{"a CA that is not there", []string{"--role", "viewer", "--name", "dan", "--dir", filepath.Join(dir, "nope")}, "", "", "godwit tls ca create --dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"tls", "cert", "create", "--dir", dir}, tt.args...)
			for i, a := range args {
				if i > 0 && args[i-1] == "--out" {
					args[i] = filepath.Join(dir, a)
				}
			}
			out, _, err := runGodwit(t, args...)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("tls cert create %v: %v, want refused saying %q", tt.args, err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("tls cert create: %v", err)
			}
			f := pki.DirFiles(filepath.Join(dir, tt.out))
			if !strings.Contains(out, "--tls-cert "+f.Cert) {
				t.Errorf("tls cert create printed %q, want the flags to pass", out)
			}
			id, err := pki.Load(f)
			if err != nil {
				t.Fatalf("the files tls cert create wrote do not load: %v", err)
			}
			if id.Role() != tt.role {
				t.Errorf("role %q, want %q", id.Role(), tt.role)
			}
			st, err := os.Stat(f.Key)
			if err != nil {
				t.Fatal(err)
			}
			if perm := st.Mode().Perm(); perm != pki.KeyFileMode {
				t.Errorf("the key has mode %#o, want %#o", perm, pki.KeyFileMode)
			}
			if tt.role == pki.RoleAgent {
				if _, err := agentIdentity(f, false); err != nil {
					t.Errorf("the agent refuses the certificate tls cert create wrote: %v", err)
				}
				for _, h := range []string{"127.0.0.1", "n1.example"} {
					if err := id.VerifyHost(h); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
}

func TestTLSGossipKeyCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.key")
	out, _, err := runGodwit(t, "tls", "gossip-key", "create", path)
	if err != nil {
		t.Fatalf("tls gossip-key create: %v", err)
	}
	if !strings.Contains(out, "--gossip-key-file "+path) {
		t.Errorf("tls gossip-key create printed %q, want the flag to pass", out)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != pki.GossipKeyFileMode {
		t.Errorf("the key has mode %#o, want %#o", perm, pki.GossipKeyFileMode)
	}
	key, err := pki.LoadGossipKey(path)
	if err != nil || len(key) != pki.GossipKeySize {
		t.Fatalf("LoadGossipKey of what the command wrote: %d bytes, %v; want %d", len(key), err, pki.GossipKeySize)
	}
	if _, _, err := runGodwit(t, "tls", "gossip-key", "create", path); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("a second gossip-key create of the same file: %v, want refused", err)
	}
	if again, _ := pki.LoadGossipKey(path); !bytes.Equal(key, again) {
		t.Error("the refused gossip-key create replaced the key")
	}
	if _, _, err := runGodwit(t, "tls", "gossip-key", "create"); err == nil {
		t.Error("gossip-key create without FILE succeeded")
	}
}
