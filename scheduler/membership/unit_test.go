package membership

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/hashicorp/memberlist"
)

func TestMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		role Role
		tags Tags
	}{
		{name: "scheduler", role: RoleScheduler, tags: Tags{RPCAddr: "10.0.0.1:7400", RaftAddr: "10.0.0.1:7401", Expect: 3}},
		{name: "agent with extra words", role: RoleAgent, tags: Tags{RPCAddr: "[fd00::2]:7400", Extra: map[string]string{"zone": "a"}}},
		{name: "no tags", role: RoleAgent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := encodeMeta(tt.role, tt.tags, false)
			if err != nil {
				t.Fatal(err)
			}
			role, tags, leaving, err := decodeMeta(b)
			if err != nil {
				t.Fatal(err)
			}
			if role != tt.role || !tags.Equal(tt.tags) || leaving {
				t.Errorf("decoded %q %+v, want %q %+v", role, tags, tt.role, tt.tags)
			}
		})
	}
}

func TestMetaRefused(t *testing.T) {
	t.Run("tags over 512 bytes are refused on encoding, naming the size", func(t *testing.T) {
		_, err := encodeMeta(RoleAgent, Tags{Extra: map[string]string{"big": strings.Repeat("x", 500)}}, false)
		if !errors.Is(err, ErrMetaTooLarge) || !strings.Contains(err.Error(), "at most 512") {
			t.Errorf("err = %v, want ErrMetaTooLarge saying the limit", err)
		}
	})
	t.Run("tags that fit only without the leaving flag are refused", func(t *testing.T) {
		tags := Tags{Extra: map[string]string{"k": ""}}
		for {
			b, err := json.Marshal(wireMeta{Version: metaVersion, Role: RoleAgent, Extra: tags.Extra})
			if err != nil {
				t.Fatal(err)
			}
			if len(b) == memberlist.MetaMaxSize {
				break
			}
			tags.Extra["k"] += "x"
		}
		if _, err := encodeMeta(RoleAgent, tags, false); !errors.Is(err, ErrMetaTooLarge) {
			t.Errorf("err = %v, want ErrMetaTooLarge: the member could not leave", err)
		}
	})
	t.Run("the leaving flag round-trips", func(t *testing.T) {
		b, err := encodeMeta(RoleAgent, Tags{RPCAddr: "10.0.0.1:7400"}, true)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, leaving, err := decodeMeta(b); err != nil || !leaving {
			t.Errorf("decoded leaving %v, %v; want true", leaving, err)
		}
	})
	decodes := []struct {
		name, meta, says string
	}{
		{name: "no metadata", meta: "", says: "no metadata"},
		{name: "not JSON", meta: "\x01garbage", says: "unreadable"},
		{name: "a newer format", meta: `{"v":2,"r":"agent"}`, says: "format version 2"},
		{name: "no version", meta: `{"r":"agent"}`, says: "format version 0"},
	}
	for _, tt := range decodes {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := decodeMeta([]byte(tt.meta))
			if !errors.Is(err, errBadMeta) || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("err = %v, want errBadMeta saying %q", err, tt.says)
			}
		})
	}
}

