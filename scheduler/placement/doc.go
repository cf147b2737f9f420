// Package placement chooses the node a container runs on: a pure function
// from a read-only view of the cluster (State) and a Request to a Decision
// that says which node won, how every feasible node scored, and why every
// other node was rejected.
//
// It owns the filters and the scores, and nothing else: it imports only
// scheduler/state and the standard library, reads no clock, draws no
// random numbers and does no I/O, so the same State and Request always
// give the same Decision. The caller (the scheduler leader) reserves the
// chosen node through raft; placement never writes.
//
// # Filters
//
// Each node goes through the filters in this fixed order, and the first
// one that refuses it names the node's Rejection:
//
//  1. status (FilterStatus): only ready nodes; cordoned, draining, suspect
//     and down nodes take nothing new, even when the container is pinned
//     to them.
//  2. pinned (FilterPinned): when Spec.Node is set, only that node.
//  3. excluded (FilterExcluded): never a node in Request.Exclude (a move's
//     source).
//  4. constraint (FilterConstraint): every Spec.Constraints label must be
//     on the node with that value.
//  5. cpu (FilterCPU): when Request.RequireCPU is set, every one of its
//     feature flags must be on the node (a checkpoint restores only where
//     the dumping CPU's features exist). Vendor and model are not compared:
//     a restored process uses features, not names.
//  6. capacity (FilterCapacity): the request must fit in the node's
//     capacity less what is allocated there. A request of zero in either
//     dimension counts as DefaultMilliCPU or DefaultMemoryBytes
//     (EffectiveRequest), so that no container lands on a full node.
//
// Image availability is a score, not a filter: a node without the image
// fetches its layers from a peer, which costs time but never makes the
// node unable to run the container.
//
// # Scores
//
// Every node that passes the filters is scored: its Score is the sum of its
// weighted Parts, each part in [0, 1]:
//
//   - binpack (ScoreBinPack, Algorithm BinPack, the default): prefer the
//     fullest node that fits, to keep whole nodes free for large containers
//     and for draining. The part is 1 - sqrt((fc² + fm²) / 2), where fc and
//     fm are the fractions of the node's CPU and memory left free after
//     placing the request. Like nomad's best-fit, the root mean square
//     punishes the dimension with the most left over more than an average
//     would, so a node that is full in both dimensions beats one that is
//     full in one and empty in the other.
//   - spread (ScoreSpread, Algorithm Spread): prefer the emptiest node,
//     sqrt((fc² + fm²) / 2) after placing the request, plus containers
//     (ScoreContainers, weight ContainersWeight): 1 / (1 + containers on
//     the node), so that among equally loaded nodes the one running fewer
//     containers wins (a failed node takes fewer with it).
//   - image (ScoreImage, weight ImageWeight): 1 when the node already holds
//     Spec.Image, so that nothing has to be transferred. Its weight is small
//     on purpose: it breaks near ties, it does not override the algorithm.
//
// Scores are rounded to ScorePrecision so that nodes alike in everything
// that matters tie exactly; ties go to the node whose name sorts first.
//
// # What a Decision holds
//
// Node is the best candidate. Rejected lists every refused node with its
// filter, its reason and what an operator can do. Candidates are ranked
// best first: every feasible node with the words behind each score part
// when the Request asks to Explain (`run --dry-run`), else only the best
// RetainedCandidates without words, which keeps a placement on a thousand
// nodes well under a millisecond (BenchmarkPlace). Feasible counts the
// feasible nodes either way.
//
// When no node passes, Place returns a *NoNodeError (errors.Is ErrNoNode)
// that lists each node's rejection with what an operator can do about it.
//
// # Deciding a batch
//
// The scheduler leader decides the runs waiting for it as one batch on one
// snapshot, each decision reserved before the next (Reservations, Reserve)
// so that no two count on the same room. It reads the snapshot into a
// Table once (NewTable) and reserves each decision on the Table (Add).
// Place walks a Table's rows in name order without a lookup; and from the
// second decision of a kind (the same request, algorithm and image, only
// the status and capacity filters, no Explain) a Table keeps that kind's
// outcome on every node and re-evaluates only the nodes Add changed since
// (batch.go): a batch of replicas alike costs a pass over the nodes once,
// then a few microseconds a decision (BenchmarkPlaceBatch). Every Decision
// is exactly the one a pass over every node gives; the tests compare both.
package placement
