package authz

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/pki"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// callTimeout bounds each call of these tests, on loopback.
const callTimeout = 10 * time.Second

// recordingAgent answers a few RPCs of each kind (unary and streaming,
// reads and writes) and counts the calls that reached it. NodeInfo
// answers with the caller as Caller saw it.
type recordingAgent struct {
	pb.UnimplementedAgentServiceServer
	reached atomic.Int32
}

func (a *recordingAgent) NodeInfo(ctx context.Context, _ *pb.NodeInfoRequest) (*pb.NodeInfoResponse, error) {
	a.reached.Add(1)
	id, err := Caller(ctx)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &pb.NodeInfoResponse{Name: id.String()}, nil
}

func (a *recordingAgent) RunContainer(context.Context, *pb.RunContainerRequest) (*pb.Container, error) {
	a.reached.Add(1)
	return &pb.Container{Name: "c"}, nil
}

func (a *recordingAgent) MigrateDump(context.Context, *pb.MigrateDumpRequest) (*pb.MigrateReply, error) {
	a.reached.Add(1)
	return &pb.MigrateReply{}, nil
}

func (a *recordingAgent) Logs(_ *pb.LogsRequest, s grpc.ServerStreamingServer[pb.LogsChunk]) error {
	a.reached.Add(1)
	return s.Send(&pb.LogsChunk{})
}

func (a *recordingAgent) ImportImage(s grpc.ClientStreamingServer[pb.ImportImageRequest, pb.Image]) error {
	a.reached.Add(1)
	for {
		if _, err := s.Recv(); errors.Is(err, io.EOF) {
			return s.SendAndClose(&pb.Image{})
		} else if err != nil {
			return err
		}
	}
}

// testCA is a CA made in the test, so that it can also sign what
// `godwit tls` never would: a certificate without a role.
type testCA struct {
	*pki.CA
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "authz test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{CA: ca, cert: cert, key: key, dir: dir}
}

// identity issues and loads a certificate of role for name.
func (ca *testCA) identity(t *testing.T, name string, role pki.Role) *pki.Identity {
	t.Helper()
	req := pki.CertRequest{Name: name, Role: role}
	if role.Serves() {
		req.Hosts = []string{"127.0.0.1"}
	}
	f, err := ca.IssueTo(filepath.Join(t.TempDir(), name), req)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// roleless is a client configuration whose certificate, signed by ca,
// carries no role, as one issued before roles existed.
func (ca *testCA) roleless(t *testing.T, name string) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		RootCAs:      roots,
	}
}

// serve starts recordingAgent behind a data channel Mux, as `godwit
// agent` serves it, with policy p and opts: over TLS with server's
// identity, or in plaintext when server is nil.
func serve(t *testing.T, server *pki.Identity, p Policy, opts Options) (string, *recordingAgent) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var cfg datachan.Config
	if server != nil {
		if cfg.TLS, err = server.ServerConfig(); err != nil {
			t.Fatal(err)
		}
		cfg.ClientTLS = server.ClientConfig()
	}
	mux := datachan.Listen(lis, cfg)
	t.Cleanup(func() { mux.Close() })
	srv := grpc.NewServer(append(ServerOptions(p, opts), grpc.Creds(mux.ServerCredentials()))...)
	agent := &recordingAgent{}
	pb.RegisterAgentServiceServer(srv, agent)
	go func() { _ = srv.Serve(mux.RPCListener()) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), agent
}

// dial is a client of the agent at addr: over TLS with cfg, or in
// plaintext when cfg is nil.
func dial(t *testing.T, addr string, cfg *tls.Config) pb.AgentServiceClient {
	t.Helper()
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewAgentServiceClient(conn)
}

// calls are one RPC of each kind, by name.
var calls = map[string]func(context.Context, pb.AgentServiceClient) error{
	"NodeInfo": func(ctx context.Context, c pb.AgentServiceClient) error {
		_, err := c.NodeInfo(ctx, &pb.NodeInfoRequest{})
		return err
	},
	"RunContainer": func(ctx context.Context, c pb.AgentServiceClient) error {
		_, err := c.RunContainer(ctx, &pb.RunContainerRequest{Name: "c"})
		return err
	},
	"MigrateDump": func(ctx context.Context, c pb.AgentServiceClient) error {
		_, err := c.MigrateDump(ctx, &pb.MigrateDumpRequest{Id: "m"})
		return err
	},
	"Logs": func(ctx context.Context, c pb.AgentServiceClient) error {
		s, err := c.Logs(ctx, &pb.LogsRequest{})
		if err != nil {
			return err
		}
		_, err = s.Recv()
		return err
	},
	"ImportImage": func(ctx context.Context, c pb.AgentServiceClient) error {
		s, err := c.ImportImage(ctx)
		if err != nil {
			return err
		}
		_, err = s.CloseAndRecv()
		return err
	},
}

func call(t *testing.T, c pb.AgentServiceClient, method string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	return calls[method](ctx, c)
}

