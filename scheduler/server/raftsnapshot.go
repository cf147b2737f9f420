package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/hashicorp/raft"
)

// The user snapshot file (`godwit cluster snapshot save`):
//
//	magic        8 bytes  "GDWTSNAP"
//	format       uint32   big endian, snapshotFormat
//	header size  uint32   big endian, at most maxSnapshotHeader
//	header       JSON     SnapshotInfo
//	state        Size bytes, the FSM's snapshot as raft stores it
//	checksum     32 bytes, SHA-256 of header and state
//
// The checksum comes last so that saving streams in one pass; restoring
// streams too, and the reader fails before its final EOF when the file is
// short or the checksum differs, which makes raft discard its copy before
// the FSM sees a byte (raft panics when an FSM restore fails, so nothing
// unchecked may reach it).
const (
	snapshotMagic     = "GDWTSNAP"
	snapshotFormat    = 1
	maxSnapshotHeader = 1 << 20
)

// ErrSnapshotInvalid: a file given to RestoreSnapshot is not a complete,
// intact godwit raft snapshot.
var ErrSnapshotInvalid = errors.New("invalid raft snapshot file")

// SnapshotInfo describes a saved snapshot: the raft position it was taken
// at, the cluster configuration then, and the size of the FSM state.
type SnapshotInfo struct {
	Index              uint64        `json:"index"`
	Term               uint64        `json:"term"`
	Servers            []raft.Server `json:"servers"`
	ConfigurationIndex uint64        `json:"configuration_index"`
	Size               int64         `json:"size"`
}

// SaveSnapshot takes a snapshot of this node's FSM and writes it to w in
// the format above. It works on any node; on a follower the state may lag
// the leader's, so call it on the leader for the latest.
func (n *RaftNode) SaveSnapshot(ctx context.Context, w io.Writer) (SnapshotInfo, error) {
	meta, rc, err := n.openSnapshot(ctx)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer rc.Close()
	info := SnapshotInfo{
		Index: meta.Index, Term: meta.Term, Size: meta.Size,
		Servers: meta.Configuration.Servers, ConfigurationIndex: meta.ConfigurationIndex,
	}
	header, err := json.Marshal(info)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("encode snapshot header: %w", err)
	}
	sum := sha256.New()
	sum.Write(header)
	var prefix bytes.Buffer
	prefix.WriteString(snapshotMagic)
	binary.Write(&prefix, binary.BigEndian, uint32(snapshotFormat))
	binary.Write(&prefix, binary.BigEndian, uint32(len(header)))
	prefix.Write(header)
	if _, err := w.Write(prefix.Bytes()); err != nil {
		return SnapshotInfo{}, fmt.Errorf("write snapshot: %w", err)
	}
	copied, err := io.Copy(io.MultiWriter(w, sum), ctxReader{ctx, rc})
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("write snapshot: %w", err)
	}
	if copied != meta.Size {
		return SnapshotInfo{}, fmt.Errorf("write snapshot: raft's snapshot %s held %d bytes, its metadata says %d: take it again", meta.ID, copied, meta.Size)
	}
	if _, err := w.Write(sum.Sum(nil)); err != nil {
		return SnapshotInfo{}, fmt.Errorf("write snapshot: %w", err)
	}
	return info, nil
}

// openSnapshot takes a fresh snapshot, or opens the newest on disk when
// nothing has been applied since it (raft then refuses a new one).
func (n *RaftNode) openSnapshot(ctx context.Context) (*raft.SnapshotMeta, io.ReadCloser, error) {
	f := n.raft.Snapshot()
	err := wait(ctx, f)
	if err == nil {
		meta, rc, err := f.Open()
		if err != nil {
			return nil, nil, fmt.Errorf("open raft snapshot: %w", err)
		}
		return meta, rc, nil
	}
	if !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil, nil, fmt.Errorf("take raft snapshot: %w", err)
	}
	list, err := n.stores.snaps.List()
	if err != nil {
		return nil, nil, fmt.Errorf("list raft snapshots: %w", err)
	}
	if len(list) == 0 {
		return nil, nil, errors.New("take raft snapshot: the cluster has no state yet")
	}
	meta, rc, err := n.stores.snaps.Open(list[0].ID)
	if err != nil {
		return nil, nil, fmt.Errorf("open raft snapshot %s: %w", list[0].ID, err)
	}
	return meta, rc, nil
}

