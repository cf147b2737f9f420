package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// clusterAPI serves ClusterService. Every method but ClusterStatus and
// Events runs on the leader (the forwarder sends it there), so what it
// reads from the store is the committed state.
type clusterAPI struct {
	pb.UnimplementedClusterServiceServer
	s *Scheduler
}

func (a *clusterAPI) Run(ctx context.Context, req *pb.RunRequest) (*pb.RunResponse, error) {
	s := a.s
	spec, err := specFromRun(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	alg, err := placement.ParseAlgorithm(req.GetAlgorithm())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	name := req.GetContainer().GetName()
	if req.GetDryRun() {
		// Placement decides on everything committed, by a replica that
		// still leads.
		if err := s.raft.VerifyLeader(ctx); err != nil {
			return nil, stateError(err)
		}
		snap := s.store.Snapshot()
		if name != "" {
			if _, ok := snap.ContainerByName(name); ok {
				return nil, status.Errorf(codes.AlreadyExists, "container name %q is taken in the cluster: remove it or choose another --name", name)
			}
		}
		decision, err := placement.Place(snap, placement.Request{Spec: spec, Algorithm: alg, Explain: true})
		if err != nil && !errors.Is(err, placement.ErrNoNode) {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		return &pb.RunResponse{Placement: placementToProto(decision)}, nil
	}
	// The FSM does not check capacity: placements are serialised from the
	// snapshot to the commit, in batches of concurrent Runs (placer.go).
	placed, err := s.placer.Place(ctx, PlaceRequest{Spec: spec, Name: name, Algorithm: alg})
	if err != nil {
		return nil, a.placeError(ctx, name, placed, err)
	}
	id, name, decision := placed.ID, placed.Name, placed.Decision
	node := decision.Node
	c, _ := s.store.Snapshot().ContainerByID(id)
	log := s.log.With("container", name, "id", id[:12], "node", node)
	started, err := a.startOnNode(ctx, c)
	if err != nil {
		// Nothing runs: take the record (and its address) back.
		if _, derr := s.apply(context.WithoutCancel(ctx), &fsm.DeleteContainer{ID: id, At: time.Now()}); derr != nil {
			log.Error("forget a container that did not start", "err", derr)
		}
		return nil, a.audited(ctx, "run", name, err)
	}
	log.Info("container placed and started", "ip", c.IP.String())
	a.audit(ctx, "run", name, nil)
	out := containerToProto(c)
	mergeAgentView(out, started)
	return &pb.RunResponse{Container: out, Placement: placementToProto(decision)}, nil
}

// preferImageHolder is the decision's node when it holds the image, else
// the best candidate that does: this release does not copy images
// between nodes for a run. "" when no candidate holds it.
func preferImageHolder(snap *state.Snapshot, d placement.Decision, image string) string {
	for _, c := range d.Candidates {
		if snap.HasImage(c.Node, image) {
			return c.Node
		}
	}
	return ""
}

// startOnNode creates and starts c on its node, under the cluster's ID
// and address, and records that it runs.
func (a *clusterAPI) startOnNode(ctx context.Context, c *state.Container) (*pb.Container, error) {
	s := a.s
	n, ok := s.store.Snapshot().Node(c.Node)
	if !ok {
		return nil, status.Errorf(codes.FailedPrecondition, "node %s is no longer registered", c.Node)
	}
	agent, err := s.conns.agent(n.Address)
	if err != nil {
		return nil, err
	}
	got, err := agent.RunContainer(rpc.WithGeneration(ctx, c.Generation), &pb.RunContainerRequest{
		Id:          c.ID,
		Name:        c.Name,
		Image:       c.Spec.Image,
		Args:        c.Spec.Args,
		Env:         c.Spec.Env,
		WorkingDir:  c.Spec.WorkingDir,
		Hostname:    c.Spec.Hostname,
		User:        c.Spec.User,
		Cpus:        float64(c.Spec.Request.MilliCPU) / 1000,
		MemoryBytes: c.Spec.Request.MemoryBytes,
		Labels:      c.Spec.Labels,
		Ip:          c.IP.String(),
	})
	if err != nil {
		return nil, agentError(c.Node, "run "+c.Name, err)
	}
	a.report(ctx, n, c.ID, got.GetState())
	return got, nil
}

// report records what an agent just said of a container it acted on, so
// that ps shows it without waiting for the next heartbeat.
func (a *clusterAPI) report(ctx context.Context, n *state.Node, id string, st pb.ContainerState) {
	rs, ok := reportedFromProto[st]
	if !ok {
		return
	}
	if _, err := a.s.apply(ctx, &fsm.ReportContainers{Node: n.Name, Epoch: n.Epoch, At: time.Now(),
		Reports: []fsm.Report{{ID: id, State: rs}}}); err != nil {
		a.s.log.Warn("record a container's state", "node", n.Name, "container", id, "err", err)
	}
}

// mergeAgentView adds what only the agent knows (pid, times, exit) to
// the cluster's record.
func mergeAgentView(out, agent *pb.Container) {
	if agent == nil {
		return
	}
	out.Pid = agent.GetPid()
	out.ImageId = agent.GetImageId()
	out.Started = agent.GetStarted()
	out.Finished = agent.GetFinished()
	out.ExitCode = agent.GetExitCode()
	out.ExitSignal = agent.GetExitSignal()
	out.Snapshotter = agent.GetSnapshotter()
	out.LastCheckpoint = agent.GetLastCheckpoint()
	if agent.GetState() != pb.ContainerState_CONTAINER_STATE_UNSPECIFIED {
		out.State = agent.GetState()
	}
}

func (a *clusterAPI) ListContainers(_ context.Context, req *pb.ListContainersRequest) (*pb.ListContainersResponse, error) {
	out := &pb.ListContainersResponse{}
	for _, c := range a.s.store.Snapshot().Containers() {
		if !req.GetAll() && c.Reported != state.ReportedRunning && c.Reported != state.ReportedPending && c.Reported != state.ReportedMigrating {
			continue
		}
		out.Containers = append(out.Containers, containerToProto(c))
	}
	return out, nil
}

// container finds ref in the committed state.
func (a *clusterAPI) container(ref string) (*state.Container, *state.Node, error) {
	snap := a.s.store.Snapshot()
	c, err := snap.Container(ref)
	if err != nil {
		return nil, nil, stateError(err)
	}
	n, _ := snap.Node(c.Node)
	return c, n, nil
}

// onNode calls f with the agent of c's node; a node that is down or gone
// is refused with advice.
func (a *clusterAPI) onNode(c *state.Container, n *state.Node, f func(pb.AgentServiceClient) error) error {
	if n == nil {
		return status.Errorf(codes.FailedPrecondition, "container %s is on node %s, which is no longer registered", c.Name, c.Node)
	}
	if n.Health == state.HealthDown {
		return status.Errorf(codes.Unavailable, "container %s is on node %s, which is down: bring the node back, or `godwit rm -f %s` to forget it", c.Name, n.Name, c.Name)
	}
	agent, err := a.s.conns.agent(n.Address)
	if err != nil {
		return err
	}
	return f(agent)
}

func (a *clusterAPI) InspectContainer(ctx context.Context, ref *pb.ContainerRef) (*pb.Container, error) {
	c, n, err := a.container(ref.GetRef())
	if err != nil {
		return nil, err
	}
	out := containerToProto(c)
	// The node adds what only it knows; the record is the answer when
	// the node cannot be asked.
	_ = a.onNode(c, n, func(agent pb.AgentServiceClient) error {
		got, err := agent.InspectContainer(ctx, &pb.ContainerRef{Ref: c.ID})
		if err == nil {
			mergeAgentView(out, got)
		}
		return err
	})
	return out, nil
}

func (a *clusterAPI) StopContainer(ctx context.Context, req *pb.StopContainerRequest) (*pb.Container, error) {
	return a.setDesired(ctx, "stop", req.GetRef(), state.DesiredStopped, func(ctx context.Context, agent pb.AgentServiceClient, id string) (*pb.Container, error) {
		return agent.StopContainer(ctx, &pb.StopContainerRequest{Ref: id, TimeoutSeconds: req.GetTimeoutSeconds()})
	})
}

func (a *clusterAPI) StartContainer(ctx context.Context, ref *pb.ContainerRef) (*pb.Container, error) {
	return a.setDesired(ctx, "start", ref.GetRef(), state.DesiredRunning, func(ctx context.Context, agent pb.AgentServiceClient, id string) (*pb.Container, error) {
		// A container checkpointed away (a drain's deadline) waits in a
		// checkpoint its node keeps: started, it is restored from it.
		if c, ok := a.s.store.Snapshot().ContainerByID(id); ok && c.Checkpoint != "" {
			resp, err := agent.Restore(ctx, &pb.RestoreRequest{CheckpointId: c.Checkpoint})
			return resp.GetContainer(), err
		}
		return agent.StartContainer(ctx, &pb.ContainerRef{Ref: id})
	})
}

// setDesired records what the operator wants of a container, then has
// its node do it: the desired state is recorded first, so that the
// scheduler's view wins if the node acts late.
func (a *clusterAPI) setDesired(ctx context.Context, action, ref string, desired state.DesiredState,
	call func(context.Context, pb.AgentServiceClient, string) (*pb.Container, error)) (*pb.Container, error) {
	c, n, err := a.container(ref)
	if err != nil {
		return nil, a.audited(ctx, action, ref, err)
	}
	// While the operator's call acts, heartbeats do not enforce the
	// desired state on the container too (desired.go).
	if a.s.enforcing.claim(c.ID) {
		defer a.s.enforcing.release(c.ID)
	}
	if _, err := a.s.apply(ctx, &fsm.SetDesired{ID: c.ID, Desired: desired, At: time.Now()}); err != nil {
		return nil, a.audited(ctx, action, c.Name, stateError(err))
	}
	var got *pb.Container
	err = a.onNode(c, n, func(agent pb.AgentServiceClient) error {
		var err error
		// The container's generation fences the command: a node that
		// knows the container moved on refuses it.
		got, err = call(rpc.WithGeneration(ctx, c.Generation), agent, c.ID)
		return err
	})
	if err != nil {
		return nil, a.audited(ctx, action, c.Name, agentError(c.Node, action+" "+c.Name, err))
	}
	a.report(ctx, n, c.ID, got.GetState())
	a.audit(ctx, action, c.Name, nil)
	c, _ = a.s.store.Snapshot().ContainerByID(c.ID)
	out := containerToProto(c)
	mergeAgentView(out, got)
	return out, nil
}

func (a *clusterAPI) RemoveContainer(ctx context.Context, req *pb.RemoveContainerRequest) (*pb.RemoveContainerResponse, error) {
	c, n, err := a.container(req.GetRef())
	if err != nil {
		return nil, a.audited(ctx, "rm", req.GetRef(), err)
	}
	err = a.onNode(c, n, func(agent pb.AgentServiceClient) error {
		_, err := agent.RemoveContainer(rpc.WithGeneration(ctx, c.Generation), &pb.RemoveContainerRequest{Ref: c.ID, Force: req.GetForce()})
		if status.Code(err) == codes.NotFound {
			return nil // already gone from its node
		}
		return err
	})
	// A forced removal forgets a container whose node is down or gone:
	// the operator has given it up.
	if err != nil && !(req.GetForce() && (n == nil || n.Health == state.HealthDown)) {
		return nil, a.audited(ctx, "rm", c.Name, agentError(c.Node, "remove "+c.Name, err))
	}
	if _, err := a.s.apply(ctx, &fsm.DeleteContainer{ID: c.ID, At: time.Now()}); err != nil {
		return nil, a.audited(ctx, "rm", c.Name, stateError(err))
	}
	a.audit(ctx, "rm", c.Name, nil)
	return &pb.RemoveContainerResponse{}, nil
}

func (a *clusterAPI) Logs(req *pb.LogsRequest, stream grpc.ServerStreamingServer[pb.LogsChunk]) error {
	ctx := stream.Context()
	c, n, err := a.container(req.GetRef())
	if err != nil {
		return err
	}
	return a.onNode(c, n, func(agent pb.AgentServiceClient) error {
		logs, err := agent.Logs(ctx, &pb.LogsRequest{Ref: c.ID, Follow: req.GetFollow()})
		if err != nil {
			return agentError(c.Node, "logs of "+c.Name, err)
		}
		for {
			chunk, err := logs.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return agentError(c.Node, "logs of "+c.Name, err)
			}
			if err := stream.Send(chunk); err != nil {
				return err
			}
		}
	})
}

func (a *clusterAPI) ImportImage(stream grpc.ClientStreamingServer[pb.ClusterImportImageRequest, pb.ClusterImage]) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	header := first.GetHeader()
	if header == nil {
		return status.Error(codes.InvalidArgument, "image import: the first message must be the header")
	}
	snap := a.s.store.Snapshot()
	node, err := importNode(snap, header.GetNode())
	if err != nil {
		return a.audited(ctx, "image import", header.GetImage().GetName(), err)
	}
	agent, err := a.s.conns.agent(node.Address)
	if err != nil {
		return err
	}
	up, err := agent.ImportImage(ctx)
	if err != nil {
		return agentError(node.Name, "image import", err)
	}
	if err := up.Send(&pb.ImportImageRequest{Part: &pb.ImportImageRequest_Header{Header: header.GetImage()}}); err != nil {
		return agentError(node.Name, "image import", err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if err := up.Send(&pb.ImportImageRequest{Part: &pb.ImportImageRequest_Chunk{Chunk: msg.GetChunk()}}); err != nil {
			break // the agent refused: its reason comes with CloseAndRecv
		}
	}
	img, err := up.CloseAndRecv()
	if err != nil {
		return a.audited(ctx, "image import", header.GetImage().GetName(), agentError(node.Name, "image import", err))
	}
	list, err := agent.ListImages(ctx, &pb.ListImagesRequest{})
	if err != nil {
		return agentError(node.Name, "list images", err)
	}
	if _, err := a.s.apply(ctx, &fsm.SetImages{Node: node.Name, Images: imagesFromProto(node.Name, list.GetImages()), At: time.Now()}); err != nil {
		return stateError(err)
	}
	a.audit(ctx, "image import", img.GetName()+" on "+node.Name, nil)
	return stream.SendAndClose(&pb.ClusterImage{Node: node.Name, Image: img})
}

// importNode is where an import goes: the named node, or the ready node
// holding the fewest images.
func importNode(snap *state.Snapshot, name string) (*state.Node, error) {
	if name != "" {
		n, ok := snap.Node(name)
		if !ok {
			return nil, status.Errorf(codes.NotFound, "no node %q in the cluster: see `godwit node ls`", name)
		}
		if n.Health == state.HealthDown {
			return nil, status.Errorf(codes.Unavailable, "node %s is down: import to another --node", name)
		}
		return n, nil
	}
	var best *state.Node
	for _, n := range snap.Nodes() {
		if n.Status() != state.NodeReady {
			continue
		}
		if best == nil || len(snap.Images(n.Name)) < len(snap.Images(best.Name)) {
			best = n
		}
	}
	if best == nil {
		return nil, status.Error(codes.FailedPrecondition, "no ready node to import the image to: see `godwit node ls`")
	}
	return best, nil
}

func (a *clusterAPI) ListImages(_ context.Context, req *pb.ClusterListImagesRequest) (*pb.ClusterListImagesResponse, error) {
	out := &pb.ClusterListImagesResponse{}
	for _, img := range a.s.store.Snapshot().Images(req.GetNode()) {
		out.Images = append(out.Images, imageToProto(img))
	}
	return out, nil
}

func (a *clusterAPI) ListNodes(context.Context, *pb.ListNodesRequest) (*pb.ListNodesResponse, error) {
	snap := a.s.store.Snapshot()
	out := &pb.ListNodesResponse{}
	for _, n := range snap.Nodes() {
		out.Nodes = append(out.Nodes, a.nodeView(snap, n))
	}
	return out, nil
}

func (a *clusterAPI) nodeView(snap *state.Snapshot, n *state.Node) *pb.Node {
	return nodeToProto(n, snap.Allocated(n.Name), snap.ContainerCount(n.Name), a.s.loads.get(n.Name))
}

func (a *clusterAPI) node(name string) (*state.Snapshot, *state.Node, error) {
	snap := a.s.store.Snapshot()
	n, ok := snap.Node(name)
	if !ok {
		return nil, nil, status.Errorf(codes.NotFound, "no node %q in the cluster: see `godwit node ls`", name)
	}
	return snap, n, nil
}

func (a *clusterAPI) InspectNode(_ context.Context, ref *pb.NodeRef) (*pb.Node, error) {
	snap, n, err := a.node(ref.GetName())
	if err != nil {
		return nil, err
	}
	return a.nodeView(snap, n), nil
}

func (a *clusterAPI) CordonNode(ctx context.Context, ref *pb.NodeRef) (*pb.Node, error) {
	return a.setSchedulability(ctx, "node cordon", ref.GetName(), state.Cordoned)
}

func (a *clusterAPI) UncordonNode(ctx context.Context, ref *pb.NodeRef) (*pb.Node, error) {
	return a.setSchedulability(ctx, "node uncordon", ref.GetName(), state.Schedulable)
}

func (a *clusterAPI) setSchedulability(ctx context.Context, action, name string, to state.Schedulability) (*pb.Node, error) {
	if _, _, err := a.node(name); err != nil {
		return nil, a.audited(ctx, action, name, err)
	}
	if _, err := a.s.apply(ctx, &fsm.SetSchedulability{Name: name, Schedulability: to, At: time.Now()}); err != nil {
		return nil, a.audited(ctx, action, name, stateError(err))
	}
	a.audit(ctx, action, name, nil)
	snap, n, err := a.node(name)
	if err != nil {
		return nil, err
	}
	return a.nodeView(snap, n), nil
}

func (a *clusterAPI) Events(req *pb.EventsRequest, stream grpc.ServerStreamingServer[pb.Event]) error {
	ctx := stream.Context()
	since := req.GetSince()
	for {
		events, wake, err := a.s.store.EventsSince(since)
		if err != nil && since == 0 && errors.Is(err, state.ErrEventsLost) {
			// From the start means what the scheduler still holds.
			err = nil
		}
		if err != nil {
			return status.Errorf(codes.OutOfRange, "%v: the scheduler keeps the latest events only; start again without --since", err)
		}
		for _, e := range events {
			if err := stream.Send(&pb.Event{Index: e.Index, Time: timestamp(e.Time), Kind: e.Kind, Node: e.Node, Container: e.Container,
				Migration: e.Migration, Message: e.Message}); err != nil {
				return err
			}
			since = e.Index
		}
		if !req.GetFollow() {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		}
	}
}

func (a *clusterAPI) Audit(_ context.Context, req *pb.AuditRequest) (*pb.AuditResponse, error) {
	out := &pb.AuditResponse{}
	for _, r := range a.s.store.Snapshot().Audit(int(req.GetLimit())) {
		out.Records = append(out.Records, &pb.AuditRecord{Index: r.Index, Time: timestamp(r.Time), Who: r.Who, Role: r.Role,
			Action: r.Action, Target: r.Target, Outcome: r.Outcome})
	}
	return out, nil
}

// audit records an operator's action and its outcome in raft. It never
// fails the action: a failure to record is logged.
func (a *clusterAPI) audit(ctx context.Context, action, target string, err error) {
	who := callerOf(ctx)
	outcome := "ok"
	if err != nil {
		outcome = status.Convert(err).Message()
	}
	rec := state.AuditRecord{Time: time.Now(), Who: who.Name, Role: string(who.Role), Action: action, Target: target, Outcome: outcome}
	if _, aerr := a.s.apply(context.WithoutCancel(ctx), &fsm.AppendAudit{Record: rec}); aerr != nil {
		a.s.log.Error("record an operator action in the audit log", "action", action, "target", target, "who", who.Name, "err", aerr)
	}
}

// audited records a failed action and returns its error.
func (a *clusterAPI) audited(ctx context.Context, action, target string, err error) error {
	a.audit(ctx, action, target, err)
	return err
}

func newContainerID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand never fails on Linux
	return hex.EncodeToString(b)
}

