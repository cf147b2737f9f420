package devcluster

import (
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"

	"github.com/godwit/godwit/internal/pki"
)

const (
	// tlsDirName is the cluster's TLS directory in its work dir: the CA
	// and the operator's certificate. A host name cannot contain '_', so
	// it never collides with a host's dir.
	tlsDirName = "_tls"
	// hostTLSDirName holds a host's node certificate in the host's dir,
	// and customTLSDirName the one an agent of another CA gets
	// (AgentOptions.CA).
	hostTLSDirName   = "tls"
	customTLSDirName = "tls-other-ca"
	// operatorName is the common name of the operator's certificate, which
	// the cluster's clients (Agent.Client, the CLI through TLSEnv)
	// present, and viewerName that of the viewer's (ViewerTLS).
	operatorName = "operator"
	viewerName   = "viewer"
	// caName names the cluster's CA.
	caName = "godwit devcluster CA"
)

// clusterTLS is a cluster's throwaway CA and its clients' identities,
// created with the cluster: the operator's and a viewer's.
type clusterTLS struct {
	ca       *pki.CA
	operator pki.Files
	client   *tls.Config
	viewer   *tls.Config
}

// newClusterTLS creates the cluster's CA in dir (ca.pem, ca-key.pem) and
// issues the operator's certificate into dir/operator and a viewer's
// into dir/viewer.
func newClusterTLS(dir string) (*clusterTLS, error) {
	if err := os.MkdirAll(dir, workDirMode); err != nil {
		return nil, fmt.Errorf("create the cluster's TLS dir: %w", err)
	}
	ca, err := pki.NewCA(caName)
	if err != nil {
		return nil, err
	}
	if err := ca.WriteFiles(filepath.Join(dir, pki.CAFile), filepath.Join(dir, pki.CAKeyFile)); err != nil {
		return nil, err
	}
	operator, client, err := issueClient(ca, filepath.Join(dir, operatorName), operatorName, pki.RoleOperator)
	if err != nil {
		return nil, err
	}
	_, viewer, err := issueClient(ca, filepath.Join(dir, viewerName), viewerName, pki.RoleViewer)
	if err != nil {
		return nil, err
	}
	return &clusterTLS{ca: ca, operator: operator, client: client, viewer: viewer}, nil
}

// issueClient issues name's client certificate of ca with role (operator
// or viewer) into dir and loads it.
func issueClient(ca *pki.CA, dir, name string, role pki.Role) (pki.Files, *tls.Config, error) {
	f, err := ca.IssueTo(dir, pki.CertRequest{Name: name, Role: role})
	if err != nil {
		return pki.Files{}, nil, fmt.Errorf("issue the %s's TLS certificate: %w", role, err)
	}
	id, err := pki.Load(f)
	if err != nil {
		return pki.Files{}, nil, err
	}
	return f, id.ClientConfig(), nil
}

// TLSFiles are the CA certificate and the operator's certificate and key
// that the cluster's clients present to its agents: give them to the CLI
// (--tls-ca, --tls-cert, --tls-key, or TLSEnv).
func (c *Cluster) TLSFiles() pki.Files { return c.tls.operator }

// TLSEnv is the environment that makes the CLI talk TLS to the cluster's
// agents: GODWIT_TLS_CA, GODWIT_TLS_CERT and GODWIT_TLS_KEY as KEY=VALUE,
// to append to a command's environment.
func (c *Cluster) TLSEnv() []string {
	f := c.tls.operator
	return []string{"GODWIT_TLS_CA=" + f.CA, "GODWIT_TLS_CERT=" + f.Cert, "GODWIT_TLS_KEY=" + f.Key}
}

// ClientTLS is a copy of the TLS configuration of the cluster's clients:
// the operator's certificate (role operator: it may call everything), and
// the cluster's CA to verify agents with.
func (c *Cluster) ClientTLS() *tls.Config { return c.tls.client.Clone() }

// ViewerTLS is ClientTLS with a viewer's certificate instead: it may
// read (node info, list, inspect, logs) and nothing else, for tests of
// the refusals.
func (c *Cluster) ViewerTLS() *tls.Config { return c.tls.viewer.Clone() }

// CA is the cluster's CA, which signs every agent's certificate unless
// AgentOptions.CA says otherwise.
func (c *Cluster) CA() *pki.CA { return c.tls.ca }

// agentTLS returns the agent certificate files an agent on h starts with
// and its clients' TLS configuration: the host's certificate of the
// cluster's CA, issued on the first start; or, with another CA, a fresh
// certificate of that CA and an operator of it, so that the test still
// reaches the agent while other agents refuse it.
func (h *Host) agentTLS(ca *pki.CA) (pki.Files, *tls.Config, error) {
	c := h.cluster
	host := h.addr.String()
	if ca != nil && ca != c.tls.ca {
		dir := filepath.Join(h.dir, customTLSDirName)
		f, err := ca.IssueTo(dir, pki.CertRequest{Name: h.Node(), Role: pki.RoleAgent, Hosts: []string{host}})
		if err != nil {
			return pki.Files{}, nil, err
		}
		_, client, err := issueClient(ca, filepath.Join(dir, operatorName), operatorName, pki.RoleOperator)
		return f, client, err
	}
	if h.tls.IsZero() {
		f, err := c.tls.ca.IssueTo(filepath.Join(h.dir, hostTLSDirName), pki.CertRequest{Name: h.Node(), Role: pki.RoleAgent, Hosts: []string{host}})
		if err != nil {
			return pki.Files{}, nil, err
		}
		h.tls = f
	}
	return h.tls, c.tls.client, nil
}
