package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// fakeDrainWatch is one WatchDrain call's answer: the progress it sends,
// then the error it ends with (nil: the stream ends).
type fakeDrainWatch struct {
	progress []*pb.DrainProgress
	err      error
}

// answerDrainWatch sends the answer of the nth WatchDrain call.
func (f *fakeCluster) answerDrainWatch(s grpc.ServerStreamingServer[pb.DrainProgress]) error {
	n := -1
	for _, c := range f.requests() {
		if c.method == "WatchDrain" {
			n++
		}
	}
	if len(f.drainWatches) == 0 {
		return status.Error(codes.Unimplemented, "the test gave no drain watch")
	}
	w := f.drainWatches[min(n, len(f.drainWatches)-1)]
	for _, p := range w.progress {
		if err := s.Send(p); err != nil {
			return err
		}
	}
	return w.err
}

const dbID = "d0000000000000000000000000000000000000000000000000000000000000b2"

// drainRecord is n1's drain in status st with the counts.
func drainRecord(st string, left, moved, failed int32) *pb.Drain {
	d := &pb.Drain{Node: "n1", Status: st, MaxParallel: 2, Left: left, Moved: moved, Failed: failed,
		Started: sampleDay, Updated: sampleDay, RequestedBy: "alice (operator)"}
	if st != "running" {
		d.Ended = timestamppb.New(sampleDay.AsTime().Add(42 * time.Second))
	}
	return d
}

// drainTo is a watch's messages: web and db moving, db blocked, then
// the end as given.
func drainTo(end *pb.Drain) []*pb.DrainProgress {
	blocked := drainRecord("running", 2, 1, 0)
	blocked.Blocked = []*pb.DrainBlocked{{ContainerId: dbID, Container: "db", Reason: "no node can take it: n2: capacity: needs 4 GiB"}}
	return []*pb.DrainProgress{
		{Drain: drainRecord("running", 3, 0, 0), Moves: []*pb.DrainMove{
			{MigrationId: "m-1", Container: "web", Destination: "n2", Phase: "transfer", BytesDone: 1 << 20, BytesTotal: 4 << 20},
			{MigrationId: "m-2", Container: "api", Destination: "n3", Phase: "dump"},
		}, BytesDone: 1 << 20, BytesTotal: 4 << 20},
		{Drain: blocked, EtaMs: 12000},
		{Drain: end, Done: true},
	}
}

