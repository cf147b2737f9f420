package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func init() { register(newClusterCommand) }

const (
	// snapshotChunk is how many bytes of a snapshot file each message to
	// the scheduler carries, well under gRPC's 4 MiB message limit.
	snapshotChunk = 256 << 10
	// snapshotFileMode: a snapshot holds the whole cluster state.
	snapshotFileMode os.FileMode = 0o600
)

func newClusterCommand(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "The schedulers' raft cluster: status, peers and snapshots"}
	snapshot := &cobra.Command{Use: "snapshot", Short: "Save the cluster state to a file, or restore it from one"}
	snapshot.AddCommand(newSnapshotSaveCommand(g), newSnapshotRestoreCommand(g))
	cmd.AddCommand(newClusterStatusCommand(g), newRemovePeerCommand(g), snapshot)
	return cmd
}

// clusterStatusView is `cluster status -o json`: exactly an object with
// leader and peers.
type clusterStatusView struct {
	// Leader is the leader's ID; empty when there is none.
	Leader string         `json:"leader"`
	Peers  []raftPeerView `json:"peers"`
}

type raftPeerView struct {
	ID           string `json:"id"`
	Address      string `json:"address"`
	Voter        bool   `json:"voter"`
	Leader       bool   `json:"leader"`
	AppliedIndex uint64 `json:"applied_index"`
	Lag          uint64 `json:"lag"`
	// Error says why the peer could not be asked for its index.
	Error string `json:"error,omitempty"`
}

func newClusterStatusCommand(g *globalOptions) *cobra.Command {
	var out *outputFormat
	cmd := &cobra.Command{
		Use:   "status [-o json]",
		Short: "Show the schedulers: the leader, its term and commit index, and each peer's applied index and lag",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp *pb.ClusterStatusResponse
			if err := g.callCluster(func(c pb.ClusterServiceClient) (err error) {
				resp, err = c.ClusterStatus(cmd.Context(), &pb.ClusterStatusRequest{})
				return err
			}); err != nil {
				return err
			}
			v := clusterStatusView{Leader: resp.GetLeader(), Peers: []raftPeerView{}}
			for _, p := range resp.GetPeers() {
				v.Peers = append(v.Peers, raftPeerView{ID: p.GetId(), Address: p.GetAddress(), Voter: p.GetVoter(), Leader: p.GetLeader(),
					AppliedIndex: p.GetAppliedIndex(), Lag: p.GetLag(), Error: p.GetError()})
			}
			if *out == outputJSON {
				return printJSON(cmd.OutOrStdout(), v)
			}
			return writeClusterStatus(cmd.OutOrStdout(), resp, v)
		},
	}
	out = addOutputFlag(cmd)
	return cmd
}

// writeClusterStatus prints a summary line, then one row per peer:
//
//	leader s1, term 3, commit index 120 (answered by s2)
//	ID  ADDRESS         VOTER  LEADER  APPLIED  LAG
//	s1  10.0.0.1:7700   yes    yes     120      0
func writeClusterStatus(w io.Writer, resp *pb.ClusterStatusResponse, v clusterStatusView) error {
	if v.Leader == "" {
		fmt.Fprintf(w, "no leader (term %d, commit index %d, answered by %s): fewer than a majority of the voters are up; "+
			"start the missing schedulers, or see docs/operations.md for recovery when they are lost for good\n",
			resp.GetTerm(), resp.GetCommitIndex(), resp.GetAnsweredBy())
	} else {
		fmt.Fprintf(w, "leader %s, term %d, commit index %d (answered by %s)\n",
			v.Leader, resp.GetTerm(), resp.GetCommitIndex(), resp.GetAnsweredBy())
	}
	header := []string{"ID", "ADDRESS", "VOTER", "LEADER", "APPLIED", "LAG"}
	withErrors := false
	for _, p := range v.Peers {
		withErrors = withErrors || p.Error != ""
	}
	if withErrors {
		header = append(header, "ERROR")
	}
	tw := table(w, header...)
	for _, p := range v.Peers {
		applied, lag := fmt.Sprint(p.AppliedIndex), fmt.Sprint(p.Lag)
		if p.Error != "" {
			applied, lag = "-", "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s", p.ID, p.Address, yesNo(p.Voter), yesNo(p.Leader), applied, lag)
		if withErrors {
			fmt.Fprintf(tw, "\t%s", p.Error)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func newRemovePeerCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "remove-peer ID",
		Short: "Remove a scheduler from the raft configuration (one that is gone for good)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.callCluster(func(c pb.ClusterServiceClient) error {
				_, err := c.RemovePeer(cmd.Context(), &pb.RemovePeerRequest{Id: args[0]})
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed scheduler %s from the raft configuration\n", args[0])
			return nil
		},
	}
}

