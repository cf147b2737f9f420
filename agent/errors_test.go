package agent

import (
	"errors"
	"io/fs"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestErrorfIsItsKindAndKeepsWrappedErrors(t *testing.T) {
	err := errorf(ErrInvalidState, "container %s is running: %w", "c1", fs.ErrPermission)
	if !errors.Is(err, ErrInvalidState) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("errorf lost an error it wraps: %v", err)
	}
	if got, want := err.Error(), "container c1 is running: permission denied"; got != want {
		t.Fatalf("message = %q, want %q (the sentinel's text stays out of it)", got, want)
	}
	if st, _ := status.FromError(grpcError(err)); st.Code() != codes.FailedPrecondition || st.Message() != err.Error() {
		t.Fatalf("grpcError = %v %q, want FailedPrecondition with the same message", st.Code(), st.Message())
	}
}
