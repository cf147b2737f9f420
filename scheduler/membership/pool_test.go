package membership

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"
)

// testKey is a cluster gossip key for tests (AES-128).
var testKey = []byte("0123456789abcdef")

// convergeTimeout bounds how long a pool of a few members on loopback may
// take to agree on membership and tags: a handful of 20ms gossip rounds,
// with room for a loaded machine.
const convergeTimeout = 3 * time.Second

// schedulingSlack is what the failure-detection assertion allows beyond
// the documented figure: Timing assumes members meet their deadlines, and
// on a shared two-core test machine their goroutines wait for a CPU.
const schedulingSlack = 300 * time.Millisecond

// logBuffer collects a pool's logs; the test prints them when it fails.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// recorder keeps every event a pool delivered, with its arrival time.
type recorder struct {
	mu     sync.Mutex
	events []Event
	at     []time.Time
}

func (r *recorder) find(match func(Event) bool) (Event, time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, e := range r.events {
		if match(e) {
			return e, r.at[i], true
		}
	}
	return Event{}, time.Time{}, false
}

func (r *recorder) count(match func(Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if match(e) {
			n++
		}
	}
	return n
}

type testMember struct {
	*Pool
	logs   *logBuffer
	events *recorder
}

func startTestPool(t *testing.T, cfg Config) *testMember {
	t.Helper()
	m := &testMember{logs: &logBuffer{}, events: &recorder{}}
	cfg.BindAddr = "127.0.0.1:0"
	cfg.Profile = ProfileTest
	cfg.Logger = slog.New(slog.NewTextHandler(m.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("pool", cfg.Name)
	p, err := Start(cfg)
	if err != nil {
		t.Fatalf("start %s: %v", cfg.Name, err)
	}
	m.Pool = p
	go func() {
		for e := range p.Events() {
			m.events.mu.Lock()
			m.events.events = append(m.events.events, e)
			m.events.at = append(m.events.at, time.Now())
			m.events.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		if err := p.Shutdown(); err != nil {
			t.Errorf("shut down %s: %v", cfg.Name, err)
		}
		if t.Failed() {
			t.Logf("logs of %s:\n%s", cfg.Name, m.logs)
		}
	})
	return m
}

// waitEvent waits for an event of kind about member on m and returns
// when it arrived.
func waitEvent(t *testing.T, m *testMember, kind EventKind, member string, timeout time.Duration) (Event, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		e, at, ok := m.events.find(func(e Event) bool { return e.Kind == kind && e.Member.Name == member })
		if ok {
			return e, at
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s saw no %s event for %s within %s", m.LocalMember().Name, kind, member, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitMembers waits until m lists exactly want (name to member).
func waitMembers(t *testing.T, m *testMember, want map[string]Member) {
	t.Helper()
	deadline := time.Now().Add(convergeTimeout)
	for {
		got := m.Members()
		diff := membersDiff(got, want)
		if diff == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s lists %+v: %s", m.LocalMember().Name, got, diff)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func membersDiff(got []Member, want map[string]Member) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d members, want %d", len(got), len(want))
	}
	for _, g := range got {
		w, ok := want[g.Name]
		switch {
		case !ok:
			return fmt.Sprintf("unexpected member %s", g.Name)
		case g.Role != w.Role || g.Addr != w.Addr || g.State != w.State || !g.Tags.Equal(w.Tags):
			return fmt.Sprintf("member %s is %+v, want %+v", g.Name, g, w)
		}
	}
	return ""
}

func TestPool(t *testing.T) {
	ctx := t.Context()
	a := startTestPool(t, Config{Name: "a", Role: RoleScheduler, Key: testKey,
		Tags: Tags{RPCAddr: "127.0.0.1:7001", RaftAddr: "127.0.0.1:7002", Expect: 3}})
	b := startTestPool(t, Config{Name: "b", Role: RoleScheduler, Key: testKey,
		Tags: Tags{RPCAddr: "127.0.0.1:7011", RaftAddr: "127.0.0.1:7012", Expect: 3}})
	c := startTestPool(t, Config{Name: "c", Role: RoleAgent, Key: testKey,
		Tags: Tags{RPCAddr: "127.0.0.1:7021", Extra: map[string]string{"zone": "z1"}}})
	want := map[string]Member{}
	for _, m := range []*testMember{a, b, c} {
		local := m.LocalMember()
		if !strings.HasPrefix(local.Addr, "127.0.0.1:") || strings.HasSuffix(local.Addr, ":0") {
			t.Fatalf("%s advertises %q, want 127.0.0.1 and the port it bound", local.Name, local.Addr)
		}
		want[local.Name] = local
	}

	if !t.Run("three members join and see each other's tags", func(t *testing.T) {
		if n, err := b.Join(ctx, []string{a.LocalMember().Addr}); err != nil || n != 1 {
			t.Fatalf("b joins a: reached %d, %v", n, err)
		}
		if n, err := c.Join(ctx, []string{a.LocalMember().Addr, b.LocalMember().Addr}); err != nil || n != 2 {
			t.Fatalf("c joins a and b: reached %d, %v", n, err)
		}
		for _, m := range []*testMember{a, b, c} {
			waitMembers(t, m, want)
			if n := m.NumMembers(); n != 3 {
				t.Errorf("%s counts %d members, want 3", m.LocalMember().Name, n)
			}
		}
		for _, name := range []string{"b", "c"} {
			e, _ := waitEvent(t, a, EventJoin, name, convergeTimeout)
			if !e.Member.Tags.Equal(want[name].Tags) || e.Member.Role != want[name].Role {
				t.Errorf("a's join event for %s carries %+v, want role %s and tags %+v", name, e.Member, want[name].Role, want[name].Tags)
			}
		}
	}) {
		return
	}

	if !t.Run("new tags reach the others", func(t *testing.T) {
		newTags := Tags{RPCAddr: "127.0.0.1:7111", RaftAddr: "127.0.0.1:7112", Expect: 3, Extra: map[string]string{"v": "2"}}
		if err := b.UpdateTags(newTags); err != nil {
			t.Fatal(err)
		}
		if got := b.LocalMember().Tags; !got.Equal(newTags) {
			t.Errorf("b's own tags are %+v, want %+v", got, newTags)
		}
		bWant := want["b"]
		bWant.Tags = newTags
		want["b"] = bWant
		for _, m := range []*testMember{a, c} {
			e, _ := waitEvent(t, m, EventUpdate, "b", convergeTimeout)
			if !e.Member.Tags.Equal(newTags) {
				t.Errorf("%s's update event for b carries %+v, want %+v", m.LocalMember().Name, e.Member.Tags, newTags)
			}
			waitMembers(t, m, want)
		}
	}) {
		return
	}

	if !t.Run("a member shut down without leaving is reported failed in time", func(t *testing.T) {
		bound := ProfileTest.Timing(3).Within
		stopped := time.Now()
		if err := c.Shutdown(); err != nil {
			t.Fatal(err)
		}
		cWant := want["c"]
		cWant.State = MemberDead
		want["c"] = cWant
		for _, m := range []*testMember{a, b} {
			e, at := waitEvent(t, m, EventFail, "c", bound+convergeTimeout)
			if took := at.Sub(stopped); took > bound+schedulingSlack {
				t.Errorf("%s reported c failed after %s; documented within %s (+%s slack)", m.LocalMember().Name, took, bound, schedulingSlack)
			} else {
				t.Logf("%s reported c failed after %s (documented within %s)", m.LocalMember().Name, took, bound)
			}
			if e.Member.State != MemberDead || !e.Member.Tags.Equal(cWant.Tags) {
				t.Errorf("fail event carries %+v", e.Member)
			}
			if _, _, ok := m.events.find(func(e Event) bool { return e.Kind == EventLeave && e.Member.Name == "c" }); ok {
				t.Errorf("%s reported c as left; it never left", m.LocalMember().Name)
			}
			waitMembers(t, m, want)
			if n := m.NumMembers(); n != 2 {
				t.Errorf("%s counts %d members, want 2", m.LocalMember().Name, n)
			}
		}
	}) {
		return
	}

	t.Run("a member that leaves is reported left", func(t *testing.T) {
		if err := b.Leave(time.Second); err != nil {
			t.Fatal(err)
		}
		e, _ := waitEvent(t, a, EventLeave, "b", convergeTimeout)
		if e.Member.State != MemberLeft {
			t.Errorf("leave event carries state %s, want left", e.Member.State)
		}
		if _, _, ok := a.events.find(func(e Event) bool { return e.Kind == EventFail && e.Member.Name == "b" }); ok {
			t.Error("a reported b failed; it left")
		}
		if n := a.events.count(func(e Event) bool { return e.Kind == EventUpdate && e.Member.Name == "b" }); n != 1 {
			t.Errorf("a saw %d updates of b, want 1 (its new tags; leaving is no update)", n)
		}
		bWant := want["b"]
		bWant.State = MemberLeft
		want["b"] = bWant
		waitMembers(t, a, want)
		if n := a.NumMembers(); n != 1 {
			t.Errorf("a counts %d members, want 1", n)
		}
		if err := b.Shutdown(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a shut down pool refuses work and closes its events", func(t *testing.T) {
		if _, err := c.Join(ctx, []string{a.LocalMember().Addr}); !errors.Is(err, ErrShutdown) {
			t.Errorf("Join after Shutdown: %v, want ErrShutdown", err)
		}
		if err := c.UpdateTags(Tags{}); !errors.Is(err, ErrShutdown) {
			t.Errorf("UpdateTags after Shutdown: %v, want ErrShutdown", err)
		}
		if err := c.Leave(time.Second); !errors.Is(err, ErrShutdown) {
			t.Errorf("Leave after Shutdown: %v, want ErrShutdown", err)
		}
		select {
		case _, open := <-c.Events():
			for open {
				_, open = <-c.Events()
			}
		case <-time.After(time.Second):
			t.Error("Events stays open after Shutdown")
		}
	})
}

func TestJoinRefusedWithoutTheKey(t *testing.T) {
	otherKey := []byte("fedcba9876543210")
	tests := []struct {
		name     string
		pool     Config
		joiner   Config
		poolLogs string // what the pool's own log says about the joiner
	}{
		{name: "another key", pool: Config{Key: testKey}, joiner: Config{Key: otherKey},
			poolLogs: "no installed keys could decrypt"},
		{name: "no key, into an encrypted pool", pool: Config{Key: testKey}, joiner: Config{Insecure: true},
			poolLogs: "remote state is not encrypted"},
		{name: "a key, into a plaintext pool", pool: Config{Insecure: true}, joiner: Config{Key: testKey},
			poolLogs: "remote state is encrypted"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.pool.Name, tt.pool.Role = fmt.Sprintf("pool%d", i), RoleScheduler
			tt.joiner.Name, tt.joiner.Role = fmt.Sprintf("joiner%d", i), RoleAgent
			pool := startTestPool(t, tt.pool)
			joiner := startTestPool(t, tt.joiner)
			addr := pool.LocalMember().Addr

			n, err := joiner.Join(t.Context(), []string{addr})
			if !errors.Is(err, ErrJoin) || n != 0 {
				t.Fatalf("join reached %d, %v; want ErrJoin", n, err)
			}
			for _, says := range []string{addr, "gossip key"} {
				if !strings.Contains(err.Error(), says) {
					t.Errorf("join error %q does not say %q", err, says)
				}
			}
			// Give gossip time to leak a member through, were it to.
			time.Sleep(ProfileTest.Timing(2).Within)
			for _, m := range []*testMember{pool, joiner} {
				if got := m.Members(); len(got) != 1 {
					t.Errorf("%s lists %+v; want itself only", m.LocalMember().Name, got)
				}
			}
			logs := strings.ToLower(pool.logs.String())
			if !strings.Contains(logs, tt.poolLogs) {
				t.Errorf("the pool's log does not say %q", tt.poolLogs)
			}
			if !strings.Contains(logs, "same gossip key file") {
				t.Error("the pool's log does not say to check the gossip key")
			}
		})
	}
}

func TestJoinUnreachable(t *testing.T) {
	a := startTestPool(t, Config{Name: "lonely", Role: RoleAgent, Key: testKey})
	// A pool started and shut down leaves a port nobody listens on.
	gone := startTestPool(t, Config{Name: "gone", Role: RoleAgent, Key: testKey})
	addr := gone.LocalMember().Addr
	if err := gone.Shutdown(); err != nil {
		t.Fatal(err)
	}
	_, err := a.Join(t.Context(), []string{addr})
	if !errors.Is(err, ErrJoin) || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "check each address and port") {
		t.Errorf("join of a dead address: %v; want ErrJoin naming %s and what to check", err, addr)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := a.Join(ctx, []string{addr}); !errors.Is(err, context.Canceled) {
		t.Errorf("join with a cancelled context: %v, want context.Canceled", err)
	}
}

func TestStartRefuses(t *testing.T) {
	valid := Config{Name: "n", Role: RoleAgent, BindAddr: "127.0.0.1:0", Key: testKey, Profile: ProfileTest}
	tests := []struct {
		name   string
		change func(*Config)
		is     error
		says   string
	}{
		{name: "no name", change: func(c *Config) { c.Name = "" }, is: ErrInvalidConfig, says: "no member name"},
		{name: "unknown role", change: func(c *Config) { c.Role = "operator" }, is: ErrInvalidConfig, says: `role "operator"`},
		{name: "unknown profile", change: func(c *Config) { c.Profile = "wan" }, is: ErrInvalidConfig, says: `profile "wan"`},
		{name: "no key and not insecure", change: func(c *Config) { c.Key = nil }, is: ErrInvalidConfig, says: "no gossip key"},
		{name: "a key of the wrong size", change: func(c *Config) { c.Key = []byte("short") }, is: ErrInvalidConfig,
			says: "5 bytes, want 16, 24 or 32"},
		{name: "a key and insecure", change: func(c *Config) { c.Insecure = true }, is: ErrInvalidConfig, says: "drop one"},
		{name: "a host name to bind", change: func(c *Config) { c.BindAddr = "localhost:0" }, is: ErrInvalidConfig,
			says: "not an IP address"},
		{name: "a bind address without port", change: func(c *Config) { c.BindAddr = "127.0.0.1" }, is: ErrInvalidConfig,
			says: "want IP:port"},
		{name: "a bad advertise address", change: func(c *Config) { c.AdvertiseAddr = "node1:7946" }, is: ErrInvalidConfig,
			says: "advertise address"},
		{name: "negative bootstrap-expect", change: func(c *Config) { c.Tags.Expect = -1 }, is: ErrInvalidConfig,
			says: "negative"},
		{name: "tags over the metadata limit",
			change: func(c *Config) { c.Tags.Extra = map[string]string{"labels": strings.Repeat("k=v,", 130)} },
			is:     ErrMetaTooLarge, says: "gossip carries at most 512"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			cfg.Tags.Extra = maps.Clone(valid.Tags.Extra)
			tt.change(&cfg)
			p, err := Start(cfg)
			if err == nil {
				_ = p.Shutdown()
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("Start: %v; want %v saying %q", err, tt.is, tt.says)
			}
		})
	}
}

func TestUpdateTagsTooLarge(t *testing.T) {
	tags := Tags{RPCAddr: "127.0.0.1:7001"}
	a := startTestPool(t, Config{Name: "a", Role: RoleAgent, Key: testKey, Tags: tags})
	err := a.UpdateTags(Tags{RPCAddr: "127.0.0.1:7001", Extra: map[string]string{"x": strings.Repeat("y", 600)}})
	if !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("UpdateTags: %v, want ErrMetaTooLarge", err)
	}
	if got := a.LocalMember().Tags; !got.Equal(tags) {
		t.Errorf("tags after a refused update are %+v, want the old %+v", got, tags)
	}
}
