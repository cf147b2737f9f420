package main

import (
	"encoding/json"
	"net"
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

const sampleMigrationID = "m-0123456789ab"

// sampleMigration is the record of web's move from n1 to n2 by pre-copy,
// ended in phase end (done or aborted).
func sampleMigration(end string) *pb.Migration {
	at := func(ms int64) *timestamppb.Timestamp {
		return timestamppb.New(sampleDay.AsTime().Add(time.Duration(ms) * time.Millisecond))
	}
	m := &pb.Migration{
		Id: sampleMigrationID, Container: "web", ContainerId: webID, Source: "n1", Destination: "n2", Strategy: "pre-copy",
		Phase: end, Generation: 4, RequestedBy: "alice (operator)", Reason: "operator",
		WhyDestination: "placement: best score 0.820 (binpack=0.700 image=0.120)",
		WhyStrategy:    "auto: the first that both hosts support",
		Phases: []*pb.MigrationPhase{
			{Phase: "prepare", Started: at(0), DurationMs: 10},
			{Phase: "sync", Started: at(10), DurationMs: 200},
			{Phase: "transfer", Started: at(210), DurationMs: 3000},
			{Phase: "restore", Started: at(3210), DurationMs: 80},
			{Phase: "ready", Started: at(3290), DurationMs: 5},
			{Phase: "committed", Started: at(3295), DurationMs: 2},
			{Phase: end, Started: at(3297)},
		},
		Stats:   &pb.MigrationStats{DowntimeMs: 120, TotalMs: 3297, Bytes: 3 << 20},
		Created: sampleDay, Updated: at(3297),
	}
	if end == "aborted" {
		m.Phases = append(m.Phases[:3:3], &pb.MigrationPhase{Phase: end, Started: at(3210)})
		m.Error = "destination n2 ran out of disk"
		m.Stats = &pb.MigrationStats{DowntimeMs: 40, TotalMs: 3210, Bytes: 1 << 20}
	}
	return m
}

// started is Migrate's answer: the record as the leader created it.
func startedMigration() *pb.Migration {
	return &pb.Migration{Id: sampleMigrationID, Container: "web", ContainerId: webID, Source: "n1", Destination: "n2",
		Strategy: "pre-copy", Phase: "prepare", WhyDestination: "placement: best score 0.820", WhyStrategy: "auto: the first that both hosts support"}
}

// progressTo is a watch's messages: the phases given, a transfer with
// bytes, and the last message with the record.
func progressTo(end *pb.Migration, phases ...string) []*pb.MigrationProgress {
	var out []*pb.MigrationProgress
	for _, ph := range phases {
		out = append(out, &pb.MigrationProgress{Phase: ph})
		if ph == "transfer" {
			out = append(out, &pb.MigrationProgress{Phase: ph, BytesDone: 1 << 20, BytesTotal: 3 << 20, Throughput: 1 << 20, EtaMs: 2000})
		}
	}
	if end != nil {
		out = append(out, &pb.MigrationProgress{Phase: end.GetPhase(), Done: true, Migration: end})
	}
	return out
}

// migratingCluster is a fake cluster whose leader starts web's migration
// and streams it to its end, as watches says.
func migratingCluster(watches ...fakeWatch) *fakeCluster {
	f := sampleCluster()
	f.migration = startedMigration()
	f.watches = watches
	return f
}

// fastReattach shortens the waits between re-attaching to a broken watch.
func fastReattach(t *testing.T) {
	t.Helper()
	attempts, delay, maxDelay := watchReattachAttempts, watchReattachDelay, watchReattachMaxDelay
	watchReattachAttempts, watchReattachDelay, watchReattachMaxDelay = 3, 20*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() { watchReattachAttempts, watchReattachDelay, watchReattachMaxDelay = attempts, delay, maxDelay })
}

// methods lists the methods called, in order.
func methods(calls []fakeCall) []string {
	out := make([]string, 0, len(calls))
	for _, c := range calls {
		out = append(out, c.method)
	}
	return out
}

