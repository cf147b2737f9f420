// Package tunnel carries one local TCP connection through another
// connection: how godwit keeps CRIU's own sockets (the page server of a
// stream migration, the lazy-pages connection of a post-copy one) off the
// network. CRIU speaks plain TCP to a port on the loopback address; the
// agent splices that connection to a data connection between the two
// agents (internal/datachan), which carries the agents' credentials and
// TLS.
//
// A splice copies both ways and is half-close aware: when one side ends
// its stream, the other side's write half is closed, so that each end
// sees EOF exactly when its peer stopped sending, and the splice ends
// once both directions have. Accept serves the local end as a listener
// (the side where CRIU connects); Splice joins two connections already
// made (the side where the agent connects to CRIU).
package tunnel
