package agent

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/internal/rpc"
)

// The generation fence.
//
// The cluster bumps a container's generation in raft each time a move of
// it commits, and the scheduler sends the generation with every command
// that starts, stops, resumes, commits or removes the container or
// starts a migration of it (rpc.GenerationHeader). The agent keeps the
// newest generation it knows in the container's record
// (Container.Generation), so that a restarted agent keeps it, and
// learns it from three places: the commands themselves (a newer one
// raises it: the scheduler is ahead), the cluster's word at the node's
// last registration (Fence.Placement), and the commit of a migration
// this node is the destination of (the migration's generation plus
// one).
//
// A command carrying an older generation than the agent knows is
// refused with ErrStaleGeneration (gRPC FailedPrecondition): it comes
// from a scheduler that lost track of a move, a deposed or partitioned
// leader, and acting on it could run a container twice or destroy its
// only copy. A command without a generation (0: the direct --agent
// mode, the CLI's two-node migrate) is not fenced by it.
//
// Commands that make a copy run (start, a migration source's resume)
// are also refused in a cluster when the node's registration, made
// after the container came here, no longer places it on this node: the
// cluster moved it, whatever generation the command carries.
//
// Every check runs under the container's lock, so a command and a raise
// do not interleave. A repeated migration call that finds its work done
// answers as before, unchecked: it acts on nothing.
//
// Migration calls carry the migration's generation, the one the
// container had when the move began, on both sides and for every call:
// the destination's commit records that generation plus one, and
// accepts a commit whose generation the cluster has already bumped by
// that one (the leader commits the move in raft before it tells the
// destination).

// commitSlack is how far below the generation the destination knows a
// migration's commit may be: the leader bumps the generation in raft
// before it sends the commit, which carries the migration's generation,
// and a registration in between tells the destination the bumped one.
const commitSlack = 1

type generationKey struct{}

// withGeneration returns ctx carrying the generation of the command the
// agent is asked to do; the gRPC server puts there what the call's
// metadata carries (callGeneration). 0: none.
func withGeneration(ctx context.Context, g uint64) context.Context {
	return context.WithValue(ctx, generationKey{}, g)
}

// commandGeneration is the generation ctx's command was issued at; 0
// when it carries none.
func commandGeneration(ctx context.Context) uint64 {
	g, _ := ctx.Value(generationKey{}).(uint64)
	return g
}

// callGeneration is ctx with the generation the gRPC call carries
// (rpc.GenerationHeader), for the agent's methods; a malformed header
// is refused, never taken for an unfenced call.
func callGeneration(ctx context.Context) (context.Context, error) {
	g, err := rpc.IncomingGeneration(ctx)
	if err != nil {
		return ctx, status.Error(codes.InvalidArgument, err.Error())
	}
	return withGeneration(ctx, g), nil
}

// placement is the cluster's word on container id at the node's last
// registration (Fence.Placement); nothing for a standalone agent.
func (a *Agent) placement(id string) (generation uint64, placed bool, epoch uint64) {
	if a.cfg.Fence == nil || id == "" {
		return 0, false, 0
	}
	return a.cfg.Fence.Placement(id)
}

// fenceGeneration is the generation fence of command what, issued at
// generation given, on container c, whose lock the caller holds: it is
// refused when given is older than the generation the agent knows
// (c's, or the cluster's when newer) by more than slack. Otherwise the
// known generation is raised to given when given is newer. A raise is
// saved before the answer, a refusal or not.
func (a *Agent) fenceGeneration(what string, c *Container, given, slack uint64) error {
	known := c.Generation
	if g, placed, _ := a.placement(c.ID); placed {
		known = max(known, g)
	}
	stale := given != 0 && given+slack < known
	raised := known
	if !stale {
		raised = max(raised, given)
	}
	if raised > c.Generation {
		a.log.Info("container generation raised", "container", c.Name, "id", c.ID, "from", c.Generation, "to", raised, "action", what)
		c.Generation = raised
		if err := a.save(c); err != nil {
			return err
		}
	}
	if stale {
		return a.staleGeneration(what, c.Name, given, known)
	}
	return nil
}

// fenceRun is the fence of command what, issued at generation given,
// that runs c's copy here (c locked by the caller): fencePlacement
// first, on the copy's own generation, then fenceGeneration.
func (a *Agent) fenceRun(what string, c *Container, given uint64) error {
	if err := a.fencePlacement(what, c, given); err != nil {
		return err
	}
	return a.fenceGeneration(what, c, given, 0)
}

