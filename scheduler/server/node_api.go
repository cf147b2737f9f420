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
	v, err := s.apply(ctx, &fsm.RegisterNode{Node: nodeFromRegister(req), At: now})
	if err != nil {
		return nil, stateError(err)
	}
	n, ok := v.(*state.Node)
	if !ok {
		got, _ := s.store.Snapshot().Node(req.GetName())
		n = got
	}
	if _, err := s.apply(ctx, &fsm.SetImages{Node: n.Name, Images: imagesFromProto(n.Name, req.GetImages()), At: now}); err != nil {
		return nil, stateError(err)
	}
	a.reconcile(ctx, n, req.GetContainers(), true)
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
	a.reconcile(ctx, n, req.GetContainers(), false)
	s.enforceDesired(n)
	return &pb.HeartbeatResponse{LeaseTtlMs: s.cfg.Timing.LeaseTTL.Milliseconds()}, nil
}

// reconcile records what a node reports of its containers when it
// differs from the state. complete: the report lists every container of
// the node (a registration), so those the state has on it and it lacks
// are lost. A container the node runs that the cluster does not know is
// reported as an event (once per leader), never killed.
func (a *nodeAPI) reconcile(ctx context.Context, n *state.Node, reports []*pb.ContainerReport, complete bool) {
	s := a.s
	snap := s.store.Snapshot()
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
		case !known || c.Node != n.Name:
			if s.unknown.first(n.Name, r.GetId()) {
				unknown = append(unknown, fsm.Unknown{ID: r.GetId(), Name: r.GetName()})
			}
		case complete || c.Reported != st:
			rs = append(rs, fsm.Report{ID: r.GetId(), State: st})
		}
	}
	if len(rs) == 0 && len(unknown) == 0 && !complete {
		return
	}
	v, err := s.apply(ctx, &fsm.ReportContainers{Node: n.Name, Epoch: n.Epoch, Reports: rs, Unknown: unknown,
		Complete: complete, Seen: seen, At: time.Now()})
	if err != nil {
		s.log.Warn("record containers' states", "node", n.Name, "err", err)
		return
	}
	for _, u := range unknown {
		s.log.Warn("node runs a container the cluster does not know: left running", "node", n.Name, "container", u.Name, "id", u.ID)
	}
	if out, ok := v.(fsm.ReportOutcome); ok {
		for _, id := range out.Lost {
			s.log.Warn("container lost: its node no longer has it", "node", n.Name, "container", id)
		}
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
