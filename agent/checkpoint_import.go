package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// A checkpoint imported from another node (ImportCheckpoint) is kept like
// one taken here: under its original ID in the checkpoints dir, listed,
// inspected, exported and restored like any other. It is how a drain's
// deadline keeps a container's checkpoint off the node going into
// maintenance (PushCheckpoint, checkpoint_push.go, sends it here).

// ErrNoSpace: the node's data dir has too little space for what was asked
// (an imported checkpoint), or ran out of it on the way.
var ErrNoSpace = errors.New("no space left on the node")

const (
	// importStagingPrefix names the directory an import works in, beside
	// the checkpoints; a restarted agent removes what one left behind
	// (clearStaging: it starts with stagingPrefix).
	importStagingPrefix = stagingPrefix + "keep-"
	// importedName is the checkpoint's directory inside the import's
	// staging directory, until it is renamed into place.
	importedName = "checkpoint"
	// failedPrefix names the CRIU images a failed checkpoint left
	// (rollBack), which ListCheckpoints hides: no checkpoint is imported
	// under such an ID.
	failedPrefix = "failed-"
)

// ImportResult is what ImportCheckpoint kept.
type ImportResult struct {
	// Checkpoint is the checkpoint's manifest as this node now has it.
	Checkpoint *bundle.Manifest
	// ManifestDigest identifies the checkpoint's content on any node
	// (ManifestDigest).
	ManifestDigest digest.Digest
	// AlreadyPresent: the node had this checkpoint (same ID, same digest)
	// before the call, which changed nothing and may have stopped reading
	// the archive after its manifest.
	AlreadyPresent bool
	// Bytes is how many bytes of the archive were read.
	Bytes int64
	// Warnings are the differences between the dumping host and this one
	// that do not prevent a restore here.
	Warnings []string
}

// ManifestDigest identifies a checkpoint's content: the sha256 of its
// manifest, which lists every file's sha256, in Go's canonical JSON
// encoding, without the restore statistics that each node records in its
// own copy (bundle.RecordRestore). The same checkpoint has the same digest
// on every node that holds it, whatever was restored where.
func ManifestDigest(m *bundle.Manifest) (digest.Digest, error) {
	c := *m
	c.Stats.RestoreTimeUs, c.Stats.PagesRestored = 0, 0
	data, err := json.Marshal(&c)
	if err != nil {
		return "", fmt.Errorf("checkpoint %s: encode manifest: %w", m.ID, err)
	}
	return digest.FromBytes(data), nil
}

