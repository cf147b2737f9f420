package rpc

import (
	"time"

	"google.golang.org/grpc/keepalive"
)

// gRPC keepalive. A call to an agent whose process is stopped (SIGSTOP, a
// hung host) or cut off waits on a TCP connection that its kernel, or
// nobody, keeps open: nothing fails it. With keepalive the client pings
// the server over HTTP/2 and closes the connection, failing every call on
// it with codes.Unavailable, when no answer comes: a dead peer is noticed
// within clientPingTime plus pingTimeout (about 20 s) even in the middle
// of a long call. Servers ping their clients too, so that the handlers of
// a client that vanished (a driver whose host died) end.
const (
	// clientPingTime is how long a client's connection may be silent
	// before it pings: gRPC's minimum.
	clientPingTime = 10 * time.Second
	// serverPingTime is the same for a server's side of a connection.
	serverPingTime = 30 * time.Second
	// pingTimeout is how long a ping may go unanswered before the
	// connection is closed.
	pingTimeout = 10 * time.Second
	// minPingInterval is the most often a server lets a client ping, below
	// clientPingTime with room to spare: a client that pings more often is
	// sent GOAWAY ("too_many_pings") and its calls fail, which is why the
	// server's policy must allow what the clients do.
	minPingInterval = 5 * time.Second
)

// clientKeepalive is the keepalive of every godwit client's connection.
// It pings even between calls, so that a driver learns that an agent
// went away before it depends on the next call.
var clientKeepalive = keepalive.ClientParameters{Time: clientPingTime, Timeout: pingTimeout, PermitWithoutStream: true}

// serverKeepalive is how a godwit server pings its clients, and
// serverEnforcement what it allows them.
var (
	serverKeepalive   = keepalive.ServerParameters{Time: serverPingTime, Timeout: pingTimeout}
	serverEnforcement = keepalive.EnforcementPolicy{MinTime: minPingInterval, PermitWithoutStream: true}
)
