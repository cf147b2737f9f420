package bundle

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"
)

// Compression is how an exported archive's tar stream is compressed.
type Compression string

const (
	// Zstd is the default: a Zstandard stream.
	Zstd Compression = "zstd"
	// NoCompression writes the tar as it is, for fast local disks or data
	// that does not compress.
	NoCompression Compression = "none"
)

// zstdLevel favours speed: an export sits on the checkpoint's critical path,
// and memory pages either compress well at any level (zeroes) or hardly at
// all.
const zstdLevel = zstd.SpeedFastest

// copyBufferSize is the chunk in which file data moves: large enough to
// keep the hashing, compression and encryption layers busy with few
// calls, small enough that a chunk stays in a core's cache from one layer
// to the next. Moving a checkpoint in chunks of 256 KiB rather than 1 MiB
// cost 15 to 20% less CPU and a quarter less time here
// (docs/benchmarks.md).
const copyBufferSize = 256 << 10

// ExportOptions tune Export. The zero value writes an unencrypted,
// zstd-compressed archive.
type ExportOptions struct {
	// Compression is Zstd (the default when empty) or NoCompression.
	Compression Compression
	// EncryptKeyFile, when set, names an age identity file (GenerateKey);
	// the archive is encrypted to it, and only that file opens it again.
	EncryptKeyFile string
	// Progress, when set, is called as file data goes into the archive
	// with the bytes done so far and the total (Manifest.Size), both
	// before compression. It is called from Export's goroutine.
	Progress func(done, total int64)
}

// Export writes the checkpoint directory dir to w as one archive: a tar
// holding manifest.json first and then every listed file in manifest order,
// compressed and optionally encrypted (see the package documentation).
// The files present and their sizes are checked against the manifest (a
// *FileError for a damaged checkpoint); their digests are not computed
// again: every importer checks them (Import), so hashing here as well would
// only add a pass over the memory pages to every export. A checkpoint whose
// digests are pending is refused (ErrUnsealed): Seal it first. On error,
// what was written to w is incomplete and must be discarded.
func Export(ctx context.Context, dir string, w io.Writer, opts ExportOptions) error {
	compress := opts.Compression
	switch compress {
	case "":
		compress = Zstd
	case Zstd, NoCompression:
	default:
		return fmt.Errorf("unknown compression %q: use %s or %s", opts.Compression, Zstd, NoCompression)
	}
	m, manifest, err := readManifestFile(dir)
	if err != nil {
		return err
	}
	if m.DigestsPending {
		// Its importer would have nothing to check the files against.
		return errUnsealed("exported")
	}
	onDisk, err := scan(dir)
	if err != nil {
		return err
	}
	if err := sameFiles(m, onDisk); err != nil {
		return err
	}

	// Layers stack from w inwards: encryption, compression, tar.
	out := w
	var ew io.WriteCloser
	if opts.EncryptKeyFile != "" {
		if ew, err = encrypt(out, opts.EncryptKeyFile); err != nil {
			return err
		}
		out = ew
	}
	var zw *zstd.Encoder
	if compress == Zstd {
		// No zstd checksum: the manifest's sha256 of every file already
		// covers the content, and the reader would verify both. One
		// goroutine: the concurrent encoder spent 60% more CPU on memory
		// pages here, which an export competes for with the transfer.
		zw, err = zstd.NewWriter(out, zstd.WithEncoderLevel(zstdLevel), zstd.WithEncoderCRC(false), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return fmt.Errorf("start zstd: %w", err)
		}
		out = zw
	}
	tw := tar.NewWriter(out)

	if err := writeArchive(ctx, tw, dir, m, manifest, newProgress(m.Size(), opts.Progress)); err != nil {
		if zw != nil {
			zw.Close() // releases its goroutines; the output is discarded anyway
		}
		// No trailer is written, so a failed export never ends like a
		// complete archive.
		return err
	}
	// Innermost first, so that each layer's trailer reaches the next.
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish archive: %w", err)
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return fmt.Errorf("finish zstd stream: %w", err)
		}
	}
	if ew != nil {
		if err := ew.Close(); err != nil {
			return fmt.Errorf("finish encryption: %w", err)
		}
	}
	return nil
}

// writeArchive writes the manifest and then every listed file.
func writeArchive(ctx context.Context, tw *tar.Writer, dir string, m *Manifest, manifest []byte, p *progress) error {
	mtime := m.Created.Truncate(time.Second)
	if err := tw.WriteHeader(header(ManifestName, int64(len(manifest)), mtime)); err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	if _, err := tw.Write(manifest); err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	for _, f := range m.Files {
		if err := exportFile(ctx, tw, dir, f, mtime, p); err != nil {
			return err
		}
	}
	return nil
}

// header is the tar header of a checkpoint file: a root-owned, private
// regular file, so that the same checkpoint always makes the same tar.
func header(name string, size int64, mtime time.Time) *tar.Header {
	return &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Size:     size,
		Mode:     fileMode,
		ModTime:  mtime,
	}
}

// exportFile copies one listed file into the tar.
func exportFile(ctx context.Context, tw *tar.Writer, dir string, f File, mtime time.Time, p *progress) error {
	src, err := openFile(dir, f.Path)
	if err != nil {
		return dirError(f.Path, err, "open: %v", err)
	}
	defer src.Close()
	if err := tw.WriteHeader(header(f.Path, f.Size, mtime)); err != nil {
		return fmt.Errorf("write archive: %w", err)
	}
	// Reading the next chunk overlaps compressing and sending this one.
	n, err := newReadAhead(ctxReader{ctx, src}).WriteTo(progressWriter{tw, p})
	switch {
	case errors.Is(err, tar.ErrWriteTooLong), err == nil && n != f.Size:
		return dirError(f.Path, ErrCorrupt, "size changed while it was exported (manifest says %d bytes); %s", f.Size, adviceDir)
	case err != nil:
		return fmt.Errorf("export %s: %w", f.Path, err)
	}
	return nil
}

// ctxReader ends a long copy when its context does.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// progressWriter reports what is written through it to an optional
// progress.
type progressWriter struct {
	w        io.Writer
	progress *progress
}

func (pw progressWriter) Write(p []byte) (int, error) {
	n, err := pw.w.Write(p)
	pw.progress.add(n)
	return n, err
}

// progress counts bytes towards a known total for a callback; a nil
// *progress counts nothing.
type progress struct {
	done, total int64
	report      func(done, total int64)
}

func newProgress(total int64, report func(done, total int64)) *progress {
	if report == nil {
		return nil
	}
	return &progress{total: total, report: report}
}

func (p *progress) add(n int) {
	if p == nil || n == 0 {
		return
	}
	p.done += int64(n)
	p.report(p.done, p.total)
}
