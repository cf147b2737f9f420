package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/internal/datachan"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// streamChunk is the size of the chunks logs and exec output are sent in.
const streamChunk = 32 << 10

// Register adds the agent's API to a gRPC server.
func (a *Agent) Register(s *grpc.Server, opts ...ServerOption) {
	srv := &server{a: a}
	for _, o := range opts {
		o(srv)
	}
	pb.RegisterAgentServiceServer(s, srv)
}

// ServerOption configures the API that Register adds.
type ServerOption func(*server)

// WithDataChannel lets calls that carry a data token move their bulk bytes
// (checkpoint archives) on data connections that d hands over, instead of
// in gRPC messages. Without it such calls are refused.
func WithDataChannel(d DataChannel) ServerOption {
	return func(s *server) { s.data = d }
}

// DataChannel hands over the raw data connections that clients open beside
// their calls (internal/datachan's Mux, on the gRPC server's address).
type DataChannel interface {
	// Accept returns the connection that presents token, waiting for it
	// until ctx ends or a timeout of the channel's own. A token is
	// accepted once. The connection is the caller's to close.
	Accept(ctx context.Context, token string) (net.Conn, error)
	// Dial opens a data connection to the agent at addr presenting token,
	// with this agent's credentials: how one agent sends to another.
	Dial(ctx context.Context, addr, token string) (net.Conn, error)
	// Probe checks that Dial to addr would get through, credentials and
	// all, without a call on the other side: nil, or why not.
	Probe(ctx context.Context, addr string) error
}

// server translates between the gRPC API and the agent. Generated proto
// types stop here.
type server struct {
	pb.UnimplementedAgentServiceServer
	a    *Agent
	data DataChannel // nil: calls with a data token are refused
	// peer is how the agent calls other agents (checkpoint_push.go); nil:
	// PushCheckpoint is refused.
	peer credentials.TransportCredentials
}

// grpcError maps the agent's errors to gRPC status codes, keeping the
// message, which is written for the operator.
func grpcError(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrNotFound), errors.Is(err, image.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrExists), errors.Is(err, image.ErrExists), errors.Is(err, bundle.ErrExists):
		code = codes.AlreadyExists
	// A checkpoint that this host cannot restore, or whose format it does
	// not read, is fine as it is: the host must change (import the image,
	// upgrade CRIU or godwit) before the call can succeed.
	case errors.Is(err, ErrInvalidState), errors.Is(err, ErrInUse),
		errors.Is(err, bundle.ErrIncompatible), errors.Is(err, bundle.ErrUnsupportedVersion),
		errors.Is(err, bundle.ErrUnsealed), errors.Is(err, ErrFenced), errors.Is(err, ErrStaleGeneration):
		code = codes.FailedPrecondition
	// A checkpoint or archive that does not match its manifest, holds
	// what a checkpoint may not, or cannot be opened is bad input, whoever
	// sent it: retrying the same bytes can never succeed.
	case errors.Is(err, ErrInvalid), errors.Is(err, image.ErrInvalid),
		errors.Is(err, bundle.ErrCorrupt), errors.Is(err, bundle.ErrUnsafe),
		errors.Is(err, bundle.ErrInvalidManifest), errors.Is(err, bundle.ErrEncrypted),
		errors.Is(err, bundle.ErrDecrypt), errors.Is(err, criuimg.ErrMalformedImage),
		errors.Is(err, datachan.ErrInvalidToken), errors.Is(err, datachan.ErrTokenUsed):
		code = codes.InvalidArgument
	case errors.Is(err, datachan.ErrClosed): // the agent is stopping
		code = codes.Unavailable
	case errors.Is(err, datachan.ErrStalled): // the peer stopped moving bytes
		code = codes.Unavailable
	case errors.Is(err, datachan.ErrTimeout):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

