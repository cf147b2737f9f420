// Package authz owns who may call what on godwit's gRPC servers.
//
// A caller is who its client certificate says it is (Caller): the
// certificate's common name and the role the cluster's CA signed into it
// (internal/pki: scheduler, agent, operator or viewer). A Policy maps
// every RPC of a server, by its full gRPC method name, to the roles that
// may call it; the server interceptors (ServerOptions) refuse any other
// call before its handler runs, with codes.PermissionDenied and a message
// that names the caller, its role, the method and the role it needs. A
// method missing from the policy is refused too, so that a new RPC is
// callable only once someone has decided who may call it; a test walks
// every registered service of godwit.v1 and fails on any method without
// an entry.
//
// A caller whose certificate carries no role, or a plaintext call to a
// server that serves TLS, is refused with codes.Unauthenticated. A server
// started with --insecure serves plaintext without authentication: there
// is nobody to check, so its interceptors allow every call (that is what
// --insecure means, and the daemon warns loudly when it starts), and
// Caller names every caller "insecure".
//
// Only the gRPC calls are checked here. The data connections beside them
// (internal/datachan) carry no authority of their own: each is tied by a
// one-time token to a gRPC call that was checked.
package authz