func TestClusterMigrateFollowsTheMigrationToItsEnd(t *testing.T) {
	tests := []struct {
		name string
		args []string
		req  *pb.MigrateRequest
		// strategy is what the leader chose, and why.
		strategy, why string
		// stdout and stderr are parts of each.
		stdout, stderr []string
	}{
		{name: "to a node, named strategy", args: []string{"web", "--to", "n2", "--strategy", "pre-copy"},
			req:      &pb.MigrateRequest{Container: "web", To: "n2", Strategy: "pre-copy"},
			strategy: "pre-copy", why: "asked for",
			stdout: []string{
				"migrated web from n1 to n2 (" + sampleMigrationID + "): downtime 120ms, total 3.3s, 3.0 MiB sent, strategy pre-copy (asked for)\n",
				"phases: prepare 10ms, sync 200ms, transfer 3s, restore 80ms, ready 5ms, committed 2ms\n",
				"destination n2: placement: best score 0.820 (binpack=0.700 image=0.120)\n",
				"strategy pre-copy: asked for\n",
			},
			stderr: []string{
				"migrate web: migration " + sampleMigrationID + " from node n1 to node n2, strategy pre-copy\n",
				"migrate web: destination n2: placement: best score 0.820\n",
				"migrate web: strategy pre-copy: asked for\n",
				"migrate web: prepare\n", "migrate web: sync\n", "migrate web: transfer\n", "migrate web: restore\n",
			}},
		{name: "placement picks, auto by default", args: []string{"web"},
			req:      &pb.MigrateRequest{Container: "web", Strategy: "auto"},
			strategy: "pre-copy",
			stdout:   []string{"migrated web from n1 to n2"}},
		{name: "post-copy is warned about", args: []string{"web", "--minimize-downtime"},
			req:      &pb.MigrateRequest{Container: "web", Strategy: "auto", MinimizeDowntime: true},
			strategy: "post-copy",
			stdout:   []string{"strategy post-copy (auto)"},
			stderr:   []string{"migrate web: warning: post-copy runs the container on node n2 before all its memory has arrived: until the last page is in, losing either node (n1 or n2) loses the container\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			end := sampleMigration("done")
			end.Strategy = tt.strategy
			f := migratingCluster(fakeWatch{progress: progressTo(end, "prepare", "sync", "transfer", "restore", "ready", "committed")})
			f.migration.Strategy = tt.strategy
			if tt.why != "" {
				end.WhyStrategy, f.migration.WhyStrategy = tt.why, tt.why
			}
			addr := startCluster(t, f)
			stdout, stderr, err := runCLI(t, append([]string{"--addr", addr, "migrate"}, tt.args...)...)
			if err != nil {
				t.Fatalf("migrate: %v\nstderr:\n%s", err, stderr)
			}
			calls := f.requests()
			if got, want := methods(calls), []string{"Migrate", "WatchMigration"}; !slices.Equal(got, want) {
				t.Fatalf("calls %v, want %v", got, want)
			}
			if !proto.Equal(calls[0].req, tt.req) {
				t.Errorf("Migrate request %v, want %v", calls[0].req, tt.req)
			}
			if !proto.Equal(calls[1].req, &pb.MigrationRef{Id: sampleMigrationID}) {
				t.Errorf("WatchMigration request %v, want the migration's ID", calls[1].req)
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
			if warned := strings.Contains(stderr, "warning: post-copy"); warned != (tt.strategy == "post-copy") {
				t.Errorf("post-copy warning shown: %v, for strategy %s:\n%s", warned, tt.strategy, stderr)
			}
		})
	}
}

func TestClusterMigrateJSONIsTheRecord(t *testing.T) {
	f := migratingCluster(fakeWatch{progress: progressTo(sampleMigration("done"), "prepare", "transfer")})
	addr := startCluster(t, f)
	stdout, stderr, err := runCLI(t, "--addr", addr, "migrate", "web", "-o", "json")
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, stderr)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(stdout), &v); err != nil {
		t.Fatalf("stdout is not one JSON object: %v\n%s", err, stdout)
	}
	want := map[string]any{"id": sampleMigrationID, "container": "web", "container_id": webID, "from": "n1", "to": "n2",
		"strategy": "pre-copy", "phase": "done", "generation": 4.0, "downtime_ms": 120.0, "total_ms": 3297.0, "bytes_sent": float64(3 << 20),
		"requested_by": "alice (operator)", "reason": "operator", "strategy_reason": "auto: the first that both hosts support",
		"destination_reason": "placement: best score 0.820 (binpack=0.700 image=0.120)"}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("%s = %v, want %v", k, v[k], w)
		}
	}
	phases, _ := v["phases"].(map[string]any)
	if len(phases) != 6 || phases["transfer"] != 3000.0 {
		t.Errorf("phases %v, want the six that ended, transfer 3000 ms", v["phases"])
	}
	timeline, _ := v["timeline"].([]any)
	if len(timeline) != 7 {
		t.Fatalf("timeline %v, want 7 phases", v["timeline"])
	}
	if first, _ := timeline[0].(map[string]any); first["phase"] != "prepare" || first["started"] == nil || first["duration_ms"] != 10.0 {
		t.Errorf("timeline[0] = %v, want prepare with its start and 10 ms", first)
	}
}

