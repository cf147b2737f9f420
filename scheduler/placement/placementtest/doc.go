// Package placementtest is the test harness for scheduler/placement, in the
// spirit of nomad's scheduler/tests: build a fake cluster with one line per
// node (capacity, labels, CPU flags, status, images, running containers),
// run one placement Request and check the chosen node, the candidates'
// order and each rejected node's filter, together with the invariants every
// Decision must keep (each node exactly once, scores sorted and equal to
// their parts, the same answer whatever order the nodes come in).
//
// Other scheduler packages (the server's dry-run, the benchmarks) may use
// State as a placement.State too.
package placementtest
