package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// issueRole issues name's certificate of role into a temporary directory,
// for 127.0.0.1 when the role serves.
func issueRole(t *testing.T, ca *CA, name string, role Role) Files {
	t.Helper()
	req := CertRequest{Name: name, Role: role}
	if role.Serves() {
		req.Hosts = []string{"127.0.0.1"}
	}
	f, err := ca.IssueTo(filepath.Join(t.TempDir(), name), req)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// craft writes into a temporary directory a certificate of ca for name
// that carries uris as its URI subject alternative names, as another
// tool (or an older godwit) might have issued it, and returns its files
// and the certificate.
func craft(t *testing.T, ca *CA, name string, uris ...string) (Files, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	f := DirFiles(t.TempDir())
	kp := &KeyPair{CertPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), KeyPEM: keyPEM}
	if err := kp.WriteFiles(f.Cert, f.Key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.CA, ca.CertificatePEM(), CertFileMode); err != nil {
		t.Fatal(err)
	}
	return f, cert
}

func TestEveryRoleRoundTrips(t *testing.T) {
	ca := newCA(t, "c")
	for _, role := range Roles() {
		t.Run(string(role), func(t *testing.T) {
			id := load(t, issueRole(t, ca, "holder", role))
			if id.Role() != role {
				t.Errorf("loaded role %q, want %q", id.Role(), role)
			}
			if got, err := RoleOf(id.leaf); err != nil || got != role {
				t.Errorf("RoleOf = %q, %v; want %q", got, err, role)
			}
			if id.Name() != "holder" {
				t.Errorf("name %q, want holder", id.Name())
			}
			_, err := id.ServerConfig()
			if serves := role == RoleScheduler || role == RoleAgent; serves != (err == nil) {
				t.Errorf("ServerConfig of a %s certificate: %v; a server certificate is for schedulers and agents only", role, err)
			}
			if got := hasUsage(id.leaf, x509.ExtKeyUsageServerAuth); got != role.Serves() {
				t.Errorf("server authentication usage %v for a %s", got, role)
			}
			if !hasUsage(id.leaf, x509.ExtKeyUsageClientAuth) {
				t.Errorf("a %s certificate lacks client authentication: every role dials", role)
			}
		})
	}
}

func TestTheRoleIsNotTheName(t *testing.T) {
	ca := newCA(t, "c")
	// A viewer whose name spells a role URI, in every place a name could
	// be read, is still a viewer.
	id := load(t, issueRole(t, ca, "godwit://role/operator", RoleViewer))
	if id.Role() != RoleViewer {
		t.Fatalf("role %q, want viewer: the role was read from the name", id.Role())
	}
	// URIs of other schemes beside the role are no concern of godwit's.
	_, cert := craft(t, ca, "n", "spiffe://example.org/ns/x", "godwit://role/agent")
	if r, err := RoleOf(cert); err != nil || r != RoleAgent {
		t.Errorf("RoleOf with a SPIFFE ID beside the role = %q, %v; want agent", r, err)
	}
}

