package server

import (
	"context"
	"sync"

	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/state"
)

// The scheduler's desired state wins over what a node reports: a
// container the operator wants stopped that its node runs (started on the
// node directly, with --agent) is stopped, and one wanted running that
// its node reports stopped is started again. A container that exited on
// its own is left as it is: godwit has no restart policy yet. Each action
// runs once at a time per container, off the heartbeat's path.

// enforcing holds the containers an enforcement is running for.
type enforcing struct {
	mu sync.Mutex
	in map[string]bool
}

func (e *enforcing) claim(id string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.in == nil {
		e.in = map[string]bool{}
	}
	if e.in[id] {
		return false
	}
	e.in[id] = true
	return true
}

func (e *enforcing) release(id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.in, id)
}

// enforceDesired starts, in the background, what makes node n's
// containers match their desired state.
func (s *Scheduler) enforceDesired(n *state.Node) {
	snap := s.store.Snapshot()
	for _, c := range snap.ContainersOn(n.Name) {
		if _, moving := snap.OpenMigrationOf(c.ID); moving {
			continue // the coordinator owns a moving container until its move ends
		}
		var act func(context.Context, pb.AgentServiceClient) error
		switch {
		case c.Desired == state.DesiredStopped && c.Reported == state.ReportedRunning:
			act = func(ctx context.Context, agent pb.AgentServiceClient) error {
				_, err := agent.StopContainer(ctx, &pb.StopContainerRequest{Ref: c.ID})
				return err
			}
		case c.Desired == state.DesiredRunning && c.Reported == state.ReportedStopped:
			act = func(ctx context.Context, agent pb.AgentServiceClient) error {
				_, err := agent.StartContainer(ctx, &pb.ContainerRef{Ref: c.ID})
				return err
			}
		default:
			continue
		}
		if !s.enforcing.claim(c.ID) {
			continue
		}
		log := s.log.With("node", n.Name, "container", c.Name, "desired", c.Desired, "reported", c.Reported)
		log.Warn("node's container differs from the desired state: enforcing it")
		s.goRun(func() {
			defer s.enforcing.release(c.ID)
			ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Timing.ApplyTimeout)
			defer cancel()
			agent, err := s.conns.agent(n.Address)
			if err == nil {
				err = act(rpc.WithGeneration(ctx, c.Generation), agent)
			}
			if err != nil {
				log.Error("enforce the desired state", "err", err)
			}
		})
	}
}
