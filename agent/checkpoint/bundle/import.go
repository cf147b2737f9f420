package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// zstdMaxWindow caps the decoder's window, and so its memory, against an
// archive that claims a huge one; godwit's own archives use a few MiB.
const zstdMaxWindow = 64 << 20

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// ImportOptions tune Import and Inspect.
type ImportOptions struct {
	// DecryptKeyFile names the age identity file an encrypted archive was
	// exported with. An encrypted archive needs it; a plaintext archive is
	// refused when it is set, since only encryption authenticates an
	// archive and a swapped-in plaintext one must not pass unnoticed.
	DecryptKeyFile string
}

// source is an opened archive: the tar reader over the decrypted and
// decompressed stream, and what is needed to name failures and drain it.
type source struct {
	tr *tar.Reader
	// plain is the stream the tar is read from; drained after the tar's end
	// so that every layer below checks its own trailer.
	plain io.Reader
	// decrypt records a failure of the age layer (nil when not encrypted),
	// which the layers above may report only as a short read.
	decrypt *errRecorder
	close   func()
}

// errRecorder remembers the first error other than EOF its reader returned.
// The zstd decoder may read from another goroutine, hence the lock.
type errRecorder struct {
	r   io.Reader
	mu  sync.Mutex
	err error
}

func (e *errRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.mu.Lock()
		if e.err == nil {
			e.err = err
		}
		e.mu.Unlock()
	}
	return n, err
}

func (e *errRecorder) failed() error {
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

// openArchive detects encryption (age's header) and compression (zstd's magic)
// and stacks the matching readers under a tar reader.
func openArchive(r io.Reader, opts ImportOptions) (*source, error) {
	br := bufio.NewReaderSize(r, copyBufferSize)
	head, err := br.Peek(len(ageIntro))
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read checkpoint archive: %w", err)
	}
	s := &source{close: func() {}}
	var plain io.Reader = br
	encrypted := string(head) == ageIntro
	if err := checkEncryption(encrypted, opts.DecryptKeyFile); err != nil {
		return nil, err
	}
	if encrypted {
		dr, err := decrypt(br, opts.DecryptKeyFile)
		if err != nil {
			return nil, err
		}
		s.decrypt = &errRecorder{r: dr}
		plain = bufio.NewReaderSize(s.decrypt, copyBufferSize)
	}

	pb, ok := plain.(*bufio.Reader)
	if !ok {
		pb = bufio.NewReaderSize(plain, copyBufferSize)
	}
	magic, _ := pb.Peek(len(zstdMagic))
	s.plain = pb
	if bytes.Equal(magic, zstdMagic) {
		// One goroutine: memory pages hardly compress, so most blocks are
		// stored raw and decoding them is a copy, which the decoder's
		// concurrent mode only slows down (three times, measured).
		zr, err := zstd.NewReader(pb, zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("start zstd: %w", err)
		}
		s.plain, s.close = zr, zr.Close
	}
	s.tr = tar.NewReader(s.plain)
	return s, nil
}

// broken builds the error for a stream that failed while member was read:
// a decryption failure when the age layer failed, else corruption.
func (s *source) broken(member, what string, err error) *FileError {
	if derr := s.decrypt.failed(); derr != nil {
		return archiveError(member, fmt.Errorf("%w: %w", ErrDecrypt, derr),
			"decryption failed while reading %s (%v): the archive was tampered with or is truncated; export it again", what, derr)
	}
	return archiveError(member, fmt.Errorf("%w: %w", ErrCorrupt, err),
		"%s cannot be read (%v); the archive is truncated or corrupt; copy or export it again", what, err)
}

