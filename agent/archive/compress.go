package archive

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Compression is how a stream is compressed, as told by its magic bytes.
type Compression int

const (
	// None is a plain, uncompressed stream.
	None Compression = iota
	// Gzip is RFC 1952 gzip (one or more members).
	Gzip
	// Zstd is a Zstandard frame.
	Zstd
)

func (c Compression) String() string {
	switch c {
	case None:
		return "none"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	default:
		return fmt.Sprintf("compression(%d)", int(c))
	}
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// sniffBufferSize is large enough to peek at any magic number while keeping
// reads from the underlying stream in big chunks.
const sniffBufferSize = 64 << 10

// Decompress sniffs the magic bytes and returns an uncompressed reader. A
// stream that is neither gzip nor zstd is returned as it is (None): whether
// it is a tar is for the tar reader to say. Closing the result releases the
// decoder; it does not close r.
func Decompress(r io.Reader) (io.ReadCloser, Compression, error) {
	br := bufio.NewReaderSize(r, sniffBufferSize)
	// A short stream (fewer bytes than the longest magic) is not an error
	// here: Peek returns what there is.
	head, err := br.Peek(len(zstdMagic))
	if err != nil && len(head) == 0 && err != io.EOF {
		return nil, None, fmt.Errorf("read stream header: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, Gzip, fmt.Errorf("open gzip stream: %w: %w", ErrTruncated, err)
		}
		return zr, Gzip, nil
	case bytes.HasPrefix(head, zstdMagic):
		// One decoder goroutine: layers are read as a stream, and a node
		// may decode several at once.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, Zstd, fmt.Errorf("open zstd stream: %w", err)
		}
		return zr.IOReadCloser(), Zstd, nil
	default:
		return io.NopCloser(br), None, nil
	}
}
