package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issueTo issues name's certificate into a temporary directory: an
// agent's when hosts are given, else an operator's.
func issueTo(t *testing.T, ca *CA, name string, hosts ...string) Files {
	t.Helper()
	role := RoleOperator
	if len(hosts) > 0 {
		role = RoleAgent
	}
	f, err := ca.IssueTo(filepath.Join(t.TempDir(), name), CertRequest{Name: name, Role: role, Hosts: hosts})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func load(t *testing.T, f Files) *Identity {
	t.Helper()
	id, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIssuedFilesLoadAsTheNode(t *testing.T) {
	ca := newCA(t, "test-ca")
	f := issueTo(t, ca, "node-a", "10.1.2.3", "node-a.example")
	id := load(t, f)
	if id.Name() != "node-a" {
		t.Errorf("name %q, want node-a", id.Name())
	}
	leaf := id.leaf
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("10.1.2.3")) {
		t.Errorf("IP SANs %v, want [10.1.2.3]", leaf.IPAddresses)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "node-a.example" {
		t.Errorf("DNS SANs %v, want [node-a.example]", leaf.DNSNames)
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if !hasUsage(leaf, u) {
			t.Errorf("the certificate lacks usage %v", u)
		}
	}
	st, err := os.Stat(f.Key)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != KeyFileMode {
		t.Errorf("key file mode %#o, want %#o", perm, KeyFileMode)
	}
}

func TestCAWrittenAndLoadedIssuesForTheSameCluster(t *testing.T) {
	ca := newCA(t, "test-ca")
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	again, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	// A node issued by the reloaded CA and one by the original trust
	// each other.
	a := load(t, issueTo(t, ca, "a", "127.0.0.1"))
	b := load(t, issueTo(t, again, "b", "127.0.0.1"))
	if err := handshake(t, a, b, "127.0.0.1"); err != nil {
		t.Fatalf("nodes of the same CA: %v", err)
	}
	if _, err := LoadCA(DirFiles(filepath.Dir(issueTo(t, ca, "c").Cert)).Cert, keyFile); err == nil {
		t.Error("LoadCA accepted a node's certificate as the CA's")
	}
}

// handshake runs a TLS handshake between server and client over loopback,
// the client dialling serverName, and a one-byte exchange so that the
// server's verdict on the client's certificate reaches the client (in TLS
// 1.3 the client's handshake ends before the server has checked it). It
// returns the first error of either side.
func handshake(t *testing.T, server, client *Identity, serverName string) error {
	t.Helper()
	scfg, err := server.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	return handshakeConfigs(t, scfg, client.ClientConfig(), serverName)
}

// handshakeConfigs is handshake with the two ends' configurations.
func handshakeConfigs(t *testing.T, scfg, ccfg *tls.Config, serverName string) error {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	serverErr := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if err := c.(*tls.Conn).Handshake(); err != nil {
			serverErr <- err
			return
		}
		_, err = c.Write([]byte{1})
		serverErr <- err
	}()
	ccfg = ccfg.Clone()
	ccfg.ServerName = serverName
	c, err := tls.Dial("tcp", l.Addr().String(), ccfg)
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.ReadFull(c, make([]byte, 1))
		c.Close()
	}
	if serr := <-serverErr; serr != nil {
		return errors.Join(serr, err)
	}
	return err
}

