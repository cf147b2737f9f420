package state

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

func emit(t *testing.T, s *Store, index uint64, n int) {
	t.Helper()
	write(t, s, index, func(tx *Txn) error {
		for i := range n {
			tx.Emit(EventAudit, "", "", fmt.Sprintf("%d.%d", index, i))
		}
		return nil
	})
}

func messages(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Message)
	}
	return out
}

func TestEventsSince(t *testing.T) {
	s := NewStore()
	emit(t, s, 1, 1)
	emit(t, s, 2, 2)
	emit(t, s, 3, 1)

	tests := []struct {
		since uint64
		want  string
	}{
		{0, "[1.0 2.0 2.1 3.0]"},
		{1, "[2.0 2.1 3.0]"},
		{3, "[]"},
		{9, "[]"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("since ", tt.since), func(t *testing.T) {
			evs, _, err := s.EventsSince(tt.since)
			if err != nil || fmt.Sprint(messagesOrEmpty(evs)) != tt.want {
				t.Fatalf("EventsSince(%d) = %v, %v; want %s", tt.since, messages(evs), err, tt.want)
			}
		})
	}
	evs, _, _ := s.EventsSince(2)
	if e := evs[0]; e.Index != 3 || e.Kind != EventAudit || !e.Time.Equal(t0.Add(3*time.Second)) {
		t.Errorf("event %+v: want index 3, kind audit and the write's time", e)
	}
}

func messagesOrEmpty(evs []Event) []string {
	if m := messages(evs); m != nil {
		return m
	}
	return []string{}
}

func TestEventsWakeWatcher(t *testing.T) {
	s := NewStore()
	emit(t, s, 1, 1)
	evs, wake, err := s.EventsSince(1)
	if err != nil || len(evs) != 0 {
		t.Fatalf("EventsSince(1) = %v, %v; want nothing yet", evs, err)
	}
	select {
	case <-wake:
		t.Fatal("the channel closed before any write")
	default:
	}
	done := make(chan []Event)
	go func() {
		<-wake
		evs, _, _ := s.EventsSince(1)
		done <- evs
	}()
	emit(t, s, 2, 1)
	select {
	case evs := <-done:
		if fmt.Sprint(messages(evs)) != "[2.0]" {
			t.Errorf("woken watcher read %v, want [2.0]", messages(evs))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the watcher was not woken by a write")
	}
}

func TestEventsLost(t *testing.T) {
	s := newStore(4)
	emit(t, s, 1, 2) // 1.0 1.1
	emit(t, s, 2, 2) // 2.0 2.1
	emit(t, s, 3, 1) // 3.0 pushes 1.0 out: index 1 is only partly held

	tests := []struct {
		since    uint64
		want     string
		wantLost bool
	}{
		{since: 0, want: "[1.1 2.0 2.1 3.0]", wantLost: true},
		{since: 1, want: "[2.0 2.1 3.0]"},
		{since: 2, want: "[3.0]"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint("since ", tt.since), func(t *testing.T) {
			evs, _, err := s.EventsSince(tt.since)
			if lost := errors.Is(err, ErrEventsLost); lost != tt.wantLost {
				t.Fatalf("EventsSince(%d) error %v, want lost=%v", tt.since, err, tt.wantLost)
			}
			if fmt.Sprint(messages(evs)) != tt.want {
				t.Fatalf("EventsSince(%d) = %v, want %s", tt.since, messages(evs), tt.want)
			}
		})
	}
}

func TestEventsFullRing(t *testing.T) {
	s := NewStore()
	for i := uint64(1); i <= EventRingSize+1; i++ {
		emit(t, s, i, 1)
	}
	if _, _, err := s.EventsSince(0); !errors.Is(err, ErrEventsLost) {
		t.Errorf("a watcher %d events behind got %v, want ErrEventsLost", EventRingSize+1, err)
	}
	evs, _, err := s.EventsSince(1)
	if err != nil || len(evs) != EventRingSize {
		t.Errorf("a watcher exactly %d events behind got %d events, %v; want all of them", EventRingSize, len(evs), err)
	}
}

func TestReplaceWakesAndLoses(t *testing.T) {
	s := NewStore()
	emit(t, s, 1, 1)
	_, wake, _ := s.EventsSince(1)

	other := NewStore()
	write(t, other, 10, func(tx *Txn) error { return tx.PutNode(node("n1")) })
	s.Replace(other)

	select {
	case <-wake:
	default:
		t.Fatal("Replace did not wake the watcher")
	}
	if _, _, err := s.EventsSince(1); !errors.Is(err, ErrEventsLost) {
		t.Errorf("watcher at index 1 after a restore to index 10 got %v, want ErrEventsLost", err)
	}
	if evs, _, err := s.EventsSince(10); err != nil || len(evs) != 0 {
		t.Errorf("watcher at the restored index got %v, %v; want nothing and no error", evs, err)
	}
	if _, ok := s.Snapshot().Node("n1"); !ok {
		t.Error("the replaced store does not have the new state")
	}
	emit(t, s, 11, 1)
	if evs, _, err := s.EventsSince(10); err != nil || fmt.Sprint(messages(evs)) != "[11.0]" {
		t.Errorf("after a write on the replaced store: %v, %v; want [11.0]", messages(evs), err)
	}
}