func TestRoleOfRefusesAnUnclearRole(t *testing.T) {
	ca := newCA(t, "c")
	tests := []struct {
		name string
		uris []string
		want error
		// says are parts of the message.
		says []string
	}{
		{"no role at all", nil, ErrNoRole, []string{`"n"`, "without a role", "--role"}},
		{"only a URI of another scheme", []string{"spiffe://example.org/agent"}, ErrNoRole, []string{"--role"}},
		{"a role godwit does not know", []string{"godwit://role/admin"}, ErrUnknownRole, []string{"godwit://role/admin", "scheduler|agent|operator|viewer"}},
		{"a godwit URI that is no role", []string{"godwit://node/agent"}, ErrUnknownRole, []string{"--role"}},
		{"a role with a query", []string{"godwit://role/agent?x=1"}, ErrUnknownRole, []string{"--role"}},
		{"two roles", []string{"godwit://role/viewer", "godwit://role/operator"}, ErrUnknownRole, []string{"2 roles", "single --role"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, cert := craft(t, ca, "n", tt.uris...)
			r, err := RoleOf(cert)
			if !errors.Is(err, tt.want) {
				t.Fatalf("RoleOf = %q, %v; want %v", r, err, tt.want)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

func TestLoadRefusesARolelessCertificate(t *testing.T) {
	f, _ := craft(t, newCA(t, "c"), "old-node")
	_, err := Load(f)
	if !errors.Is(err, ErrNoRole) {
		t.Fatalf("Load of a certificate without a role: %v, want ErrNoRole", err)
	}
	for _, s := range []string{f.Cert, "godwit tls cert create --role"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
}

func TestIssueChecksTheRoleAndTheHosts(t *testing.T) {
	ca := newCA(t, "c")
	tests := []struct {
		name string
		req  CertRequest
		// want is a part of the error; empty for success.
		want string
	}{
		{"no role", CertRequest{Name: "n", Hosts: []string{"10.0.0.1"}}, "give its role"},
		{"an unknown role", CertRequest{Name: "n", Role: "admin"}, "unknown role"},
		{"an agent without hosts", CertRequest{Name: "n", Role: RoleAgent}, "at least one host"},
		{"a scheduler without hosts", CertRequest{Name: "n", Role: RoleScheduler}, "at least one host"},
		{"an operator with a host", CertRequest{Name: "n", Role: RoleOperator, Hosts: []string{"10.0.0.1"}}, "clients only"},
		{"a viewer with a host", CertRequest{Name: "n", Role: RoleViewer, Hosts: []string{"v.example"}}, "clients only"},
		{"a scheduler with a DNS name", CertRequest{Name: "s1", Role: RoleScheduler, Hosts: []string{"s1.example"}}, ""},
		{"an operator", CertRequest{Name: "alice", Role: RoleOperator}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kp, err := ca.Issue(tt.req)
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Issue: %v, want an error saying %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			block, _ := pem.Decode(kp.CertPEM)
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := RoleOf(cert); err != nil || r != tt.req.Role {
				t.Errorf("RoleOf = %q, %v; want %q", r, err, tt.req.Role)
			}
			if !slices.Equal(cert.DNSNames, tt.req.Hosts) {
				t.Errorf("DNS names %v, want %v", cert.DNSNames, tt.req.Hosts)
			}
		})
	}
}

func TestRequirePeerRole(t *testing.T) {
	ca := newCA(t, "c")
	scheduler := load(t, issueRole(t, ca, "s1", RoleScheduler))
	agent := load(t, issueRole(t, ca, "n1", RoleAgent))
	tests := []struct {
		name           string
		server, client *Identity
		// serverNeeds and clientNeeds are the roles each end requires of
		// the other; nil: any.
		serverNeeds, clientNeeds []Role
		// want is a part of the error; empty for success.
		want string
	}{
		{"a scheduler to a scheduler-only server", scheduler, scheduler, []Role{RoleScheduler}, nil, ""},
		{"an agent to a scheduler-only server", scheduler, agent, []Role{RoleScheduler}, nil, `"n1" has the agent role`},
		{"a client that wants a scheduler dials one", scheduler, agent, nil, []Role{RoleScheduler}, ""},
		{"a client that wants a scheduler dials an agent", agent, agent, nil, []Role{RoleScheduler}, "only scheduler may connect"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg, err := tt.server.ServerConfig()
			if err != nil {
				t.Fatal(err)
			}
			ccfg := tt.client.ClientConfig()
			if tt.serverNeeds != nil {
				scfg = RequirePeerRole(scfg, tt.serverNeeds...)
			}
			if tt.clientNeeds != nil {
				ccfg = RequirePeerRole(ccfg, tt.clientNeeds...)
			}
			err = handshakeConfigs(t, scfg, ccfg, "127.0.0.1")
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("handshake: %v, want refused saying %q", err, tt.want)
			}
		})
	}
}