// readManifest reads the first member, which must be the manifest, and
// returns it parsed and as it was in the archive.
func (s *source) readManifest() (*Manifest, []byte, error) {
	hdr, err := s.tr.Next()
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		if s.decrypt.failed() != nil {
			return nil, nil, s.broken("", "the first member", err)
		}
		return nil, nil, archiveError("", fmt.Errorf("%w: %w", ErrCorrupt, err),
			"the first member cannot be read (%v): this is not a godwit checkpoint archive, or it is truncated or corrupt; copy or export it again", err)
	}
	if hdr.Name != ManifestName || !isRegular(hdr) {
		return nil, nil, archiveError(hdr.Name, ErrCorrupt,
			"is the first member, but a checkpoint archive starts with a regular file %s: this is not a godwit checkpoint archive, or it was tampered with", ManifestName)
	}
	if hdr.Size > maxManifestSize {
		return nil, nil, archiveError(ManifestName, ErrInvalidManifest, "%v; %s", errManifestTooLarge, adviceArchive)
	}
	data, err := io.ReadAll(s.tr)
	if err != nil {
		return nil, nil, s.broken(ManifestName, "its data", err)
	}
	m, err := parseManifest(data)
	if err != nil {
		return nil, nil, &FileError{Path: ManifestName, Archive: true, Reason: err.Error(), Err: err}
	}
	if m.DigestsPending {
		// Export never writes one: nothing could be checked against it.
		return nil, nil, archiveError(ManifestName, ErrInvalidManifest, "lists no digests (digests_pending), so nothing in the archive can be checked; %s", adviceArchive)
	}
	return m, data, nil
}

// isRegular: Go's tar reader already reports legacy TypeRegA files as
// TypeReg.
func isRegular(hdr *tar.Header) bool { return hdr.Typeflag == tar.TypeReg }

// Inspect reads only the manifest of an archive, without extracting or
// verifying the files it lists. The manifest of an encrypted archive is
// authenticated; that of a plaintext one is only as trustworthy as the
// file's origin.
func Inspect(ctx context.Context, r io.Reader, opts ImportOptions) (*Manifest, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := openArchive(r, opts)
	if err != nil {
		return nil, err
	}
	defer s.close()
	m, _, err := s.readManifest()
	return m, err
}

// Import extracts an archive that Export wrote into the new directory dest,
// whose parent must exist. It reads the manifest first and refuses (an
// *FileError naming the member) any member that is not a regular file
// listed in it, that escapes, repeats, or differs from it in size or
// sha256, a listed file missing from the archive, and a truncated, corrupt
// or undecryptable stream. Files are written into a staging directory
// beside dest, renamed to dest only once every digest matched: on any
// error dest does not exist. Import does not fsync; restore re-verifies
// the directory with Verify.
func Import(ctx context.Context, r io.Reader, dest string, opts ImportOptions) (*Manifest, error) {
	m, _, err := importArchive(ctx, r, dest, opts, false)
	return m, err
}

// ImportWithReceipt is Import, and also returns the Receipt of what it
// wrote, so that a restore that follows soon can check the directory
// without digesting every file again (Receipt.Verify).
func ImportWithReceipt(ctx context.Context, r io.Reader, dest string, opts ImportOptions) (*Manifest, *Receipt, error) {
	return importArchive(ctx, r, dest, opts, true)
}

func importArchive(ctx context.Context, r io.Reader, dest string, opts ImportOptions, withReceipt bool) (*Manifest, *Receipt, error) {
	if err := checkDest(dest); err != nil {
		return nil, nil, err
	}
	s, err := openArchive(r, opts)
	if err != nil {
		return nil, nil, err
	}
	defer s.close()
	m, manifest, err := s.readManifest()
	if err != nil {
		return nil, nil, err
	}
	staging, err := newStaging(dest)
	if err != nil {
		return nil, nil, err
	}
	var receipt *Receipt
	if withReceipt {
		receipt = newReceipt(manifest, len(m.Files))
	}
	if err := extract(ctx, s, m, staging, receipt); err != nil {
		return nil, nil, errors.Join(err, os.RemoveAll(staging))
	}
	if err := commitStaging(staging, dest, manifest); err != nil {
		return nil, nil, err
	}
	return m, receipt, nil
}

// checkDest refuses an import destination that exists.
func checkDest(dest string) error {
	if _, err := os.Lstat(dest); err == nil {
		return fmt.Errorf("import destination %s: %w: remove it or choose another", dest, ErrExists)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("import destination: %w", err)
	}
	return nil
}

