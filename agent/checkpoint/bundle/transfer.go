package bundle

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
)

// A migration's transfer carries a checkpoint from one agent to another
// in a framing of its own, not as an exported archive, so that the
// source need not digest every file before it sends (WritePendingManifest
// leaves them to Send): the digests follow the files, as a trailer.
//
//	magic      "GODWIT-TRANSFER/1\n"
//	manifest   uint32 length (big-endian), then manifest.json as the
//	           source holds it (its digests may be pending), then the
//	           sha256 of those bytes (32 bytes)
//	files      every listed file's bytes, exactly its listed size, in the
//	           manifest's order, back to back
//	trailer    "DIGESTS\n", then the sha256 of each listed file (32 bytes
//	           each), in the manifest's order
//
// and the stream ends there. The receiver digests every file as it
// writes it and accepts the checkpoint only if each digest matches the
// trailer's (and the manifest's, when it lists them). There is no
// compression (memory pages hardly compress, and the link between agents
// is faster than zstd on them) and no encryption: the data connection's
// TLS does that. docs/migration-transfer.md describes it for operators.
const (
	transferMagic = "GODWIT-TRANSFER/1\n"
	trailerMagic  = "DIGESTS\n"
	// adviceTransfer ends the refusals of a transfer.
	adviceTransfer = "the transfer was damaged or cut short; the migration aborts, and may be tried again"
)

// SendOptions tune Send.
type SendOptions struct {
	// Progress, when set, is called as file data is sent, with the bytes
	// sent so far and the total (Manifest.Size), from Send's goroutine.
	Progress func(done, total int64)
}

// Send writes the checkpoint directory dir to w in the migration transfer
// framing (see above), for Receive on another node. The files present and
// their sizes are checked against the manifest, as Export does (a
// *FileError for a damaged checkpoint, or a file that changes size while
// it is sent). A checkpoint whose digests are pending has them computed
// as its files are sent, overlapping the sending; a sealed one sends
// those its manifest lists, which the receiver checks. On error, what was
// written to w is incomplete and must be discarded.
func Send(ctx context.Context, dir string, w io.Writer, opts SendOptions) error {
	m, manifest, err := readManifestFile(dir)
	if err != nil {
		return err
	}
	onDisk, err := scan(dir)
	if err != nil {
		return err
	}
	if err := sameFiles(m, onDisk); err != nil {
		return err
	}
	head := make([]byte, 0, len(transferMagic)+4+len(manifest)+sha256.Size)
	head = append(head, transferMagic...)
	head = binary.BigEndian.AppendUint32(head, uint32(len(manifest)))
	head = append(head, manifest...)
	sum := sha256.Sum256(manifest)
	head = append(head, sum[:]...)
	if _, err := w.Write(head); err != nil {
		return fmt.Errorf("send checkpoint: %w", err)
	}
	p := newProgress(m.Size(), opts.Progress)
	trailer := make([]byte, 0, len(trailerMagic)+len(m.Files)*sha256.Size)
	trailer = append(trailer, trailerMagic...)
	for _, f := range m.Files {
		d, err := sendFile(ctx, dir, f, m.DigestsPending, progressWriter{w, p})
		if err != nil {
			return err
		}
		trailer = append(trailer, digestBytes(d)...)
	}
	if _, err := w.Write(trailer); err != nil {
		return fmt.Errorf("send checkpoint: %w", err)
	}
	return nil
}

// sendFile writes one listed file to w and returns its digest: computed
// as it is sent when compute is set, else the manifest's.
func sendFile(ctx context.Context, dir string, f File, compute bool, w io.Writer) (digest.Digest, error) {
	src, err := openFile(dir, f.Path)
	if err != nil {
		return "", dirError(f.Path, err, "open: %v", err)
	}
	defer src.Close()
	// One byte more than listed, so that a file that grew is noticed.
	n, d, err := copyDigest(w, io.LimitReader(ctxReader{ctx, src}, f.Size+1), compute)
	switch {
	case err != nil:
		return "", fmt.Errorf("send %s: %w", f.Path, err)
	case n != f.Size:
		return "", dirError(f.Path, ErrCorrupt, "size changed while it was sent (manifest says %d bytes); %s", f.Size, adviceDir)
	case !compute:
		d = f.Digest
	}
	return d, nil
}

