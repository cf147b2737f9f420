package server

import (
	"context"
	"crypto/x509"
	"fmt"

	"google.golang.org/grpc/metadata"

	"github.com/godwit/godwit/internal/authz"
	"github.com/godwit/godwit/internal/pki"
)

// A replica that forwards a call to the leader names the original
// caller in these metadata keys; the leader believes them only from a
// caller with the scheduler role, whose replica checked the original
// caller's certificate and role before forwarding.
const (
	forwardedNameKey = "godwit-forwarded-name"
	forwardedRoleKey = "godwit-forwarded-role"
)

// caller is who made a call, for checks and the audit record.
type caller struct {
	Name string
	Role pki.Role
	// Secure: the name comes from a verified certificate (false on an
	// --insecure scheduler, where anyone may call).
	Secure bool
}

// callerOf is the caller of the gRPC call of ctx: the original caller
// when another scheduler forwarded it.
func callerOf(ctx context.Context) caller {
	id, err := authz.Caller(ctx)
	if err != nil {
		return caller{Name: "unknown"}
	}
	if id.Role == pki.RoleScheduler {
		if fwd := forwardedCaller(ctx); fwd != nil {
			return *fwd
		}
	}
	return caller{Name: id.Name, Role: id.Role, Secure: id.Authenticated()}
}

// forwardedCaller is the original caller a forwarding replica named, or
// nil when the call was not forwarded.
func forwardedCaller(ctx context.Context) *caller {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil
	}
	names, roles := md.Get(forwardedNameKey), md.Get(forwardedRoleKey)
	if len(names) != 1 || len(roles) != 1 {
		return nil
	}
	role := pki.Role(roles[0])
	return &caller{Name: names[0], Role: role, Secure: role != ""}
}

// withForwardedCaller is ctx, outgoing to the leader, naming this call's
// caller.
func withForwardedCaller(ctx context.Context) context.Context {
	c := callerOf(ctx)
	return metadata.AppendToOutgoingContext(ctx, forwardedNameKey, c.Name, forwardedRoleKey, string(c.Role))
}

// verifyRole is a raft peer check: the peer's certificate must carry
// the role.
func verifyRole(want pki.Role) func(*x509.Certificate) error {
	return func(cert *x509.Certificate) error {
		got, err := pki.RoleOf(cert)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("%s %q is not a %s: raft peers must present a certificate issued with --role %s", got, cert.Subject.CommonName, want, want)
		}
		return nil
	}
}