// newStaging creates the private directory beside dest that an import
// fills before commitStaging renames it to dest.
func newStaging(dest string) (string, error) {
	staging, err := os.MkdirTemp(filepath.Dir(dest), "."+filepath.Base(dest)+".importing-")
	if err != nil {
		return "", fmt.Errorf("create import staging directory: %w", err)
	}
	if err := os.Chmod(staging, dirMode); err != nil {
		return "", errors.Join(err, os.RemoveAll(staging))
	}
	return staging, nil
}

// commitStaging writes the manifest into the staging directory, whose
// files are complete and checked, and renames it to dest, which must not
// exist. On error the staging directory is removed.
func commitStaging(staging, dest string, manifest []byte) error {
	err := os.WriteFile(filepath.Join(staging, ManifestName), manifest, fileMode)
	if err == nil {
		err = unix.Renameat2(unix.AT_FDCWD, staging, unix.AT_FDCWD, dest, unix.RENAME_NOREPLACE)
		if errors.Is(err, unix.EEXIST) {
			err = fmt.Errorf("import destination %s: %w: it appeared during the import; remove it or choose another", dest, ErrExists)
		} else if err != nil {
			err = fmt.Errorf("move import into place: %w", err)
		}
	}
	if err != nil {
		return errors.Join(err, os.RemoveAll(staging))
	}
	return nil
}

// extract writes every listed member into dir and checks it, then checks
// that nothing was missing and that the stream ends cleanly. It records
// the files it wrote in receipt, unless that is nil.
func extract(ctx context.Context, s *source, m *Manifest, dir string, receipt *Receipt) error {
	listed := m.index()
	done := make(map[string]bool, len(m.Files))
	last := ManifestName
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := s.tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return s.broken(last, "the header after this member", err)
		}
		last = hdr.Name
		if hdr.Typeflag == tar.TypeDir && strings.TrimSuffix(hdr.Name, "/") == CRIUDir {
			continue // directories are created as files need them
		}
		f, err := checkMember(hdr, listed, done)
		if err != nil {
			return err
		}
		stamp, err := extractFile(ctx, s, dir, f)
		if err != nil {
			return err
		}
		if receipt != nil {
			receipt.files[f.Path] = stamp
		}
		done[f.Path] = true
	}
	for _, f := range m.Files {
		if !done[f.Path] {
			return archiveError(f.Path, ErrCorrupt, "is listed in the manifest but missing from the archive; %s", adviceArchive)
		}
	}
	return s.drain(last)
}

// checkMember applies the archive policy to one header and returns the
// manifest entry it must match.
func checkMember(hdr *tar.Header, listed map[string]*File, done map[string]bool) (*File, error) {
	name := hdr.Name
	if !isRegular(hdr) {
		return nil, archiveError(name, ErrUnsafe, "is a %s, but a checkpoint archive holds only regular files; %s", tarTypeName(hdr.Typeflag), adviceArchive)
	}
	if name == ManifestName {
		return nil, archiveError(name, ErrCorrupt, "appears twice; %s", adviceArchive)
	}
	if why := checkPath(name); why != "" {
		return nil, archiveError(name, ErrUnsafe, "%s; %s", why, adviceArchive)
	}
	f := listed[name]
	switch {
	case f == nil:
		return nil, archiveError(name, ErrCorrupt, "is not listed in the manifest; %s", adviceArchive)
	case done[name]:
		return nil, archiveError(name, ErrCorrupt, "appears twice; %s", adviceArchive)
	case hdr.Size != f.Size:
		return nil, archiveError(name, ErrCorrupt, "size mismatch: manifest says %d bytes, member has %d; %s", f.Size, hdr.Size, adviceArchive)
	}
	return f, nil
}

func tarTypeName(t byte) string {
	switch t {
	case tar.TypeSymlink:
		return "symlink"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeChar, tar.TypeBlock:
		return "device node"
	case tar.TypeDir:
		return "directory"
	case tar.TypeFifo:
		return "named pipe"
	case tar.TypeGNUSparse:
		return "sparse file"
	}
	return fmt.Sprintf("member of type %q", t)
}