// TestEachRoleOverTLS calls one RPC of each kind with a certificate of
// each role over mutual TLS on loopback: an allowed call reaches the
// handler; a refused one never does and says who needs which role.
func TestEachRoleOverTLS(t *testing.T) {
	ca := newTestCA(t)
	addr, agent := serve(t, ca.identity(t, "n1", pki.RoleAgent), AgentPolicy(), Options{})
	tests := []struct {
		role pki.Role
		// allowed are the calls that go through; the others are denied.
		allowed []string
		// advice is the role a denial of RunContainer or of the first
		// denied call tells to issue.
		advice string
	}{
		{pki.RoleOperator, []string{"NodeInfo", "RunContainer", "MigrateDump", "Logs", "ImportImage"}, ""},
		{pki.RoleScheduler, []string{"NodeInfo", "RunContainer", "MigrateDump", "Logs", "ImportImage"}, ""},
		{pki.RoleAgent, []string{"NodeInfo", "MigrateDump"}, "--role"},
		{pki.RoleViewer, []string{"NodeInfo", "Logs"}, "--role operator"},
	}
	for _, tt := range tests {
		t.Run(string(tt.role), func(t *testing.T) {
			name := "holder-" + string(tt.role)
			client := dial(t, addr, ca.identity(t, name, tt.role).ClientConfig())
			for method := range calls {
				allowed := false
				for _, a := range tt.allowed {
					allowed = allowed || a == method
				}
				before := agent.reached.Load()
				err := call(t, client, method)
				reached := agent.reached.Load() != before
				if allowed {
					if err != nil || !reached {
						t.Errorf("%s: %v (handler reached: %v), want it served", method, err, reached)
					}
					continue
				}
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s: %v, want PermissionDenied", method, err)
					continue
				}
				if reached {
					t.Errorf("%s was refused after its handler ran", method)
				}
				msg := status.Convert(err).Message()
				for _, want := range []string{string(tt.role) + ` "` + name + `"`, "cannot call " + method, "it needs the", tt.advice} {
					if !strings.Contains(msg, want) {
						t.Errorf("%s: denial %q does not say %q", method, msg, want)
					}
				}
			}
		})
	}
	// The handler learns who called.
	info, err := dial(t, addr, ca.identity(t, "alice", pki.RoleViewer).ClientConfig()).NodeInfo(context.Background(), &pb.NodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if want := `viewer "alice"`; info.GetName() != want {
		t.Errorf("the handler saw the caller as %q, want %q", info.GetName(), want)
	}
}

func TestRefusedWithoutAVerifiedIdentity(t *testing.T) {
	ca := newTestCA(t)
	server := ca.identity(t, "n1", pki.RoleAgent)
	tlsAddr, tlsAgent := serve(t, server, AgentPolicy(), Options{})
	// A server whose credentials are plaintext by mistake, though its
	// interceptors were told it serves TLS.
	wrongAddr, wrongAgent := serve(t, nil, AgentPolicy(), Options{})
	tests := []struct {
		name  string
		addr  string
		agent *recordingAgent
		cfg   *tls.Config
		code  codes.Code
		// want is a part of the error.
		want string
	}{
		{"a certificate without a role", tlsAddr, tlsAgent, ca.roleless(t, "old"), codes.Unauthenticated, "--role"},
		{"a plaintext client to a TLS server", tlsAddr, tlsAgent, nil, codes.Unavailable, ""},
		{"a plaintext call to interceptors that expect TLS", wrongAddr, wrongAgent, nil, codes.Unauthenticated, "without a certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := tt.agent.reached.Load()
			err := call(t, dial(t, tt.addr, tt.cfg), "NodeInfo")
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NodeInfo: %v, want %v saying %q", err, tt.code, tt.want)
			}
			if tt.agent.reached.Load() != before {
				t.Error("the handler ran")
			}
		})
	}
}

func TestNotInThePolicyIsRefused(t *testing.T) {
	ca := newTestCA(t)
	p := AgentPolicy()
	delete(p, pb.AgentService_RunContainer_FullMethodName)
	addr, agent := serve(t, ca.identity(t, "n1", pki.RoleAgent), p, Options{})
	err := call(t, dial(t, addr, ca.identity(t, "root", pki.RoleOperator).ClientConfig()), "RunContainer")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "not in the policy") {
		t.Errorf("RunContainer, not in the policy: %v, want PermissionDenied saying so", err)
	}
	if agent.reached.Load() != 0 {
		t.Error("the handler ran")
	}
}

func TestInsecureServerAllowsEverything(t *testing.T) {
	// An empty policy: nothing would be allowed if it were checked.
	addr, agent := serve(t, nil, Policy{}, Options{Insecure: true})
	client := dial(t, addr, nil)
	for method := range calls {
		if err := call(t, client, method); err != nil {
			t.Errorf("%s on an --insecure server: %v", method, err)
		}
	}
	if got := agent.reached.Load(); got != int32(len(calls)) {
		t.Errorf("%d calls reached the handlers, want %d", got, len(calls))
	}
	info, err := client.NodeInfo(context.Background(), &pb.NodeInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetName() != InsecureName {
		t.Errorf("the caller of a plaintext server is %q, want %q", info.GetName(), InsecureName)
	}
}

func TestCallerOutsideACall(t *testing.T) {
	if _, err := Caller(context.Background()); !errors.Is(err, ErrNoPeer) {
		t.Errorf("Caller without a gRPC peer: %v, want ErrNoPeer", err)
	}
}