func TestMutualTLS(t *testing.T) {
	ca, other := newCA(t, "cluster"), newCA(t, "another")
	server := load(t, issueTo(t, ca, "server", "127.0.0.1"))
	tests := []struct {
		name       string
		client     *Identity
		serverName string
		// wantErr is empty for a handshake that must succeed, else a
		// part of the error.
		wantErr string
	}{
		{"a node of the same CA", load(t, issueTo(t, ca, "client")), "127.0.0.1", ""},
		{"a client of another CA", load(t, issueTo(t, other, "stranger")), "127.0.0.1", "certificate"},
		{"a server that is not at the address dialled", load(t, issueTo(t, ca, "client")), "10.9.9.9", "10.9.9.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := handshake(t, server, tt.client, tt.serverName)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("handshake: %v", err)
			case tt.wantErr != "" && err == nil:
				t.Fatal("handshake succeeded, want it refused")
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("handshake: %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}

func TestServerAndClientConfigsAreMutualTLS13(t *testing.T) {
	id := load(t, issueTo(t, newCA(t, "c"), "n", "127.0.0.1"))
	s, err := id.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	c := id.ClientConfig()
	if s.MinVersion != tls.VersionTLS13 || c.MinVersion != tls.VersionTLS13 {
		t.Errorf("min versions %#x and %#x, want TLS 1.3", s.MinVersion, c.MinVersion)
	}
	if s.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Errorf("server client auth %v, want RequireAndVerifyClientCert", s.ClientAuth)
	}
	if len(c.Certificates) != 1 || c.RootCAs == nil {
		t.Error("the client config must present its certificate and verify the server against the CA")
	}
}

func TestLoadSaysWhichFileIsWrong(t *testing.T) {
	ca, other := newCA(t, "cluster"), newCA(t, "another")
	good := issueTo(t, ca, "good", "127.0.0.1")
	stranger := issueTo(t, other, "stranger")
	tests := []struct {
		name string
		// files returns the files to load (it may write some).
		files func(t *testing.T) Files
		// want are parts of the error: the file and the advice.
		want []string
	}{
		{"a missing certificate", func(t *testing.T) Files {
			f := good
			f.Cert = filepath.Join(t.TempDir(), "nope.pem")
			return f
		}, []string{"nope.pem", "no such file", "give the PEM file"}},
		{"no files named", func(t *testing.T) Files { return Files{CA: good.CA} }, []string{"missing", "cert", "key"}},
		{"a key given as the certificate", func(t *testing.T) Files {
			f := good
			f.Cert = good.Key
			return f
		}, []string{good.Key, "holds no PEM certificate"}},
		{"another certificate's key", func(t *testing.T) Files {
			f := good
			f.Key = stranger.Key
			return f
		}, []string{stranger.Key, "does not belong to the certificate", good.Cert}},
		{"a certificate of another CA", func(t *testing.T) Files {
			f := stranger
			f.CA = good.CA
			return f
		}, []string{stranger.Cert, "not signed by the CA in", good.CA}},
		{"a key others can read", func(t *testing.T) Files {
			f := issueTo(t, ca, "loose")
			if err := os.Chmod(f.Key, 0o644); err != nil {
				t.Fatal(err)
			}
			return f
		}, []string{"key.pem", "can be read by others", "chmod 600"}},
		{"an expired certificate", func(t *testing.T) Files {
			f := issueTo(t, ca, "old")
			writeExpired(t, ca, f)
			return f
		}, []string{CertFile, "not valid now", "issue a new one"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.files(t))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// writeExpired replaces f's certificate with one for the same key that
// expired an hour ago.
func writeExpired(t *testing.T, ca *CA, f Files) {
	t.Helper()
	key, err := readKey(f.Key, "key")
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "old"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.Cert, pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), CertFileMode); err != nil {
		t.Fatal(err)
	}
}

func TestIssueRefusesAHostThatIsNoName(t *testing.T) {
	ca := newCA(t, "c")
	for _, h := range []string{"", "a b", "10.0.0.1:7701"} {
		if _, err := ca.Issue(CertRequest{Name: "n", Role: RoleAgent, Hosts: []string{h}}); err == nil {
			t.Errorf("Issue with host %q succeeded", h)
		}
	}
	if _, err := ca.Issue(CertRequest{Role: RoleOperator}); err == nil {
		t.Error("Issue without a name succeeded")
	}
}

func TestServerConfigRefusesAClientOnlyCertificate(t *testing.T) {
	ca := newCA(t, "c")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := newSerial()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "operator"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		// A serving role, so that only the missing usage is wrong.
		URIs: []*url.URL{RoleAgent.uri()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := DirFiles(dir)
	kp := &KeyPair{CertPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), KeyPEM: keyPEM}
	if err := kp.WriteFiles(f.Cert, f.Key); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(f.CA, ca.CertificatePEM(), CertFileMode); err != nil {
		t.Fatal(err)
	}
	id := load(t, f)
	if _, err := id.ServerConfig(); err == nil || !strings.Contains(err.Error(), "not for servers") {
		t.Fatalf("ServerConfig of a client-only certificate: %v, want refused", err)
	}
}
