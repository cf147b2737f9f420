package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godwit/godwit/migrate"
)

// at builds replies at the given milliseconds after t0, counting up.
func at(t0 time.Time, ms ...int) []reply {
	out := make([]reply, len(ms))
	for i, m := range ms {
		out[i] = reply{at: t0.Add(time.Duration(m) * time.Millisecond), count: int64(i)}
	}
	return out
}

func TestLongestGap(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	tests := []struct {
		name       string
		replies    []reply
		start, end time.Time
		want       time.Duration
		wantErr    string
	}{
		{"the freeze spans the move", at(t0, 0, 10, 20, 730, 740), ms(25), ms(700), 710 * time.Millisecond, ""},
		{"answered during the move's tail: the freeze still counts", at(t0, 0, 10, 500, 510, 520, 530), ms(15), ms(525), 490 * time.Millisecond, ""},
		{"a gap before the move does not count", at(t0, 0, 900, 910, 920, 1050, 1060), ms(905), ms(1000), 130 * time.Millisecond, ""},
		{"a gap after the first reply after the move does not count", at(t0, 0, 10, 100, 2000), ms(5), ms(50), 90 * time.Millisecond, ""},
		{"a reply at the start counts as before it", at(t0, 0, 10, 310), ms(10), ms(300), 300 * time.Millisecond, ""},
		{"no reply before the move", at(t0, 50, 60), ms(10), ms(40), 0, "no reply before"},
		{"no reply after the move", at(t0, 0, 10), ms(5), ms(40), 0, "no reply after"},
		{"replies out of order", []reply{{at: ms(10)}, {at: ms(0)}, {at: ms(50)}}, ms(20), ms(30), 0, "in order"},
		{"an end before the start", at(t0, 0, 10), ms(10), ms(5), 0, "before it started"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := longestGap(tc.replies, tc.start, tc.end)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("longestGap = %v, %v; want an error saying %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("longestGap = %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestCheckCounter(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	counts := func(c ...int64) []reply {
		out := make([]reply, len(c))
		for i, n := range c {
			out[i] = reply{at: t0.Add(time.Duration(i) * 10 * time.Millisecond), count: n}
		}
		return out
	}
	start := t0.Add(15 * time.Millisecond) // after the second reply
	tests := []struct {
		name    string
		replies []reply
		wantErr string
	}{
		{"went on", counts(4, 5, 5, 6, 7), ""},
		{"went back: restarted", counts(4, 5, 0, 1, 2), "went back from 5 to 0"},
		{"stood still: does not run", counts(4, 5, 5, 5), "still does"},
		{"nothing before the move", counts()[:0], "no reply before"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := checkCounter(tc.replies, start)
			if tc.wantErr == "" && err != nil {
				t.Fatalf("checkCounter = %v, want nil", err)
			}
			if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("checkCounter = %v, want an error saying %q", err, tc.wantErr)
			}
		})
	}
}

// fakeWorkload answers COUNT like the workload, with a counter that goes
// up on every request, except that it holds every answer while frozen.
type fakeWorkload struct {
	ln     net.Listener
	mu     sync.Mutex
	frozen chan struct{} // closed when not frozen
}

func newFakeWorkload(t *testing.T) *fakeWorkload {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	f := &fakeWorkload{ln: ln, frozen: make(chan struct{})}
	close(f.frozen)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		in := bufio.NewScanner(conn)
		for n := 0; in.Scan(); n++ {
			f.mu.Lock()
			wait := f.frozen
			f.mu.Unlock()
			<-wait
			fmt.Fprintf(conn, "%d\n", n)
		}
	}()
	return f
}

// freeze holds the answers for d, from now.
func (f *fakeWorkload) freeze(d time.Duration) {
	f.mu.Lock()
	ch := make(chan struct{})
	f.frozen = ch
	f.mu.Unlock()
	time.AfterFunc(d, func() { close(ch) })
}

// TestProbeMeasuresAFreeze freezes a fake workload for 200 ms under the
// probe: the longest gap is the freeze, to within the probe's pace, and
// the probe asks at most every probeInterval.
func TestProbeMeasuresAFreeze(t *testing.T) {
	const freeze = 200 * time.Millisecond
	f := newFakeWorkload(t)
	conn, err := net.Dial("tcp4", f.ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := startProbe(newClient(conn), probeInterval)
	defer p.Abort()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	f.freeze(freeze)
	end := start.Add(freeze)
	if err := p.waitReplyAfter(context.Background(), end, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	replies, err := p.Stop()
	if err != nil {
		t.Fatal(err)
	}
	gap, err := longestGap(replies, start, end)
	if err != nil {
		t.Fatal(err)
	}
	// The pace adds up to one probeInterval; the rest is this machine's
	// scheduling, generous for a loaded one.
	if slack := 15 * probeInterval; gap < freeze || gap > freeze+slack {
		t.Errorf("longest gap %v around a freeze of %v, want it within %v above", gap, freeze, slack)
	}
	if err := checkCounter(replies, start); err != nil {
		t.Error(err)
	}
	for i := 1; i < len(replies); i++ {
		if d := replies[i].sent.Sub(replies[i-1].sent); d < probeInterval-time.Millisecond {
			t.Fatalf("requests %d and %d went %v apart: the probe asks faster than every %v", i-1, i, d, probeInterval)
		}
	}
	if n := len(replies); n < 5 {
		t.Errorf("only %d replies in about 350 ms: the probe does not ask every %v", n, probeInterval)
	}
}

func TestStatusBytes(t *testing.T) {
	status := []byte("Name:\tgodwit\nVmHWM:\t   81920 kB\nVmRSS:\t   40960 kB\nThreads:\t12\n")
	tests := []struct {
		name    string
		status  []byte
		field   string
		want    int64
		wantErr bool
	}{
		{"resident", status, fieldVmRSS, 40 << 20, false},
		{"peak", status, fieldVmHWM, 80 << 20, false},
		{"kernel thread has none", []byte("Name:\tkthreadd\nThreads:\t1\n"), fieldVmRSS, 0, true},
		{"not kB", []byte("VmRSS:\t40960 MB\n"), fieldVmRSS, 0, true},
		{"not a number", []byte("VmRSS:\tlots kB\n"), fieldVmRSS, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := statusBytes(tc.status, tc.field)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("statusBytes(%s) = %d, %v; want %d, error %v", tc.field, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestNewRowTakesMediansApartAndPeaksWhole(t *testing.T) {
	r := newRow(512, toolOf(migrate.StopCopy), []sample{
		{probeDowntime: 9 * time.Second, total: 1 * time.Second, bytes: 30, moved: 30, transfer: time.Second, rssSource: 50, rssDestination: 10,
			phases: map[migrate.Phase]time.Duration{migrate.PhaseDump: time.Second}},
		{probeDowntime: 2 * time.Second, total: 8 * time.Second, bytes: 10, moved: 10, transfer: time.Second, rssSource: 20, rssDestination: 90,
			phases: map[migrate.Phase]time.Duration{migrate.PhaseDump: 5 * time.Second}},
		{probeDowntime: 3 * time.Second, total: 2 * time.Second, bytes: 20, moved: 20, transfer: time.Second, rssSource: 30, rssDestination: 40,
			phases: map[migrate.Phase]time.Duration{migrate.PhaseDump: 3 * time.Second}},
	}, []float64{300, 100, 200}, []float64{90, 70, 80})
	if r.median.probeDowntime != 3*time.Second || r.median.total != 2*time.Second || r.median.bytes != 20 {
		t.Errorf("medians = %+v, want downtime 3s, total 2s, bytes 20", r.median)
	}
	if r.rate != 20 {
		t.Errorf("rate = %v, want the median of 30, 10 and 20 bytes/s", r.rate)
	}
	if r.peak != [2]int64{50, 90} {
		t.Errorf("peak = %v, want the largest of each agent: [50 90]", r.peak)
	}
	if got := r.median.phases[migrate.PhaseDump]; got != 3*time.Second {
		t.Errorf("median dump = %v, want 3s", got)
	}
	if _, ok := r.median.phases[migrate.PhaseSync]; ok {
		t.Error("a phase no run went through has a median")
	}
	if r.raw != 200 || r.channel != 80 {
		t.Errorf("raw, channel = %v, %v; want the medians 200, 80", r.raw, r.channel)
	}
}

func TestReportTable(t *testing.T) {
	gw := row{size: 64, tool: toolOf(migrate.StopCopy), rate: 300 << 20, raw: 1000 << 20, channel: 400 << 20, peak: [2]int64{30 << 20, 40 << 20},
		median: sample{probeDowntime: 1500 * time.Millisecond, engineDowntime: 1200 * time.Millisecond, total: 2 * time.Second, bytes: 70 << 20,
			phases: map[migrate.Phase]time.Duration{migrate.PhasePrepare: 100 * time.Millisecond, migrate.PhaseDump: 400 * time.Millisecond,
				migrate.PhaseTransfer: 200 * time.Millisecond, migrate.PhaseRestore: 500 * time.Millisecond,
				migrate.PhaseReady: 100 * time.Millisecond, migrate.PhaseCommitted: 300 * time.Millisecond}}}
	base := row{size: 64, tool: copyNC.tool(), rate: 500 << 20, raw: 1000 << 20, channel: 400 << 20,
		median: sample{probeDowntime: 3 * time.Second, total: 2500 * time.Millisecond, bytes: 66 << 20,
			checkpoint: time.Second, transfer: 500 * time.Millisecond, restore: time.Second}}
	text := report{runs: 1, rawMiB: 1024, rows: []row{gw, base}, conditions: conditions{cores: 2},
		rawCores: []float64{1.5, 1.9, 1.7}, channelCores: []float64{2}, skipped: []string{"2048 MiB: needs 3072 MiB of memory available"},
		unmeasured: []unmeasured{{migrate.PreCopy, "neither host supports it: no soft-dirty"}}}.render()
	for _, want := range []string{
		"| 64 MiB | godwit stop-copy | 1.50 s | 1.20 s | 2.00 s | 70.0 MiB | 300 | 1000 | 30% | 400 |",
		"| 64 MiB | runc + tar + busybox nc | 3.00 s | — | 2.50 s | 66.0 MiB | 500 | 1000 | 50% | 400 |",
		"- data channel: the same 1024 MiB over a data connection as the agents open it",
		"before each run; the median (it kept 1.7 of the host's 2 CPUs busy",
		"between these hosts (it kept 2.0 of the host's 2 CPUs busy",
		"runc + tar + busybox nc steps (medians):\n\n- 64 MiB: checkpoint 1.00 s, copy 0.50 s, restore 1.00 s",
		"busybox's nc moves 1 KiB per system call",
		"| 64 MiB | stop-copy | 30.0 MiB | 40.0 MiB |",
		"- 64 MiB: prepare 0.10 s, dump 0.40 s, transfer 0.20 s, restore 0.50 s, commit 0.10 s, finish on the source 0.30 s",
		"Skipped 2048 MiB",
		"and above (each baseline apart): not measured in this run",
		"not measured in this run (it needs --sizes with 2048)",
		"post-copy downtime (probe) at 2048 MiB at most 1.5 times its downtime at 64 MiB: not measured in this run (post-copy was not measured)",
		"- not measured: pre-copy: neither host supports it: no soft-dirty",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report does not say %q:\n%s", want, text)
		}
	}
}

func TestReportTargets(t *testing.T) {
	tcp, nc := copyTCP.tool(), copyNC.tool()
	base := func(tool string, size int, downtime time.Duration) row {
		return row{size: size, tool: tool, median: sample{probeDowntime: downtime}}
	}
	gw := func(size int, downtime time.Duration, rate float64, rss int64) row {
		return row{size: size, tool: toolOf(migrate.StopCopy), rate: rate, raw: 1000, peak: [2]int64{rss, 10 << 20}, median: sample{probeDowntime: downtime}}
	}
	pc := func(size int, downtime time.Duration, rate float64, rss int64) row {
		r := gw(size, downtime, rate, rss)
		r.tool = toolOf(migrate.PostCopy)
		return r
	}
	tests := []struct {
		name string
		rows []row
		want []string
	}{
		{"all met", []row{gw(512, 1*time.Second, 600, 0), base(tcp, 512, 2*time.Second), gw(2048, 2*time.Second, 700, 99<<20), base(tcp, 2048, 8*time.Second)},
			[]string{"stop-copy, 512 MiB, against runc + tar over TCP: 1.00 s against 2.00 s (50%) — met",
				"stop-copy, 2048 MiB, against runc + tar over TCP: 2.00 s against 8.00 s (25%) — met",
				"stop-copy, 512 MiB: 600 MiB/s against 1000 MiB/s (60%) — met", "stop-copy: source 99.0 MiB, destination 10.0 MiB — met"}},
		{"all missed", []row{gw(512, 3*time.Second, 599, 0), base(tcp, 512, 4*time.Second), gw(2048, 5*time.Second, 100, 100<<20), base(tcp, 2048, 8*time.Second)},
			[]string{"stop-copy, 512 MiB, against runc + tar over TCP: 3.00 s against 4.00 s (75%) — NOT met",
				"stop-copy, 2048 MiB, against runc + tar over TCP: 5.00 s against 8.00 s (62%) — NOT met",
				"stop-copy, 512 MiB: 599 MiB/s against 1000 MiB/s (60%) — NOT met", "stop-copy: source 100.0 MiB, destination 10.0 MiB — NOT met"}},
		{"each baseline judged apart", []row{gw(512, 2*time.Second, 600, 0), base(tcp, 512, 3*time.Second), base(nc, 512, 10*time.Second)},
			[]string{"stop-copy, 512 MiB, against runc + tar over TCP: 2.00 s against 3.00 s (67%) — NOT met",
				"stop-copy, 512 MiB, against runc + tar + busybox nc: 2.00 s against 10.00 s (20%) — met"}},
		{"each strategy judged apart", []row{gw(512, 1*time.Second, 600, 0), pc(512, 3*time.Second, 100, 0), base(tcp, 512, 2*time.Second)},
			[]string{"stop-copy, 512 MiB, against runc + tar over TCP: 1.00 s against 2.00 s (50%) — met",
				"post-copy, 512 MiB, against runc + tar over TCP: 3.00 s against 2.00 s (150%) — NOT met",
				"post-copy, 512 MiB: 100 MiB/s against 1000 MiB/s (10%) — NOT met"}},
		{"post-copy grows little", []row{pc(64, 2*time.Second, 0, 0), pc(2048, 3*time.Second, 0, 50<<20)},
			[]string{"post-copy downtime (probe) at 2048 MiB at most 1.5 times its downtime at 64 MiB: 3.00 s against 2.00 s (1.50x) — met",
				"post-copy: source 50.0 MiB, destination 10.0 MiB — met"}},
		{"post-copy grows too much", []row{pc(64, 2*time.Second, 0, 0), pc(2048, 3100*time.Millisecond, 0, 0)},
			[]string{"3.10 s against 2.00 s (1.55x) — NOT met"}},
		{"post-copy at one size", []row{pc(64, 2*time.Second, 0, 0)},
			[]string{"at most 1.5 times its downtime at 64 MiB: not measured in this run (it needs --sizes with 64 and 2048)"}},
		{"the data channel beside raw TCP", []row{{size: 512, tool: toolOf(migrate.StopCopy), rate: 300, raw: 1000, channel: 400}},
			[]string{"stop-copy, 512 MiB: 300 MiB/s against 1000 MiB/s (30%) — NOT met (the data channel alone: 400 MiB/s, 40% of raw TCP; the transfer is 75% of it)"}},
		{"below 512 MiB the downtime target does not apply", []row{gw(64, 3*time.Second, 700, 0), base(tcp, 64, 1*time.Second)},
			[]string{"and above (each baseline apart): not measured in this run", "stop-copy, 64 MiB: 700 MiB/s against 1000 MiB/s (70%) — met"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Throughputs here are in MiB/s for readability.
			for i := range tc.rows {
				tc.rows[i].rate *= 1 << 20
				tc.rows[i].raw *= 1 << 20
				tc.rows[i].channel *= 1 << 20
			}
			text := report{runs: 1, rows: tc.rows}.render()
			for _, want := range tc.want {
				if !strings.Contains(text, want) {
					t.Errorf("report does not say %q:\n%s", want, text)
				}
			}
		})
	}
}

func TestParseCopyMethods(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []copyMethod
		wantErr bool
	}{
		{"both", "tcp,nc", []copyMethod{copyTCP, copyNC}, false},
		{"order kept", "nc, tcp", []copyMethod{copyNC, copyTCP}, false},
		{"once each", "nc,nc", []copyMethod{copyNC}, false},
		{"unknown", "scp", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseCopyMethods(tc.in)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Errorf("parseCopyMethods(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestCappedBufferKeepsTheStart(t *testing.T) {
	c := &cappedBuffer{limit: 5}
	for _, s := range []string{"abc", "defg", "hij"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v; want all of it taken", s, n, err)
		}
	}
	if got := string(c.Bytes()); got != "abcde" {
		t.Errorf("kept %q, want the first 5 bytes %q", got, "abcde")
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/dir":      "'/tmp/dir'",
		"/tmp/it's; rm": `'/tmp/it'\''s; rm'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
