package clusterlink

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestLease(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	const ttl = 10 * time.Second
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	tests := []struct {
		name string
		// steps drive the lease; check is then asked at checkAt.
		steps   func(l *lease)
		checkAt time.Duration
		// wantSince is the expiry the refusal names; 0: the lease is valid.
		wantSince time.Duration
		// wantNever: refused as never registered.
		wantNever bool
		// wantRegister: the next call must be a registration.
		wantRegister bool
	}{
		{
			name:         "never registered",
			steps:        func(*lease) {},
			wantNever:    true,
			wantRegister: true,
		},
		{
			name:    "valid until the TTL after the registration was sent",
			steps:   func(l *lease) { l.granted(at(0), ttl) },
			checkAt: ttl - time.Millisecond,
		},
		{
			name:         "expired at the TTL",
			steps:        func(l *lease) { l.granted(at(0), ttl) },
			checkAt:      ttl,
			wantSince:    ttl,
			wantRegister: true,
		},
		{
			name: "renewed from when the heartbeat was sent",
			steps: func(l *lease) {
				l.granted(at(0), ttl)
				if !l.renewed(at(4*time.Second), ttl) {
					panic("a heartbeat sent within the lease did not renew it")
				}
			},
			checkAt: 4*time.Second + ttl - time.Millisecond,
		},
		{
			name: "a renewal never shortens the lease",
			steps: func(l *lease) {
				l.granted(at(5*time.Second), ttl)
				l.renewed(at(6*time.Second), time.Second) // the scheduler lowered the TTL
			},
			checkAt: 5*time.Second + ttl - time.Millisecond,
		},
		{
			name: "a heartbeat sent after the lease lapsed renews nothing",
			steps: func(l *lease) {
				l.granted(at(0), ttl)
				if l.renewed(at(ttl+time.Second), ttl) {
					panic("a heartbeat sent after expiry renewed the lease")
				}
			},
			checkAt:      ttl + 2*time.Second,
			wantSince:    ttl,
			wantRegister: true,
		},
		{
			name: "reregister ends the lease at once",
			steps: func(l *lease) {
				l.granted(at(0), ttl)
				l.revoke(at(3 * time.Second))
			},
			checkAt:      3 * time.Second,
			wantSince:    3 * time.Second,
			wantRegister: true,
		},
		{
			name: "a registration after reregister restores it",
			steps: func(l *lease) {
				l.granted(at(0), ttl)
				l.revoke(at(3 * time.Second))
				l.granted(at(4*time.Second), ttl)
			},
			checkAt: 5 * time.Second,
		},
		{
			name: "a heartbeat after reregister renews nothing",
			steps: func(l *lease) {
				l.granted(at(0), ttl)
				l.revoke(at(3 * time.Second))
				l.renewed(at(4*time.Second), ttl)
			},
			checkAt:      5 * time.Second,
			wantSince:    3 * time.Second,
			wantRegister: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &lease{node: "n1"}
			tt.steps(l)
			now := at(tt.checkAt)
			err := l.check(now)
			if got := l.needsRegistration(now); got != tt.wantRegister {
				t.Errorf("needsRegistration = %v, want %v", got, tt.wantRegister)
			}
			switch {
			case tt.wantNever:
				if !errors.Is(err, ErrLeaseExpired) || !strings.Contains(err.Error(), "node n1 has not registered with a scheduler yet") {
					t.Fatalf("check = %v, want the never-registered refusal", err)
				}
			case tt.wantSince == 0:
				if err != nil {
					t.Fatalf("check = %v, want a valid lease", err)
				}
			default:
				want := "node n1 has no valid lease with the scheduler since " + at(tt.wantSince).Format(time.RFC3339Nano) +
					": it starts, resumes and commits nothing until it has registered again"
				if !errors.Is(err, ErrLeaseExpired) || err.Error() != want {
					t.Fatalf("check = %v\nwant %s (ErrLeaseExpired)", err, want)
				}
			}
		})
	}
}
