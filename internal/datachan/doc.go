// Package datachan owns godwit's raw data connections: bulk bytes
// (checkpoint archives) that travel beside a gRPC call on plain TCP
// instead of inside it, where HTTP/2 framing and gRPC's copies of every
// message cost most of the time (measured: about 600 MB/s for one stream
// against 1.5 GB/s on a raw loopback connection).
//
// Data connections share the server's one listen address with gRPC. Mux
// accepts every connection and reads its first bytes: one that opens with
// the magic line
//
//	GODWIT-DATA/1 <token>\n
//
// is a data connection, where token is 64 lowercase hex digits (256
// random bits); any other (gRPC's HTTP/2 preface) is
// handed, its first bytes replayed, to the listener that Mux.RPCListener
// returns and grpc.Server.Serve uses. A data connection is answered with
// "OK\n" when a call claims it or "ERR <reason>\n" when it is refused; the
// bytes after that belong to the call.
//
// The token ties a data connection to one gRPC call. The client makes it
// (NewToken), sends it inside its gRPC request, which carries the call's
// authentication, and presents it on the data connection (Dial). The
// server's handler claims the connection with Mux.Accept. Either may come
// first: each waits for the other for a bounded time (Config.Wait), a
// token is claimed once, and a connection that presents a token nobody
// claims in time is refused, so that a stranger's connection never waits
// for ever. A token gives no authority of its own: it only names which
// call a connection belongs to, and only the client that made the call
// knows it.
//
// # TLS
//
// With Config.TLS the Mux serves only TLS: it runs the TLS handshake on
// every connection first (in the connection's own goroutine, within
// Config.HandshakeTimeout, so that a slow or hostile client holds up
// nobody), then routes by the first bytes inside it as above. gRPC runs on
// the connection the Mux has already secured: its server takes
// Mux.ServerCredentials, which pass the connection through and report its
// TLS state, so that handlers see the client's certificate; its clients
// use credentials.NewTLS. Data connections are opened with a Dialer whose
// TLS is set; Mux.Dial uses Config.ClientTLS, so that one agent sends to
// another with its own node certificate. A plaintext data connection to a
// TLS Mux is answered "ERR this agent requires TLS..." (ErrTLSRequired at
// the client), a TLS client of a plaintext Mux gets a plaintext answer
// that its TLS stack rejects (ErrPlaintextServer), and both are logged,
// so that a half-configured cluster says what is wrong. Dialer.Probe
// checks that a connection, certificates and all, gets through before
// anything depends on it: the Mux answers a probe at once.
//
// # Stalls
//
// A data connection must not wait for ever on a peer that stopped (a
// SIGSTOPped or hung agent, whose kernel keeps the connection open) or
// that the network cut off: every connection that Accept and Dial return
// is watched (Watch), and once a Read or Write has waited the stall
// timeout (Config.StallTimeout, Dialer.StallTimeout, or a call's own,
// WithStallTimeout; DefaultStallTimeout) with no byte moving, it and
// every later call fail with a *StallError (ErrStalled) that names the
// peer. Connecting, TCP and TLS, is bounded by the same timeout. TCP
// keepalive is on for every connection the Mux accepts or the Dialer
// opens, so that a vanished host is noticed on an idle connection too.
//
// The data connection carries no framing: its end is not the end of the
// data. Whether the bytes were complete is decided on the gRPC call (its
// final status, or the client's half-close), so that a cut connection is
// never taken for a short but complete transfer.
package datachan
