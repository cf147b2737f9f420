package bundle

import (
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// hashingWriter writes to w and digests the same bytes on another
// goroutine, so that hashing overlaps the write (a file, or compression and
// encryption) instead of adding to it: on a checkpoint's hundreds of MiB
// that is a large part of export and import time.
type hashingWriter struct {
	w      io.Writer
	h      hash.Hash
	chunks chan []byte
	done   chan struct{}
}

func newHashingWriter(w io.Writer, h hash.Hash) *hashingWriter {
	hw := &hashingWriter{w: w, h: h, chunks: make(chan []byte), done: make(chan struct{})}
	go func() {
		for p := range hw.chunks {
			hw.h.Write(p)
			hw.done <- struct{}{}
		}
	}()
	return hw
}

// Write hands p to the hasher, writes it, and returns once both are done
// with it, since the caller may reuse p. Bytes the writer rejects are still
// digested; a failed write ends the copy anyway.
func (hw *hashingWriter) Write(p []byte) (int, error) {
	hw.chunks <- p
	n, err := hw.w.Write(p)
	<-hw.done
	return n, err
}

// stop stops the hasher, whose hash then holds everything written. The
// writer must not be used afterwards.
func (hw *hashingWriter) stop() { close(hw.chunks) }

// sha256Digest is the digest of what h, a sha256, hashed.
func sha256Digest(h hash.Hash) digest.Digest { return digest.NewDigest(digest.SHA256, h) }