func (s *server) NodeInfo(ctx context.Context, req *pb.NodeInfoRequest) (*pb.NodeInfoResponse, error) {
	info := s.a.NodeInfo(ctx)
	var strategies []*pb.StrategySupport
	if req.GetStrategies() {
		all, err := s.a.MigrationStrategies(ctx)
		if err != nil {
			return nil, grpcError(err)
		}
		for _, st := range all {
			strategies = append(strategies, &pb.StrategySupport{Name: string(st.Strategy), Supported: st.Supported, Reason: st.Reason})
		}
	}
	return &pb.NodeInfoResponse{
		Strategies:    strategies,
		Name:          info.Name,
		Address:       info.Address,
		Snapshotter:   info.Snapshotter,
		ContainerCidr: info.ContainerCIDR,
		Labels:        info.Labels,
		RuncVersion:   info.RuncVersion,
		CriuVersion:   info.CRIUVersion,
		KernelVersion: info.KernelVersion,
		Cpus:          int32(info.CPUs),
		MemoryBytes:   info.MemoryBytes,
		GodwitVersion: info.GodwitVersion,
	}, nil
}

func (s *server) ImportImage(stream grpc.ClientStreamingServer[pb.ImportImageRequest, pb.Image]) error {
	header, err := recvHeader(stream.Recv, "import image", (*pb.ImportImageRequest).GetHeader)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go receiveUpload(stream.Recv, "import image", "image",
		func(msg *pb.ImportImageRequest) ([]byte, bool) { return msg.GetChunk(), false },
		func(data []byte) bool { _, err := pw.Write(data); return err == nil },
		func(err error) { pw.CloseWithError(err) })
	img, err := s.a.ImportImage(stream.Context(), pr, header.GetName())
	pr.CloseWithError(errors.New("import finished")) // unblocks the receiver
	if err != nil {
		return grpcError(err)
	}
	return stream.SendAndClose(imageToProto(img))
}

func (s *server) ListImages(context.Context, *pb.ListImagesRequest) (*pb.ListImagesResponse, error) {
	imgs, err := s.a.Images()
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &pb.ListImagesResponse{}
	for i := range imgs {
		resp.Images = append(resp.Images, imageToProto(&imgs[i]))
	}
	return resp, nil
}

func (s *server) RemoveImage(ctx context.Context, req *pb.RemoveImageRequest) (*pb.RemoveImageResponse, error) {
	return &pb.RemoveImageResponse{}, grpcError(s.a.RemoveImage(ctx, req.GetRef()))
}

func (s *server) RunContainer(ctx context.Context, req *pb.RunContainerRequest) (*pb.Container, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	var ip net.IP
	if req.GetIp() != "" {
		if ip = net.ParseIP(req.GetIp()); ip == nil {
			return nil, status.Errorf(codes.InvalidArgument, "ip %q is not an IP address", req.GetIp())
		}
	}
	c, err := s.a.Run(ctx, RunRequest{
		Name:        req.GetName(),
		Image:       req.GetImage(),
		Args:        req.GetArgs(),
		Env:         req.GetEnv(),
		WorkingDir:  req.GetWorkingDir(),
		Hostname:    req.GetHostname(),
		User:        req.GetUser(),
		CPUs:        req.GetCpus(),
		MemoryBytes: req.GetMemoryBytes(),
		Labels:      req.GetLabels(),
		IP:          ip,
		ID:          req.GetId(),
	})
	if err != nil {
		return nil, grpcError(err)
	}
	return s.containerToProto(c), nil
}

func (s *server) ListContainers(ctx context.Context, req *pb.ListContainersRequest) (*pb.ListContainersResponse, error) {
	cs, err := s.a.List(ctx, req.GetAll())
	if err != nil {
		return nil, grpcError(err)
	}
	resp := &pb.ListContainersResponse{}
	for i := range cs {
		resp.Containers = append(resp.Containers, s.containerToProto(&cs[i]))
	}
	return resp, nil
}

func (s *server) InspectContainer(ctx context.Context, req *pb.ContainerRef) (*pb.Container, error) {
	c, err := s.a.Inspect(ctx, req.GetRef())
	if err != nil {
		return nil, grpcError(err)
	}
	return s.containerToProto(c), nil
}

func (s *server) StopContainer(ctx context.Context, req *pb.StopContainerRequest) (*pb.Container, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	c, err := s.a.Stop(ctx, req.GetRef(), time.Duration(req.GetTimeoutSeconds())*time.Second)
	if err != nil {
		return nil, grpcError(err)
	}
	return s.containerToProto(c), nil
}

