package server

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// nodeAPI serves NodeService, on the leader: agents register, then
// renew their lease with heartbeats that carry their containers' states
// and load samples.
type nodeAPI struct {
	pb.UnimplementedNodeServiceServer
	s *Scheduler
}

func (a *nodeAPI) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	s := a.s
	if err := checkNodeName(ctx, req.GetName()); err != nil {
		return nil, err
	}
	now := time.Now()
	// The lease first: from the moment the new epoch is committed the
	// node is alive, and the leader's lease check must not find the old,
	// long expired lease on it (checkLeases).
	s.leases.renew(req.GetName(), now)
	containers := a.containerReport(s.store.Snapshot(), req.GetName(), req.GetContainers(), true)
	v, err := s.apply(ctx, &fsm.RegisterNode{Node: nodeFromRegister(req), At: now, Inventory: &fsm.Inventory{
		Images:     imagesFromProto(req.GetName(), req.GetImages()),
		Containers: *containers,
	}})
	if err != nil {
		return nil, stateError(err)
	}
	reg, ok := v.(fsm.Registration)
	if !ok {
		return nil, status.Errorf(codes.Internal, "register node %s: the state answered %T, not a registration", req.GetName(), v)
	}
	n := reg.Node
	a.logReport(n.Name, containers.Unknown, reg.Report)
	s.log.Info("node registered", "node", n.Name, "address", n.Address, "epoch", n.Epoch)

	resp := &pb.RegisterResponse{
		Epoch:               n.Epoch,
		LeaseTtlMs:          s.cfg.Timing.LeaseTTL.Milliseconds(),
		HeartbeatIntervalMs: s.cfg.Timing.Heartbeat.Milliseconds(),
	}
	for _, c := range s.store.Snapshot().ContainersOn(n.Name) {
		resp.Generations = append(resp.Generations, &pb.ContainerGeneration{Id: c.ID, Generation: c.Generation, Desired: string(c.Desired)})
	}
	return resp, nil
}

func (a *nodeAPI) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	s := a.s
	if err := checkNodeName(ctx, req.GetName()); err != nil {
		return nil, err
	}
	now := time.Now()
	n, ok := s.store.Snapshot().Node(req.GetName())
	if !ok || n.Epoch != req.GetEpoch() || n.Health == state.HealthDown {
		// Unknown, re-registered elsewhere, or given up for down: the
		// agent must register again and learn the current generations
		// before it acts.
		return &pb.HeartbeatResponse{Reregister: true, LeaseTtlMs: s.cfg.Timing.LeaseTTL.Milliseconds()}, nil
	}
	s.leases.renew(n.Name, now)
	s.loads.set(n.Name, req.GetLoad())
	s.balancer.observe(req.GetLoad(), now)
	if n.Health == state.HealthSuspect {
		s.setHealth(ctx, n, state.HealthAlive, now, "heartbeat received")
	}
	a.reconcile(ctx, n, req.GetContainers())
	s.enforceDesired(n)
	return &pb.HeartbeatResponse{LeaseTtlMs: s.cfg.Timing.LeaseTTL.Milliseconds()}, nil
}

// reconcile records what a node's heartbeat reports of its containers
// when it differs from the state.
func (a *nodeAPI) reconcile(ctx context.Context, n *state.Node, reports []*pb.ContainerReport) {
	r := a.containerReport(a.s.store.Snapshot(), n.Name, reports, false)
	if r == nil {
		return
	}
	r.Epoch = n.Epoch
	v, err := a.s.apply(ctx, r)
	if err != nil {
		a.s.log.Warn("record containers' states", "node", n.Name, "err", err)
		return
	}
	out, _ := v.(fsm.ReportOutcome)
	a.logReport(n.Name, r.Unknown, out)
}

// containerReport is the command that records what node reports of its
// containers, or nil when nothing differs from snap. complete: the report
// lists every container of the node (a registration), so those the state
// has on it and it lacks are lost. A container the node runs that the
// cluster does not know is reported as an event (once per leader), never
// killed. The caller sets the epoch the report was made on.
func (a *nodeAPI) containerReport(snap *state.Snapshot, node string, reports []*pb.ContainerReport, complete bool) *fsm.ReportContainers {
	var rs []fsm.Report
	var unknown []fsm.Unknown
	seen := make([]string, 0, len(reports))
	for _, r := range reports {
		seen = append(seen, r.GetId())
		st, ok := reportedFromProto[r.GetState()]
		if !ok {
			continue
		}
		c, known := snap.ContainerByID(r.GetId())
		switch {
		case !known || c.Node != node:
			if a.s.unknown.first(node, r.GetId()) {
				unknown = append(unknown, fsm.Unknown{ID: r.GetId(), Name: r.GetName()})
			}
		case complete || c.Reported != st:
			rs = append(rs, fsm.Report{ID: r.GetId(), State: st})
		}
	}
	if len(rs) == 0 && len(unknown) == 0 && !complete {
		return nil
	}
	return &fsm.ReportContainers{Node: node, Reports: rs, Unknown: unknown, Complete: complete, Seen: seen, At: time.Now()}
}

// logReport logs what recording a node's report found: containers the
// cluster does not know, left running, and containers lost.
func (a *nodeAPI) logReport(node string, unknown []fsm.Unknown, out fsm.ReportOutcome) {
	for _, u := range unknown {
		a.s.log.Warn("node runs a container the cluster does not know: left running", "node", node, "container", u.Name, "id", u.ID)
	}
	for _, id := range out.Lost {
		a.s.log.Warn("container lost: its node no longer has it", "node", node, "container", id)
	}
}

// checkNodeName refuses an agent that speaks for another node than its
// certificate names.
func checkNodeName(ctx context.Context, name string) error {
	c := callerOf(ctx)
	if name == "" {
		return status.Error(codes.InvalidArgument, "register: the node name is empty")
	}
	if c.Secure && c.Name != name {
		return status.Errorf(codes.PermissionDenied, "agent %q cannot speak for node %q: an agent registers under its certificate's name", c.Name, name)
	}
	return nil
}
