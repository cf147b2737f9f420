// Package pki owns godwit's node certificates: a certificate authority
// (CA) that signs them, the PEM files they live in, and the TLS
// configurations that agents and clients build from those files.
//
// Every node of a cluster has a certificate whose common name is its node
// name and whose subject alternative names are the addresses and DNS names
// others reach it at; it serves for both ends of a connection (server and
// client authentication), since an agent both accepts connections and
// opens them to other agents. Both ends verify each other against the
// cluster's CA: TLS 1.3, mutual authentication, nothing else accepted.
//
// The CA made here is a throwaway one, for one machine, tests and demos:
// its key sits in a file beside its certificate. The cluster's `godwit tls`
// (the scheduler issue) will manage the real one; the files it writes are
// the same PEM files.
//
// Only the standard library's crypto/x509 and crypto/tls are used: they
// are what Go's own TLS stack trusts, and they need no extra dependency.
package pki
