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
	"hash"
	"hash/crc32"
	"io"
	"os"

	"github.com/opencontainers/go-digest"
)

// A migration's transfer carries a checkpoint from one agent to another
// in a framing of its own, not as an exported archive, so that the
// source need not digest every file before it sends (WritePendingManifest
// leaves them to Send): the checksums follow the files, as a trailer.
//
//	magic      "GODWIT-TRANSFER/1\n" (sha256) or "GODWIT-TRANSFER/2\n" (CRC-32C)
//	manifest   uint32 length (big-endian), then manifest.json as the
//	           source holds it (its digests may be pending), then the
//	           sha256 of those bytes (32 bytes)
//	files      every listed file's bytes, exactly its listed size, in the
//	           manifest's order, back to back
//	trailer    /1: "DIGESTS\n", then the sha256 of each listed file (32
//	           bytes each); /2: "CRC32C\n", then the CRC-32C (Castagnoli)
//	           of each listed file (4 bytes each, big-endian); in the
//	           manifest's order
//
// and the stream ends there. The receiver checksums every file as it
// writes it and accepts the checkpoint only if each matches the trailer
// (and, for /1, the manifest's digest, when it lists them). There is no
// compression (memory pages hardly compress, and the link between agents
// is faster than zstd on them) and no encryption: the data connection's
// TLS does that, and authenticates the bytes. The trailer travels in the
// same stream as the files, so it authenticates nothing: it catches what
// TLS cannot see, bytes changed between the sender's file and the
// receiver's. /2 does that for a checkpoint whose digests are pending at
// a small part of sha256's cost, paid on both sides inside the
// container's downtime; the receiver's copy then stays unsealed, and only
// the Receipt of its import vouches for it (Receipt.Verify): it is for a
// receiver that restores it moments later, a migration's destination.
// docs/migration-transfer.md describes it for operators.
const (
	transferMagic    = "GODWIT-TRANSFER/1\n"
	transferMagicCRC = "GODWIT-TRANSFER/2\n"
	trailerMagic     = "DIGESTS\n"
	trailerMagicCRC  = "CRC32C\n"
	// adviceTransfer ends the refusals of a transfer.
	adviceTransfer = "the transfer was damaged or cut short; the migration aborts, and may be tried again"
)

// Checksum names how a transfer's trailer checks its files.
type Checksum string

const (
	// ChecksumSHA256: every file's sha256 (GODWIT-TRANSFER/1); the
	// receiver's copy is sealed. Every godwit receives it.
	ChecksumSHA256 Checksum = "sha256"
	// ChecksumCRC32C: every file's CRC-32C (GODWIT-TRANSFER/2), for a
	// checkpoint whose digests are pending; the receiver's copy stays
	// unsealed.
	ChecksumCRC32C Checksum = "crc32c"
)

// ReceivedChecksums are the checksums Receive takes, for a sender to
// choose from.
func ReceivedChecksums() []Checksum { return []Checksum{ChecksumSHA256, ChecksumCRC32C} }

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// framing is what differs between the two framings.
type framing struct {
	magic, trailer string
	newHash        func() hash.Hash
	checksum       Checksum
}

var (
	framingSHA256 = framing{transferMagic, trailerMagic, sha256.New, ChecksumSHA256}
	framingCRC32C = framing{transferMagicCRC, trailerMagicCRC, func() hash.Hash { return crc32.New(castagnoli) }, ChecksumCRC32C}
)

// seals says whether the trailer holds the files' sha256 digests, which
// the received manifest then lists.
func (f framing) seals() bool { return f.checksum == ChecksumSHA256 }

// SendOptions tune Send.
type SendOptions struct {
	// Progress, when set, is called as file data is sent, with the bytes
	// sent so far and the total (Manifest.Size), from Send's goroutine.
	Progress func(done, total int64)
	// Checksum is the trailer's checksum when the checkpoint's digests
	// are pending, one the receiver takes (ReceivedChecksums); empty:
	// ChecksumSHA256. A sealed checkpoint always goes with its digests.
	Checksum Checksum
}

