package bundle

import (
	"crypto/sha256"
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

func newHashingWriter(w io.Writer) *hashingWriter {
	hw := &hashingWriter{w: w, h: sha256.New(), chunks: make(chan []byte), done: make(chan struct{})}
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

// digest stops the hasher and returns the digest of everything written.
// The writer must not be used afterwards.
func (hw *hashingWriter) digest() digest.Digest {
	close(hw.chunks)
	return digest.NewDigest(digest.SHA256, hw.h)
}