// ImportCheckpoint reads a checkpoint archive from r (as ExportCheckpoint
// writes it, zstd-compressed or not; not encrypted) and keeps it as one of
// the node's checkpoints under its original ID, restorable with Restore
// even when the container never ran here.
//
// Every member is checked against the manifest (bundle.Import) in a
// staging directory, synced to disk, and only then renamed into place: a
// malformed, tampered or truncated archive, a cancelled call and a full
// disk leave nothing behind. The checkpoint is refused before the rest of
// the archive is read, as soon as its manifest is, when this node could
// not restore it: its image (with the same layers) is missing, the host
// is incompatible (bundle.CheckCompatibility), it is a live migration's
// partial checkpoint, or the data dir has less free space than its size.
//
// The same checkpoint imported again (same ID, same ManifestDigest)
// returns the checkpoint already here with AlreadyPresent; a different
// one under an ID in use here is refused with ErrExists. Importing runs
// nothing, so it is not fenced.
func (a *Agent) ImportCheckpoint(ctx context.Context, r io.Reader) (_ *ImportResult, err error) {
	work := filepath.Join(a.cfg.checkpointsDir(), importStagingPrefix+newID()[:checkpointIDLen])
	if err := os.Mkdir(work, 0o700); err != nil {
		return nil, a.importIOError(err)
	}
	defer func() {
		// Empty after a success; a restarted agent removes what is left
		// (clearStaging), but a failure must say that something was.
		if rerr := os.RemoveAll(work); rerr != nil {
			a.log.Warn("remove an import's staging directory", "path", work, "err", rerr)
			if err != nil {
				err = fmt.Errorf("%w (and removing what it wrote failed: %v; it is in %s)", err, rerr, work)
			}
		}
	}()
	start := time.Now()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)

	src := &countingReader{r: newCancelableReader(ctx, r)}
	// The space is measured before anything is written: the peek judges
	// while the import goes on writing.
	free := freeSpace(a.cfg.checkpointsDir())
	peek := startManifestPeek(ctx, stop, func(m *bundle.Manifest) error {
		_, err := a.admitImport(m, free)
		return err
	})
	staged := filepath.Join(work, importedName)
	m, err := bundle.Import(ctx, io.TeeReader(src, peek), staged, bundle.ImportOptions{})
	// The peek's verdict, given on the manifest alone, comes first: an
	// import it stopped failed only because it was stopped.
	if verdict := peek.wait(); verdict != nil {
		return a.importVerdict(verdict, src.n)
	}
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return nil, a.importIOError(err)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("import checkpoint stopped (%w); nothing was kept", context.Cause(ctx))
		}
		return nil, errorf(ErrInvalid, "checkpoint archive refused, nothing was kept: %w", err)
	}

	warnings, err := a.admitImport(m, unknownSpace)
	if err != nil {
		return a.importVerdict(err, src.n)
	}
	d, err := ManifestDigest(m)
	if err != nil {
		return nil, err
	}
	if m.Stats.RestoreTimeUs != 0 || m.Stats.PagesRestored != 0 {
		// Those are another node's; this one has not restored it yet.
		if m, err = bundle.RecordRestore(staged, 0, 0); err != nil {
			return nil, a.importIOError(err)
		}
	}
	if err := syncTree(staged); err != nil {
		return nil, a.importIOError(err)
	}
	dest := a.checkpointDir(m.ID)
	if err := unix.Renameat2(unix.AT_FDCWD, staged, unix.AT_FDCWD, dest, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY) {
			// Another import, or a checkpoint, took the ID meanwhile.
			if _, err := a.admitImport(m, unknownSpace); err != nil {
				return a.importVerdict(err, src.n)
			}
		}
		return nil, a.importIOError(fmt.Errorf("move checkpoint %s into place: %w", m.ID, err))
	}
	if err := syncDir(a.cfg.checkpointsDir()); err != nil {
		a.log.Warn("sync the checkpoints directory", "checkpoint", m.ID, "err", err)
	}
	a.log.Info("checkpoint imported", "checkpoint", m.ID, "container", m.Container.Name, "dumped_on", m.Host.Node,
		"bytes", m.Size(), "archive_bytes", src.n, "digest", d, "duration", time.Since(start).Round(time.Millisecond))
	return &ImportResult{Checkpoint: m, ManifestDigest: d, Bytes: src.n, Warnings: warnings}, nil
}

// unknownSpace is freeSpace's answer when it cannot tell, and what
// admitImport is given once the files are written: no space check.
const unknownSpace = -1

// freeSpace is the space left to unprivileged writers in dir's
// filesystem, or unknownSpace.
func freeSpace(dir string) int64 {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return unknownSpace
	}
	return int64(st.Bavail) * st.Bsize
}

// admitImport decides whether the checkpoint whose (not yet verified)
// manifest is m may be kept here, and returns the restore's warnings if
// so. It returns an *alreadyPresent when the node holds the same
// checkpoint, and refuses a checkpoint larger than free, the space the
// checkpoints dir had before the import began (unknownSpace: not
// checked).
func (a *Agent) admitImport(m *bundle.Manifest, free int64) ([]string, error) {
	refuse := func(kind error, format string, args ...any) error {
		return errorf(kind, "checkpoint %s refused by node %s, nothing was kept: %s", m.ID, a.cfg.Name, fmt.Sprintf(format, args...))
	}
	switch {
	case strings.HasPrefix(m.ID, failedPrefix):
		return nil, refuse(ErrInvalid, "IDs starting with %q name the images of failed checkpoints here", failedPrefix)
	case m.RootfsChanges != "":
		return nil, refuse(ErrInvalid, "it is a live migration's checkpoint, which holds only the root filesystem's changes since the move synced it, "+
			"so only that migration's destination can restore it")
	}
	d, err := ManifestDigest(m)
	if err != nil {
		return nil, err
	}
	have, err := bundle.ReadManifest(a.checkpointDir(m.ID))
	switch {
	case err == nil:
		hd, err := ManifestDigest(have)
		if err != nil {
			return nil, err
		}
		if hd == d {
			return nil, &alreadyPresent{m: have, digest: hd}
		}
		return nil, refuse(ErrExists, "this node has another checkpoint with that ID (manifest digest %s, the archive's is %s, of container %s dumped on %s): "+
			"remove it with `godwit checkpoint rm %s` if it is stale, then import again", hd, d, have.Container.Name, have.Host.Node, m.ID)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, refuse(ErrExists, "%s is in use and is not a readable checkpoint (%v): remove it on the node, then import again", a.checkpointDir(m.ID), err)
	}
	if _, err := a.checkpointImage(m); err != nil {
		// The node must change before it can take the checkpoint: not
		// ErrNotFound, which would say that the checkpoint is missing.
		return nil, refuse(ErrInvalidState, "%v; then send the checkpoint again", err)
	}
	warnings, err := bundle.CheckCompatibility(m, a.host(), a.images.HasLayer)
	if err != nil {
		return nil, refuse(err, "it could not be restored here: %v", err)
	}
	if free != unknownSpace && free < m.Size() {
		return nil, refuse(ErrNoSpace, "it needs %d bytes and %s has %d free: free space there, or send it to another node",
			m.Size(), a.cfg.checkpointsDir(), free)
	}
	return warnings, nil
}

