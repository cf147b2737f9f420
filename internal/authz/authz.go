package authz

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/godwit/godwit/internal/pki"
)

// InsecureName is the Name of every caller of a plaintext (--insecure)
// server: there is no certificate to name anyone.
const InsecureName = "insecure"

// insecureAuthType is what gRPC's insecure credentials report as their
// AuthType.
const insecureAuthType = "insecure"

var (
	// ErrNoPeer: the context is not a gRPC server call's, so there is no
	// caller to name.
	ErrNoPeer = errors.New("no gRPC caller in the context")
	// ErrUnauthenticated: the call came over TLS (or to a server that
	// serves TLS) without a certificate that says who and what the caller
	// is.
	ErrUnauthenticated = errors.New("the caller is not authenticated")
	// ErrDenied: the caller's role may not call the method (DeniedError).
	ErrDenied = errors.New("permission denied")
	// ErrNotInPolicy: the method has no entry in the server's policy, so
	// no role may call it (DeniedError).
	ErrNotInPolicy = errors.New("the method is not in the policy")
)

// Identity is who called: the common name and the role of the client's
// certificate. On a plaintext server it is {Name: InsecureName, Role: ""}.
type Identity struct {
	Name string
	Role pki.Role
}

// Authenticated reports whether the identity comes from a verified
// certificate; false for the callers of a plaintext server. Decide on
// this, never on the name: a certificate may be named "insecure" too.
func (id Identity) Authenticated() bool { return id.Role != "" }

// String is the caller as messages and audit records name it:
// `viewer "alice"`, or `insecure` on a plaintext server.
func (id Identity) String() string {
	if !id.Authenticated() {
		return id.Name
	}
	return fmt.Sprintf("%s %q", id.Role, id.Name)
}

// Caller returns the identity of the client of the gRPC call whose
// server context ctx is.
//
// Over TLS it is the name and role of the client's certificate, which
// the server verified against the cluster's CA; a certificate without a
// role fails with an error wrapping ErrUnauthenticated and pki.ErrNoRole
// that says to re-issue it. Over plaintext (a server started with
// --insecure) there is no identity to learn: Caller returns
// Identity{Name: InsecureName} and a nil error, since the call is as
// legitimate as the server's configuration makes it; callers that must
// know who acted (audit) record "insecure", and Authenticated is false.
// A context without a gRPC peer fails with ErrNoPeer.
func Caller(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, ErrNoPeer
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		if p.AuthInfo == nil || p.AuthInfo.AuthType() == insecureAuthType {
			return Identity{Name: InsecureName}, nil
		}
		return Identity{}, fmt.Errorf("%w: the connection's credentials are %s, not godwit's TLS", ErrUnauthenticated, p.AuthInfo.AuthType())
	}
	// Only a certificate that the server verified names anyone; a server
	// configured to take unverified certificates names nobody.
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return Identity{}, fmt.Errorf("%w: the client presented no certificate this server verified: give it a certificate of the cluster's CA", ErrUnauthenticated)
	}
	leaf := chains[0][0]
	role, err := pki.RoleOf(leaf)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrUnauthenticated, err)
	}
	return Identity{Name: leaf.Subject.CommonName, Role: role}, nil
}
