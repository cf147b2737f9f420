package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"
)

// Files names the three PEM files of a node's (or a client's) TLS
// identity.
type Files struct {
	// CA is the cluster CA's certificate: peers are verified against it.
	CA string
	// Cert is this node's certificate, signed by the CA.
	Cert string
	// Key is the certificate's private key, readable by its owner only.
	Key string
}

// IsZero reports whether no file is named: plaintext.
func (f Files) IsZero() bool { return f == Files{} }

// Missing lists which of "ca", "cert" and "key" are not named, in that
// order, so that a caller can say which flag to add.
func (f Files) Missing() []string {
	var m []string
	for _, x := range []struct{ name, path string }{{"ca", f.CA}, {"cert", f.Cert}, {"key", f.Key}} {
		if x.path == "" {
			m = append(m, x.name)
		}
	}
	return m
}

// Identity is a loaded TLS identity: a certificate with its key, and the
// CA that peers must be signed by.
type Identity struct {
	cert tls.Certificate
	leaf *x509.Certificate
	role Role
	cas  *x509.CertPool
}

// Load reads the three files and checks them together: the key is the
// certificate's, the certificate is signed by the CA, valid now and
// carries a role (RoleOf), and the key file is not readable by others.
// Every error names the file and says what to do.
func Load(f Files) (*Identity, error) {
	if m := f.Missing(); len(m) > 0 {
		return nil, fmt.Errorf("TLS needs a CA certificate, a certificate and its key; missing: %v", m)
	}
	caCerts, err := readCertificates(f.CA, "CA certificate")
	if err != nil {
		return nil, err
	}
	cas := x509.NewCertPool()
	for _, c := range caCerts {
		cas.AddCert(c)
	}
	chain, err := readCertificates(f.Cert, "certificate")
	if err != nil {
		return nil, err
	}
	key, err := readKey(f.Key, "key")
	if err != nil {
		return nil, err
	}
	leaf := chain[0]
	if !publicKeyMatches(leaf, key) {
		return nil, fmt.Errorf("TLS key %s does not belong to the certificate %s: give the key the certificate was issued with", f.Key, f.Cert)
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots: cas, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return nil, fmt.Errorf("TLS certificate %s is not valid now (valid %s to %s): issue a new one",
				f.Cert, leaf.NotBefore.Format(time.RFC3339), leaf.NotAfter.Format(time.RFC3339))
		}
		return nil, fmt.Errorf("TLS certificate %s is not signed by the CA in %s (%w): give the CA that issued it; every node of a cluster shares one CA",
			f.Cert, f.CA, err)
	}
	role, err := RoleOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate %s: %w", f.Cert, err)
	}
	certs := make([][]byte, len(chain))
	for i, c := range chain {
		certs[i] = c.Raw
	}
	return &Identity{cert: tls.Certificate{Certificate: certs, PrivateKey: key, Leaf: leaf}, leaf: leaf, role: role, cas: cas}, nil
}

// Name is the common name of the identity's certificate: a node's name,
// or an operator's.
func (id *Identity) Name() string { return id.leaf.Subject.CommonName }

// Role is the role signed into the identity's certificate; Load refused
// a certificate without one.
func (id *Identity) Role() Role { return id.role }

// VerifyHost checks that the identity's certificate names host (an IP
// address or a DNS name): clients that dial host accept only such a
// certificate.
func (id *Identity) VerifyHost(host string) error {
	if err := id.leaf.VerifyHostname(host); err != nil {
		return fmt.Errorf("the TLS certificate of %s does not name %s (%w): issue one with %s among its hosts", id.Name(), host, err, host)
	}
	return nil
}

// ServerConfig is the configuration of a server with this identity: TLS
// 1.3 only, and every client must present a certificate signed by the CA
// (mutual TLS). It fails when the certificate is not for servers: its
// role only dials (operator, viewer), or it lacks the server usage.
func (id *Identity) ServerConfig() (*tls.Config, error) {
	if !id.role.Serves() {
		return nil, fmt.Errorf("TLS certificate of %s has the %s role, which is for clients only: a server needs a certificate issued with --role agent or --role scheduler and its --host addresses",
			id.Name(), id.role)
	}
	if !hasUsage(id.leaf, x509.ExtKeyUsageServerAuth) {
		return nil, fmt.Errorf("TLS certificate of %s is not for servers (no server authentication usage): issue one with --role agent or --role scheduler", id.Name())
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    id.cas,
	}, nil
}

// ClientConfig is the configuration of a client with this identity: TLS
// 1.3 only, it presents its certificate, and it accepts only a server
// whose certificate is signed by the CA and names the address dialled
// (the connection's ServerName, which callers set or take from the
// address).
func (id *Identity) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.cert},
		RootCAs:      id.cas,
	}
}

func hasUsage(c *x509.Certificate, u x509.ExtKeyUsage) bool {
	// No extended key usage at all means any usage (RFC 5280).
	return len(c.ExtKeyUsage) == 0 || slices.Contains(c.ExtKeyUsage, u) || slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny)
}

// readCertificates reads every certificate of the PEM file path; what
// names the file in errors.
func readCertificates(path, what string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TLS %s %s: %w: give the PEM file of the %s", what, path, err, what)
	}
	var certs []*x509.Certificate
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemCertificate {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("TLS %s %s: %w: the file is damaged; give a certificate in PEM", what, path, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("TLS %s %s holds no PEM certificate: is it a key, or another file? Give the PEM file of the %s", what, path, what)
	}
	return certs, nil
}

// readKey reads the private key in the PEM file path, which must be
// readable by its owner only.
func readKey(path, what string) (crypto.Signer, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("TLS %s %s: %w: give the PEM file of the private key", what, path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("TLS %s %s can be read by others (mode %#o): run chmod 600 %s", what, path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("TLS %s %s: %w", what, path, err)
	}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var key any
		switch block.Type {
		case pemPrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("TLS %s %s: %w: the file is damaged; give a private key in PEM", what, path, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("TLS %s %s: unsupported key type %T: give an ECDSA, Ed25519 or RSA key", what, path, key)
		}
		return signer, nil
	}
	return nil, fmt.Errorf("TLS %s %s holds no PEM private key: is it a certificate, or another file? Give the key's PEM file", what, path)
}
