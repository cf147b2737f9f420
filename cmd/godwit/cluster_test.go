package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

const gib = 1 << 30

var (
	webID     = strings.Repeat("c", 64)
	sampleDay = timestamppb.New(time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC))
)

func webContainer() *pb.Container {
	return &pb.Container{Id: webID, Name: "web", Image: "busybox", ImageId: "sha256:" + strings.Repeat("e", 64),
		State: pb.ContainerState_CONTAINER_STATE_RUNNING, Ip: "10.88.0.5", Node: "n1", Args: []string{"sleep", "1000"},
		Created: sampleDay, Started: sampleDay, Snapshotter: "overlay"}
}

// sampleCluster is a fake cluster of three schedulers and two nodes, one
// container running on n1.
func sampleCluster() *fakeCluster {
	return &fakeCluster{
		status: &pb.ClusterStatusResponse{Leader: "s1", Term: 3, CommitIndex: 120, AnsweredBy: "s2", Peers: []*pb.RaftPeer{
			{Id: "s1", Address: "10.0.0.1:7700", Voter: true, Leader: true, AppliedIndex: 120},
			{Id: "s2", Address: "10.0.0.2:7700", Voter: true, AppliedIndex: 118, Lag: 2},
			{Id: "s3", Address: "10.0.0.3:7700", Voter: true, Error: "connection refused"},
		}},
		run: &pb.RunResponse{Container: &pb.Container{Id: webID, Name: "web", Image: "busybox", Node: "n2",
			State: pb.ContainerState_CONTAINER_STATE_RUNNING}},
		containers: []*pb.Container{webContainer()},
		nodes: []*pb.Node{
			{Name: "n1", Address: "10.0.0.11:7701", Status: "ready", Labels: map[string]string{"zone": "a", "disk": "ssd"}, Containers: 3,
				Capacity: &pb.Resources{MilliCpu: 4000, MemoryBytes: 8 * gib}, Allocated: &pb.Resources{MilliCpu: 1500, MemoryBytes: gib},
				Health: "alive", Schedulability: "ready", Epoch: 2, Registered: sampleDay,
				RuncVersion: "1.3.6", CriuVersion: "4.2.1", KernelVersion: "6.18.44", GodwitVersion: "dev",
				CpuVendor: "GenuineIntel", CpuModel: "Xeon", CpuFlags: []string{"avx2", "sse4_2"}, Strategies: []string{"stop-copy", "stream"},
				Snapshotter: "overlay"},
			{Name: "n2", Address: "10.0.0.12:7701", Status: "cordoned", Capacity: &pb.Resources{MilliCpu: 2000, MemoryBytes: 4 * gib},
				Health: "alive", Schedulability: "cordoned"},
		},
		images: []*pb.ClusterImage{{Node: "n1", Image: &pb.Image{Name: "busybox", Id: "sha256:" + strings.Repeat("f", 64), Format: "oci",
			Size: 1 << 20, Created: sampleDay, Layers: []*pb.Layer{{Digest: "sha256:aa", Size: 1 << 20}}}}},
		events: []*pb.Event{
			{Index: 6, Time: sampleDay, Kind: "container.placed", Node: "n1", Container: "web", Message: "placed by binpack"},
			{Index: 7, Kind: "node.cordoned", Node: "n2"},
		},
		audit:    []*pb.AuditRecord{{Index: 9, Time: sampleDay, Who: "alice", Role: "operator", Action: "node.cordon", Target: "n2", Outcome: "ok"}},
		logs:     []byte("hello from web\n"),
		snapshot: bytes.Repeat([]byte("raft"), 3000),
	}
}

// startCluster serves f in plaintext for a test with no contexts or
// environment of its own, and returns the scheduler's address.
func startCluster(t *testing.T, f *fakeCluster) string {
	t.Helper()
	isolateCLI(t)
	return serveCluster(t, f, nil)
}

