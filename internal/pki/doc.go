// Package pki owns godwit's certificates: a certificate authority (CA)
// that signs them, the roles they carry, the PEM files they live in, the
// TLS configurations that daemons and clients build from those files,
// and the cluster's gossip key file.
//
// Every certificate has a role (Role: scheduler, agent, operator or
// viewer), signed into it as a URI subject alternative name
// godwit://role/ROLE, which servers read from the handshake (RoleOf) to
// decide what the caller may do (internal/authz). A certificate without a
// role is refused. A scheduler's or an agent's certificate has its node
// name as common name and, as subject alternative names, the addresses
// and DNS names others reach it at; it serves for both ends of a
// connection (server and client authentication), since these daemons
// both accept connections and open them to each other. An operator's or
// a viewer's is for a client only. Both ends verify each other against
// the cluster's CA: TLS 1.3, mutual authentication, nothing else
// accepted.
//
// The CA's key is written to a file beside its certificate (`godwit tls
// ca create`): whoever reads it can mint certificates of any role, so it
// belongs off the nodes. Tests, devcluster and `agent --dev` make a
// throwaway CA of their own.
//
// Only the standard library's crypto/x509 and crypto/tls are used: they
// are what Go's own TLS stack trusts, and they need no extra dependency.
package pki