// alreadyPresent is admitImport's answer for a checkpoint that the node
// holds already: not a failure.
type alreadyPresent struct {
	m      *bundle.Manifest
	digest digest.Digest
}

func (p *alreadyPresent) Error() string {
	return fmt.Sprintf("checkpoint %s is on the node already", p.m.ID)
}

// importVerdict turns admitImport's refusal into ImportCheckpoint's
// answer: the checkpoint already here, or the error.
func (a *Agent) importVerdict(verdict error, read int64) (*ImportResult, error) {
	var p *alreadyPresent
	if !errors.As(verdict, &p) {
		return nil, verdict
	}
	a.log.Info("checkpoint imported again: it is here already", "checkpoint", p.m.ID, "digest", p.digest)
	return &ImportResult{Checkpoint: p.m, ManifestDigest: p.digest, AlreadyPresent: true, Bytes: read}, nil
}

// importIOError explains an import that the node's disk failed.
func (a *Agent) importIOError(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return errorf(ErrNoSpace, "node %s ran out of disk space in %s while importing a checkpoint (%w); nothing was kept: free space there, or send it to another node",
			a.cfg.Name, a.cfg.checkpointsDir(), err)
	}
	return fmt.Errorf("import checkpoint on node %s: %w; nothing was kept", a.cfg.Name, err)
}

// manifestPeek reads an archive's manifest off a copy of its first bytes
// while bundle.Import reads the archive itself, so that a checkpoint the
// node refuses, or holds already, is answered before the rest of it
// travels. Everything written after the manifest was read is dropped.
type manifestPeek struct {
	pw      *io.PipeWriter
	done    chan struct{}
	verdict error // judge's, once done is closed
}

// errPeekDone ends the peek's pipe once the manifest is read.
var errPeekDone = errors.New("manifest read")

// startManifestPeek starts reading the manifest from what is written to
// the returned peek, and calls judge with it; a non-nil verdict stops the
// import, with the verdict as cause. An archive whose manifest cannot be
// read is not judged: the import finds the same fault, and says it.
func startManifestPeek(ctx context.Context, stop context.CancelCauseFunc, judge func(*bundle.Manifest) error) *manifestPeek {
	pr, pw := io.Pipe()
	p := &manifestPeek{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		m, err := bundle.Inspect(ctx, pr, bundle.ImportOptions{})
		pr.CloseWithError(errPeekDone) // later writes are dropped
		if err != nil {
			return
		}
		if p.verdict = judge(m); p.verdict != nil {
			stop(p.verdict)
		}
	}()
	return p
}

// Write feeds the peek. It never fails: the import must go on whether or
// not the peek still reads.
func (p *manifestPeek) Write(b []byte) (int, error) {
	_, _ = p.pw.Write(b)
	return len(b), nil
}

// wait ends the peek's input and returns its verdict.
func (p *manifestPeek) wait() error {
	p.pw.Close()
	<-p.done
	return p.verdict
}

// cancelableReader reads r in a goroutine of its own, so that its Read
// returns as soon as ctx ends even while r's Read blocks (a client that
// stopped sending, or an import refused on its manifest while the rest
// is on its way): the import then ends at once, and the goroutine when
// r's Read returns (the caller closes r when the call ends).
type cancelableReader struct {
	ctx  context.Context
	full chan readChunk // read from r, in order
	free chan []byte    // buffers for the goroutine to read into
	cur  readChunk      // being handed out
	off  int
}

type readChunk struct {
	buf []byte
	n   int
	err error
}

// cancelableBuffers and cancelableBufferSize are the buffers that
// cancelableReader reads ahead into: two, so that one is read from r
// while the other is handed out.
const (
	cancelableBuffers    = 2
	cancelableBufferSize = 256 << 10
)

