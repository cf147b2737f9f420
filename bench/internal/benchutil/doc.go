// Package benchutil is what godwit's benchmarks (bench/density,
// bench/checkpoint) share, so that each measures and reports under the same
// rules:
//
//   - host facts for reports: CPU model, kernel, memory, the cgroup layout
//     and the filesystem a benchmark's files are on (host.go), and the
//     wording of sizes and targets (format.go);
//   - building the godwit binary under test as `make build` does, and
//     removing a benchmark's work dir only when nothing is mounted under it
//     (build.go);
//   - starting a `godwit agent` of the benchmark's own, over mutual TLS
//     with a throwaway CA as in production (or --insecure when asked),
//     stopping it with the cgroups it keeps for its next start, and
//     quoting the end of its log (or any other) in an error (agent.go).
//
// What a benchmark measures, and how it drives godwit (CLI or gRPC), stays
// in the benchmark.
package benchutil
