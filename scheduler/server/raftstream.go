package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// raftHandshakeTimeout bounds the TLS handshake of a raft connection, both
// ways: a peer that connects and never speaks must not hold a goroutine
// for ever, and a dial to a blackholed peer must give up long before the
// next heartbeat is due to someone else.
const raftHandshakeTimeout = 5 * time.Second

// tlsStreamLayer is raft's network below the NetworkTransport: TCP with
// mutual TLS 1.3. Both ends present certificates signed by the cluster CA
// and both check the other with verifyPeer (the scheduler role), so a
// plaintext client, a certificate from another CA, or an agent's
// certificate never reaches raft's RPC decoder.
type tlsStreamLayer struct {
	listener  net.Listener
	advertise net.Addr
	server    *tls.Config
	client    *tls.Config
}

var _ raft.StreamLayer = (*tlsStreamLayer)(nil)

// advertiseAddr is a raft address that may be a DNS name, which
// net.TCPAddr cannot hold.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// newTLSStreamLayer listens on bind and checks the TLS configurations: the
// server side must verify client certificates against a CA, the client
// side must present a certificate and know the CA. verifyPeer, when set,
// is called with each peer's verified leaf certificate on both sides.
//
// insecure makes it plaintext instead, for schedulers started with
// --insecure (one host, tests): then no TLS configuration may be given.
func newTLSStreamLayer(bind, advertise string, serverTLS, clientTLS *tls.Config, verifyPeer func(*x509.Certificate) error, insecure bool) (*tlsStreamLayer, error) {
	var server, client *tls.Config
	if insecure {
		if serverTLS != nil || clientTLS != nil {
			return nil, fmt.Errorf("%w: raft is either plaintext (insecure) or TLS, not both", ErrRaftTLS)
		}
	} else {
		var err error
		if server, client, err = raftTLSConfigs(serverTLS, clientTLS, verifyPeer); err != nil {
			return nil, err
		}
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("raft address %s is in use: %w: stop what listens there (another scheduler?) or give another listen address", bind, err)
		}
		return nil, fmt.Errorf("listen for raft on %s: %w: give a host:port of this machine", bind, err)
	}
	adv, err := advertisedAddr(ln.Addr().(*net.TCPAddr), advertise)
	if err != nil {
		ln.Close()
		return nil, err
	}
	return &tlsStreamLayer{listener: ln, advertise: adv, server: server, client: client}, nil
}

// raftTLSConfigs clones the caller's configurations and tightens them:
// TLS 1.3, client certificates required and verified, and verifyPeer on
// both sides.
func raftTLSConfigs(serverTLS, clientTLS *tls.Config, verifyPeer func(*x509.Certificate) error) (server, client *tls.Config, err error) {
	switch {
	case serverTLS == nil || clientTLS == nil:
		return nil, nil, fmt.Errorf("%w: raft needs a server and a client TLS configuration: give the scheduler its --tls-ca, --tls-cert and --tls-key", ErrRaftTLS)
	case serverTLS.ClientCAs == nil:
		return nil, nil, fmt.Errorf("%w: the raft server TLS configuration has no client CA, so it cannot verify peers: build it with the cluster CA", ErrRaftTLS)
	case len(serverTLS.Certificates) == 0 && serverTLS.GetCertificate == nil:
		return nil, nil, fmt.Errorf("%w: the raft server TLS configuration has no certificate", ErrRaftTLS)
	case clientTLS.RootCAs == nil:
		return nil, nil, fmt.Errorf("%w: the raft client TLS configuration has no root CA, so it cannot verify peers: build it with the cluster CA", ErrRaftTLS)
	case len(clientTLS.Certificates) == 0 && clientTLS.GetClientCertificate == nil:
		return nil, nil, fmt.Errorf("%w: the raft client TLS configuration has no certificate, and peers require one", ErrRaftTLS)
	}
	server = serverTLS.Clone()
	server.MinVersion = tls.VersionTLS13
	server.ClientAuth = tls.RequireAndVerifyClientCert
	server.VerifyConnection = chainVerify(server.VerifyConnection, verifyPeer)
	client = clientTLS.Clone()
	client.MinVersion = tls.VersionTLS13
	client.VerifyConnection = chainVerify(client.VerifyConnection, verifyPeer)
	return server, client, nil
}

// chainVerify runs a configuration's own VerifyConnection, then
// verifyPeer on the peer's leaf certificate, which the standard
// verification has already checked against the CA.
func chainVerify(prev func(tls.ConnectionState) error, verifyPeer func(*x509.Certificate) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if prev != nil {
			if err := prev(cs); err != nil {
				return err
			}
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("raft peer presented no certificate")
		}
		if verifyPeer == nil {
			return nil
		}
		if err := verifyPeer(cs.PeerCertificates[0]); err != nil {
			return fmt.Errorf("raft peer %q refused: %w", cs.PeerCertificates[0].Subject.CommonName, err)
		}
		return nil
	}
}

// advertisedAddr is the address peers dial: advertise when given (its port
// 0 meaning the one bound), else the bound address, which must then be a
// specific IP.
func advertisedAddr(bound *net.TCPAddr, advertise string) (net.Addr, error) {
	if advertise == "" {
		if bound.IP == nil || bound.IP.IsUnspecified() {
			return nil, fmt.Errorf("raft listens on %s, which peers cannot dial: give an advertise address (host:port peers reach this scheduler at)", bound)
		}
		return bound, nil
	}
	host, port, err := net.SplitHostPort(advertise)
	if err != nil || host == "" {
		return nil, fmt.Errorf("raft advertise address %q is not host:port: give the address peers reach this scheduler at", advertise)
	}
	if port == "0" || port == "" {
		return advertiseAddr(net.JoinHostPort(host, fmt.Sprint(bound.Port))), nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return nil, fmt.Errorf("raft advertise address %s is unspecified: give the address peers reach this scheduler at", advertise)
	}
	return advertiseAddr(advertise), nil
}

// Accept returns the next incoming connection as TLS; its handshake runs
// on first use, in the transport's goroutine for that connection, so one
// slow peer does not stall the accept loop.
func (s *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := s.listener.Accept()
	if err != nil || s.server == nil {
		return c, err
	}
	return &handshakeConn{Conn: tls.Server(c, s.server)}, nil
}

func (s *tlsStreamLayer) Close() error { return s.listener.Close() }

func (s *tlsStreamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to a peer and completes the TLS handshake within timeout
// (raftHandshakeTimeout at most), checking that the peer's certificate
// names the host dialled, is signed by the CA and passes verifyPeer.
func (s *tlsStreamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if timeout <= 0 || timeout > raftHandshakeTimeout {
		timeout = raftHandshakeTimeout
	}
	if s.client == nil {
		return net.DialTimeout("tcp", string(address), timeout)
	}
	cfg := s.client
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(string(address))
		if err != nil {
			return nil, fmt.Errorf("raft peer address %q is not host:port: %w", address, err)
		}
		cfg = cfg.Clone()
		cfg.ServerName = host
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", string(address))
	if err != nil {
		return nil, fmt.Errorf("dial raft peer %s: %w", address, err)
	}
	return c, nil
}

// handshakeConn is a server-side TLS connection whose handshake is
// bounded by raftHandshakeTimeout; after it, raft's own deadlines apply.
type handshakeConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *handshakeConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), raftHandshakeTimeout)
		defer cancel()
		c.err = c.Conn.HandshakeContext(ctx)
		if c.err != nil {
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *handshakeConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *handshakeConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