func TestClusterMigrateDetach(t *testing.T) {
	tests := []struct {
		name string
		json bool
	}{
		{name: "text"},
		{name: "json", json: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := migratingCluster()
			addr := startCluster(t, f)
			args := []string{"--addr", addr, "migrate", "web", "--to", "n2", "--detach"}
			if tt.json {
				args = append(args, "-o", "json")
			}
			stdout, stderr, err := runCLI(t, args...)
			if err != nil {
				t.Fatalf("migrate --detach: %v\n%s", err, stderr)
			}
			if got := methods(f.requests()); !slices.Equal(got, []string{"Migrate"}) {
				t.Errorf("calls %v, want Migrate alone: --detach does not follow", got)
			}
			if tt.json {
				var v clusterMigrationView
				if err := json.Unmarshal([]byte(stdout), &v); err != nil || v.ID != sampleMigrationID || v.Phase != "prepare" {
					t.Errorf("stdout %q (%v), want the record as JSON", stdout, err)
				}
			} else if stdout != sampleMigrationID+"\n" {
				t.Errorf("stdout %q, want the ID alone", stdout)
			}
			if !strings.Contains(stderr, "godwit migration inspect "+sampleMigrationID) {
				t.Errorf("stderr does not say how to follow it:\n%s", stderr)
			}
		})
	}
}

// TestClusterMigrateReattaches: a progress stream that ends before the
// migration (the leader failed over) is followed again, and the end is
// reported as usual.
func TestClusterMigrateReattaches(t *testing.T) {
	done := sampleMigration("done")
	open := sampleMigration("done")
	open.Phase, open.Phases, open.Stats = "transfer", open.Phases[:3], &pb.MigrationStats{}
	// stillOpen is how a scheduler that stopped driving the migration
	// ends its stream: with the open record.
	stillOpen := &pb.MigrationProgress{Phase: "transfer", Migration: open}
	const (
		lost   = "lost the progress stream"
		resume = "the scheduler stopped streaming migration " + sampleMigrationID + ", still in phase transfer; following it again"
	)
	tests := []struct {
		name    string
		watches []fakeWatch
		// note is what stderr says about it; unsaid must not be said.
		note, unsaid string
	}{
		{name: "unavailable mid-stream", watches: []fakeWatch{
			{progress: progressTo(nil, "prepare", "transfer"), err: status.Error(codes.Unavailable, "leader lost")},
			{progress: progressTo(done, "transfer", "restore", "committed")},
		}, note: lost + " (leader lost); re-attaching to migration " + sampleMigrationID + " (1 of 3)", unsaid: "2 of 3"},
		{name: "stream ends without a message", watches: []fakeWatch{
			{},
			{progress: progressTo(done, "transfer", "restore")},
		}, note: lost + " (the progress stream ended without a message)"},
		{name: "first re-attach refused, second goes through", watches: []fakeWatch{
			{progress: progressTo(nil, "prepare"), err: status.Error(codes.Unavailable, "leader lost")},
			{err: status.Error(codes.Unavailable, "no leader")},
			{progress: progressTo(done, "restore")},
		}, note: lost + " (no leader); re-attaching to migration " + sampleMigrationID + " (2 of 3)"},
		{name: "the scheduler ends the stream with the open record", watches: []fakeWatch{
			{progress: append(progressTo(nil, "prepare", "transfer"), stillOpen)},
			{progress: progressTo(done, "transfer", "restore")},
		}, note: resume, unsaid: lost},
		// More ends than watchReattachAttempts, none a failure: the
		// cluster still answers for the migration.
		{name: "ended again and again while the migration waits", watches: []fakeWatch{
			{progress: []*pb.MigrationProgress{stillOpen}}, {progress: []*pb.MigrationProgress{stillOpen}},
			{progress: []*pb.MigrationProgress{stillOpen}}, {progress: []*pb.MigrationProgress{stillOpen}},
			{progress: []*pb.MigrationProgress{stillOpen}},
			{progress: progressTo(done, "restore")},
		}, note: resume, unsaid: lost},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fastReattach(t)
			f := migratingCluster(tt.watches...)
			addr := startCluster(t, f)
			stdout, stderr, err := runCLI(t, "--addr", addr, "migrate", "web")
			if err != nil {
				t.Fatalf("migrate: %v\nstderr:\n%s", err, stderr)
			}
			var watches int
			for _, c := range f.requests() {
				if c.method == "WatchMigration" {
					watches++
					if !proto.Equal(c.req, &pb.MigrationRef{Id: sampleMigrationID}) {
						t.Errorf("WatchMigration %v, want the same migration", c.req)
					}
				}
			}
			if watches != len(tt.watches) {
				t.Errorf("%d WatchMigration calls, want %d", watches, len(tt.watches))
			}
			if n := strings.Count(stderr, tt.note); n != 1 {
				t.Errorf("stderr says %q %d times, want once:\n%s", tt.note, n, stderr)
			}
			if tt.unsaid != "" && strings.Contains(stderr, tt.unsaid) {
				t.Errorf("stderr says %q:\n%s", tt.unsaid, stderr)
			}
			if !strings.Contains(stdout, "migrated web from n1 to n2 ("+sampleMigrationID+"): downtime 120ms") {
				t.Errorf("stdout lacks the statistics:\n%s", stdout)
			}
		})
	}
}

