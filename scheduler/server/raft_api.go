package server

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/membership"
)

// peerStatusTimeout bounds how long ClusterStatus waits for each other
// scheduler's applied index.
const peerStatusTimeout = 2 * time.Second

// snapshotChunk is the size of the messages a snapshot travels in.
const snapshotChunk = 256 << 10

func (a *clusterAPI) ClusterStatus(ctx context.Context, req *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {
	st := a.s.raft.Status()
	out := &pb.ClusterStatusResponse{Leader: st.LeaderID, Term: st.Term, CommitIndex: st.CommitIndex, AnsweredBy: st.ID}
	addrs := a.s.rpcAddrs()
	for _, p := range st.Servers {
		out.Peers = append(out.Peers, &pb.RaftPeer{Id: p.ID, Address: p.Address, Voter: p.Voter, Leader: p.Leader, AppliedIndex: p.AppliedIndex,
			ApiAddress: addrs[p.ID]})
	}
	if req.GetLocal() {
		return out, nil
	}
	// Ask every other peer for its applied index, at once.
	var wg sync.WaitGroup
	for _, p := range out.Peers {
		if p.Id == st.ID {
			continue
		}
		wg.Add(1)
		go func(p *pb.RaftPeer) {
			defer wg.Done()
			addr, ok := addrs[p.Id]
			if !ok {
				p.Error = "not in the gossip pool"
				return
			}
			conn, err := a.s.conns.conn(addr)
			if err != nil {
				p.Error = err.Error()
				return
			}
			cctx, cancel := context.WithTimeout(ctx, peerStatusTimeout)
			defer cancel()
			theirs, err := pb.NewClusterServiceClient(conn).ClusterStatus(cctx, &pb.ClusterStatusRequest{Local: true})
			if err != nil {
				p.Error = status.Convert(err).Message()
				return
			}
			for _, q := range theirs.GetPeers() {
				if q.GetId() == p.Id {
					p.AppliedIndex = q.GetAppliedIndex()
				}
			}
		}(p)
	}
	wg.Wait()
	for _, p := range out.Peers {
		if p.Error == "" && p.AppliedIndex <= out.CommitIndex {
			p.Lag = out.CommitIndex - p.AppliedIndex
		}
	}
	return out, nil
}

// rpcAddrs maps each scheduler in the gossip pool to its API address.
func (s *Scheduler) rpcAddrs() map[string]string {
	out := map[string]string{}
	for _, m := range s.pool.Members() {
		if m.Tags.RPCAddr != "" {
			out[m.Name] = m.Tags.RPCAddr
		}
	}
	return out
}

func (a *clusterAPI) RemovePeer(ctx context.Context, req *pb.RemovePeerRequest) (*pb.RemovePeerResponse, error) {
	id := req.GetId()
	servers, err := a.s.raft.Servers()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	found := false
	for _, sv := range servers {
		found = found || string(sv.ID) == id
	}
	if !found {
		return nil, a.audited(ctx, "cluster remove-peer", id, status.Errorf(codes.NotFound, "no raft peer %q: see `godwit cluster status`", id))
	}
	// A scheduler that still gossips would be added again by the leader:
	// remove-peer is for schedulers gone for good; a running one leaves
	// by stopping (SIGTERM), which removes it.
	for _, m := range a.s.pool.Members() {
		if m.Name == id && m.Role == membership.RoleScheduler && m.State == membership.MemberAlive {
			return nil, a.audited(ctx, "cluster remove-peer", id, status.Errorf(codes.FailedPrecondition,
				"scheduler %s is alive in the gossip pool: stop it (SIGTERM) and it leaves the cluster by itself; remove-peer is for a scheduler gone for good (its gossip reports it dead)", id))
		}
	}
	if err := a.s.raft.RemoveServer(ctx, id); err != nil {
		return nil, a.audited(ctx, "cluster remove-peer", id, status.Error(codes.FailedPrecondition, err.Error()))
	}
	a.audit(ctx, "cluster remove-peer", id, nil)
	return &pb.RemovePeerResponse{}, nil
}

func (a *clusterAPI) SnapshotSave(_ *pb.SnapshotSaveRequest, stream grpc.ServerStreamingServer[pb.SnapshotChunk]) error {
	ctx := stream.Context()
	w := &chunkWriter{send: func(b []byte) error { return stream.Send(&pb.SnapshotChunk{Data: b}) }}
	if _, err := a.s.raft.SaveSnapshot(ctx, w); err != nil {
		return a.audited(ctx, "cluster snapshot save", "", status.Error(codes.Internal, err.Error()))
	}
	if err := w.flush(); err != nil {
		return err
	}
	a.audit(ctx, "cluster snapshot save", "", nil)
	return nil
}

func (a *clusterAPI) SnapshotRestore(stream grpc.ClientStreamingServer[pb.SnapshotChunk, pb.SnapshotRestoreResponse]) error {
	ctx := stream.Context()
	r := &chunkReader{recv: func() ([]byte, error) {
		m, err := stream.Recv()
		return m.GetData(), err
	}}
	if err := a.s.raft.RestoreSnapshot(ctx, r); err != nil {
		return a.audited(ctx, "cluster snapshot restore", "", status.Error(codes.InvalidArgument, err.Error()))
	}
	a.audit(ctx, "cluster snapshot restore", "", nil)
	return stream.SendAndClose(&pb.SnapshotRestoreResponse{Index: a.s.raft.Status().AppliedIndex})
}

// chunkWriter sends what is written in messages of snapshotChunk bytes.
type chunkWriter struct {
	send func([]byte) error
	buf  []byte
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(snapshotChunk-len(w.buf), len(p))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == snapshotChunk {
			if err := w.flush(); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.send(w.buf)
	w.buf = nil
	return err
}

// chunkReader reads the messages recv returns as one stream.
type chunkReader struct {
	recv func() ([]byte, error)
	buf  []byte
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		b, err := r.recv()
		if errors.Is(err, io.EOF) {
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		r.buf = b
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
