package server

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/godwit/godwit/internal/rpc"
	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/coordinator"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// The drain API: the leader's drainer (coordinator.Drainer) checks and
// drives each drain; these handlers start one, follow it and show it.

// drainWatchEvery is how often WatchDrain looks at the moves in flight
// for their bytes when the state does not change.
const drainWatchEvery = 500 * time.Millisecond

// drainStopper stops a container at a drain's deadline as `godwit stop`
// does: the desired state first, then its node, fenced by the
// container's generation.
type drainStopper struct{ s *Scheduler }

func (d drainStopper) Stop(ctx context.Context, c *state.Container) error {
	s := d.s
	// While it acts, heartbeats do not enforce the desired state too.
	if s.enforcing.claim(c.ID) {
		defer s.enforcing.release(c.ID)
	}
	if _, err := s.apply(ctx, &fsm.SetDesired{ID: c.ID, Desired: state.DesiredStopped, At: time.Now()}); err != nil {
		return err
	}
	n, ok := s.store.Snapshot().Node(c.Node)
	if !ok || n.Health == state.HealthDown {
		return nil // nothing runs it: the desired state is all there is to do
	}
	agent, err := s.conns.agent(n.Address)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timing.ApplyTimeout)
	defer cancel()
	got, err := agent.StopContainer(rpc.WithGeneration(ctx, c.Generation), &pb.StopContainerRequest{Ref: c.ID})
	if err != nil {
		return agentError(c.Node, "stop "+c.Name, err)
	}
	(&clusterAPI{s: s}).report(ctx, n, c.ID, got.GetState())
	return nil
}

func (a *clusterAPI) DrainNode(ctx context.Context, req *pb.DrainNodeRequest) (*pb.Drain, error) {
	node := req.GetNode()
	if req.GetDeadlineMs() < 0 || req.GetMaxParallel() < 0 {
		return nil, status.Error(codes.InvalidArgument, "a negative deadline or parallelism: give --deadline and --max-parallel of at least 1")
	}
	maxParallel := int(req.GetMaxParallel())
	if maxParallel == 0 {
		maxParallel = 1
	}
	who := callerOf(ctx)
	d, err := a.s.drains.Start(ctx, coordinator.DrainRequest{
		Node: node, Deadline: time.Duration(req.GetDeadlineMs()) * time.Millisecond,
		OnDeadline: state.DeadlinePolicy(req.GetOnDeadline()), MaxParallel: maxParallel,
		Requested: state.Requester{Who: who.Name, Role: string(who.Role)},
	})
	if err != nil {
		return nil, a.audited(ctx, "node drain", node, drainError(err))
	}
	a.audit(ctx, "node drain", node, nil)
	return drainToProto(a.s.store.Snapshot(), d), nil
}

func (a *clusterAPI) InspectDrain(_ context.Context, ref *pb.NodeRef) (*pb.Drain, error) {
	snap := a.s.store.Snapshot()
	d, ok := snap.Drain(ref.GetName())
	if !ok {
		return nil, noDrain(snap, ref.GetName())
	}
	return drainToProto(snap, d), nil
}

func noDrain(snap *state.Snapshot, node string) error {
	if _, ok := snap.Node(node); !ok {
		return status.Errorf(codes.NotFound, "no node %q in the cluster: see `godwit node ls`", node)
	}
	return status.Errorf(codes.NotFound, "node %s has not been drained: start a drain with `godwit node drain %s`", node, node)
}

// WatchDrain sends the drain's progress whenever it changes (the
// record, the moves in flight and their bytes), until the drain ends;
// the last message has done set. The bytes come from the coordinator's
// drivers on this replica, so the stream ends as Unavailable once this
// replica no longer leads: the client watches again, through the new
// leader.
func (a *clusterAPI) WatchDrain(ref *pb.NodeRef, stream grpc.ServerStreamingServer[pb.DrainProgress]) error {
	ctx := stream.Context()
	node := ref.GetName()
	if _, ok := a.s.store.Snapshot().Drain(node); !ok {
		return noDrain(a.s.store.Snapshot(), node)
	}
	moves := newMoveWatches(a.s.coord)
	defer moves.stop()
	t := time.NewTicker(drainWatchEvery)
	defer t.Stop()
	var last *pb.DrainProgress
	for {
		_, changed, _ := a.s.store.EventsSince(^uint64(0))
		snap := a.s.store.Snapshot()
		d, _ := snap.Drain(node)
		open := snap.Migrations(state.MigrationFilter{Open: true, DrainNode: node})
		moves.follow(open)
		p := drainProgress(snap, d, open, moves, time.Now())
		if !proto.Equal(p, last) {
			if err := stream.Send(p); err != nil {
				return err
			}
			last = p
		}
		if p.GetDone() {
			return nil
		}
		if !a.s.IsLeader() {
			return status.Error(codes.Unavailable, "this scheduler no longer leads: watch the drain again, through the new leader")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-t.C:
		}
	}
}

// moveWatches follows the coordinator's progress of the drain's moves
// in flight, keeping the latest event of each.
type moveWatches struct {
	coord  *coordinator.Coordinator
	subs   map[string]moveWatch
	latest map[string]migrate.Event
}