// extractFile copies one member into dir, digesting it on the way
// (writeFile), and returns the identity of the file it wrote.
func extractFile(ctx context.Context, s *source, dir string, f *File) (fileStamp, error) {
	in := &errRecorder{r: ctxReader{ctx: ctx, r: s.tr}}
	h := sha256.New()
	stamp, err := writeFile(dir, f.Path, in, h)
	switch {
	case in.failed() != nil:
		if cerr := ctx.Err(); cerr != nil {
			return fileStamp{}, cerr
		}
		return fileStamp{}, s.broken(f.Path, "its data", in.failed())
	case err != nil:
		return fileStamp{}, fmt.Errorf("import %s: %w", f.Path, err)
	}
	if d := sha256Digest(h); d != f.Digest {
		return fileStamp{}, archiveError(f.Path, ErrCorrupt, "sha256 mismatch: manifest says %s, content is %s; %s", f.Digest.Encoded(), d.Encoded(), adviceArchive)
	}
	return stamp, nil
}

// writeFile creates the checkpoint file p in dir (and CRIUDir, when p is
// in it), which must not exist, and copies r into it, hashing it into h
// on the way: r is read ahead in one goroutine while the file is written
// in this one and hashed in a third. A file that fits in one chunk is
// copied and hashed in this goroutine alone, since starting the others
// would cost more than they save. It returns the identity of the file as
// written (for a Receipt).
func writeFile(dir, p string, r io.Reader, h hash.Hash) (fileStamp, error) {
	path := filepath.Join(dir, filepath.FromSlash(p))
	if parent := filepath.Dir(path); parent != dir {
		if err := os.Mkdir(parent, dirMode); err != nil && !errors.Is(err, os.ErrExist) {
			return fileStamp{}, err
		}
	}
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, fileMode)
	if err != nil {
		return fileStamp{}, err
	}
	_, err = copyHashed(out, r, h)
	var stamp fileStamp
	if err == nil {
		// Taken once the file is complete: any later change to it
		// changes the stamp (see Receipt).
		stamp, err = statFile(out)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return stamp, err
}

// copyHashed copies r to w and returns how many bytes it copied, hashing
// them into h unless h is nil. A short r (at most one chunk) is copied
// and hashed inline; a longer one is read ahead and hashed on goroutines
// of their own, overlapping w.
func copyHashed(w io.Writer, r io.Reader, h hash.Hash) (int64, error) {
	buf := getChunk()
	n, err := io.ReadFull(r, buf)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		defer putChunk(buf)
		if h != nil {
			h.Write(buf[:n])
		}
		n, err := w.Write(buf[:n])
		return int64(n), err
	case err != nil:
		putChunk(buf)
		return 0, err
	}
	if h == nil {
		_, err = w.Write(buf)
		putChunk(buf)
		var rest int64
		if err == nil {
			rest, err = newReadAhead(r).WriteTo(w)
		}
		return int64(n) + rest, err
	}
	hw := newHashingWriter(w, h)
	defer hw.stop()
	_, err = hw.Write(buf)
	putChunk(buf)
	var rest int64
	if err == nil {
		rest, err = newReadAhead(r).WriteTo(hw)
	}
	return int64(n) + rest, err
}

// maxPadding bounds the zeroes accepted after the tar's end marker: tar
// tools pad to a record (10 KiB for GNU tar), and more is not padding.
const maxPadding = 1 << 20

// drain reads what follows the tar's end marker to the end of the stream,
// so that zstd and age check their trailers (age authenticates the end of
// the file there). Only zero padding may follow the marker.
func (s *source) drain(last string) error {
	buf := make([]byte, copyBufferSize)
	var total int
	for {
		n, err := s.plain.Read(buf)
		total += n
		if total > maxPadding || slices.ContainsFunc(buf[:n], func(b byte) bool { return b != 0 }) {
			return archiveError("", ErrCorrupt, "unexpected data after the end of the archive; %s", adviceArchive)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return s.broken(last, "the end of the archive after this member", err)
		}
	}
}
