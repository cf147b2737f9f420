package bundle

import (
	"errors"
	"fmt"
	"strconv"
)

var (
	// ErrCorrupt marks content that does not match its manifest: a size or
	// digest mismatch, a file missing or not listed, a truncated or
	// undecodable archive.
	ErrCorrupt = errors.New("checkpoint is corrupt")
	// ErrUnsafe marks a file or archive member that a checkpoint may never
	// hold: a symlink, a device, a nested directory, a path that escapes.
	ErrUnsafe = errors.New("unsafe checkpoint entry")
	// ErrInvalidManifest marks a manifest that is malformed or incomplete.
	ErrInvalidManifest = errors.New("invalid checkpoint manifest")
	// ErrUnsupportedVersion marks a manifest whose format_version this
	// godwit does not read.
	ErrUnsupportedVersion = errors.New("unsupported checkpoint format version")
	// ErrUnsealed marks a checkpoint whose digests are pending
	// (WritePendingManifest): Seal computes them.
	ErrUnsealed = errors.New("checkpoint is not sealed")
	// ErrEncrypted marks an encrypted archive read without a key.
	ErrEncrypted = errors.New("checkpoint archive is encrypted")
	// ErrDecrypt marks an archive the key cannot open: a wrong key, a
	// tampered or truncated ciphertext, or a plaintext archive where a key
	// was given.
	ErrDecrypt = errors.New("checkpoint archive decryption failed")
	// ErrKey marks a key file that cannot be read, parsed or created.
	ErrKey = errors.New("checkpoint key file")
	// ErrExists marks a destination (an import directory, a new key file)
	// that already exists.
	ErrExists = errors.New("already exists")
	// ErrIncompatible marks a checkpoint this host cannot restore.
	ErrIncompatible = errors.New("checkpoint is incompatible with this host")
)

// Advice appended to refusals, so that an operator knows what to do next.
const (
	adviceArchive = "the archive is corrupt or was tampered with; export it again"
	adviceDir     = "the checkpoint is corrupt; take a new checkpoint or import its archive again"
)

// FileError names the checkpoint file that was refused and why. Path is the
// file's path inside the checkpoint ("criu/pages-1.img") as the archive or
// directory spells it; it is empty when the archive is unreadable before its
// first member.
type FileError struct {
	Path string
	// Archive is true for a member of an exported archive, false for a file
	// in a checkpoint directory.
	Archive bool
	Reason  string
	Err     error
}

func (e *FileError) Error() string {
	what := "checkpoint file"
	if e.Archive {
		what = "checkpoint archive member"
	}
	if e.Path == "" {
		if e.Archive {
			return "checkpoint archive: " + e.Reason
		}
		return "checkpoint directory: " + e.Reason
	}
	return fmt.Sprintf("%s %s: %s", what, printable(e.Path), e.Reason)
}

func (e *FileError) Unwrap() error { return e.Err }

// printable quotes a path only when it holds characters that would garble
// a message (names come from untrusted archives).
func printable(p string) string {
	if q := strconv.Quote(p); q[1:len(q)-1] != p {
		return q
	}
	return p
}

func archiveError(path string, sentinel error, format string, args ...any) *FileError {
	return &FileError{Path: path, Archive: true, Reason: fmt.Sprintf(format, args...), Err: sentinel}
}

func dirError(path string, sentinel error, format string, args ...any) *FileError {
	return &FileError{Path: path, Reason: fmt.Sprintf(format, args...), Err: sentinel}
}
