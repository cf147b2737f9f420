package server

import (
	"crypto/tls"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// connPool holds one gRPC connection per address, to agents and to the
// other schedulers, dialled with the scheduler's certificate (nil TLS:
// plaintext, to --insecure daemons). Connections are lazy: an
// unreachable peer shows on the first call.
type connPool struct {
	tls  *tls.Config
	opts []grpc.DialOption

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// newConnPool dials with cfg (nil: plaintext) and opts besides the
// shared transport settings.
func newConnPool(cfg *tls.Config, opts ...grpc.DialOption) *connPool {
	return &connPool{tls: cfg, opts: opts, conns: map[string]*grpc.ClientConn{}}
}

// agent returns a client of the agent at addr.
func (p *connPool) agent(addr string) (pb.AgentServiceClient, error) {
	conn, err := p.conn(addr)
	if err != nil {
		return nil, err
	}
	return pb.NewAgentServiceClient(conn), nil
}

func (p *connPool) conn(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	creds := insecure.NewCredentials()
	if p.tls != nil {
		creds = credentials.NewTLS(p.tls)
	}
	opts := append(append(rpc.DialOptions(), p.opts...), grpc.WithTransportCredentials(creds))
	c, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

// close closes every connection.
func (p *connPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.conns {
		c.Close()
		delete(p.conns, addr)
	}
}
