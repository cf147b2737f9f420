package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/godwit/godwit/migrate"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

func TestParseStrategies(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []migrate.Strategy
		wantErr bool
	}{
		{"empty means all", "", nil, false},
		{"measured in a fixed order, once each", "post-copy, stop-copy,stream,stop-copy",
			[]migrate.Strategy{migrate.StopCopy, migrate.Stream, migrate.PostCopy}, false},
		{"auto is refused", "auto", nil, true},
		{"unknown", "live", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStrategies(tc.in)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Errorf("parseStrategies(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestPickStrategies(t *testing.T) {
	info := func(supported map[migrate.Strategy]string) *pb.NodeInfoResponse {
		r := &pb.NodeInfoResponse{}
		for _, s := range strategyOrder {
			why, ok := supported[s]
			r.Strategies = append(r.Strategies, &pb.StrategySupport{Name: string(s), Supported: !ok, Reason: why})
		}
		return r
	}
	noSoftDirty := map[migrate.Strategy]string{migrate.PreCopy: "no soft-dirty"}
	tests := []struct {
		name    string
		want    []migrate.Strategy
		a, b    *pb.NodeInfoResponse
		use     []migrate.Strategy
		leftWhy []string
	}{
		{"all that both support", nil, info(noSoftDirty), info(noSoftDirty),
			[]migrate.Strategy{migrate.StopCopy, migrate.Stream, migrate.PostCopy},
			[]string{"neither host supports it: no soft-dirty"}},
		{"one host lacks one", nil, info(nil), info(map[migrate.Strategy]string{migrate.PostCopy: "no userfaultfd"}),
			[]migrate.Strategy{migrate.StopCopy, migrate.Stream, migrate.PreCopy},
			[]string{"host b does not support it: no userfaultfd"}},
		{"only those asked for", []migrate.Strategy{migrate.Stream, migrate.PreCopy}, info(noSoftDirty), info(nil),
			[]migrate.Strategy{migrate.Stream},
			[]string{"host a does not support it: no soft-dirty"}},
		{"an agent that reports none", nil, &pb.NodeInfoResponse{}, info(nil), nil,
			[]string{"host a does not support it: not reported by the agent", "host a does not support it: not reported by the agent",
				"host a does not support it: not reported by the agent", "host a does not support it: not reported by the agent"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			use, left := pickStrategies(tc.want, tc.a, tc.b)
			var why []string
			for _, u := range left {
				why = append(why, u.why)
			}
			if !slices.Equal(use, tc.use) || !slices.Equal(why, tc.leftWhy) {
				t.Errorf("pickStrategies = %v, left %v; want %v, left %v", use, why, tc.use, tc.leftWhy)
			}
		})
	}
}

func TestFindPagesLine(t *testing.T) {
	log := filepath.Join(t.TempDir(), "agent.log")
	lines := `=== devcluster: agent b starting ===
time=2026-11-29T04:00:00.000Z level=INFO msg="memory pages received from the source" migration=bmig-gst64-10 bytes=1 pages_time=1s
time=2026-11-29T04:00:01.000Z level=INFO msg="memory pages received from the source" migration=bmig-gst64-1 bytes=67174400 pages_time=312ms
time=2026-11-29T04:00:02.000Z level=INFO msg="every memory page fetched from the source" migration=bmig-gpc64-1 bytes=67174400 pages_time=1.5s
time=2026-11-29T04:00:03.000Z level=INFO msg="every memory page fetched from the source" migration=bmig-gpc64-2 bytes=12
`
	if err := os.WriteFile(log, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		msg, id string
		bytes   int64
		took    time.Duration
		found   bool
		wantErr bool
	}{
		{"stream, the ID matched whole", pagesLogLine[migrate.Stream], "bmig-gst64-1", 67174400, 312 * time.Millisecond, true, false},
		{"post-copy", pagesLogLine[migrate.PostCopy], "bmig-gpc64-1", 67174400, 1500 * time.Millisecond, true, false},
		{"not logged yet", pagesLogLine[migrate.PostCopy], "bmig-gpc64-3", 0, 0, false, false},
		{"a line without the time", pagesLogLine[migrate.PostCopy], "bmig-gpc64-2", 0, 0, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			bytes, took, found, err := findPagesLine(log, tc.msg, tc.id)
			if bytes != tc.bytes || took != tc.took || found != tc.found || (err != nil) != tc.wantErr {
				t.Errorf("findPagesLine(%s) = %d, %v, found %v, %v; want %d, %v, found %v, error %v",
					tc.id, bytes, took, found, err, tc.bytes, tc.took, tc.found, tc.wantErr)
			}
		})
	}
}
