// Package balance plans the moves that even out the measured load of a
// cluster's nodes: a pure function, Plan, from a read-only view of the
// cluster (State: *state.Snapshot satisfies it) and an Input (the time,
// the Policy, recent load samples, past migrations and moves) to a
// Decision: the imbalance now and predicted, the moves to make in order,
// each with its predicted gain and cost and the reason for it, and every
// running container on a loaded node that stays, with its reason.
//
// It imports only scheduler/state, scheduler/placement and the standard
// library, reads no clock, draws no random numbers and does no I/O: the
// same inputs give the same Decision, whatever the order of the slices
// in them. The leader runs it every Policy.Interval and executes the
// moves through the migration coordinator; `balance plan` shows a
// Decision without executing it. docs/balance.md explains every choice
// below, with the reasoning and the numbers.
//
// # The imbalance
//
// Over the ready nodes (cordoned, draining, suspect and down nodes
// neither give nor take), each node's CPU and memory utilisation is the
// sum of its running containers' measured loads over its capacity; the
// imbalance is the root mean square, weighted by Policy.CPUWeight and
// Policy.MemoryWeight, of the coefficients of variation of the two
// utilisations (standard deviation over mean, the mean taken as at least
// Policy.MeanFloor, so that spread in a lightly used resource does not
// pay for moves that relieve nothing). Balancing starts above
// Policy.Trigger and, once started (Input.Balancing), goes on until the
// imbalance reaches Policy.Target, less a margin (targetMargin): plans
// aim a little under the target, since the loads they predict from are
// estimates and the limits may cut them short.
//
// A container's load is the mean of its samples since its load last
// changed (samples within Policy.StableTolerance of the level of those
// after them, read from the newest back), and how long that is weighs its
// move's gain: in full once steady for Policy.StableFor, in proportion
// before.
//
// # Gain, cost, and when a move is made
//
// A move's gain is GainScale x nodes x the fall of the squared imbalance
// it brings; its cost is Policy.DowntimeWeight per second of predicted
// downtime plus Policy.GiBWeight per GiB of predicted transfer. Bytes are
// the container's measured memory plus what it dirties while that is
// copied (when the dirty rate is known); the duration comes from the
// pair's measured bandwidth, else the median of past migrations between
// the pair, else between any nodes, else Policy.Bandwidth; the downtime
// is the bytes times the median downtime per byte of past migrations of
// the policy's strategy, else Policy.DowntimePerGiB, never under
// Policy.MinDowntime. A move is made only when gain x stability exceeds
// Policy.CostMultiple x cost.
//
// # Rules
//
// Candidates are the running containers on the nodes loaded above the
// mean. A container stays (Rejection.Rule) when it is migrating, pinned
// (run --pin, or PinLabel: run --node only chooses where a container
// starts), moved less than Policy.Cooldown
// ago, or has no sample; a destination refuses it when the container
// left it less than Policy.ReturnAfter ago (the ping-pong guard), when
// its measured use or its requests would pass (1 - Policy.Headroom) of
// its capacity, or when placement's filters refuse it (status,
// constraints, the source's CPU features, capacity). At most
// Policy.MaxMoves migrations are open in the cluster and
// Policy.MaxMovesPerNode per node, counting those in flight; a node
// either gives or takes in one plan.
//
// # The plan
//
// Greedy, in passes: each pass visits the nodes that can give, most
// loaded first, and each takes the best-scoring of its candidates' moves
// that pays and that its destination accepts, weighing each candidate
// against a shortlist of the least loaded nodes (further only when all
// that pay refuse); the nodes are ranked again after every move. Passes
// go on until the target is reached, a limit is hit, or a pass finds no
// move; that pass's weighing of every candidate is what the rejections
// report.
package balance