func TestClusterCommandsSendTheRightRequest(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		method string
		req    proto.Message
		// want are parts of standard output.
		want []string
	}{
		{name: "run with placement flags",
			args: []string{"run", "--name", "web", "--cpus", "0.5", "--node", "n2", "--constraint", "zone=a", "--constraint", "disk=ssd",
				"--pin", "--spread", "busybox", "--", "sleep", "1000"},
			method: "Run",
			req: &pb.RunRequest{Container: &pb.RunContainerRequest{Name: "web", Image: "busybox", Args: []string{"sleep", "1000"}, Cpus: 0.5},
				Node: "n2", Constraints: []string{"zone=a", "disk=ssd"}, Pin: true, Algorithm: "spread"},
			want: []string{webID}},
		{name: "run bin-packs by default", args: []string{"run", "busybox"}, method: "Run",
			req: &pb.RunRequest{Container: &pb.RunContainerRequest{Image: "busybox", Args: []string{}}}, want: []string{webID}},
		{name: "ps -a", args: []string{"ps", "-a"}, method: "ListContainers", req: &pb.ListContainersRequest{All: true},
			want: []string{"NODE", "web", "busybox", "10.88.0.5", "n1"}},
		{name: "inspect", args: []string{"inspect", "web"}, method: "InspectContainer", req: &pb.ContainerRef{Ref: "web"},
			want: []string{"node", "n1", "sleep 1000"}},
		{name: "logs -f", args: []string{"logs", "-f", "web"}, method: "Logs", req: &pb.LogsRequest{Ref: "web", Follow: true},
			want: []string{"hello from web\n"}},
		{name: "stop", args: []string{"stop", "-t", "3", "web"}, method: "StopContainer", req: &pb.StopContainerRequest{Ref: "web", TimeoutSeconds: 3},
			want: []string{"web"}},
		{name: "start", args: []string{"start", "web"}, method: "StartContainer", req: &pb.ContainerRef{Ref: "web"}, want: []string{"web"}},
		{name: "rm -f", args: []string{"rm", "-f", "web"}, method: "RemoveContainer", req: &pb.RemoveContainerRequest{Ref: "web", Force: true},
			want: []string{"web"}},
		{name: "image ls --node", args: []string{"image", "ls", "--node", "n1"}, method: "ListImages", req: &pb.ClusterListImagesRequest{Node: "n1"},
			want: []string{"NODE", "n1", "busybox", strings.Repeat("f", 12), "1.0 MiB"}},
		{name: "node ls", args: []string{"node", "ls"}, method: "ListNodes", req: &pb.ListNodesRequest{},
			want: []string{"n1", "10.0.0.11:7701", "ready", "1.5/4", "1.0 GiB/8.0 GiB", "disk=ssd,zone=a", "n2", "cordoned"}},
		{name: "node inspect", args: []string{"node", "inspect", "n1"}, method: "InspectNode", req: &pb.NodeRef{Name: "n1"},
			want: []string{"1.5 of 4 allocated", "label", "zone=a", "4.2.1", "stop-copy, stream"}},
		{name: "node cordon", args: []string{"node", "cordon", "n2"}, method: "CordonNode", req: &pb.NodeRef{Name: "n2"},
			want: []string{"node n2 is cordoned\n"}},
		{name: "node uncordon", args: []string{"node", "uncordon", "n2"}, method: "UncordonNode", req: &pb.NodeRef{Name: "n2"},
			want: []string{"node n2 is ready\n"}},
		{name: "events --since", args: []string{"events", "--since", "5"}, method: "Events", req: &pb.EventsRequest{Since: 5},
			want: []string{"6 ", " container.placed node=n1 container=web: placed by binpack\n", "7 node.cordoned node=n2\n"}},
		{name: "events -f", args: []string{"events", "-f"}, method: "Events", req: &pb.EventsRequest{Follow: true},
			want: []string{"node.cordoned"}},
		{name: "audit --limit", args: []string{"audit", "--limit", "2"}, method: "Audit", req: &pb.AuditRequest{Limit: 2},
			want: []string{"WHO", "alice", "operator", "node.cordon", "n2", "ok"}},
		{name: "cluster status", args: []string{"cluster", "status"}, method: "ClusterStatus", req: &pb.ClusterStatusRequest{},
			want: []string{"leader s1, term 3, commit index 120 (answered by s2)", "APPLIED", "LAG", "ERROR", "connection refused"}},
		{name: "cluster remove-peer", args: []string{"cluster", "remove-peer", "s3"}, method: "RemovePeer", req: &pb.RemovePeerRequest{Id: "s3"},
			want: []string{"removed scheduler s3"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			addr := startCluster(t, f)
			out, _, err := runCLI(t, append([]string{"--addr", addr}, tt.args...)...)
			if err != nil {
				t.Fatalf("godwit %s: %v", strings.Join(tt.args, " "), err)
			}
			calls := f.requests()
			if len(calls) != 1 || calls[0].method != tt.method {
				t.Fatalf("calls %v, want one %s", calls, tt.method)
			}
			if !proto.Equal(calls[0].req, tt.req) {
				t.Errorf("%s request\n%v\nwant\n%v", tt.method, calls[0].req, tt.req)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestNodeListJSONShape(t *testing.T) {
	addr := startCluster(t, sampleCluster())
	out, _, err := runCLI(t, "--addr", addr, "node", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var nodes []map[string]any
	if err := json.Unmarshal([]byte(out), &nodes); err != nil {
		t.Fatalf("node ls -o json is not a JSON array of objects: %v\n%s", err, out)
	}
	if len(nodes) != 2 {
		t.Fatalf("%d nodes, want 2", len(nodes))
	}
	for _, n := range nodes {
		for _, key := range []string{"name", "address", "status", "labels", "containers", "capacity", "allocated", "versions"} {
			if _, ok := n[key]; !ok {
				t.Errorf("node %v has no %q", n["name"], key)
			}
		}
		if _, ok := n["labels"].(map[string]any); !ok {
			t.Errorf("node %v: labels %v, want an object even when empty", n["name"], n["labels"])
		}
	}
	n1 := nodes[0]
	if n1["name"] != "n1" || n1["address"] != "10.0.0.11:7701" || n1["status"] != "ready" || n1["containers"] != 3.0 {
		t.Errorf("n1 = %v", n1)
	}
	if got := n1["labels"].(map[string]any)["zone"]; got != "a" {
		t.Errorf("n1 label zone = %v, want a", got)
	}
	if got := n1["capacity"].(map[string]any)["milli_cpu"]; got != 4000.0 {
		t.Errorf("n1 capacity milli_cpu = %v, want 4000", got)
	}
	if got := n1["versions"].(map[string]any)["criu"]; got != "4.2.1" {
		t.Errorf("n1 criu version = %v, want 4.2.1", got)
	}
	if nodes[1]["status"] != "cordoned" {
		t.Errorf("n2 status %v, want cordoned", nodes[1]["status"])
	}
}

func TestClusterStatusJSONShape(t *testing.T) {
	addr := startCluster(t, sampleCluster())
	out, _, err := runCLI(t, "--addr", addr, "cluster", "status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]json.RawMessage
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("cluster status -o json is not an object: %v\n%s", err, out)
	}
	if keys := slices.Sorted(maps.Keys(v)); !slices.Equal(keys, []string{"leader", "peers"}) {
		t.Fatalf("keys %v, want exactly leader and peers", keys)
	}
	var leader string
	var peers []map[string]any
	if err := json.Unmarshal(v["leader"], &leader); err != nil || leader != "s1" {
		t.Errorf("leader %s (%v), want \"s1\"", v["leader"], err)
	}
	if err := json.Unmarshal(v["peers"], &peers); err != nil || len(peers) != 3 {
		t.Fatalf("peers %s (%v), want a list of three", v["peers"], err)
	}
	want := []string{"address", "applied_index", "id", "lag", "leader", "voter"}
	for _, p := range peers[:2] {
		if keys := slices.Sorted(maps.Keys(p)); !slices.Equal(keys, want) {
			t.Errorf("peer keys %v, want %v", keys, want)
		}
	}
	if p := peers[1]; p["id"] != "s2" || p["voter"] != true || p["leader"] != false || p["applied_index"] != 118.0 || p["lag"] != 2.0 {
		t.Errorf("peer s2 = %v", p)
	}
	if p := peers[0]; p["leader"] != true {
		t.Errorf("peer s1 = %v, want the leader", p)
	}
	if peers[2]["error"] != "connection refused" {
		t.Errorf("peer s3 = %v, want its error", peers[2])
	}
}

func TestRunDryRunExplainsThePlacement(t *testing.T) {
	placement := &pb.Placement{Node: "n2",
		Candidates: []*pb.PlacementCandidate{
			{Node: "n2", Score: 0.82, Parts: []*pb.ScorePart{{Name: "binpack", Value: 0.7}, {Name: "image", Value: 0.12}}},
			{Node: "n1", Score: 0.5, Parts: []*pb.ScorePart{{Name: "binpack", Value: 0.5}}},
		},
		Rejected: []*pb.PlacementRejection{
			{Node: "n3", Filter: "capacity", Reason: "needs 2 CPUs, 1 CPU free"},
			{Node: "n4", Filter: "status", Reason: "node is cordoned"},
		}}
	tests := []struct {
		name      string
		placement *pb.Placement
		json      bool
		want      []string
		wantErr   error
	}{
		{name: "text", placement: placement, want: []string{
			"would run on n2\n", "CANDIDATE  SCORE  PARTS", "n2         0.820  binpack=0.700 image=0.120", "n1         0.500  binpack=0.500",
			"REJECTED  FILTER    REASON", "n3        capacity  needs 2 CPUs, 1 CPU free", "n4        status    node is cordoned"}},
		{name: "no node fits", placement: &pb.Placement{Rejected: placement.Rejected}, wantErr: errNoNodeFits,
			want: []string{"would run nowhere", "n3        capacity  needs 2 CPUs, 1 CPU free", "node is cordoned"}},
		{name: "json", placement: placement, json: true, want: []string{`"node": "n2"`, `"score": 0.82`, `"name": "image"`,
			`"filter": "capacity"`, `"reason": "node is cordoned"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			f.run = &pb.RunResponse{Placement: tt.placement}
			addr := startCluster(t, f)
			args := []string{"--addr", addr, "run", "--dry-run", "--constraint", "zone=a", "busybox"}
			if tt.json {
				args = append(args, "-o", "json")
			}
			out, _, err := runCLI(t, args...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("run --dry-run: %v, want %v", err, tt.wantErr)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output does not contain %q:\n%s", w, out)
				}
			}
			if tt.json {
				var v placementView
				if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Rejected) != 2 || len(v.Candidates[0].Parts) != 2 {
					t.Errorf("JSON %s (%v), want the placement", out, err)
				}
			}
			req := f.requests()[0].req.(*pb.RunRequest)
			if !req.GetDryRun() || !slices.Equal(req.GetConstraints(), []string{"zone=a"}) {
				t.Errorf("request %v, want a dry run with the constraint", req)
			}
		})
	}
}

// TestPsJSONKeepsTheAgentKeys: a script written against one agent's `ps
// -o json` reads a cluster's alike, with the node filled in.
func TestPsJSONKeepsTheAgentKeys(t *testing.T) {
	isolateCLI(t)
	c := webContainer()
	cluster := serveCluster(t, &fakeCluster{containers: []*pb.Container{c}}, nil)
	agentOnly := proto.Clone(c).(*pb.Container)
	agentOnly.Node = "" // whatever the agent says, the cluster fills it
	agent := serveListAgent(t, agentOnly)
	keys := func(args ...string) ([]string, []map[string]any) {
		out, _, err := runCLI(t, append(args, "ps", "-o", "json")...)
		if err != nil {
			t.Fatal(err)
		}
		var views []map[string]any
		if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 1 {
			t.Fatalf("ps -o json: %v\n%s", err, out)
		}
		return slices.Sorted(maps.Keys(views[0])), views
	}
	clusterKeys, views := keys("--addr", cluster)
	agentKeys, _ := keys("--agent", agent)
	if !slices.Contains(agentKeys, "node") {
		agentKeys = slices.Sorted(slices.Values(append(agentKeys, "node")))
	}
	if !slices.Equal(clusterKeys, agentKeys) {
		t.Errorf("cluster ps keys %v, agent ps keys %v", clusterKeys, agentKeys)
	}
	if views[0]["node"] != "n1" || views[0]["name"] != "web" || views[0]["state"] != "running" {
		t.Errorf("cluster ps = %v, want web running on n1", views[0])
	}
}

func TestImageImportToANode(t *testing.T) {
	tarball := filepath.Join(t.TempDir(), "busybox.tar")
	data := bytes.Repeat([]byte("layer"), 100_000) // several chunks
	if err := os.WriteFile(tarball, data, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantNode string
	}{
		{name: "--node", args: []string{"--node", "n1"}, wantNode: "n1"},
		{name: "the scheduler picks", wantNode: "n2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			addr := startCluster(t, f)
			args := append([]string{"--addr", addr, "image", "import", tarball, "--name", "busybox"}, tt.args...)
			out, stderr, err := runCLI(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			header := f.requests()[0].req.(*pb.ClusterImportImageHeader)
			want := &pb.ClusterImportImageHeader{Node: strings.TrimPrefix(strings.Join(tt.args, "="), "--node="),
				Image: &pb.ImportImageHeader{Name: "busybox", Size: int64(len(data))}}
			if !proto.Equal(header, want) {
				t.Errorf("header %v, want %v", header, want)
			}
			if !bytes.Equal(f.imported, data) {
				t.Errorf("the scheduler received %d bytes, want the tarball's %d", len(f.imported), len(data))
			}
			if !strings.Contains(out, "imported busybox") || !strings.HasSuffix(out, " on node "+tt.wantNode+"\n") {
				t.Errorf("output %q, want the image and its node %s", out, tt.wantNode)
			}
			if !strings.Contains(stderr, "uploading") {
				t.Errorf("stderr %q shows no progress", stderr)
			}
		})
	}
}

func TestSnapshotSave(t *testing.T) {
	tests := []struct {
		name string
		// existing is the file's content before; nil: no file.
		existing []byte
		force    bool
		failMid  bool
		// wantErr is part of the error; empty for success.
		wantErr string
		// wantCall: the scheduler is asked for a snapshot.
		wantCall bool
	}{
		{name: "new file", wantCall: true},
		{name: "refuses to overwrite", existing: []byte("precious"), wantErr: "--force"},
		{name: "--force replaces", existing: []byte("old"), force: true, wantCall: true},
		{name: "a failed stream leaves nothing", failMid: true, wantErr: "disk full on the leader", wantCall: true},
		{name: "a failed stream keeps the old file", existing: []byte("old"), force: true, failMid: true, wantErr: "disk full", wantCall: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			if tt.failMid {
				f.snapshotErr = status.Error(codes.Internal, "disk full on the leader")
			}
			addr := startCluster(t, f)
			dir := t.TempDir()
			path := filepath.Join(dir, "state.snap")
			if tt.existing != nil {
				if err := os.WriteFile(path, tt.existing, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			args := []string{"--addr", addr, "cluster", "snapshot", "save", path}
			if tt.force {
				args = append(args, "--force")
			}
			out, _, err := runCLI(t, args...)
			if (len(f.requests()) == 1) != tt.wantCall {
				t.Errorf("calls %v, want a snapshot asked for: %v", f.requests(), tt.wantCall)
			}
			got, readErr := os.ReadFile(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("snapshot save: %v, want an error saying %q", err, tt.wantErr)
				}
				if tt.existing == nil && readErr == nil {
					t.Errorf("a failed save left %s", path)
				}
				if tt.existing != nil && !bytes.Equal(got, tt.existing) {
					t.Errorf("a failed save changed %s to %q", path, got)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, f.snapshot) {
					t.Errorf("the file holds %d bytes, want the snapshot's %d", len(got), len(f.snapshot))
				}
				if st, _ := os.Stat(path); st.Mode().Perm() != snapshotFileMode {
					t.Errorf("mode %#o, want %#o", st.Mode().Perm(), snapshotFileMode)
				}
				if !strings.Contains(out, "saved the cluster state to "+path) {
					t.Errorf("output %q", out)
				}
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if e.Name() != "state.snap" {
					t.Errorf("left behind: %s", e.Name())
				}
			}
		})
	}
}

func TestSnapshotRestoreSendsTheFile(t *testing.T) {
	f := sampleCluster()
	addr := startCluster(t, f)
	path := filepath.Join(t.TempDir(), "state.snap")
	data := bytes.Repeat([]byte("snap"), 200_000)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "--addr", addr, "cluster", "snapshot", "restore", path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.restored, data) {
		t.Errorf("the scheduler received %d bytes, want %d", len(f.restored), len(data))
	}
	if !strings.Contains(out, "raft index 42") {
		t.Errorf("output %q, want the snapshot's index", out)
	}
}

func TestEventsAndAuditJSON(t *testing.T) {
	addr := startCluster(t, sampleCluster())
	out, _, err := runCLI(t, "--addr", addr, "events", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("events -o json printed %d lines, want one per event:\n%s", len(lines), out)
	}
	var e eventView
	if err := json.Unmarshal([]byte(lines[0]), &e); err != nil || e.Index != 6 || e.Kind != "container.placed" || e.Container != "web" {
		t.Errorf("first event line %s (%v)", lines[0], err)
	}
	out, _, err = runCLI(t, "--addr", addr, "audit", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var records []auditView
	if err := json.Unmarshal([]byte(out), &records); err != nil || len(records) != 1 || records[0].Who != "alice" || records[0].Outcome != "ok" {
		t.Errorf("audit -o json = %s (%v)", out, err)
	}
}

// TestSchedulerErrorsAreItsMessage: the scheduler's refusal reaches the
// operator as it said it, not as a gRPC status.
func TestSchedulerErrorsAreItsMessage(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{name: "failed precondition", err: status.Error(codes.FailedPrecondition, "node n9 is not registered")},
		{name: "permission denied", err: status.Error(codes.PermissionDenied, "a viewer cannot cordon nodes")},
		{name: "unavailable from the scheduler itself", err: status.Error(codes.Unavailable, "no leader: 1 of 3 voters up")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			f.err = tt.err
			addr := startCluster(t, f)
			_, _, err := runCLI(t, "--addr", addr, "node", "cordon", "n9")
			if want := status.Convert(tt.err).Message(); err == nil || err.Error() != want {
				t.Errorf("error %v, want exactly %q", err, want)
			}
		})
	}
}

// TestCommandsOfTheOtherMode: a command or flag of one mode, used in the
// other, says which and what to give, and calls nothing.
func TestCommandsOfTheOtherMode(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{name: "checkpoint in a cluster", args: []string{"--addr", unreachableAgent, "checkpoint", "web"},
			want: []string{"`godwit checkpoint` talks to one agent: give --agent ADDR (cluster checkpoints come with migrations)", "(from --addr)"}},
		{name: "checkpoint ls in a cluster", args: []string{"--addr", unreachableAgent, "checkpoint", "ls"},
			want: []string{"`godwit checkpoint ls` talks to one agent", "cluster checkpoints come with migrations"}},
		{name: "exec in a cluster", args: []string{"--addr", unreachableAgent, "exec", "web", "--", "ls"},
			want: []string{"talks to one agent", "godwit inspect NAME"}},
		{name: "node info in a cluster", args: []string{"--addr", unreachableAgent, "node", "info"},
			want: []string{"talks to one agent", "godwit node inspect NAME"}},
		{name: "node ls on an agent", args: []string{"--agent", unreachableAgent, "node", "ls"},
			want: []string{"`godwit node ls` talks to the cluster: give --addr ADDR", "the agent at " + unreachableAgent + " (from --agent)"}},
		{name: "cluster status on an agent", args: []string{"--agent", unreachableAgent, "cluster", "status"},
			want: []string{"talks to the cluster", "godwit context use NAME"}},
		{name: "events on an agent", args: []string{"--agent", unreachableAgent, "events"}, want: []string{"talks to the cluster"}},
		{name: "run --node on an agent", args: []string{"--agent", unreachableAgent, "run", "--node", "n1", "--dry-run", "busybox"},
			want: []string{"--node, --dry-run ask for the cluster: give --addr ADDR"}},
		{name: "image ls --node on an agent", args: []string{"--agent", unreachableAgent, "image", "ls", "--node", "n1"},
			want: []string{"--node asks for the cluster"}},
		{name: "image import --node on an agent", args: []string{"--agent", unreachableAgent, "image", "import", "x.tar", "--node", "n1"},
			want: []string{"--node asks for the cluster"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			isolateCLI(t)
			_, _, err := runCLI(t, tt.args...)
			if err == nil {
				t.Fatal("succeeded, want refused")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "cannot reach") {
				t.Errorf("it called out before refusing: %v", err)
			}
		})
	}
}

func TestASchedulerThatCannotBeReachedHandsTheCallToTheNext(t *testing.T) {
	addr := startCluster(t, sampleCluster())
	// A port nothing listens on: the first scheduler is down.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := l.Addr().String()
	l.Close()
	out, _, err := runCLI(t, "--addr", down+","+addr, "node", "ls")
	if err != nil {
		t.Fatalf("node ls with the first scheduler down: %v", err)
	}
	if !strings.Contains(out, "n1") {
		t.Errorf("node ls = %q, want the nodes from the second scheduler", out)
	}
	// Every scheduler down: the error names the last one tried.
	if _, _, err := runCLI(t, "--addr", down+","+down, "node", "ls"); err == nil || !strings.Contains(err.Error(), "cannot reach the scheduler") {
		t.Errorf("node ls with every scheduler down: %v, want cannot reach", err)
	}
}