func (s *server) StartContainer(ctx context.Context, req *pb.ContainerRef) (*pb.Container, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	c, err := s.a.Start(ctx, req.GetRef())
	if err != nil {
		return nil, grpcError(err)
	}
	return s.containerToProto(c), nil
}

func (s *server) RemoveContainer(ctx context.Context, req *pb.RemoveContainerRequest) (*pb.RemoveContainerResponse, error) {
	ctx, err := callGeneration(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.RemoveContainerResponse{}, grpcError(s.a.Remove(ctx, req.GetRef(), req.GetForce()))
}

func (s *server) Logs(req *pb.LogsRequest, stream grpc.ServerStreamingServer[pb.LogsChunk]) error {
	w := &chunkWriter{send: func(b []byte) error { return stream.Send(&pb.LogsChunk{Data: b}) }}
	return grpcError(s.a.Logs(stream.Context(), req.GetRef(), req.GetFollow(), w))
}

func (s *server) Exec(req *pb.ExecRequest, stream grpc.ServerStreamingServer[pb.ExecOutput]) error {
	// runc copies stdout and stderr from two goroutines, and a gRPC
	// stream's Send is not safe for concurrent use.
	var mu sync.Mutex
	send := func(m *pb.ExecOutput) error {
		mu.Lock()
		defer mu.Unlock()
		return stream.Send(m)
	}
	stdout := &chunkWriter{send: func(b []byte) error { return send(&pb.ExecOutput{Stdout: b}) }}
	stderr := &chunkWriter{send: func(b []byte) error { return send(&pb.ExecOutput{Stderr: b}) }}
	code, err := s.a.Exec(stream.Context(), req.GetRef(), ExecRequest{
		Args:       req.GetArgs(),
		Env:        req.GetEnv(),
		WorkingDir: req.GetWorkingDir(),
	}, stdout, stderr)
	if err != nil {
		return grpcError(err)
	}
	return send(&pb.ExecOutput{Exited: true, ExitCode: int32(code)})
}

// chunkWriter sends what is written to it as stream messages of at most
// streamChunk bytes.
type chunkWriter struct {
	send func([]byte) error
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), streamChunk)]
		if err := w.send(append([]byte(nil), chunk...)); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

func imageToProto(img *image.Image) *pb.Image {
	out := &pb.Image{
		Name:    img.Name,
		Id:      img.ID.String(),
		Format:  string(img.Format),
		Size:    img.Size,
		Created: timestamppb.New(img.Created),
	}
	for _, l := range img.Layers {
		out.Layers = append(out.Layers, &pb.Layer{Digest: l.Digest.String(), Size: l.Size})
	}
	return out
}

var stateToProto = map[State]pb.ContainerState{
	StateCreated:      pb.ContainerState_CONTAINER_STATE_CREATED,
	StateRunning:      pb.ContainerState_CONTAINER_STATE_RUNNING,
	StateStopped:      pb.ContainerState_CONTAINER_STATE_STOPPED,
	StateExited:       pb.ContainerState_CONTAINER_STATE_EXITED,
	StateCheckpointed: pb.ContainerState_CONTAINER_STATE_CHECKPOINTED,
	StateMigrating:    pb.ContainerState_CONTAINER_STATE_MIGRATING,
}

func (s *server) containerToProto(c *Container) *pb.Container {
	return &pb.Container{
		Id:             c.ID,
		Name:           c.Name,
		Image:          c.Image,
		ImageId:        c.ImageID,
		State:          stateToProto[c.State],
		Ip:             c.IP,
		Node:           s.a.cfg.Name,
		Pid:            int32(c.Pid),
		Args:           c.Args,
		Env:            c.Env,
		WorkingDir:     c.WorkingDir,
		Hostname:       c.Hostname,
		User:           c.User,
		Cpus:           c.CPUs,
		MemoryBytes:    c.MemoryBytes,
		Labels:         c.Labels,
		Created:        optionalTime(c.Created),
		Started:        optionalTime(c.Started),
		Finished:       optionalTime(c.Finished),
		ExitCode:       int32(c.ExitCode),
		ExitSignal:     c.ExitSignal,
		Snapshotter:    c.Snapshotter,
		LastCheckpoint: c.LastCheckpoint,
		Generation:     c.Generation,
	}
}

func optionalTime(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