// TestClusterMigrateReattachesAfterTheSchedulerDied: the scheduler serving
// the stream is killed mid-migration and one comes back at its address.
func TestClusterMigrateReattachesAfterTheSchedulerDied(t *testing.T) {
	fastReattach(t)
	isolateCLI(t)
	first := migratingCluster(fakeWatch{progress: progressTo(nil, "prepare", "transfer"), hang: true})
	first.watching = make(chan struct{}, 1)
	addr, stopFirst := serveClusterAt(t, first, "127.0.0.1:0")
	second := migratingCluster(fakeWatch{progress: progressTo(sampleMigration("done"), "restore", "committed")})
	go func() {
		<-first.watching
		stopFirst()
		serveClusterAt(t, second, addr)
	}()
	stdout, stderr, err := runCLI(t, "--addr", addr, "migrate", "web")
	if err != nil {
		t.Fatalf("migrate: %v\nstderr:\n%s", err, stderr)
	}
	if got := methods(second.requests()); !slices.Equal(got, []string{"WatchMigration"}) {
		t.Errorf("the new scheduler got %v, want WatchMigration alone", got)
	}
	if !strings.Contains(stderr, "lost the progress stream") || !strings.Contains(stderr, "migrate web: restore") {
		t.Errorf("stderr does not show the break and the progress after it:\n%s", stderr)
	}
	if !strings.Contains(stdout, "migrated web from n1 to n2") {
		t.Errorf("stdout lacks the statistics:\n%s", stdout)
	}
}

func TestClusterMigrateGivesUpAndSaysHowToFollow(t *testing.T) {
	fastReattach(t)
	f := migratingCluster(fakeWatch{err: status.Error(codes.Unavailable, "no leader")})
	addr := startCluster(t, f)
	_, stderr, err := runCLI(t, "--addr", addr, "migrate", "web")
	if err == nil {
		t.Fatal("migrate succeeded without ever seeing the end")
	}
	for _, w := range []string{"lost track of migration " + sampleMigrationID, "no leader", "godwit migration inspect " + sampleMigrationID} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	var watches int
	for _, c := range f.requests() {
		if c.method == "WatchMigration" {
			watches++
		}
	}
	if want := 1 + watchReattachAttempts; watches != want {
		t.Errorf("%d WatchMigration calls, want %d (the first and %d attempts)\n%s", watches, want, watchReattachAttempts, stderr)
	}
}

