// Package history records what a fault test saw of its containers while
// it moved them and injected faults, and checks that record against the
// guarantees godwit makes of a move, with a linearizability checker
// (github.com/anishathalye/porcupine):
//
//   - at most one running copy per container at every generation: every
//     copy a host was seen running is on the node the cluster placed the
//     container on at that moment, and the cluster's word (node and
//     generation) changes only by a committed move, from the move's
//     source and generation to its destination and the next generation;
//   - every acknowledged migration committed or rolled back: none is left
//     open when the history is checked.
//
// The record holds four kinds of entries, each with the interval in which
// it happened (a call and its return, on one monotonic clock): where the
// container was first placed; what the cluster said of it (node and
// generation: ListContainers); what runc on one host showed (whether the
// container runs there); and each migration the cluster acknowledged,
// from the request to the moment the test learned its outcome. A history
// is correct when some order of its entries, each placed at one instant
// within its interval, replays against the model (model.go).
//
// Hosts are asked one at a time, so one entry per host and sample: a scan
// of all hosts is not one instant, and two copies seen in one scan may be
// a copy seen before a move and its successor seen after it.
package history
