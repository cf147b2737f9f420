package agent

import "errors"

// Sentinel errors; the gRPC server maps them to status codes in one place
// (see grpcError).
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalidState = errors.New("invalid state")
	ErrInUse        = errors.New("in use")
	ErrInvalid      = errors.New("invalid argument")
)
