package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/internal/pki"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

const (
	// schedulerProbeTimeout bounds the connection that finds out, after a
	// call failed as unavailable, whether the scheduler is there at all
	// and whether TLS is why.
	schedulerProbeTimeout = 5 * time.Second
	// probeAlertWait is how long the probe waits, after a TLS handshake
	// that went through, for the server's alert refusing the client's
	// certificate: in TLS 1.3 it comes after the client's handshake ends.
	probeAlertWait = 300 * time.Millisecond
)

// containerAPI is what the agent's and the cluster's APIs share, with the
// same messages: the container commands run alike against either.
type containerAPI interface {
	ListContainers(ctx context.Context, in *pb.ListContainersRequest, opts ...grpc.CallOption) (*pb.ListContainersResponse, error)
	InspectContainer(ctx context.Context, in *pb.ContainerRef, opts ...grpc.CallOption) (*pb.Container, error)
	StopContainer(ctx context.Context, in *pb.StopContainerRequest, opts ...grpc.CallOption) (*pb.Container, error)
	StartContainer(ctx context.Context, in *pb.ContainerRef, opts ...grpc.CallOption) (*pb.Container, error)
	RemoveContainer(ctx context.Context, in *pb.RemoveContainerRequest, opts ...grpc.CallOption) (*pb.RemoveContainerResponse, error)
	Logs(ctx context.Context, in *pb.LogsRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[pb.LogsChunk], error)
}

var (
	_ containerAPI = pb.AgentServiceClient(nil)
	_ containerAPI = pb.ClusterServiceClient(nil)
)

// callContainers runs f with a client of the target, the cluster's or
// the agent's, and explains its error.
func (o *globalOptions) callContainers(f func(containerAPI) error) error {
	if o.isCluster() {
		return o.callCluster(func(c pb.ClusterServiceClient) error { return f(c) })
	}
	return o.call(func(c pb.AgentServiceClient) error { return f(c) })
}

// callCluster runs f with a client of the cluster and explains its error.
// It refuses when the target is one agent.
func (o *globalOptions) callCluster(f func(pb.ClusterServiceClient) error) error {
	t, err := o.target()
	if err != nil {
		return err
	}
	if t.kind != clusterTarget {
		return o.clusterOnlyError(t)
	}
	cfg, err := o.clientTLS()
	if err != nil {
		return err
	}
	creds := insecure.NewCredentials()
	if cfg != nil {
		// Only a scheduler serves the cluster's API: an agent's
		// certificate, valid as it is, must not pass for one.
		cfg = pki.RequirePeerRole(cfg, pki.RoleScheduler)
		creds = credentials.NewTLS(cfg)
	}
	// Several schedulers may be named: the one that answered last goes
	// first, and a scheduler that cannot be reached (its port refuses, its
	// host is gone) hands the call to the next. Any other answer, errors
	// included, is the cluster's.
	addrs := strings.Split(t.addr, ",")
	var last error
	for i := range addrs {
		k := (o.clusterPick + i) % len(addrs)
		one := t
		one.addr = addrs[k]
		err := o.callOneScheduler(one, cfg, creds, f)
		if len(addrs) == 1 || !errors.Is(err, errUnreachable) {
			o.clusterPick = k
			return err
		}
		last = err
	}
	return last
}

// unreachableError is advice about a scheduler that could not be
// reached; it matches errUnreachable, so callCluster tries the next.
type unreachableError struct{ msg string }

func (e *unreachableError) Error() string        { return e.msg }
func (e *unreachableError) Is(target error) bool { return target == errUnreachable }

// callOneScheduler is callCluster on one scheduler's address.
func (o *globalOptions) callOneScheduler(t target, cfg *tls.Config, creds credentials.TransportCredentials, f func(pb.ClusterServiceClient) error) error {
	conn, err := grpc.NewClient(t.addr, append(rpc.DialOptions(), grpc.WithTransportCredentials(creds))...)
	if err != nil {
		return fmt.Errorf("scheduler address %q%s: %w", t.addr, t.fromNote(), err)
	}
	defer conn.Close()
	return o.explainCluster(t, cfg, f(pb.NewClusterServiceClient(conn)))
}

