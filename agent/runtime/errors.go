package runtime

import "errors"

var (
	// ErrNotExist reports that runc does not know the container (never
	// created, or already deleted) under the driver's --root.
	ErrNotExist = errors.New("container does not exist in runc")

	// ErrInvalidSpec reports SpecOptions that cannot become a runnable spec;
	// the message names the offending field.
	ErrInvalidSpec = errors.New("invalid container spec")

	// ErrShimFailed reports that a shim could not start its container; the
	// message carries runc's error and where the shim's own log lies.
	ErrShimFailed = errors.New("shim failed to start the container")

	// ErrShimRunning reports that the container's state directory still
	// has a live shim, so a new one cannot be started there.
	ErrShimRunning = errors.New("a shim is still running for the container")
)