// digestBytes is a sha256 digest's 32 bytes. d is valid (computed here,
// or from a validated manifest), so its encoding always decodes.
func digestBytes(d digest.Digest) []byte {
	b, _ := hex.DecodeString(d.Encoded())
	return b
}

// Receive reads a checkpoint that Send wrote into the new directory dest,
// whose parent must exist, and returns its manifest, sealed (every digest
// filled in), and the Receipt of what it wrote. It refuses (a *FileError
// naming the file, matching ErrCorrupt, or ErrInvalidManifest for a bad
// manifest) a stream that does not open with the framing's magic, a
// manifest whose own digest does not match, a file whose digest differs
// from the trailer's or the manifest's, and a stream cut short or going
// on after the trailer. As Import does, it writes into a staging
// directory beside dest, renamed to dest only once everything matched: on
// any error dest does not exist. It is OpenTransfer and ReceiveInto.
func Receive(ctx context.Context, r io.Reader, dest string) (*Manifest, *Receipt, error) {
	if err := checkDest(dest); err != nil {
		return nil, nil, err
	}
	in, err := OpenTransfer(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	return in.ReceiveInto(ctx, dest)
}

// Incoming is a transfer whose head has been read and checked, for a
// receiver that chooses where its files go from what its manifest says
// (their total size, say).
type Incoming struct {
	r io.Reader
	m *Manifest
}

// OpenTransfer reads and checks the head of a transfer that Send wrote to
// r: the magic, and the manifest with its digest, refused as Receive
// refuses them. The files follow on r, for ReceiveInto.
func OpenTransfer(ctx context.Context, r io.Reader) (*Incoming, error) {
	m, err := receiveManifest(&errRecorder{r: ctxReader{ctx: ctx, r: r}})
	if err != nil {
		return nil, receiveError(ctx, err)
	}
	return &Incoming{r: r, m: m}, nil
}

// Manifest is the transfer's manifest as its sender holds it, validated:
// its digests may be pending. It must not be modified.
func (t *Incoming) Manifest() *Manifest { return t.m }

// ReceiveInto reads the transfer's files into the new directory dest, as
// Receive does, and returns the sealed manifest and the Receipt. It may
// be called once.
func (t *Incoming) ReceiveInto(ctx context.Context, dest string) (*Manifest, *Receipt, error) {
	if err := checkDest(dest); err != nil {
		return nil, nil, err
	}
	staging, err := newStaging(dest)
	if err != nil {
		return nil, nil, err
	}
	m := t.m
	// The manifest written is the sealed one, so its receipt is made
	// once the files are in.
	stamps := make(map[string]fileStamp, len(m.Files))
	err = receiveFiles(&errRecorder{r: ctxReader{ctx: ctx, r: t.r}}, staging, m, stamps)
	var manifest []byte
	if err == nil {
		m.DigestsPending = false
		if err = m.Validate(); err == nil {
			manifest, err = json.MarshalIndent(m, "", "  ")
			manifest = append(manifest, '\n')
		}
	}
	if err != nil {
		return nil, nil, errors.Join(receiveError(ctx, err), os.RemoveAll(staging))
	}
	if err := commitStaging(staging, dest, manifest); err != nil {
		return nil, nil, err
	}
	return m, &Receipt{manifest: digest.FromBytes(manifest), files: stamps}, nil
}

// receiveError prefers the context's error: a cancelled transfer is not a
// damaged one.
func receiveError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	return err
}