func TestNodeDrainFollowsTheDrainToItsEnd(t *testing.T) {
	done := drainRecord("done", 0, 3, 0)
	tests := []struct {
		name   string
		args   []string
		req    *pb.DrainNodeRequest
		stdout []string
		stderr []string
	}{
		{name: "defaults", args: []string{"n1"},
			req:    &pb.DrainNodeRequest{Node: "n1", MaxParallel: 1},
			stdout: []string{"node n1 drained in 42s: 3 containers moved, 0 failed moves; it stays cordoned for its maintenance: `godwit node uncordon n1` once it is back\n"},
			stderr: []string{
				"node drain n1: started: 3 containers to move, 2 at a time\n",
				"node drain n1: 3 left, 0 moved, 0 failed\n",
				"node drain n1: moving web to n2, api to n3\n",
				"node drain n1: db cannot move: no node can take it: n2: capacity: needs 4 GiB\n",
				"node drain n1: 2 left, 1 moved, 0 failed; about 12s to go\n",
				"node drain n1: 0 left, 3 moved, 0 failed\n",
			}},
		{name: "deadline and policy", args: []string{"n1", "--deadline", "5m", "--max-parallel", "2", "--on-deadline", "stop"},
			req:    &pb.DrainNodeRequest{Node: "n1", DeadlineMs: 300000, OnDeadline: "stop", MaxParallel: 2},
			stdout: []string{"node n1 drained"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			f.drain = drainRecord("running", 3, 0, 0)
			f.drainWatches = []fakeDrainWatch{{progress: drainTo(done)}}
			addr := startCluster(t, f)
			stdout, stderr, err := runCLI(t, append([]string{"--addr", addr, "node", "drain"}, tt.args...)...)
			if err != nil {
				t.Fatalf("node drain: %v\nstderr:\n%s", err, stderr)
			}
			calls := f.requests()
			if got, want := methods(calls), []string{"DrainNode", "WatchDrain"}; !slices.Equal(got, want) {
				t.Fatalf("calls %v, want %v", got, want)
			}
			if !proto.Equal(calls[0].req, tt.req) {
				t.Errorf("DrainNode request %v, want %v", calls[0].req, tt.req)
			}
			if !proto.Equal(calls[1].req, &pb.NodeRef{Name: "n1"}) {
				t.Errorf("WatchDrain request %v, want n1", calls[1].req)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if n := strings.Count(stderr, "db cannot move"); n != 1 {
				t.Errorf("db's block said %d times, want once:\n%s", n, stderr)
			}
		})
	}
}

func TestNodeDrainThatDoesNotEndDoneIsAnError(t *testing.T) {
	failed := drainRecord("failed", 1, 2, 3)
	failed.Reason = "1 container could not move: db (its move failed 3 times)"
	failed.Blocked = []*pb.DrainBlocked{{ContainerId: dbID, Container: "db", Reason: "its move failed 3 times"}}
	cancelled := drainRecord("cancelled", 2, 1, 0)
	cancelled.Reason = "uncordoned by the operator"
	tests := []struct {
		name string
		end  *pb.Drain
		want []string
	}{
		{"failed", failed, []string{"the drain of node n1 failed after 42s: 2 moved, 3 failed moves, 1 left: 1 container could not move", "\n  db: its move failed 3 times"}},
		{"cancelled", cancelled, []string{"the drain of node n1 was cancelled after 42s: 1 moved, 0 failed moves, 2 left: uncordoned by the operator"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			f.drain = drainRecord("running", 3, 0, 0)
			f.drainWatches = []fakeDrainWatch{{progress: []*pb.DrainProgress{{Drain: tt.end, Done: true}}}}
			addr := startCluster(t, f)
			stdout, _, err := runCLI(t, "--addr", addr, "node", "drain", "n1")
			if err == nil {
				t.Fatalf("node drain ended %s without an error; stdout:\n%s", tt.end.GetStatus(), stdout)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestNodeDrainRefusedListsWhatCannotMove(t *testing.T) {
	f := sampleCluster()
	refusal := "drain refused: 2 of the 3 containers on node n1 cannot move, so nothing was cordoned; make room or remove them, then drain again:\n" +
		"  db: no node can take it: n2: capacity: needs 4 GiB\n  pin: it is pinned to node n1 (run --node)"
	f.err = status.Error(codes.FailedPrecondition, refusal)
	addr := startCluster(t, f)
	_, _, err := runCLI(t, "--addr", addr, "node", "drain", "n1")
	if err == nil || err.Error() != refusal {
		t.Fatalf("node drain: %v, want the leader's refusal as it is:\n%s", err, refusal)
	}
	if got := methods(f.requests()); !slices.Equal(got, []string{"DrainNode"}) {
		t.Errorf("calls %v, want DrainNode only", got)
	}
}

func TestNodeDrainDetachAndJSON(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		calls []string
		// json: stdout is one JSON object with this status.
		json   string
		stdout string
	}{
		{"detach", []string{"--detach"}, []string{"DrainNode"}, "", "node n1 is draining\n"},
		{"detach json", []string{"--detach", "-o", "json"}, []string{"DrainNode"}, "running", ""},
		{"json at the end", []string{"-o", "json"}, []string{"DrainNode", "WatchDrain"}, "done", ""},
		{"watch", []string{"--watch", "-o", "json"}, []string{"WatchDrain"}, "done", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			f.drain = drainRecord("running", 3, 0, 0)
			f.drainWatches = []fakeDrainWatch{{progress: drainTo(drainRecord("done", 0, 3, 0))}}
			addr := startCluster(t, f)
			stdout, stderr, err := runCLI(t, append([]string{"--addr", addr, "node", "drain", "n1"}, tt.args...)...)
			if err != nil {
				t.Fatalf("node drain: %v\n%s", err, stderr)
			}
			if got := methods(f.requests()); !slices.Equal(got, tt.calls) {
				t.Errorf("calls %v, want %v", got, tt.calls)
			}
			if tt.json == "" {
				if stdout != tt.stdout {
					t.Errorf("stdout %q, want %q", stdout, tt.stdout)
				}
				return
			}
			var v map[string]any
			if err := json.Unmarshal([]byte(stdout), &v); err != nil {
				t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
			}
			for k, w := range map[string]any{"node": "n1", "status": tt.json, "max_parallel": 2.0, "requested_by": "alice (operator)"} {
				if v[k] != w {
					t.Errorf("%s = %v, want %v", k, v[k], w)
				}
			}
			for _, k := range []string{"left", "moved", "failed", "blocked", "started"} {
				if _, ok := v[k]; !ok {
					t.Errorf("no %q in %v", k, v)
				}
			}
		})
	}
}

func TestNodeDrainReattaches(t *testing.T) {
	fastReattach(t)
	f := sampleCluster()
	f.drain = drainRecord("running", 3, 0, 0)
	f.drainWatches = []fakeDrainWatch{
		{progress: drainTo(nil)[:1], err: status.Error(codes.Unavailable, "the leader stepped down")},
		{err: status.Error(codes.Unavailable, "no scheduler leader right now")},
		{progress: drainTo(drainRecord("done", 0, 3, 0))},
	}
	addr := startCluster(t, f)
	stdout, stderr, err := runCLI(t, "--addr", addr, "node", "drain", "n1")
	if err != nil {
		t.Fatalf("node drain: %v\n%s", err, stderr)
	}
	if got := methods(f.requests()); !slices.Equal(got, []string{"DrainNode", "WatchDrain", "WatchDrain", "WatchDrain"}) {
		t.Errorf("calls %v, want the watch thrice", got)
	}
	if !strings.Contains(stderr, "re-attaching to the drain (1 of 3)") || !strings.Contains(stdout, "node n1 drained") {
		t.Errorf("want a re-attach noted and the drain's end:\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}

	t.Run("gives up", func(t *testing.T) {
		f := sampleCluster()
		f.drain = drainRecord("running", 3, 0, 0)
		f.drainWatches = []fakeDrainWatch{{err: status.Error(codes.Unavailable, "no scheduler leader right now")}}
		addr := startCluster(t, f)
		_, _, err := runCLI(t, "--addr", addr, "node", "drain", "n1")
		if err == nil || !strings.Contains(err.Error(), "lost track of the drain of node n1") || !strings.Contains(err.Error(), "--watch") {
			t.Fatalf("node drain: %v, want it to give up and say how to follow the drain again", err)
		}
	})
}

func TestNodeDrainFlagRefusals(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no parallelism", []string{"--max-parallel", "0"}, "--max-parallel 0"},
		{"a policy without a deadline", []string{"--on-deadline", "stop"}, "give --deadline too"},
		{"an unknown policy", []string{"--deadline", "1m", "--on-deadline", "pray"}, `--on-deadline "pray"`},
		{"watch with start flags", []string{"--watch", "--deadline", "1m"}, "--watch follows the drain that runs; --deadline is for starting one"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			addr := startCluster(t, f)
			_, _, err := runCLI(t, append([]string{"--addr", addr, "node", "drain", "n1"}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("node drain %v: %v, want %q", tt.args, err, tt.want)
			}
			if calls := f.requests(); len(calls) != 0 {
				t.Errorf("calls %v, want none", methods(calls))
			}
		})
	}
}
