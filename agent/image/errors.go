package image

import (
	"errors"
	"fmt"
)

var (
	// ErrNotFound: no image (or layer) answers to the reference.
	ErrNotFound = errors.New("image not found")
	// ErrExists: the name is already used by another image.
	ErrExists = errors.New("image name already in use")
	// ErrInvalid: the tarball, a reference or a name is malformed, fails
	// verification or breaks the extraction policy.
	ErrInvalid = errors.New("invalid image")
)

// invalidError reads as its own message, matches ErrInvalid, and keeps the
// chain of what it wraps (an archive.MemberError, for example).
type invalidError struct{ err error }

func (e *invalidError) Error() string        { return e.err.Error() }
func (e *invalidError) Unwrap() error        { return e.err }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

// invalidf formats like fmt.Errorf (with %w) and marks the result ErrInvalid.
func invalidf(format string, args ...any) error {
	return &invalidError{err: fmt.Errorf(format, args...)}
}
