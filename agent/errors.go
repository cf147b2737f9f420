package agent

import (
	"errors"
	"fmt"
)

// Sentinel errors; the gRPC server maps them to status codes in one place
// (see grpcError).
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalidState = errors.New("invalid state")
	ErrInUse        = errors.New("in use")
	ErrInvalid      = errors.New("invalid argument")
	// ErrStaleGeneration: a command carried an older generation of its
	// container than the agent knows, or would run a copy the cluster no
	// longer places on this node (generation.go). It comes from a
	// scheduler that lost track of a move.
	ErrStaleGeneration = errors.New("stale generation")
)

// kindError is an operator-facing message that is also one of the
// sentinel errors, without the sentinel's text tacked onto the message.
type kindError struct {
	err  error // the message, and any error it wraps with %w
	kind error // one of the sentinels above
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.err, e.kind} }

// errorf formats a message like fmt.Errorf and marks it as kind.
func errorf(kind error, format string, args ...any) error {
	return &kindError{err: fmt.Errorf(format, args...), kind: kind}
}
