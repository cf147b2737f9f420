// Package criuimg reads what CRIU leaves in a checkpoint's image
// directory, without running CRIU: the dump and restore statistics
// (ReadStats) and a checkpointctl-style description of what was dumped
// (Inspect): the process tree with command lines, each process's open
// files and sockets, the mounts and the memory size.
//
// Every image is decoded with go-criu's crit decoders; nothing here parses
// protobuf by hand. The package does not use crit's Explore* helpers: they
// cache files.img and friends in package-level variables that are neither
// keyed by directory nor safe for concurrent use, so an agent inspecting
// two checkpoints would describe the second with the first one's files.
//
// Images may come from an exported archive that nothing has verified yet,
// so every image is bounded and its framing checked before it is decoded,
// and a malformed image is an error (ErrMalformedImage), never a panic or
// an unbounded allocation.
package criuimg
