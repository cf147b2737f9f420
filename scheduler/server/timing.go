package server

import "time"

// Timing holds the scheduler's clocks: how often agents beat, how long a
// lease lasts, when a silent node is suspect and then down. LANTiming is
// the default; TestTiming makes tests fast.
//
// A node is suspect as soon as its lease expired (LeaseTTL after its
// last heartbeat was sent) or the gossip pool reports it failed; it is
// down DownAfter later, when its containers are reported lost. So an
// agent killed at t is down at t + LeaseTTL + DownAfter at the latest
// (plus one LeaseCheck).
type Timing struct {
	// Heartbeat is how often agents renew their lease.
	Heartbeat time.Duration
	// LeaseTTL is how long a lease lasts after the heartbeat that renewed
	// it was sent.
	LeaseTTL time.Duration
	// DownAfter is how long a node stays suspect before it is down.
	DownAfter time.Duration
	// LeaseCheck is how often the leader looks for expired leases.
	LeaseCheck time.Duration
	// Reconcile is how often the leader compares the gossip pool with the
	// raft configuration, besides reacting to each membership event.
	Reconcile time.Duration
	// ApplyTimeout bounds one raft apply.
	ApplyTimeout time.Duration
	// MigrationStep bounds each call the coordinator makes to an agent in
	// a migration (migrate.DriveOptions.StepTimeout; 0: the engine's
	// default).
	MigrationStep time.Duration
	// Fast selects raft's and memberlist's test timings too.
	Fast bool
}

// LANTiming suits servers on one network: a killed agent is suspect
// after at most 5 s and down after at most 15 s.
var LANTiming = Timing{
	Heartbeat:    time.Second,
	LeaseTTL:     5 * time.Second,
	DownAfter:    10 * time.Second,
	LeaseCheck:   250 * time.Millisecond,
	Reconcile:    10 * time.Second,
	ApplyTimeout: 10 * time.Second,
}

// TestTiming makes a killed agent suspect within a second and down within
// two.
var TestTiming = Timing{
	Heartbeat:    200 * time.Millisecond,
	LeaseTTL:     time.Second,
	DownAfter:    time.Second,
	LeaseCheck:   50 * time.Millisecond,
	Reconcile:    time.Second,
	ApplyTimeout: 5 * time.Second,
	Fast:         true,
}
