package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// Role is what the holder of a certificate may do in a cluster. It is
// signed into the certificate by the CA (see roleURI), so a peer learns
// it from the handshake and nothing the peer sends later can change it.
type Role string

// The roles of a cluster. Schedulers and agents serve (their certificates
// name the addresses they are reached at) and dial each other; operators
// and viewers only dial.
const (
	// RoleScheduler is a scheduler replica: it drives agents and talks
	// to the other replicas.
	RoleScheduler Role = "scheduler"
	// RoleAgent is a node agent: it serves its node and sends migrations
	// to other agents.
	RoleAgent Role = "agent"
	// RoleOperator is a person or tool that runs the cluster: it may do
	// everything an operator's command does.
	RoleOperator Role = "operator"
	// RoleViewer may only read: list, inspect, logs, status.
	RoleViewer Role = "viewer"
)

const (
	// roleURIScheme and roleURIHost make a role's URI subject alternative
	// name, godwit://role/ROLE: a URI, never a DNS name or an IP address,
	// so that hostname verification never reads it, and outside the
	// subject, so that it cannot be confused with the certificate's name
	// (its common name).
	roleURIScheme = "godwit"
	roleURIHost   = "role"
)

var (
	// ErrNoRole: a certificate carries no godwit role (it was issued
	// before roles existed, or by another tool). It is refused: every
	// certificate of a cluster says what its holder may do.
	ErrNoRole = errors.New("the certificate carries no godwit role")
	// ErrUnknownRole: a role that is none of Roles().
	ErrUnknownRole = errors.New("unknown role")
)

// Roles are every role, in the order help texts list them.
func Roles() []Role { return []Role{RoleScheduler, RoleAgent, RoleOperator, RoleViewer} }

// ParseRole returns the role named s, or an error wrapping
// ErrUnknownRole that lists the roles.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("%w %q: use %s", ErrUnknownRole, s, roleList())
	}
	return r, nil
}

// Valid reports whether r is one of Roles().
func (r Role) Valid() bool { return slices.Contains(Roles(), r) }

// Serves reports whether a certificate of role r is for a server too
// (schedulers and agents), and so must name the hosts it is reached at;
// the others are for clients only.
func (r Role) Serves() bool { return r == RoleScheduler || r == RoleAgent }

func (r Role) String() string { return string(r) }

// uri is the subject alternative name that carries r.
func (r Role) uri() *url.URL {
	return &url.URL{Scheme: roleURIScheme, Host: roleURIHost, Path: "/" + string(r)}
}

// RoleOf returns the role signed into cert. A certificate without one
// fails with ErrNoRole, one whose role URI is malformed or names no known
// role with ErrUnknownRole, and one with two role URIs is refused too:
// each error says to re-issue the certificate with --role.
func RoleOf(cert *x509.Certificate) (Role, error) {
	var roles []Role
	for _, u := range cert.URIs {
		if u.Scheme != roleURIScheme {
			continue
		}
		name, ok := strings.CutPrefix(u.Path, "/")
		r := Role(name)
		if u.Host != roleURIHost || !ok || u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || !r.Valid() {
			return "", fmt.Errorf("%w: certificate %q carries %s, which names no role (%s): re-issue it with `godwit tls cert create --role ROLE`",
				ErrUnknownRole, cert.Subject.CommonName, u, roleList())
		}
		roles = append(roles, r)
	}
	switch len(roles) {
	case 0:
		return "", fmt.Errorf("%w: certificate %q was issued without a role (by an older godwit, or another tool): re-issue it with `godwit tls cert create --role %s`",
			ErrNoRole, cert.Subject.CommonName, roleList())
	case 1:
		return roles[0], nil
	}
	return "", fmt.Errorf("%w: certificate %q carries %d roles, and a certificate has one: re-issue it with a single --role",
		ErrUnknownRole, cert.Subject.CommonName, len(roles))
}

// RequirePeerRole returns a copy of cfg that, after the usual
// verification, also refuses a peer whose certificate's role is none of
// roles: a raft transport accepts only schedulers, an agent dialling a
// scheduler accepts only a scheduler. It works on both ends, server and
// client; a VerifyConnection that cfg already has runs first.
func RequirePeerRole(cfg *tls.Config, roles ...Role) *tls.Config {
	cfg = cfg.Clone()
	prev := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the peer presented no certificate")
		}
		peer := cs.PeerCertificates[0]
		r, err := RoleOf(peer)
		if err != nil {
			return err
		}
		if !slices.Contains(roles, r) {
			return fmt.Errorf("the peer %q has the %s role, and only %s may connect here: give it a certificate of the right role",
				peer.Subject.CommonName, r, joinRoles(roles))
		}
		return nil
	}
	return cfg
}

// roleList is every role, for messages: "scheduler|agent|operator|viewer".
func roleList() string { return joinRoles(Roles()) }

func joinRoles(roles []Role) string {
	s := make([]string, len(roles))
	for i, r := range roles {
		s[i] = string(r)
	}
	return strings.Join(s, "|")
}
