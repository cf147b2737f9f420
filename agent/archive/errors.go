package archive

import (
	"errors"
	"fmt"
)

var (
	// ErrUnsafe marks a member refused because extracting it could reach
	// outside the root, write through a symlink, create a device, or
	// change how overlayfs reads the layer.
	ErrUnsafe = errors.New("unsafe tar member")
	// ErrTruncated marks a stream that ends early or is corrupt: a member's
	// data cut short, a bad header, no end-of-archive marker, or a
	// compressed stream that fails to decode.
	ErrTruncated = errors.New("truncated or corrupt tar stream")
	// ErrUnsupported marks a well-formed member that cannot be extracted:
	// an unknown type, or a parent that is not a directory.
	ErrUnsupported = errors.New("unsupported tar member")
)

// MemberError names the tar member that was refused and why. Name is the
// member's name exactly as the archive spells it; it is empty only when the
// stream is corrupt before its first member.
type MemberError struct {
	Name   string
	Reason string
	Err    error
}

func (e *MemberError) Error() string {
	if e.Name == "" {
		return "tar stream: " + e.Reason
	}
	return fmt.Sprintf("tar member %q: %s", e.Name, e.Reason)
}

func (e *MemberError) Unwrap() error { return e.Err }

// refuse builds the error for a member that breaks the policy.
func refuse(name string, sentinel error, format string, args ...any) *MemberError {
	return &MemberError{Name: name, Reason: fmt.Sprintf(format, args...), Err: sentinel}
}

// truncated builds the error for a stream that broke while name was read.
func truncated(name, reason string, cause error) *MemberError {
	return &MemberError{
		Name:   name,
		Reason: fmt.Sprintf("%s: %v", reason, cause),
		Err:    fmt.Errorf("%w: %w", ErrTruncated, cause),
	}
}
