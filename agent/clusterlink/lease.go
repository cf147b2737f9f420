package clusterlink

import (
	"fmt"
	"time"
)

// lease is the node's lease as the agent counts it. It is not safe for
// concurrent use: the Link guards it. Every method takes the time, so
// that tests drive it with a fake clock.
type lease struct {
	node string
	// held is set once a registration succeeded.
	held bool
	// expires is when the lease ends: the last successful send plus the
	// TTL, or earlier when the scheduler asked for a registration.
	expires time.Time
	// current is set while the registration stands: cleared when the
	// scheduler asks for a new one or the lease lapses, set again by the
	// next registration.
	current bool
}

// granted records a successful registration sent at sent.
func (l *lease) granted(sent time.Time, ttl time.Duration) {
	l.held, l.current, l.expires = true, true, sent.Add(ttl)
}

// renewed records a successful heartbeat sent at sent. A heartbeat sent
// once the lease had lapsed renews nothing: the node must register
// again, and renewed returns false.
func (l *lease) renewed(sent time.Time, ttl time.Duration) bool {
	if !l.current || !sent.Before(l.expires) {
		l.current = false
		return false
	}
	if e := sent.Add(ttl); e.After(l.expires) {
		l.expires = e
	}
	return true
}

// revoke ends the lease at now: the scheduler does not know the node's
// epoch.
func (l *lease) revoke(now time.Time) {
	l.current = false
	if l.held && now.Before(l.expires) {
		l.expires = now
	}
}

// needsRegistration reports whether the next call must be a
// registration rather than a heartbeat.
func (l *lease) needsRegistration(now time.Time) bool {
	return !l.current || !now.Before(l.expires)
}

// check is the lease gate: nil while the lease is valid at now.
func (l *lease) check(now time.Time) error {
	switch {
	case !l.held:
		return &leaseError{fmt.Sprintf("node %s has not registered with a scheduler yet: it starts, resumes and commits nothing until it has registered",
			l.node)}
	case !l.current || !now.Before(l.expires):
		return &leaseError{fmt.Sprintf("node %s has no valid lease with the scheduler since %s: it starts, resumes and commits nothing until it has registered again",
			l.node, l.expires.UTC().Format(time.RFC3339Nano))}
	}
	return nil
}

// leaseError is check's refusal: a message for the operator that is also
// ErrLeaseExpired, without the sentinel's text tacked on.
type leaseError struct{ msg string }

func (e *leaseError) Error() string        { return e.msg }
func (e *leaseError) Is(target error) bool { return target == ErrLeaseExpired }