// RestoreSnapshot replaces the cluster's state with a snapshot that
// SaveSnapshot wrote. Only the leader can; followers receive the state
// from it. The current cluster configuration is kept, not the one in the
// file, so a snapshot restores into a new cluster. A short, damaged or
// foreign file is refused (ErrSnapshotInvalid) and the state stays as it
// was. Writes in flight when the restore lands fail with
// raft.ErrAbortedByRestore.
func (n *RaftNode) RestoreSnapshot(ctx context.Context, r io.Reader) error {
	if n.raft.State() != raft.Leader {
		return n.leaderErr("restore snapshot", raft.ErrNotLeader)
	}
	info, body, err := readSnapshotHeader(r)
	if err != nil {
		return err
	}
	meta := &raft.SnapshotMeta{
		Version:            raft.SnapshotVersionMax,
		Index:              info.Index,
		Term:               info.Term,
		Configuration:      raft.Configuration{Servers: info.Servers},
		ConfigurationIndex: info.ConfigurationIndex,
		Size:               info.Size,
	}
	err = n.raft.Restore(meta, ctxReader{ctx, body}, timeoutOf(ctx))
	if body.err != nil {
		return body.err // the file's fault, not raft's: say what is wrong with it
	}
	if err != nil {
		return n.leaderErr("restore snapshot", err)
	}
	n.logger.Info("raft snapshot restored", "index", info.Index, "term", info.Term, "size", info.Size)
	return nil
}

// readSnapshotHeader checks the magic, format and header, and returns the
// reader of the state that verifies the rest.
func readSnapshotHeader(r io.Reader) (SnapshotInfo, *snapshotBody, error) {
	var prefix [len(snapshotMagic) + 8]byte
	if _, err := io.ReadFull(r, prefix[:]); err != nil {
		return SnapshotInfo{}, nil, fmt.Errorf("%w: the file is too short to be one (%w): give a file that `godwit cluster snapshot save` wrote", ErrSnapshotInvalid, err)
	}
	if string(prefix[:len(snapshotMagic)]) != snapshotMagic {
		return SnapshotInfo{}, nil, fmt.Errorf("%w: the file is not a godwit raft snapshot: give a file that `godwit cluster snapshot save` wrote", ErrSnapshotInvalid)
	}
	format := binary.BigEndian.Uint32(prefix[len(snapshotMagic):])
	size := binary.BigEndian.Uint32(prefix[len(snapshotMagic)+4:])
	if format != snapshotFormat {
		return SnapshotInfo{}, nil, fmt.Errorf("%w: snapshot format %d, this godwit reads format %d: restore it with the godwit version that saved it", ErrSnapshotInvalid, format, snapshotFormat)
	}
	if size == 0 || size > maxSnapshotHeader {
		return SnapshotInfo{}, nil, fmt.Errorf("%w: header of %d bytes: the file is damaged", ErrSnapshotInvalid, size)
	}
	header := make([]byte, size)
	if _, err := io.ReadFull(r, header); err != nil {
		return SnapshotInfo{}, nil, fmt.Errorf("%w: the file is truncated in its header (%w): copy it again from where it was saved", ErrSnapshotInvalid, err)
	}
	var info SnapshotInfo
	if err := json.Unmarshal(header, &info); err != nil {
		return SnapshotInfo{}, nil, fmt.Errorf("%w: header: %w: the file is damaged", ErrSnapshotInvalid, err)
	}
	if info.Size < 0 || info.Index == 0 || info.Term == 0 {
		return SnapshotInfo{}, nil, fmt.Errorf("%w: header says index %d, term %d, size %d: the file is damaged", ErrSnapshotInvalid, info.Index, info.Term, info.Size)
	}
	sum := sha256.New()
	sum.Write(header)
	return info, &snapshotBody{r: r, left: info.Size, size: info.Size, sum: sum}, nil
}

// snapshotBody reads exactly size bytes of state, then the checksum; it
// reports io.EOF only when both are intact, and otherwise an
// ErrSnapshotInvalid error, kept in err.
type snapshotBody struct {
	r    io.Reader
	left int64
	size int64
	sum  hash.Hash
	err  error
}

func (b *snapshotBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		b.err = b.verify()
		if b.err == nil {
			return 0, io.EOF
		}
		return 0, b.err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.sum.Write(p[:n])
	b.left -= int64(n)
	if errors.Is(err, io.EOF) && b.left > 0 {
		b.err = fmt.Errorf("%w: the file is truncated: it holds %d of %d bytes of state: copy it again from where it was saved", ErrSnapshotInvalid, b.size-b.left, b.size)
		return n, b.err
	}
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = fmt.Errorf("read snapshot: %w", err)
		return n, b.err
	}
	return n, nil
}

func (b *snapshotBody) verify() error {
	var want [sha256.Size]byte
	if _, err := io.ReadFull(b.r, want[:]); err != nil {
		return fmt.Errorf("%w: the file is truncated: its checksum is missing: copy it again from where it was saved", ErrSnapshotInvalid)
	}
	if !bytes.Equal(want[:], b.sum.Sum(nil)) {
		return fmt.Errorf("%w: checksum mismatch: the file is damaged; restore another copy", ErrSnapshotInvalid)
	}
	return nil
}

// ctxReader stops a long copy when ctx ends.
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
