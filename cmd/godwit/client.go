package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/internal/datachan"
	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// tlsProbeTimeout bounds the connection that finds out, after a call
// failed, whether the agent speaks the other protocol than the CLI.
const tlsProbeTimeout = 5 * time.Second

// tlsFlags are the CLI's TLS flags, their environment variables and the
// file each names, in the order messages list them.
var tlsFlags = []struct {
	flag, env, usage string
	file             func(*pki.Files) *string
}{
	{"tls-ca", "GODWIT_TLS_CA", "the cluster CA's certificate (PEM), which the agent's certificate must be signed by",
		func(f *pki.Files) *string { return &f.CA }},
	{"tls-cert", "GODWIT_TLS_CERT", "this client's certificate (PEM), signed by the cluster's CA",
		func(f *pki.Files) *string { return &f.Cert }},
	{"tls-key", "GODWIT_TLS_KEY", "the private key of --tls-cert (PEM, mode 0600)",
		func(f *pki.Files) *string { return &f.Key }},
}

// tlsAdvice is what a CLI talking plaintext to a TLS agent is told.
const tlsAdvice = "give --tls-ca, --tls-cert and --tls-key (or set GODWIT_TLS_CA, GODWIT_TLS_CERT and GODWIT_TLS_KEY): " +
	"the cluster's CA and a certificate it signed"

// addTLSFlags adds the global --tls-ca, --tls-cert and --tls-key, which
// default to GODWIT_TLS_CA, GODWIT_TLS_CERT and GODWIT_TLS_KEY. Without
// them the CLI speaks plaintext, to agents started with --insecure.
func addTLSFlags(root *cobra.Command, o *globalOptions) {
	for _, f := range tlsFlags {
		root.PersistentFlags().StringVar(f.file(&o.tlsFiles), f.flag, envOr(f.env, ""),
			f.usage+" (env "+f.env+"); none of the three: plaintext, for agents started with --insecure")
	}
}

// clientTLS is the CLI's TLS configuration, loaded once: nil when no TLS
// file is named (plaintext), an error that names the missing flag when
// only some are.
type clientTLS struct {
	once sync.Once
	cfg  *tls.Config
	err  error
}

func (o *globalOptions) clientTLS() (*tls.Config, error) {
	o.tls.once.Do(func() {
		t, err := o.target()
		if err != nil {
			o.tls.err = err
			return
		}
		if o.tls.cfg, o.tls.err = loadClientTLS(t.tls); o.tls.err != nil && t.tlsContext != "" {
			o.tls.err = fmt.Errorf("%w%s", o.tls.err, t.tlsFilesNote())
		}
	})
	return o.tls.cfg, o.tls.err
}

func loadClientTLS(f pki.Files) (*tls.Config, error) {
	var missing []string
	for _, fl := range tlsFlags {
		if *fl.file(&f) == "" {
			missing = append(missing, fmt.Sprintf("--%s (or %s)", fl.flag, fl.env))
		}
	}
	switch len(missing) {
	case len(tlsFlags):
		return nil, nil
	case 0:
		id, err := pki.Load(f)
		if err != nil {
			return nil, err
		}
		return id.ClientConfig(), nil
	}
	return nil, fmt.Errorf("missing %s: TLS needs all three of --tls-ca, --tls-cert and --tls-key; give none to talk plaintext to an agent or scheduler started with --insecure",
		strings.Join(missing, " and "))
}

// withAgent is o talking to the agent at addr instead, with the same
// credentials.
func (o *globalOptions) withAgent(addr string) *globalOptions {
	return &globalOptions{agentAddr: addr, tlsFiles: o.tlsFiles}
}

// agentClient dials the agent named by --agent. The connection is lazy:
// errors show on the first call, where explain turns them into advice.
func (o *globalOptions) agentClient() (pb.AgentServiceClient, func(), error) {
	if err := o.requireAgent(); err != nil {
		return nil, nil, err
	}
	cfg, err := o.clientTLS()
	if err != nil {
		return nil, nil, err
	}
	creds := insecure.NewCredentials()
	if cfg != nil {
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(o.agentAddr, append(rpc.DialOptions(), grpc.WithTransportCredentials(creds))...)
	if err != nil {
		return nil, nil, fmt.Errorf("agent address %q: %w", o.agentAddr, err)
	}
	return pb.NewAgentServiceClient(conn), func() { conn.Close() }, nil
}

// dataDialer opens data connections to the agent named by --agent, which
// serves them on its gRPC address, with the CLI's credentials: checkpoint
// archives travel on them.
func (o *globalOptions) dataDialer() agentclient.DataDialer {
	cfg, err := o.clientTLS()
	if err != nil {
		return func(context.Context, string) (net.Conn, error) { return nil, err }
	}
	return agentclient.DialData(o.agentAddr, cfg)
}

// explain turns a gRPC error into the agent's own message, or advice when
// the agent could not be reached.
func (o *globalOptions) explain(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		t, _ := o.target() // resolved already: the call was made
		if mismatch := o.tlsMismatch(context.Background(), o.agentAddr); mismatch != nil {
			return fmt.Errorf("%w%s", mismatch, t.tlsFilesNote())
		}
		return fmt.Errorf("cannot reach the agent at %s%s (%s): is `godwit agent` running there? Set --agent or GODWIT_AGENT",
			o.agentAddr, t.fromNote(), st.Message())
	case codes.Canceled:
		return context.Canceled
	}
	return errors.New(st.Message())
}

// tlsMismatch finds out, after a call to the agent at addr failed,
// whether the reason is TLS: the agent speaks the other protocol than the
// CLI, or one refused the other's certificate. It returns advice that
// names the flags to change, or nil when TLS is not the reason (or it
// cannot tell: the agent is down).
func (o *globalOptions) tlsMismatch(ctx context.Context, addr string) error {
	cfg, err := o.clientTLS()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, tlsProbeTimeout)
	defer cancel()
	// A probe is what the agent answers at once on its data channel:
	// plaintext one to see whether the agent wants TLS, a TLS one to see
	// what it makes of the CLI's certificate.
	err = datachan.Dialer{TLS: cfg}.Probe(ctx, addr)
	switch {
	case cfg == nil && errors.Is(err, datachan.ErrTLSRequired):
		return fmt.Errorf("the agent at %s serves TLS and this command spoke plaintext: %s", addr, tlsAdvice)
	case errors.Is(err, datachan.ErrPlaintextServer):
		return fmt.Errorf("the agent at %s serves plaintext (started with --insecure) and this command spoke TLS: "+
			"drop --tls-ca, --tls-cert and --tls-key and unset GODWIT_TLS_CA, GODWIT_TLS_CERT and GODWIT_TLS_KEY, or start the agent with TLS", addr)
	case errors.Is(err, datachan.ErrHandshake):
		return fmt.Errorf("the agent at %s: %w; --tls-ca (GODWIT_TLS_CA) must be the CA that signed the agent's certificate, and --tls-cert (GODWIT_TLS_CERT) a certificate signed by the agent's CA",
			addr, err)
	}
	return nil
}

// call runs f with a client of the agent and explains its error.
func (o *globalOptions) call(f func(pb.AgentServiceClient) error) error {
	client, closeConn, err := o.agentClient()
	if err != nil {
		return err
	}
	defer closeConn()
	return o.explain(f(client))
}