// Send writes the checkpoint directory dir to w in the migration transfer
// framing (see above), for Receive on another node. The files present and
// their sizes are checked against the manifest, as Export does (a
// *FileError for a damaged checkpoint, or a file that changes size while
// it is sent). A checkpoint whose digests are pending has its checksums
// (opts.Checksum) computed as its files are sent, overlapping the
// sending; a sealed one sends the digests its manifest lists, which the
// receiver checks. On error, what was written to w is incomplete and
// must be discarded.
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
	fr := framingSHA256
	switch opts.Checksum {
	case "", ChecksumSHA256:
	case ChecksumCRC32C:
		if m.DigestsPending {
			fr = framingCRC32C
		}
	default:
		return fmt.Errorf("send checkpoint: unknown transfer checksum %q", opts.Checksum)
	}
	head := make([]byte, 0, len(fr.magic)+4+len(manifest)+sha256.Size)
	head = append(head, fr.magic...)
	head = binary.BigEndian.AppendUint32(head, uint32(len(manifest)))
	head = append(head, manifest...)
	sum := sha256.Sum256(manifest)
	head = append(head, sum[:]...)
	if _, err := w.Write(head); err != nil {
		return fmt.Errorf("send checkpoint: %w", err)
	}
	p := newProgress(m.Size(), opts.Progress)
	trailer := []byte(fr.trailer)
	for _, f := range m.Files {
		var h hash.Hash
		if m.DigestsPending {
			h = fr.newHash()
		}
		if err := sendFile(ctx, dir, f, h, progressWriter{w, p}); err != nil {
			return err
		}
		if h != nil {
			trailer = h.Sum(trailer)
		} else {
			trailer = append(trailer, digestBytes(f.Digest)...)
		}
	}
	if _, err := w.Write(trailer); err != nil {
		return fmt.Errorf("send checkpoint: %w", err)
	}
	return nil
}

// sendFile writes one listed file to w, hashing it into h unless h is
// nil.
func sendFile(ctx context.Context, dir string, f File, h hash.Hash, w io.Writer) error {
	src, err := openFile(dir, f.Path)
	if err != nil {
		return dirError(f.Path, err, "open: %v", err)
	}
	defer src.Close()
	// One byte more than listed, so that a file that grew is noticed.
	n, err := copyHashed(w, io.LimitReader(ctxReader{ctx, src}, f.Size+1), h)
	switch {
	case err != nil:
		return fmt.Errorf("send %s: %w", f.Path, err)
	case n != f.Size:
		return dirError(f.Path, ErrCorrupt, "size changed while it was sent (manifest says %d bytes); %s", f.Size, adviceDir)
	}
	return nil
}

// digestBytes is a sha256 digest's 32 bytes. d is valid (computed here,
// or from a validated manifest), so its encoding always decodes.
func digestBytes(d digest.Digest) []byte {
	b, _ := hex.DecodeString(d.Encoded())
	return b
}

// Receive reads a checkpoint that Send wrote into the new directory dest,
// whose parent must exist, and returns its manifest and the Receipt of
// what it wrote. The manifest is sealed (every digest filled in), unless
// the transfer was checksummed with CRC-32C: then its digests stay
// pending, and only the Receipt vouches for the files. It refuses (a
// *FileError naming the file, matching ErrCorrupt, or ErrInvalidManifest
// for a bad manifest) a stream that does not open with either framing's
// magic, a manifest whose own digest does not match, a file whose
// checksum differs from the trailer's or whose digest differs from the
// manifest's, and a stream cut short or going on after the trailer. As
// Import does, it writes into a staging directory beside dest, renamed to
// dest only once everything matched: on any error dest does not exist. It
// is OpenTransfer and ReceiveInto.
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
	r  io.Reader
	m  *Manifest
	fr framing
}

// OpenTransfer reads and checks the head of a transfer that Send wrote to
// r: the magic, and the manifest with its digest, refused as Receive
// refuses them. The files follow on r, for ReceiveInto.
func OpenTransfer(ctx context.Context, r io.Reader) (*Incoming, error) {
	m, fr, err := receiveManifest(&errRecorder{r: ctxReader{ctx: ctx, r: r}})
	if err != nil {
		return nil, receiveError(ctx, err)
	}
	return &Incoming{r: r, m: m, fr: fr}, nil
}

// Manifest is the transfer's manifest as its sender holds it, validated:
// its digests may be pending. It must not be modified.
func (t *Incoming) Manifest() *Manifest { return t.m }