// fencePlacement refuses command what, issued at generation given, that
// would run c's copy here (c locked by the caller) when the cluster
// moved c away: the node registered after c came here, and that
// registration places c elsewhere, or here at a newer generation than
// the copy's. Containers the cluster never knew (no generation) and
// standalone agents pass.
func (a *Agent) fencePlacement(what string, c *Container, given uint64) error {
	if a.cfg.Fence == nil {
		return nil
	}
	copyGen := max(c.Generation, given)
	g, placed, epoch := a.cfg.Fence.Placement(c.ID)
	switch {
	case placed && g > copyGen:
		return a.staleGeneration(what, c.Name, copyGen, g)
	case !placed && copyGen > 0 && epoch > c.ArrivalEpoch:
		a.log.Warn("refused: the cluster no longer places the container on this node", "action", what,
			"container", c.Name, "id", c.ID, "generation", copyGen, "registration", epoch, "arrived", c.ArrivalEpoch)
		return errorf(ErrStaleGeneration, "stale generation %d for container %s on node %s: the cluster moved it to another node (this node's registration %d does not place it here), so this copy stays stopped; the command comes from a scheduler or operator that lost track: find where it runs with `godwit ps`",
			copyGen, c.Name, a.cfg.Name, epoch)
	}
	return nil
}

// fenceID is fenceGeneration (slack 0) for container id, named name, for
// a command that may come before the container is on this node (a
// migration's destination): absent, it is checked against the
// cluster's word alone, and nothing is raised.
func (a *Agent) fenceID(what, name, id string, given uint64) error {
	a.mu.Lock()
	e, ok := a.containers[id]
	a.mu.Unlock()
	if ok {
		e.op.Lock()
		defer e.op.Unlock()
		return a.fenceGeneration(what, e.c, given, 0)
	}
	return a.fenceNew(what, name, id, given)
}

// fenceNew refuses command what, issued at generation given, on
// container id (named name) that is not on this node yet, when the
// cluster places it here at a newer generation.
func (a *Agent) fenceNew(what, name, id string, given uint64) error {
	if g, placed, _ := a.placement(id); placed && given != 0 && given < g {
		return a.staleGeneration(what, name, given, g)
	}
	return nil
}

// onContainer runs fn on container ref under its lock; a container that
// is not on this node passes (the call fails further on, or finds
// nothing to act on).
func (a *Agent) onContainer(ref string, fn func(c *Container) error) error {
	e, err := a.lookup(ref)
	if err != nil {
		return nil
	}
	e.op.Lock()
	defer e.op.Unlock()
	return fn(e.c)
}

// raiseGeneration records generation g for container ref, when newer
// than the one it knows.
func (a *Agent) raiseGeneration(ref string, g uint64) error {
	return a.onContainer(ref, func(c *Container) error {
		if g <= c.Generation {
			return nil
		}
		c.Generation = g
		return a.save(c)
	})
}

// commitGeneration records on the destination of a migration whose
// generation is given that the move commits: the held copy of container
// ref is generation given+1 (the cluster bumped it before it sent the
// commit), and came to this node at the current registration. A commit
// older than that is refused. A commit without a generation (the CLI's
// two-node migrate) raises nothing.
func (a *Agent) commitGeneration(ref string, given uint64) error {
	return a.onContainer(ref, func(c *Container) error {
		if err := a.fenceGeneration("commit a migration", c, given, commitSlack); err != nil {
			return err
		}
		gen := c.Generation
		if given != 0 {
			gen = max(gen, given+1)
		}
		_, _, epoch := a.placement(c.ID)
		if gen == c.Generation && epoch == c.ArrivalEpoch {
			return nil
		}
		c.Generation, c.ArrivalEpoch = gen, epoch
		return a.save(c)
	})
}

// staleGeneration is the refusal of command what on container name,
// issued at generation given, when the agent knows current.
func (a *Agent) staleGeneration(what, name string, given, current uint64) error {
	a.log.Warn("refused a command with a stale generation", "action", what, "container", name,
		"generation", given, "current", current)
	return errorf(ErrStaleGeneration, "stale generation %d for container %s on node %s: the cluster moved it (generation %d); the command comes from a scheduler that lost track",
		given, name, a.cfg.Name, current)
}
