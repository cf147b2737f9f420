package rpc

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/grpc/metadata"
)

// GenerationHeader is the call metadata that carries the container
// generation a command to an agent was issued at: the fencing token of
// the cluster (DESIGN.md section 4). The scheduler bumps a container's
// generation in raft each time a move of it commits, and an agent
// refuses a command that carries an older generation than the one it
// knows for the container. A call without it (0) is not fenced: the
// direct `--agent` mode and the CLI's two-node migrate send none.
//
// It travels as metadata rather than as a field of each request because
// the commands it fences share their messages with the cluster API
// (ContainerRef, StopContainerRequest, RemoveContainerRequest), where a
// generation from an operator would mean nothing, and because every
// migration call, streaming ones included, carries it alike.
const GenerationHeader = "godwit-generation"

// ErrBadGeneration: a call's GenerationHeader is not one decimal number
// (a client bug, never retried as it is).
var ErrBadGeneration = errors.New("malformed generation header")

// WithGeneration returns ctx whose outgoing calls carry generation g in
// GenerationHeader, replacing any generation ctx carried; 0 removes it.
// Set it on the context of one command: a call made with a context
// derived from it carries the same generation, whatever container it
// is about. A server never forwards it: incoming metadata does not
// become outgoing.
func WithGeneration(ctx context.Context, g uint64) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	if g == 0 {
		delete(md, GenerationHeader)
	} else {
		md.Set(GenerationHeader, strconv.FormatUint(g, 10))
	}
	return metadata.NewOutgoingContext(ctx, md)
}

// IncomingGeneration is the generation a call to this server carries in
// GenerationHeader: 0 without one. A header that is not exactly one
// decimal number fails with ErrBadGeneration.
func IncomingGeneration(ctx context.Context) (uint64, error) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return 0, nil
	}
	v := md.Get(GenerationHeader)
	switch len(v) {
	case 0:
		return 0, nil
	case 1:
	default:
		return 0, fmt.Errorf("%w: %d values of %s; send one", ErrBadGeneration, len(v), GenerationHeader)
	}
	g, err := strconv.ParseUint(v[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %s %q is not a generation (a decimal number)", ErrBadGeneration, GenerationHeader, v[0])
	}
	return g, nil
}
