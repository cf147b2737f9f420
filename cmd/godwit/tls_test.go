package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

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
	good := issueFiles(t, mustCA(t), "n1")
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

// serveAgent serves nodeInfoAgent behind a data channel Mux with cfg (TLS
// or not), as `godwit agent` does, and returns its address.
func serveAgent(t *testing.T, cfg datachan.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := datachan.Listen(lis, cfg)
	t.Cleanup(func() { mux.Close() })
	srv := grpc.NewServer(grpc.Creds(mux.ServerCredentials()))
	pb.RegisterAgentServiceServer(srv, nodeInfoAgent{})
	go func() { _ = srv.Serve(mux.RPCListener()) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// issueFiles issues name's certificate of ca for 127.0.0.1.
func issueFiles(t *testing.T, ca *pki.CA, name string) pki.Files {
	t.Helper()
	f, err := ca.IssueTo(filepath.Join(t.TempDir(), name), name, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func serverConfigs(t *testing.T, f pki.Files) datachan.Config {
	t.Helper()
	id, err := pki.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	s, err := id.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	return datachan.Config{TLS: s, ClientTLS: id.ClientConfig()}
}

// TestCLIExplainsTLSMismatches runs `godwit node info` against agents
// that serve TLS or plaintext, with and without the CLI's TLS files: a
// match works; a mismatch says which flag or environment variable to
// change, never a bare "connection closed".
func TestCLIExplainsTLSMismatches(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	tlsAgent := serveAgent(t, serverConfigs(t, issueFiles(t, ca, "n1")))
	plainAgent := serveAgent(t, datachan.Config{})
	operator, stranger := issueFiles(t, ca, "operator"), issueFiles(t, other, "stranger")
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

func TestTLSCommandsWriteFilesTheAgentLoads(t *testing.T) {
	clearTLSEnv(t)
	dir := filepath.Join(t.TempDir(), "ca")
	if _, _, err := runGodwit(t, "tls", "ca", "--dir", dir); err != nil {
		t.Fatalf("tls ca: %v", err)
	}
	if _, _, err := runGodwit(t, "tls", "ca", "--dir", dir); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("a second tls ca in the same dir: %v, want refused", err)
	}
	out, _, err := runGodwit(t, "tls", "cert", "--dir", dir, "--name", "n1", "--host", "127.0.0.1")
	if err != nil {
		t.Fatalf("tls cert: %v", err)
	}
	f := pki.DirFiles(filepath.Join(dir, "n1"))
	if !strings.Contains(out, "--tls-cert "+f.Cert) {
		t.Errorf("tls cert printed %q, want the flags to pass", out)
	}
	id, err := agentIdentity(f, false)
	if err != nil {
		t.Fatalf("the agent refuses what tls cert wrote: %v", err)
	}
	if id.Name() != "n1" {
		t.Errorf("certificate name %q, want n1", id.Name())
	}
	if err := id.VerifyHost("127.0.0.1"); err != nil {
		t.Error(err)
	}
	st, err := os.Stat(filepath.Join(dir, pki.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != pki.KeyFileMode {
		t.Errorf("the CA's key has mode %#o, want %#o", perm, pki.KeyFileMode)
	}
}
