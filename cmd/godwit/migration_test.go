package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// runningMigration is db's move from n2 to n3, in its transfer.
func runningMigration() *pb.Migration {
	started := timestamppb.New(sampleDay.AsTime().Add(time.Hour))
	return &pb.Migration{Id: "m-00000000000b", Container: "db", ContainerId: strings.Repeat("d", 64), Source: "n2", Destination: "n3",
		Strategy: "stream", Phase: "transfer", Generation: 1, RequestedBy: "drain (scheduler)", Reason: "drain n2",
		Phases: []*pb.MigrationPhase{{Phase: "prepare", Started: started, DurationMs: 15}, {Phase: "transfer", Started: started}},
		Stats:  &pb.MigrationStats{}, Created: started}
}

func TestMigrationCommandsSendTheRightRequest(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		migration *pb.Migration
		method    string
		req       proto.Message
		// want are parts of standard output, in order.
		want []string
	}{
		{name: "ls", args: []string{"migration", "ls"}, method: "ListMigrations", req: &pb.ListMigrationsRequest{},
			want: []string{"ID", "CONTAINER", "FROM", "TO", "STRATEGY", "PHASE", "DOWNTIME", "AGE\n",
				sampleMigrationID, "web", "n1", "n2", "pre-copy", "done", "120ms", "days\n",
				"m-00000000000b", "db", "n2", "n3", "stream", "transfer", "-", "days\n"}},
		{name: "ls -a --limit", args: []string{"migration", "ls", "-a", "--limit", "5"}, method: "ListMigrations",
			req: &pb.ListMigrationsRequest{All: true, Limit: 5}, want: []string{sampleMigrationID}},
		{name: "inspect a finished one", args: []string{"migration", "inspect", sampleMigrationID}, migration: sampleMigration("done"),
			method: "InspectMigration", req: &pb.MigrationRef{Id: sampleMigrationID},
			want: []string{"id", sampleMigrationID, "container", "web (" + webID[:12] + ")", "from", "n1", "to", "n2",
				"strategy", "pre-copy", "phase", "done", "generation", "4", "requested by", "alice (operator)", "reason", "operator",
				"downtime", "120ms", "total", "3.3s", "bytes sent", "3.0 MiB",
				"why destination", "placement: best score 0.820 (binpack=0.700 image=0.120)",
				"why strategy", "auto: the first that both hosts support",
				"PHASE", "STARTED", "DURATION", "prepare", "10ms", "sync", "200ms", "transfer", ":00.210", "3s", "restore", "80ms",
				"ready", "5ms", "committed", "2ms", "done", "-\n"}},
		{name: "inspect an aborted one", args: []string{"migration", "inspect", sampleMigrationID}, migration: sampleMigration("aborted"),
			method: "InspectMigration", req: &pb.MigrationRef{Id: sampleMigrationID},
			want: []string{"phase", "aborted", "error", "destination n2 ran out of disk", "transfer", "3s", "aborted", "-\n"}},
		{name: "inspect a running one", args: []string{"migration", "inspect", "m-00000000000b"}, migration: runningMigration(),
			method: "InspectMigration", req: &pb.MigrationRef{Id: "m-00000000000b"},
			want: []string{"reason", "drain n2", "downtime", "-", "prepare", "15ms", "transfer", "running for "}},
		{name: "cancel, aborted at once", args: []string{"migration", "cancel", sampleMigrationID}, migration: sampleMigration("aborted"),
			method: "CancelMigration", req: &pb.MigrationRef{Id: sampleMigrationID},
			want: []string{"cancelled migration " + sampleMigrationID + ": web stays on node n1\n"}},
		{name: "cancel, aborting", args: []string{"migration", "cancel", "m-00000000000b"}, migration: runningMigration(),
			method: "CancelMigration", req: &pb.MigrationRef{Id: "m-00000000000b"},
			want: []string{"cancelling migration m-00000000000b (in phase transfer)", "db stays on node n2", "godwit migration inspect m-00000000000b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sampleCluster()
			f.migration = tt.migration
			// Newest first, as a scheduler might list them: ls sorts.
			f.migrations = []*pb.Migration{runningMigration(), sampleMigration("done")}
			addr := startCluster(t, f)
			out, _, err := runCLI(t, append([]string{"--addr", addr}, tt.args...)...)
			if err != nil {
				t.Fatalf("godwit %s: %v", strings.Join(tt.args, " "), err)
			}
			calls := f.requests()
			if len(calls) != 1 || calls[0].method != tt.method {
				t.Fatalf("calls %v, want one %s", methods(calls), tt.method)
			}
			if !proto.Equal(calls[0].req, tt.req) {
				t.Errorf("request %v, want %v", calls[0].req, tt.req)
			}
			rest := out
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q after what came before, in:\n%s", w, out)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestMigrationJSON(t *testing.T) {
	f := sampleCluster()
	f.migration = sampleMigration("done")
	f.migrations = []*pb.Migration{sampleMigration("done"), runningMigration()}
	addr := startCluster(t, f)

	out, _, err := runCLI(t, "--addr", addr, "migration", "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var list []clusterMigrationView
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("ls -o json is not an array of records: %v\n%s", err, out)
	}
	if len(list) != 2 || list[0].ID != sampleMigrationID || list[1].ID != "m-00000000000b" || list[1].Phase != "transfer" {
		t.Errorf("ls -o json = %+v, want both records, oldest first", list)
	}
	if len(list) == 2 && len(list[1].Phases) != 1 {
		t.Errorf("a running migration's phases %v, want prepare alone (transfer has not ended)", list[1].Phases)
	}

	out, _, err = runCLI(t, "--addr", addr, "migration", "inspect", sampleMigrationID, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("inspect -o json is not an object: %v\n%s", err, out)
	}
	for _, k := range []string{"id", "container", "container_id", "from", "to", "strategy", "strategy_reason", "destination_reason",
		"phase", "generation", "requested_by", "reason", "downtime_ms", "total_ms", "bytes_sent", "phases", "timeline", "created", "updated"} {
		if _, ok := v[k]; !ok {
			t.Errorf("inspect -o json lacks %q: %s", k, out)
		}
	}
}

func TestMigrationCommandsNeedACluster(t *testing.T) {
	for _, args := range [][]string{{"migration", "ls"}, {"migration", "inspect", "m-1"}, {"migration", "cancel", "m-1"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			isolateCLI(t)
			_, _, err := runCLI(t, append([]string{"--agent", unreachableAgent}, args...)...)
			want := "`godwit " + strings.Join(args[:2], " ") + "` talks to the cluster: give --addr ADDR"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("error %v, want %q", err, want)
			}
		})
	}
}