func TestEventQueue(t *testing.T) {
	ev := func(kind EventKind, name, rpc string) Event {
		return Event{Kind: kind, Member: Member{Name: name, Tags: Tags{RPCAddr: rpc}}}
	}
	tests := []struct {
		name   string
		pushed []Event
		want   []Event
	}{
		{
			name:   "events of different members keep their order",
			pushed: []Event{ev(EventJoin, "a", ""), ev(EventJoin, "b", ""), ev(EventFail, "a", "")},
			want:   []Event{ev(EventJoin, "b", ""), ev(EventFail, "a", "")},
		},
		{
			name:   "an update folds into a pending join, with the newest tags",
			pushed: []Event{ev(EventJoin, "a", "1"), ev(EventUpdate, "a", "2")},
			want:   []Event{ev(EventJoin, "a", "2")},
		},
		{
			name:   "the latest state wins: failed, then back, shows as a join",
			pushed: []Event{ev(EventFail, "a", ""), ev(EventJoin, "a", "")},
			want:   []Event{ev(EventJoin, "a", "")},
		},
		{
			name:   "a leave after a pending update is a leave",
			pushed: []Event{ev(EventUpdate, "a", "1"), ev(EventLeave, "a", "1")},
			want:   []Event{ev(EventLeave, "a", "1")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := newEventQueue()
			for _, e := range tt.pushed {
				q.push(e)
			}
			var got []Event
			for {
				e, ok := q.pop()
				if !ok {
					break
				}
				got = append(got, e)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i].Kind != tt.want[i].Kind || got[i].Member.Name != tt.want[i].Member.Name ||
					!got[i].Member.Tags.Equal(tt.want[i].Member.Tags) {
					t.Errorf("event %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}

	t.Run("the queue stays one event per member however many come", func(t *testing.T) {
		q := newEventQueue()
		for i := range 10000 {
			q.push(ev(EventUpdate, []string{"a", "b", "c"}[i%3], ""))
		}
		if n := q.order.Len(); n != 3 {
			t.Errorf("%d events pending, want 3", n)
		}
	})
}

func TestMemberlistLogLevels(t *testing.T) {
	tests := []struct {
		name, line string
		level      slog.Level
		msg        string
		hint       bool
	}{
		{name: "debug stays debug", line: "[DEBUG] memberlist: Stream connection from=127.0.0.1:5000\n",
			level: slog.LevelDebug, msg: "Stream connection from=127.0.0.1:5000"},
		{name: "info", line: "[INFO] memberlist: Marking b as failed, suspect timeout reached (0 peer confirmations)\n",
			level: slog.LevelInfo, msg: "Marking b as failed, suspect timeout reached (0 peer confirmations)"},
		{name: "warn", line: "[WARN] memberlist: Refuting a suspect message (from: a)\n", level: slog.LevelWarn,
			msg: "Refuting a suspect message (from: a)"},
		{name: "err, with the gossip key hint on a decryption failure",
			line:  "[ERR] memberlist: failed to receive: No installed keys could decrypt the message from=127.0.0.1:5000\n",
			level: slog.LevelError, msg: "failed to receive: No installed keys could decrypt the message from=127.0.0.1:5000", hint: true},
		{name: "an unknown tag is kept, at info", line: "[FOO] bar\n", level: slog.LevelInfo, msg: "[FOO] bar"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			l := newMemberlistLogger(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})))
			l.Print(tt.line)
			out := buf.String()
			if !strings.Contains(out, `"level":"`+tt.level.String()+`"`) || !strings.Contains(out, `"msg":"`+tt.msg+`"`) ||
				!strings.Contains(out, `"component":"memberlist"`) {
				t.Errorf("logged %s, want level %s and message %q", out, tt.level, tt.msg)
			}
			if got := strings.Contains(out, "check that every member reads the same gossip key"); got != tt.hint {
				t.Errorf("gossip key hint %v, want %v, in %s", got, tt.hint, out)
			}
		})
	}

	t.Run("debug lines are dropped at info", func(t *testing.T) {
		var buf bytes.Buffer
		l := newMemberlistLogger(slog.New(slog.NewJSONHandler(&buf, nil)))
		l.Print("[DEBUG] memberlist: noise\n")
		if buf.Len() != 0 {
			t.Errorf("logged %s at info level", buf.String())
		}
	})
}

// A leave notice makes the departure a leave whichever comes first: gossip
// may lose the leaving flag, and the leave message may overtake the
// notice.
func TestALeaveNoticeMakesTheDepartureALeave(t *testing.T) {
	meta, err := encodeMeta(RoleScheduler, Tags{RPCAddr: "127.0.0.1:7000"}, false) // the flag lost
	if err != nil {
		t.Fatal(err)
	}
	node := &memberlist.Node{Name: "b", Addr: net.ParseIP("127.0.0.1"), Port: 7946, Meta: meta}
	notice := append([]byte{leaveNotice}, "b"...)
	lastEvent := func(p *Pool) Event {
		var last Event
		for e, ok := p.queue.pop(); ok; e, ok = p.queue.pop() {
			last = e
		}
		return last
	}
	newPool := func() (*Pool, delegate) {
		p := &Pool{log: slog.New(slog.DiscardHandler), members: map[string]*tracked{}, queue: newEventQueue()}
		d := delegate{p}
		d.NotifyJoin(node)
		return p, d
	}

	tests := []struct {
		name   string
		events func(d delegate)
		want   EventKind
		state  MemberState
	}{
		{"no notice: a failure", func(d delegate) { d.NotifyLeave(node) }, EventFail, MemberDead},
		{"notice, then the departure", func(d delegate) { d.NotifyMsg(notice); d.NotifyLeave(node) }, EventLeave, MemberLeft},
		{"notice, an update, then the departure", func(d delegate) {
			d.NotifyMsg(notice)
			d.NotifyUpdate(node)
			d.NotifyLeave(node)
		}, EventLeave, MemberLeft},
		{"the departure overtook the notice", func(d delegate) { d.NotifyLeave(node); d.NotifyMsg(notice) }, EventLeave, MemberLeft},
		{"a notice before leaving, then back: a later departure is a failure", func(d delegate) {
			d.NotifyMsg(notice)
			d.NotifyLeave(node)
			d.NotifyJoin(node)
			d.NotifyLeave(node)
		}, EventFail, MemberDead},
		{"an unknown message changes nothing", func(d delegate) { d.NotifyMsg([]byte{9, 'b'}); d.NotifyLeave(node) }, EventFail, MemberDead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, d := newPool()
			tt.events(d)
			if e := lastEvent(p); e.Kind != tt.want || e.Member.Name != "b" || e.Member.State != tt.state {
				t.Errorf("last event %s of %q in state %s, want %s in state %s", e.Kind, e.Member.Name, e.Member.State, tt.want, tt.state)
			}
			if got := p.Members()[0]; got.State != tt.state || got.Tags.RPCAddr != "127.0.0.1:7000" {
				t.Errorf("b listed %s with tags %+v, want %s with its tags", got.State, got.Tags, tt.state)
			}
		})
	}
}