// receiveManifest reads and checks the framing's head: magic, manifest,
// manifest digest.
func receiveManifest(r io.Reader) (*Manifest, error) {
	head := make([]byte, len(transferMagic)+4)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, truncated("", "the stream's head", err)
	}
	if string(head[:len(transferMagic)]) != transferMagic {
		return nil, archiveError("", ErrCorrupt, "the stream does not start as a godwit migration transfer (%q): is the other side a godwit agent of this version?", printable(string(head[:len(transferMagic)])))
	}
	size := binary.BigEndian.Uint32(head[len(transferMagic):])
	if size > maxManifestSize {
		return nil, archiveError(ManifestName, ErrInvalidManifest, "%v; %s", errManifestTooLarge, adviceTransfer)
	}
	data := make([]byte, int(size)+sha256.Size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, truncated(ManifestName, "it", err)
	}
	data, sum := data[:size], data[size:]
	if got := sha256.Sum256(data); !bytes.Equal(got[:], sum) {
		return nil, archiveError(ManifestName, ErrCorrupt, "sha256 mismatch: the sender's is %x, what arrived is %x; %s", sum, got, adviceTransfer)
	}
	m, err := parseManifest(data)
	if err != nil {
		return nil, &FileError{Path: ManifestName, Archive: true, Reason: err.Error(), Err: err}
	}
	return m, nil
}

// receiveFiles writes every listed file into dir, digesting each, then
// reads the trailer and checks every digest against it and the stream's
// end. Each file's digest is filled into m, and its stamp into stamps.
func receiveFiles(r *errRecorder, dir string, m *Manifest, stamps map[string]fileStamp) error {
	got := make([]digest.Digest, len(m.Files))
	for i, f := range m.Files {
		lr := &io.LimitedReader{R: r, N: f.Size}
		d, stamp, err := writeFile(dir, f.Path, lr)
		switch {
		case r.failed() != nil:
			return truncated(f.Path, "its data", r.failed())
		case err != nil:
			return fmt.Errorf("receive %s: %w", f.Path, err)
		case lr.N > 0:
			return truncated(f.Path, "its data", io.ErrUnexpectedEOF)
		case !m.DigestsPending && d != f.Digest:
			return archiveError(f.Path, ErrCorrupt, "sha256 mismatch: manifest says %s, what arrived is %s; %s", f.Digest.Encoded(), d.Encoded(), adviceTransfer)
		}
		got[i] = d
		stamps[f.Path] = stamp
	}
	trailer := make([]byte, len(trailerMagic)+len(m.Files)*sha256.Size)
	if _, err := io.ReadFull(r, trailer); err != nil {
		return truncated("", "the digests after the last file", err)
	}
	if string(trailer[:len(trailerMagic)]) != trailerMagic {
		return archiveError("", ErrCorrupt, "the digests that must follow the last file are not there: the files sent differ from the manifest's sizes; %s", adviceTransfer)
	}
	sums := trailer[len(trailerMagic):]
	for i, f := range m.Files {
		want := sums[i*sha256.Size : (i+1)*sha256.Size]
		if !bytes.Equal(digestBytes(got[i]), want) {
			return archiveError(f.Path, ErrCorrupt, "sha256 mismatch: the sender read %x, what arrived is %s; %s", want, got[i].Encoded(), adviceTransfer)
		}
		m.Files[i].Digest = got[i]
	}
	var extra [1]byte
	if n, err := io.ReadFull(r, extra[:]); n > 0 {
		return archiveError("", ErrCorrupt, "unexpected data after the digests that end the transfer; %s", adviceTransfer)
	} else if err != io.EOF {
		return truncated("", "the end of the stream", err)
	}
	return nil
}

// truncated is the refusal of a stream that ended, or failed, while what
// was read.
func truncated(member, what string, err error) *FileError {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return archiveError(member, fmt.Errorf("%w: %w", ErrCorrupt, err), "%s cannot be read (%v): the stream is truncated; %s", what, err, adviceTransfer)
}