type moveWatch struct {
	events <-chan migrate.Event
	stop   func()
}

func newMoveWatches(c *coordinator.Coordinator) *moveWatches {
	return &moveWatches{coord: c, subs: map[string]moveWatch{}, latest: map[string]migrate.Event{}}
}

// follow subscribes to the moves of open not followed yet, drops the
// ones that ended, and takes in what each sent since the last call.
func (w *moveWatches) follow(open []*state.Migration) {
	ids := map[string]bool{}
	for _, m := range open {
		ids[m.ID] = true
		if _, ok := w.subs[m.ID]; ok {
			continue
		}
		// nil when no driver of this replica runs it (being settled):
		// it shows without bytes.
		if events, stop := w.coord.Watch(m.ID); events != nil {
			w.subs[m.ID] = moveWatch{events: events, stop: stop}
		}
	}
	for id, sub := range w.subs {
		if !ids[id] {
			sub.stop()
			delete(w.subs, id)
			delete(w.latest, id)
			continue
		}
	drain:
		for {
			select {
			case e, ok := <-sub.events:
				if !ok {
					break drain
				}
				w.latest[id] = e
			default:
				break drain
			}
		}
	}
}

func (w *moveWatches) stop() {
	for _, sub := range w.subs {
		sub.stop()
	}
}

// drainProgress is where drain d stands: its record, its moves in flight
// with their bytes, and an estimate of the time left.
func drainProgress(snap *state.Snapshot, d *state.Drain, open []*state.Migration, moves *moveWatches, now time.Time) *pb.DrainProgress {
	p := &pb.DrainProgress{Drain: drainToProto(snap, d), Done: !d.Running()}
	if !d.Running() {
		return p
	}
	for _, m := range open {
		mv := &pb.DrainMove{MigrationId: m.ID, Container: m.ContainerName, Destination: m.Dest, Phase: string(m.Phase)}
		if e, ok := moves.latest[m.ID]; ok {
			mv.BytesDone, mv.BytesTotal = e.BytesDone, e.BytesTotal
			if e.Phase != "" {
				mv.Phase = string(e.Phase)
			}
		}
		p.BytesDone += mv.BytesDone
		p.BytesTotal += mv.BytesTotal
		p.Moves = append(p.Moves, mv)
	}
	slices.SortFunc(p.Moves, func(a, b *pb.DrainMove) int { return strings.Compare(a.GetContainer(), b.GetContainer()) })
	var done []time.Duration
	for _, m := range snap.Migrations(state.MigrationFilter{DrainNode: d.Node}) {
		if m.Phase == state.MigrationDone && !m.Created.Before(d.Started) {
			done = append(done, m.Stats.Total)
		}
	}
	p.EtaMs = drainETA(done, d.Left, d.MaxParallel, len(d.Blocked)).Milliseconds()
	return p
}

// drainETA estimates how long the rest of a drain takes: its moves so far
// took done each; the containers left that are not blocked move in
// rounds of maxParallel. 0 when there is nothing to go by (no move has
// finished yet) or nothing is left that can move.
func drainETA(done []time.Duration, left, maxParallel, blocked int) time.Duration {
	movable := left - blocked
	if len(done) == 0 || movable <= 0 || maxParallel < 1 {
		return 0
	}
	var sum time.Duration
	for _, d := range done {
		sum += d
	}
	rounds := (movable + maxParallel - 1) / maxParallel
	return sum / time.Duration(len(done)) * time.Duration(rounds)
}

func drainToProto(snap *state.Snapshot, d *state.Drain) *pb.Drain {
	out := &pb.Drain{
		Node: d.Node, Status: string(d.Status), Deadline: timestamp(d.Deadline), OnDeadline: string(d.OnDeadline),
		MaxParallel: int32(d.MaxParallel), Started: timestamp(d.Started), Ended: timestamp(d.Ended), Updated: timestamp(d.Updated),
		Left: int32(d.Left), Moved: int32(d.Moved), Failed: int32(d.Failed), Checkpointed: int32(d.Checkpointed), RequestedBy: d.Requested.Who, Reason: d.Reason,
	}
	if d.Requested.Role != "" {
		out.RequestedBy += " (" + d.Requested.Role + ")"
	}
	for id, why := range d.Blocked {
		name := id
		if c, ok := snap.ContainerByID(id); ok {
			name = c.Name
		}
		out.Blocked = append(out.Blocked, &pb.DrainBlocked{ContainerId: id, Container: name, Reason: why})
	}
	slices.SortFunc(out.Blocked, func(a, b *pb.DrainBlocked) int { return strings.Compare(a.GetContainer(), b.GetContainer()) })
	return out
}

// drainError maps the drainer's refusals to gRPC codes.
func drainError(err error) error {
	switch {
	case errors.Is(err, coordinator.ErrDrainRefused), errors.Is(err, fsm.ErrDrainRunning), errors.Is(err, fsm.ErrNodeDown):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, coordinator.ErrInvalid), errors.Is(err, fsm.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, coordinator.ErrNotLeading):
		return status.Error(codes.Unavailable, "this scheduler lost the leadership: retry")
	}
	return stateError(err)
}
