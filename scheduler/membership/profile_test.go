package membership

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// docSizes are the pool sizes doc.go tabulates.
var docSizes = []int{3, 10, 100, 1000}

// timingTable renders p's failure-detection timings as doc.go shows them.
func timingTable(p Profile) []string {
	lines := []string{fmt.Sprintf("%-7s  %-8s  %-11s  %-11s  %-8s  %s", "members", "probe", "suspect min", "suspect max", "typical", "within")}
	for _, n := range docSizes {
		t := p.Timing(n)
		lines = append(lines, fmt.Sprintf("%-7d  %-8s  %-11s  %-11s  %-8s  %s",
			n, t.ProbeInterval, t.SuspectMin, t.SuspectMax, t.Typical, t.Within))
	}
	return lines
}

// TestDocTimingTables keeps doc.go's tables true: the scheduler's
// thresholds are built on them. On a failure, paste the wanted table in.
func TestDocTimingTables(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var doc []string
	for _, l := range strings.Split(string(src), "\n") {
		doc = append(doc, strings.TrimPrefix(strings.TrimPrefix(l, "//"), "\t"))
	}
	text := strings.Join(doc, "\n")
	for _, p := range []Profile{ProfileLAN, ProfileTest} {
		want := strings.Join(timingTable(p), "\n")
		if !strings.Contains(text, want) {
			t.Errorf("doc.go lacks the %s table, or it is stale; want:\n%s", p, want)
		}
	}
}

func TestTiming(t *testing.T) {
	tests := []struct {
		name    string
		profile Profile
		members int
		want    Timing
	}{
		{
			name: "LAN, 3 members: too few to confirm, so the minimum suspicion", profile: ProfileLAN, members: 3,
			want: Timing{Members: 3, ProbeInterval: time.Second, ProbeTimeout: 500 * time.Millisecond,
				Detect: 2 * time.Second, DetectWithin: 4 * time.Second, SuspectMin: 4 * time.Second, SuspectMax: 4 * time.Second,
				Spread: 200 * time.Millisecond, Typical: 6200 * time.Millisecond, Within: 8200 * time.Millisecond},
		},
		{
			name: "LAN, 100 members: log10 scaling, six-fold maximum", profile: ProfileLAN, members: 100,
			want: Timing{Members: 100, ProbeInterval: time.Second, ProbeTimeout: 500 * time.Millisecond,
				Detect: 2 * time.Second, DetectWithin: 8 * time.Second, SuspectMin: 8 * time.Second, SuspectMax: 48 * time.Second,
				Spread: 800 * time.Millisecond, Typical: 10800 * time.Millisecond, Within: 56800 * time.Millisecond},
		},
		{
			name: "the empty profile is LAN", profile: "", members: 3,
			want: ProfileLAN.Timing(3),
		},
		{
			name: "test profile, 3 members", profile: ProfileTest, members: 3,
			want: Timing{Members: 3, ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 50 * time.Millisecond,
				Detect: 200 * time.Millisecond, DetectWithin: 400 * time.Millisecond,
				SuspectMin: 400 * time.Millisecond, SuspectMax: 400 * time.Millisecond,
				Spread: 20 * time.Millisecond, Typical: 620 * time.Millisecond, Within: 820 * time.Millisecond},
		},
		{name: "an unknown profile has no timing", profile: "wan", members: 3, want: Timing{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.profile.Timing(tt.members); got != tt.want {
				t.Errorf("Timing(%d) =\n%+v, want\n%+v", tt.members, got, tt.want)
			}
		})
	}
}
