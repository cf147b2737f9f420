package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	// CAValidity is how long a CA made by NewCA is valid: long enough that
	// a throwaway cluster never sees it expire.
	CAValidity = 5 * 365 * 24 * time.Hour
	// CertValidity is how long a certificate that Issue signs is valid.
	CertValidity = 365 * 24 * time.Hour
	// clockSkew backdates every certificate, so that a node whose clock is
	// a little behind the issuer's accepts it at once.
	clockSkew = 5 * time.Minute
	// serialBits is the randomness of a certificate's serial number: RFC
	// 5280 allows up to 20 octets, and unpredictable serials are what
	// browsers' baseline requirements ask for.
	serialBits = 128

	// KeyFileMode is the mode of every private key file written here:
	// readable by its owner only.
	KeyFileMode = 0o600
	// CertFileMode is the mode of certificate files, which are public.
	CertFileMode = 0o644
	// dirMode is the mode of a directory IssueTo creates.
	dirMode = 0o700

	// The names IssueTo and DirFiles give a node's files in its directory,
	// and CAKeyFile the CA's key beside its certificate (CAFile) in the
	// CA's own directory.
	CAFile    = "ca.pem"
	CertFile  = "cert.pem"
	KeyFile   = "key.pem"
	CAKeyFile = "ca-key.pem"

	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// CA is a certificate authority that signs node certificates. Its key is
// in memory, and, once written, in a file: it is a throwaway CA (see the
// package documentation).
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// NewCA creates a CA named name (its certificate's common name) with a
// fresh ECDSA P-256 key, valid for CAValidity. It signs only end-entity
// certificates (path length zero).
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"godwit"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key}, nil
}

// LoadCA reads a CA that WriteFiles wrote: its certificate and its key.
func LoadCA(certFile, keyFile string) (*CA, error) {
	certs, err := readCertificates(certFile, "CA certificate")
	if err != nil {
		return nil, err
	}
	cert := certs[0]
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %s is not a CA's certificate: give the CA's own certificate, not a node's", certFile)
	}
	key, err := readKey(keyFile, "CA key")
	if err != nil {
		return nil, err
	}
	if !publicKeyMatches(cert, key) {
		return nil, fmt.Errorf("CA key %s does not belong to the CA certificate %s: give the key the CA was created with", keyFile, certFile)
	}
	return &CA{cert: cert, key: key}, nil
}

// Certificate is the CA's certificate, which peers verify node
// certificates against.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertificatePEM is the CA's certificate in PEM: what a node's CA file
// holds.
func (ca *CA) CertificatePEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: ca.cert.Raw})
}

// WriteFiles writes the CA's certificate to certFile and its key to
// keyFile (mode KeyFileMode), each replaced atomically.
func (ca *CA) WriteFiles(certFile, keyFile string) error {
	keyPEM, err := encodeKey(ca.key)
	if err != nil {
		return err
	}
	if err := writeFile(keyFile, keyPEM, KeyFileMode); err != nil {
		return err
	}
	return writeFile(certFile, ca.CertificatePEM(), CertFileMode)
}

// KeyPair is a certificate that a CA issued and its private key, in PEM.
type KeyPair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// WriteFiles writes the certificate to certFile and the key to keyFile
// (mode KeyFileMode), each replaced atomically.
func (kp *KeyPair) WriteFiles(certFile, keyFile string) error {
	if err := writeFile(keyFile, kp.KeyPEM, KeyFileMode); err != nil {
		return err
	}
	return writeFile(certFile, kp.CertPEM, CertFileMode)
}

// CertRequest is what a certificate that Issue signs says about its
// holder.
type CertRequest struct {
	// Name is the holder's name, the certificate's common name: a node's
	// name for a scheduler or an agent, a person's or a tool's for an
	// operator or a viewer.
	Name string
	// Role is what the holder may do (see Role); it is required.
	Role Role
	// Hosts are the IP addresses and DNS names that others reach a
	// scheduler or an agent at (the certificate's subject alternative
	// names): clients accept only a server certificate that names the
	// address they dialled. A serving role needs at least one; operators
	// and viewers only dial, and take none.
	Hosts []string
}

