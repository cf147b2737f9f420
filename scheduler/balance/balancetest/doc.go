// Package balancetest is the test harness for scheduler/balance, in the
// spirit of placementtest and nomad's scheduler/tests: build a fake
// cluster with one line per node and per container (capacity, labels,
// CPU flags, status; each container's measured load, how long it has
// held it, its request, pins and constraints), run balance.Plan and
// check the exact outcome (the moves in order, each rejected container's
// rule) together with the invariants every Decision must keep:
//
//   - every running container on a loaded node is moved or rejected,
//     once, with a reason; nothing else is;
//   - no move breaks a rule: pins, cooldown, the ping-pong guard,
//     destination status, constraints, CPU features, headroom in
//     requests and in measured use, the per-node and cluster limits
//     counting the migrations in flight;
//   - each move pays (gain x stability over cost_multiple x cost), and
//     its gain and imbalances match the metric recomputed from scratch
//     (balance.Imbalance) as the moves are applied one by one, which
//     never raises the imbalance;
//   - the same plan comes out with every input slice shuffled, and on a
//     real state.Snapshot holding the same cluster.
//
// State is also a mutable balance.State for the simulator (bench/balance):
// it holds nodes, containers and migrations, and keeps each node's
// allocation as the real state does.
package balancetest