// placementError maps placement's refusals to gRPC codes.
func placementError(err error) error {
	var none *placement.NoNodeError
	if errors.As(err, &none) {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return status.Error(codes.InvalidArgument, err.Error())
}

// stateError maps the state's sentinel errors to gRPC codes.
func stateError(err error) error {
	if _, ok := status.FromError(err); ok && status.Code(err) != codes.Unknown {
		return err
	}
	switch {
	case errors.Is(err, state.ErrNotFound):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, state.ErrAmbiguous):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, state.ErrNameTaken), errors.Is(err, state.ErrAddressTaken):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, state.ErrCIDRFull):
		return status.Error(codes.ResourceExhausted, err.Error())
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrLeadershipLost):
		return status.Errorf(codes.Unavailable, "this scheduler lost the leadership during the call (%v): check with `godwit ps` or `godwit events` whether it took effect, then retry", err)
	}
	return status.Error(codes.Internal, err.Error())
}

// agentError keeps an agent's answer and says which node gave it.
func agentError(node, what string, err error) error {
	st := status.Convert(err)
	if st.Code() == codes.Unavailable {
		return status.Errorf(codes.Unavailable, "%s: node %s cannot be reached (%s): is its agent running?", what, node, st.Message())
	}
	return status.Errorf(st.Code(), "%s on node %s: %s", what, node, st.Message())
}
