package agent

import "errors"

// Fence is the lease gate of an agent in a cluster (agent/clusterlink's
// Link implements it): a node whose lease with the scheduler expired may
// have been declared down, and its containers placed elsewhere, so it
// must not start, resume or commit anything until it has registered
// again and learned the current generations. Config.Fence nil is a
// standalone agent, which checks nothing.
type Fence interface {
	// Check returns nil while the node holds a valid lease, else an error
	// that says so to the operator (which node, since when, what to
	// expect). It never blocks.
	Check() error
	// Placement is the cluster's word on container id (its full ID) at
	// the node's last registration, number epoch (0 before the first;
	// each registration has a higher one): whether it placed the
	// container on this node, and at which generation. The three come
	// from the same registration. It never blocks. The agent's
	// generation fence uses it (generation.go).
	Placement(id string) (generation uint64, placed bool, epoch uint64)
}

// ErrFenced marks a call refused by the fence; its message is the
// fence's. The gRPC server maps it to FailedPrecondition.
var ErrFenced = errors.New("refused without a valid lease")

// checkFence is called before anything that makes a container run:
// Run, Start, a checkpoint restore, a migration source's resume after an
// abort and a destination's commit. what names the action in the log.
func (a *Agent) checkFence(what, container string) error {
	if a.cfg.Fence == nil {
		return nil
	}
	err := a.cfg.Fence.Check()
	if err == nil {
		return nil
	}
	a.log.Warn("refused: the node has no valid lease with the scheduler", "action", what, "container", container, "err", err)
	return &kindError{err: err, kind: ErrFenced}
}

// checkRegistered refuses action what on container when the node, in a
// cluster, has not registered since its agent started (its registration
// epoch is still 0): it could start, resume or commit nothing yet.
func (a *Agent) checkRegistered(what, container string) error {
	if a.cfg.Fence == nil {
		return nil
	}
	if _, _, epoch := a.cfg.Fence.Placement(""); epoch > 0 {
		return nil
	}
	err := a.cfg.Fence.Check()
	if err == nil {
		return nil
	}
	a.log.Warn("refused: the node has not registered with the scheduler yet", "action", what, "container", container, "err", err)
	return &kindError{err: err, kind: ErrFenced}
}