// explainCluster turns a gRPC error into the scheduler's own message, or
// into advice when the scheduler could not be reached or TLS is why.
func (o *globalOptions) explainCluster(t target, cfg *tls.Config, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		ctx, cancel := context.WithTimeout(context.Background(), schedulerProbeTimeout)
		defer cancel()
		probe := probeScheduler(ctx, t.addr, cfg)
		switch {
		case probe == nil:
			// It is there and speaks our protocol: the scheduler itself
			// said unavailable (no leader, shutting down).
			return errors.New(st.Message())
		case errors.Is(probe, errUnreachable):
			return &unreachableError{fmt.Sprintf("cannot reach the scheduler at %s%s (%s): is `godwit scheduler` running there? %s",
				t.addr, t.fromNote(), st.Message(), targetAdvice(t))}
		}
		return fmt.Errorf("the scheduler at %s%s: %w%s", t.addr, t.fromNote(), probe, t.tlsFilesNote())
	case codes.Canceled:
		return context.Canceled
	}
	return errors.New(st.Message())
}

// targetAdvice says how to change the cluster target t.
func targetAdvice(t target) string {
	switch t.from {
	case fromAddrFlag:
		return "Check --addr."
	case envClusterAddr:
		return "Check " + envClusterAddr + ", or give --addr."
	}
	name, _ := strings.CutPrefix(t.from, contextPrefix)
	return fmt.Sprintf("Check the context with `godwit context show %s`, pick another with `godwit context use NAME`, or give --addr.", name)
}

// What probeScheduler finds wrong.
var (
	errUnreachable = errors.New("unreachable")
	errServesTLS   = errors.New("it serves TLS and this command spoke plaintext: " + tlsAdvice)
	errServesPlain = errors.New("it serves plaintext (started with --insecure) and this command spoke TLS: " +
		"drop --tls-ca, --tls-cert and --tls-key and unset GODWIT_TLS_CA, GODWIT_TLS_CERT and GODWIT_TLS_KEY, or start the scheduler with TLS")
)

// probeScheduler connects to addr as the CLI would, with cfg or in
// plaintext, and reports why a call there failed: errUnreachable (no
// connection), errServesTLS or errServesPlain (the other protocol than
// cfg's), a certificate either side refused, or nil when the connection
// works and the failure was the scheduler's own answer.
func probeScheduler(ctx context.Context, addr string, cfg *tls.Config) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnreachable, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	probeCfg := &tls.Config{InsecureSkipVerify: true} // only: does it speak TLS?
	if cfg != nil {
		probeCfg = cfg.Clone()
		if probeCfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			probeCfg.ServerName = host
		}
	}
	probeCfg.NextProtos = []string{"h2"} // as gRPC offers
	tc := tls.Client(conn, probeCfg)
	err = tc.HandshakeContext(ctx)
	var (
		header tls.RecordHeaderError
		alert  tls.AlertError
		verify *tls.CertificateVerificationError
		unk    x509.UnknownAuthorityError
		host   x509.HostnameError
	)
	switch {
	case cfg == nil && (err == nil || errors.As(err, &alert)):
		return errServesTLS
	case cfg == nil:
		return nil // not TLS: it speaks what we spoke
	case errors.As(err, &header) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		// An answer that is no TLS record, or a plaintext server hanging
		// up on a ClientHello it cannot parse.
		return errServesPlain
	case errors.As(err, &verify) || errors.As(err, &unk) || errors.As(err, &host):
		return fmt.Errorf("its certificate is not trusted (%w): --tls-ca (GODWIT_TLS_CA) must be the CA that signed the scheduler's certificate, "+
			"and the certificate must name the address dialled", err)
	case err != nil:
		return fmt.Errorf("TLS handshake failed: %w", err)
	}
	// TLS 1.3: a server refusing the client's certificate says so after
	// the client's side of the handshake ended, on the first read.
	_ = tc.SetReadDeadline(time.Now().Add(probeAlertWait))
	if _, err := tc.Read(make([]byte, 1)); errors.As(err, &alert) {
		return fmt.Errorf("it refused this command's certificate (%w): --tls-cert (GODWIT_TLS_CERT) must be signed by the cluster's CA", err)
	}
	return nil
}