func newCancelableReader(ctx context.Context, r io.Reader) *cancelableReader {
	c := &cancelableReader{ctx: ctx, full: make(chan readChunk, cancelableBuffers), free: make(chan []byte, cancelableBuffers)}
	for range cancelableBuffers {
		c.free <- make([]byte, cancelableBufferSize)
	}
	go func() {
		for {
			var buf []byte
			select {
			case buf = <-c.free:
			case <-ctx.Done():
				return
			}
			n, err := r.Read(buf)
			select {
			case c.full <- readChunk{buf: buf, n: n, err: err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	return c
}

func (c *cancelableReader) Read(p []byte) (int, error) {
	for c.off == c.cur.n {
		if c.cur.err != nil {
			return 0, c.cur.err
		}
		if c.cur.buf != nil {
			c.free <- c.cur.buf // never blocks: it came from there
		}
		select {
		case c.cur = <-c.full:
			c.off = 0
		case <-c.ctx.Done():
			c.cur = readChunk{err: context.Cause(c.ctx)}
			return 0, c.cur.err
		}
	}
	n := copy(p, c.cur.buf[c.off:c.cur.n])
	c.off += n
	return n, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// syncTree writes the files of the checkpoint directory dir, and the
// directories themselves, to disk: an imported checkpoint may soon be the
// only copy of its container, once the node it came from is wiped.
func syncTree(dir string) error {
	return filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() && !e.Type().IsRegular() {
			return nil // Import writes only regular files and directories
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("sync %s: %w", p, err)
		}
		return nil
	})
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ImportCheckpoint is the gRPC side of Agent.ImportCheckpoint: the
// archive arrives in the stream's messages, or on the data connection
// that the header's token names.
func (s *server) ImportCheckpoint(stream grpc.ClientStreamingServer[pb.ImportCheckpointRequest, pb.ImportCheckpointResponse]) error {
	header, err := recvHeader(stream.Recv, "import checkpoint", (*pb.ImportCheckpointRequest).GetHeader)
	if err != nil {
		return err
	}
	var res *ImportResult
	if token := header.GetDataToken(); token != "" {
		res, err = s.importFromDataConn(stream, token)
	} else {
		res, err = s.importFromStream(stream)
	}
	if err != nil {
		return importStatus(err)
	}
	return stream.SendAndClose(s.importToProto(res))
}

// importFromStream imports the archive that the stream's data messages
// carry, received a few messages ahead of the importer.
func (s *server) importFromStream(stream grpc.ClientStreamingServer[pb.ImportCheckpointRequest, pb.ImportCheckpointResponse]) (*ImportResult, error) {
	pr, pw := newChunkPipe(archiveReadAhead)
	go receiveUpload(stream.Recv, "import checkpoint", "checkpoint archive", importCheckpointPart, pw.Write, pw.CloseWithError)
	res, err := s.a.ImportCheckpoint(stream.Context(), pr)
	pr.Close() // unblocks the receiver
	return res, err
}

// importCheckpointPart is receiveUpload's part for ImportCheckpoint: a
// message's data, and whether it is a header.
func importCheckpointPart(msg *pb.ImportCheckpointRequest) ([]byte, bool) {
	return msg.GetData(), msg.GetHeader() != nil
}

// importFromDataConn imports the archive on the data connection that
// presents token; the archive is complete only once the client has
// closed its side of the stream (see archiveConn).
func (s *server) importFromDataConn(stream grpc.ClientStreamingServer[pb.ImportCheckpointRequest, pb.ImportCheckpointResponse], token string) (*ImportResult, error) {
	ctx := stream.Context()
	archive, release, err := acceptArchive(ctx, s, stream.Recv, token, "import checkpoint", dataWriteBuffer)
	if err != nil {
		return nil, err
	}
	defer release()
	return s.a.ImportCheckpoint(ctx, archive)
}

func (s *server) importToProto(res *ImportResult) *pb.ImportCheckpointResponse {
	return &pb.ImportCheckpointResponse{
		Checkpoint:     checkpointToProto(res.Checkpoint),
		ManifestDigest: res.ManifestDigest.String(),
		AlreadyPresent: res.AlreadyPresent,
		Node:           s.a.cfg.Name,
		ReceivedBytes:  res.Bytes,
		Warnings:       res.Warnings,
	}
}

// importStatus is grpcError, with a node out of disk space as
// RESOURCE_EXHAUSTED: the same call may succeed once space is freed, or
// on another node.
func importStatus(err error) error {
	if errors.Is(err, ErrNoSpace) {
		return status.Error(codes.ResourceExhausted, err.Error())
	}
	return grpcError(err)
}