// Issue signs a certificate for req with a fresh ECDSA P-256 key, valid
// for CertValidity (never past the CA's own end). The role rides in a URI
// subject alternative name, godwit://role/ROLE (RoleOf reads it). A
// scheduler's or an agent's certificate is for both server and client
// authentication, since they accept connections and open them to each
// other; an operator's or a viewer's is for client authentication only,
// so that no server can be started with it.
func (ca *CA) Issue(req CertRequest) (*KeyPair, error) {
	name := req.Name
	if name == "" {
		return nil, errors.New("issue a certificate: the name is empty; give the node's name, or the person's or tool's")
	}
	if !req.Role.Valid() {
		if req.Role == "" {
			return nil, fmt.Errorf("issue a certificate for %s: give its role (--role %s)", name, roleList())
		}
		return nil, fmt.Errorf("issue a certificate for %s: %w %q: use %s", name, ErrUnknownRole, req.Role, roleList())
	}
	switch {
	case req.Role.Serves() && len(req.Hosts) == 0:
		return nil, fmt.Errorf("issue a certificate for %s: the %s role serves, so its certificate must name the addresses it is reached at: give at least one host (--host)", name, req.Role)
	case !req.Role.Serves() && len(req.Hosts) > 0:
		return nil, fmt.Errorf("issue a certificate for %s: the %s role is for clients only, and a client's certificate names no host: drop the hosts (--host)", name, req.Role)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key for %s: %w", name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if req.Role.Serves() {
		usages = append(usages, x509.ExtKeyUsageServerAuth)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name, Organization: []string{"godwit"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(CertValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
		URIs:         []*url.URL{req.Role.uri()},
	}
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter // a certificate never outlives its CA
	}
	for _, h := range req.Hosts {
		switch ip := net.ParseIP(h); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case h == "" || strings.ContainsAny(h, " /:"):
			return nil, fmt.Errorf("issue a certificate for %s: host %q is neither an IP address nor a DNS name", name, h)
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign the certificate of %s: %w", name, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{CertPEM: pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der}), KeyPEM: keyPEM}, nil
}

// IssueTo issues a certificate for req (see Issue) and writes it into
// dir, which it creates, with the CA's certificate: the three files of
// DirFiles(dir), which it returns. Files already there are replaced.
func (ca *CA) IssueTo(dir string, req CertRequest) (Files, error) {
	kp, err := ca.Issue(req)
	if err != nil {
		return Files{}, err
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return Files{}, fmt.Errorf("create TLS directory: %w", err)
	}
	f := DirFiles(dir)
	if err := writeFile(f.CA, ca.CertificatePEM(), CertFileMode); err != nil {
		return Files{}, err
	}
	if err := kp.WriteFiles(f.Cert, f.Key); err != nil {
		return Files{}, err
	}
	return f, nil
}

// DirFiles names the files of a node's TLS identity in dir as IssueTo
// writes them: CAFile, CertFile and KeyFile.
func DirFiles(dir string) Files {
	return Files{CA: filepath.Join(dir, CAFile), Cert: filepath.Join(dir, CertFile), Key: filepath.Join(dir, KeyFile)}
}

func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), serialBits))
	if err != nil {
		return nil, fmt.Errorf("make serial number: %w", err)
	}
	return n, nil
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// publicKeyMatches reports whether key is the private half of cert's key.
func publicKeyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// writeFile replaces path with data, atomically: a reader sees the old
// file or the new one, never a part, and a key is never readable by
// others, not even while it is written.
func writeFile(path string, data []byte, mode os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	// CreateTemp makes the file 0600; a certificate is then opened up.
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