func TestClusterMigrateWatchRefusedIsNotRetried(t *testing.T) {
	fastReattach(t)
	f := migratingCluster(fakeWatch{err: status.Error(codes.PermissionDenied, "a viewer cannot watch migrations")})
	addr := startCluster(t, f)
	_, _, err := runCLI(t, "--addr", addr, "migrate", "web")
	if err == nil || !strings.Contains(err.Error(), "a viewer cannot watch migrations") {
		t.Fatalf("error %v, want the scheduler's refusal", err)
	}
	if got := methods(f.requests()); !slices.Equal(got, []string{"Migrate", "WatchMigration"}) {
		t.Errorf("calls %v, want one WatchMigration", got)
	}
}

func TestClusterMigrateAbortedFails(t *testing.T) {
	tests := []struct {
		name string
		json bool
	}{
		{name: "text"},
		{name: "json", json: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := migratingCluster(fakeWatch{progress: progressTo(sampleMigration("aborted"), "prepare", "transfer")})
			addr := startCluster(t, f)
			args := []string{"--addr", addr, "migrate", "web"}
			if tt.json {
				args = append(args, "-o", "json")
			}
			stdout, _, err := runCLI(t, args...)
			if err == nil {
				t.Fatal("an aborted migration succeeded")
			}
			for _, w := range []string{"migration " + sampleMigrationID + " of web from node n1 to node n2 was aborted in phase transfer: destination n2 ran out of disk",
				"godwit migration inspect " + sampleMigrationID} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(stdout, "migrated") {
				t.Errorf("stdout reports a move:\n%s", stdout)
			}
			if tt.json {
				var v clusterMigrationView
				if err := json.Unmarshal([]byte(stdout), &v); err != nil || v.Phase != "aborted" || v.Error == "" {
					t.Errorf("stdout %q (%v), want the aborted record as JSON", stdout, err)
				}
			}
		})
	}
}

// TestMigrateFlagsOfTheOtherMode: migrate refuses, before calling
// anything, flags that the target's mode does not understand.
func TestMigrateFlagsOfTheOtherMode(t *testing.T) {
	tests := []struct {
		name string
		// cluster: the target is a (fake) cluster, else an agent.
		cluster bool
		args    []string
		want    []string
	}{
		{name: "--resume in a cluster", cluster: true, args: []string{"--resume", "m-1"},
			want: []string{"--resume is for a migration between two agents", "godwit migration cancel ID", "(from --addr)"}},
		{name: "--id and --journal in a cluster", cluster: true, args: []string{"web", "--id", "m-1", "--journal", "/tmp"},
			want: []string{"--id, --journal are for a migration between two agents"}},
		{name: "--to with --from-agent", cluster: true, args: []string{"web", "--to", "n2", "--from-agent", unreachableAgent, "--to-agent", unreachableAgent2},
			want: []string{"--to is for a migration the cluster's leader drives", "drop one or the other"}},
		{name: "--to and --detach on an agent", args: []string{"web", "--to", "n2", "--detach"},
			want: []string{"--to, --detach ask for the cluster: give --addr ADDR"}},
		{name: "unknown strategy in a cluster", cluster: true, args: []string{"web", "--strategy", "teleport"},
			want: []string{`--strategy: unknown strategy "teleport"`}},
		{name: "--minimize-downtime with a named strategy in a cluster", cluster: true, args: []string{"web", "--strategy", "stream", "--minimize-downtime"},
			want: []string{"--minimize-downtime lets --strategy auto pick post-copy"}},
		{name: "no container in a cluster", cluster: true, args: []string{"--to", "n2"}, want: []string{"name one container to move"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := migratingCluster()
			addr := startCluster(t, f)
			target := []string{"--addr", addr}
			if !tt.cluster {
				target = []string{"--agent", unreachableAgent}
			}
			_, _, err := runCLI(t, append(append(target, "migrate"), tt.args...)...)
			if err == nil {
				t.Fatal("succeeded, want refused")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if calls := f.requests(); len(calls) > 0 {
				t.Errorf("calls %v made before refusing", methods(calls))
			}
			if strings.Contains(err.Error(), "cannot reach") {
				t.Errorf("it called out before refusing: %v", err)
			}
		})
	}
}

// serveClusterAt serves f in plaintext at addr (":0" ports: the kernel
// picks) and returns its address, and a stop that ends every call.
func serveClusterAt(t *testing.T, f *fakeCluster, addr string) (string, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Error(err)
		return addr, func() {}
	}
	srv := grpc.NewServer()
	pb.RegisterClusterServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv.Stop
}
