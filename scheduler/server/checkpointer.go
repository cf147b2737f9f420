package server

import (
	"context"
	"fmt"
	"time"

	"github.com/godwit/godwit/agent/agentclient"
	"github.com/godwit/godwit/internal/rpc"
	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// drainCheckpointer checkpoints a container away from a draining node
// at its deadline (--on-deadline checkpoint): the container's node
// checkpoints it, stopping it, and pushes the checkpoint to the holder
// (node to node, with their certificates); once the holder keeps it, the
// cluster records the container there (fsm.CheckpointAway), and the
// node's stopped copy is removed (its checkpoint stays: a second copy).
type drainCheckpointer struct{ s *Scheduler }

// checkpointPushTimeout bounds one push of a checkpoint between two
// nodes: gigabytes at LAN speed, with room.
const checkpointPushTimeout = 30 * time.Minute

func (d drainCheckpointer) CheckpointAway(ctx context.Context, c *state.Container, holder *state.Node) (string, error) {
	s := d.s
	// While it acts, heartbeats do not enforce the desired state: a
	// container the node reports checkpointed is not started again.
	if s.enforcing.claim(c.ID) {
		defer s.enforcing.release(c.ID)
	}
	snap := s.store.Snapshot()
	src, ok := snap.Node(c.Node)
	if !ok || src.Health != state.HealthAlive {
		return "", fmt.Errorf("container %s: its node %s does not answer: nothing can be checkpointed there", c.Name, c.Node)
	}
	agent, err := s.conns.agent(src.Address)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, checkpointPushTimeout)
	defer cancel()
	fenced := rpc.WithGeneration(ctx, c.Generation)
	log := s.log.With("container", c.Name, "node", c.Node, "holder", holder.Name)

	// A container checkpointed by an earlier try (its push failed) is
	// not dumped again: its latest checkpoint is the one to keep.
	got, err := agent.InspectContainer(fenced, &pb.ContainerRef{Ref: c.ID})
	if err != nil {
		return "", agentError(c.Node, "inspect "+c.Name, err)
	}
	id := got.GetLastCheckpoint()
	if got.GetState() != pb.ContainerState_CONTAINER_STATE_CHECKPOINTED {
		ckpt, err := agentclient.Checkpoint(fenced, agent, &pb.CheckpointRequest{Container: c.ID}, nil)
		if err != nil {
			return "", agentError(c.Node, "checkpoint "+c.Name, err)
		}
		id = ckpt.GetId()
		log.Info("drain deadline: container checkpointed, stopped", "checkpoint", id)
	}
	kept, err := agentclient.PushCheckpoint(ctx, agent, &pb.PushCheckpointRequest{Ref: id, Address: holder.Address}, nil)
	if err != nil {
		return "", agentError(c.Node, fmt.Sprintf("push checkpoint %s of %s to %s", id, c.Name, holder.Name), err)
	}
	log.Info("drain deadline: checkpoint kept on another node", "checkpoint", id, "bytes", kept.GetReceivedBytes())
	v, err := s.apply(ctx, &fsm.CheckpointAway{ID: c.ID, Source: c.Node, Generation: c.Generation, Holder: holder.Name, Checkpoint: id, At: time.Now()})
	if err != nil {
		return "", err
	}
	// The node's stopped copy is stale now: removed at the new
	// generation, which the node learns from the command. Its
	// checkpoint stays. A failure leaves a record the node reports as
	// unknown, never a copy that runs.
	gen, _ := v.(uint64)
	if _, err := agent.RemoveContainer(rpc.WithGeneration(ctx, gen), &pb.RemoveContainerRequest{Ref: c.ID, Force: true}); err != nil {
		log.Warn("remove the stale stopped copy on the drained node", "err", err)
	}
	return id, nil
}