func newSnapshotSaveCommand(g *globalOptions) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "save FILE [--force]",
		Short: "Save a snapshot of the cluster state, taken now, to FILE (mode 0600)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if !force {
				if _, err := os.Lstat(path); err == nil {
					return fmt.Errorf("%s exists: give --force to replace it, or another FILE", path)
				}
			}
			ctx, cancel := interruptible(cmd)
			defer cancel()
			var n int64
			err := g.callCluster(func(c pb.ClusterServiceClient) error {
				stream, err := c.SnapshotSave(ctx, &pb.SnapshotSaveRequest{})
				if err != nil {
					return err
				}
				n, err = writeFileAtomic(path, force, func(w io.Writer) (int64, error) {
					var n int64
					for {
						chunk, err := stream.Recv()
						if err == io.EOF {
							return n, nil
						}
						if err != nil {
							return n, err
						}
						m, err := w.Write(chunk.GetData())
						n += int64(m)
						if err != nil {
							return n, err
						}
					}
				})
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "saved the cluster state to %s (%d bytes)\n", path, n)
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "replace FILE if it exists")
	return cmd
}

// writeFileAtomic writes path with fill, through a temporary file beside
// it that is synced and then put in place: renamed over path when
// replace, else linked to it, which fails when path appeared meanwhile.
// Nothing is left behind on failure.
func writeFileAtomic(path string, replace bool, fill func(io.Writer) (int64, error)) (n int64, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return 0, err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // after a link or rename, only the name
	}()
	if err := tmp.Chmod(snapshotFileMode); err != nil {
		return 0, err
	}
	if n, err = fill(tmp); err != nil {
		return n, err
	}
	if err := tmp.Sync(); err != nil {
		return n, err
	}
	if err := tmp.Close(); err != nil {
		return n, err
	}
	if replace {
		return n, os.Rename(tmp.Name(), path)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return n, fmt.Errorf("%s exists: give --force to replace it, or another FILE", path)
		}
		return n, err
	}
	return n, nil
}

func newSnapshotRestoreCommand(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the whole cluster state with a snapshot that `cluster snapshot save` wrote",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			ctx, cancel := interruptible(cmd)
			defer cancel()
			var resp *pb.SnapshotRestoreResponse
			if err := g.callCluster(func(c pb.ClusterServiceClient) error {
				stream, err := c.SnapshotRestore(ctx)
				if err != nil {
					return err
				}
				buf := make([]byte, snapshotChunk)
				for {
					n, rerr := f.Read(buf)
					if n > 0 {
						if err := stream.Send(&pb.SnapshotChunk{Data: append([]byte(nil), buf[:n]...)}); err != nil {
							break // the scheduler ended the stream; CloseAndRecv says why
						}
					}
					if rerr == io.EOF {
						break
					}
					if rerr != nil {
						return fmt.Errorf("read %s: %w", args[0], rerr)
					}
				}
				resp, err = stream.CloseAndRecv()
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored the cluster state from %s (a snapshot of raft index %d)\n", args[0], resp.GetIndex())
			return nil
		},
	}
}