// ReceiveInto reads the transfer's files into the new directory dest, as
// Receive does, and returns the manifest written there and the Receipt.
// It may be called once.
func (t *Incoming) ReceiveInto(ctx context.Context, dest string) (*Manifest, *Receipt, error) {
	if err := checkDest(dest); err != nil {
		return nil, nil, err
	}
	staging, err := newStaging(dest)
	if err != nil {
		return nil, nil, err
	}
	m := t.m
	// The manifest written is the one with the digests received, so its
	// receipt is made once the files are in.
	stamps := make(map[string]fileStamp, len(m.Files))
	err = receiveFiles(&errRecorder{r: ctxReader{ctx: ctx, r: t.r}}, staging, m, t.fr, stamps)
	var manifest []byte
	if err == nil {
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
// manifest digest. It returns the manifest and the framing the magic
// names.
func receiveManifest(r io.Reader) (*Manifest, framing, error) {
	head := make([]byte, len(transferMagic)+4)
	if _, err := io.ReadFull(r, head); err != nil {
		return nil, framing{}, truncated("", "the stream's head", err)
	}
	var fr framing
	switch string(head[:len(transferMagic)]) {
	case transferMagic:
		fr = framingSHA256
	case transferMagicCRC:
		fr = framingCRC32C
	default:
		return nil, framing{}, archiveError("", ErrCorrupt, "the stream does not start as a godwit migration transfer (%q): is the other side a godwit agent of this version?", printable(string(head[:len(transferMagic)])))
	}
	size := binary.BigEndian.Uint32(head[len(transferMagic):])
	if size > maxManifestSize {
		return nil, framing{}, archiveError(ManifestName, ErrInvalidManifest, "%v; %s", errManifestTooLarge, adviceTransfer)
	}
	data := make([]byte, int(size)+sha256.Size)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, framing{}, truncated(ManifestName, "it", err)
	}
	data, sum := data[:size], data[size:]
	if got := sha256.Sum256(data); !bytes.Equal(got[:], sum) {
		return nil, framing{}, archiveError(ManifestName, ErrCorrupt, "sha256 mismatch: the sender's is %x, what arrived is %x; %s", sum, got, adviceTransfer)
	}
	m, err := parseManifest(data)
	if err != nil {
		return nil, framing{}, &FileError{Path: ManifestName, Archive: true, Reason: err.Error(), Err: err}
	}
	if !fr.seals() && !m.DigestsPending {
		return nil, framing{}, archiveError(ManifestName, ErrInvalidManifest, "lists digests, but the transfer checks its files with CRC-32C, which only a checkpoint whose digests are pending is sent with; %s", adviceTransfer)
	}
	return m, fr, nil
}

// receiveFiles writes every listed file into dir, checksumming each, then
// reads the trailer and checks every checksum against it and the
// stream's end. With sha256, each file's digest is filled into m. Each
// file's stamp goes into stamps.
func receiveFiles(r *errRecorder, dir string, m *Manifest, fr framing, stamps map[string]fileStamp) error {
	got := make([][]byte, len(m.Files))
	for i, f := range m.Files {
		lr := &io.LimitedReader{R: r, N: f.Size}
		h := fr.newHash()
		stamp, err := writeFile(dir, f.Path, lr, h)
		switch {
		case r.failed() != nil:
			return truncated(f.Path, "its data", r.failed())
		case err != nil:
			return fmt.Errorf("receive %s: %w", f.Path, err)
		case lr.N > 0:
			return truncated(f.Path, "its data", io.ErrUnexpectedEOF)
		}
		got[i] = h.Sum(nil)
		if !m.DigestsPending { // sealed: sha256, checked against the manifest too
			if d := digest.NewDigestFromBytes(digest.SHA256, got[i]); d != f.Digest {
				return archiveError(f.Path, ErrCorrupt, "sha256 mismatch: manifest says %s, what arrived is %s; %s", f.Digest.Encoded(), d.Encoded(), adviceTransfer)
			}
		}
		stamps[f.Path] = stamp
	}
	size := fr.newHash().Size()
	trailer := make([]byte, len(fr.trailer)+len(m.Files)*size)
	if _, err := io.ReadFull(r, trailer); err != nil {
		return truncated("", "the checksums after the last file", err)
	}
	if string(trailer[:len(fr.trailer)]) != fr.trailer {
		return archiveError("", ErrCorrupt, "the checksums that must follow the last file are not there: the files sent differ from the manifest's sizes; %s", adviceTransfer)
	}
	sums := trailer[len(fr.trailer):]
	for i, f := range m.Files {
		want := sums[i*size : (i+1)*size]
		if !bytes.Equal(got[i], want) {
			return archiveError(f.Path, ErrCorrupt, "%s mismatch: the sender read %x, what arrived is %x; %s", fr.checksum, want, got[i], adviceTransfer)
		}
		if fr.seals() {
			m.Files[i].Digest = digest.NewDigestFromBytes(digest.SHA256, got[i])
		}
	}
	if fr.seals() {
		m.DigestsPending = false
	}
	var extra [1]byte
	if n, err := io.ReadFull(r, extra[:]); n > 0 {
		return archiveError("", ErrCorrupt, "unexpected data after the checksums that end the transfer; %s", adviceTransfer)
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
