package membership

import (
	"math"
	"time"

	"github.com/hashicorp/memberlist"
)

// Profile is a set of memberlist timings: how often members probe each
// other and how long a silent member stays suspect before it is declared
// failed. Every member of a pool should use the same profile.
type Profile string

const (
	// ProfileLAN is memberlist's LAN defaults: one probe a second, tuned
	// for a data-centre network. The default.
	ProfileLAN Profile = "lan"
	// ProfileTest probes ten times a second and gives up on a silent
	// member in well under a second, so that tests on one host finish
	// fast. Too eager for a real network, where a busy host would be
	// declared failed.
	ProfileTest Profile = "test"
)

// Test profile timings. They stay well above the scheduling delays of a
// loaded two-core test machine: a probe that misses its timeout still has
// indirect probes, a TCP fallback and the suspicion period before anyone
// declares a member failed.
const (
	testProbeInterval     = 100 * time.Millisecond
	testProbeTimeout      = 50 * time.Millisecond
	testGossipInterval    = 20 * time.Millisecond
	testPushPullInterval  = time.Second
	testTCPTimeout        = time.Second
	testGossipToTheDead   = time.Second
	testSuspicionMult     = 4
	testSuspicionMaxTMult = 3
)

// probeWaitIntervals is how many probe intervals pass before some member
// has probed a given one with 99.9% probability (e^-7 < 0.001); see
// Timing.DetectWithin.
const probeWaitIntervals = 7

func (p Profile) valid() bool { return p == "" || p == ProfileLAN || p == ProfileTest }

// memberlistConfig returns memberlist's configuration for p, without the
// member's identity, addresses, key and delegates; nil for an unknown
// profile.
func (p Profile) memberlistConfig() *memberlist.Config {
	switch p {
	case "", ProfileLAN:
		return memberlist.DefaultLANConfig()
	case ProfileTest:
		c := memberlist.DefaultLocalConfig()
		c.ProbeInterval = testProbeInterval
		c.ProbeTimeout = testProbeTimeout
		c.GossipInterval = testGossipInterval
		c.PushPullInterval = testPushPullInterval
		c.TCPTimeout = testTCPTimeout
		c.GossipToTheDeadTime = testGossipToTheDead
		c.SuspicionMult = testSuspicionMult
		c.SuspicionMaxTimeoutMult = testSuspicionMaxTMult
		return c
	}
	return nil
}

// Timing is how fast a pool of a given size notices a member that
// stopped answering (crashed, partitioned or shut down without leaving),
// derived from the profile's settings with the formulas memberlist v0.7.0
// uses. The scheduler's suspect and down thresholds build on it: a down
// threshold shorter than Within would call a node down before gossip
// could have said so.
//
// Both figures assume healthy members: a member that misses its own
// deadlines (an overloaded host) stretches its probe interval up to
// memberlist's awareness multiplier (8 times), and detects failures that
// much later.
type Timing struct {
	// Members is the pool size the figures are for, the failed member
	// included.
	Members int
	// ProbeInterval is how often each member probes another one, round
	// robin; ProbeTimeout is how long it waits for the direct ack before
	// asking others to probe indirectly.
	ProbeInterval, ProbeTimeout time.Duration
	// Detect is how long until some member's probe of the silent member
	// has typically failed: the pool's members together probe about one
	// given member per interval, and a probe gives up at the end of its
	// own interval. DetectWithin is the same with 99.9% probability: each
	// member probes every other one once per round of N-1 intervals, in
	// a new random order each round, so the chance that none of them has
	// come to the silent member after k intervals is below e^-k, and in a
	// small pool zero after 2(N-1)-1 intervals.
	Detect, DetectWithin time.Duration
	// SuspectMin is how long a member stays suspect before it is declared
	// failed once enough other members confirm the suspicion (they do
	// within a few probe intervals in a healthy pool); SuspectMax is the
	// same without confirmations. Pools too small to give confirmations
	// (3 members on ProfileLAN) always wait SuspectMin.
	SuspectMin, SuspectMax time.Duration
	// Spread is how long the verdict takes to gossip to every member.
	Spread time.Duration
	// Typical is how long after a member goes silent the rest of the pool
	// typically reports it failed (EventFail): Detect, SuspectMin and
	// Spread.
	Typical time.Duration
	// Within is DetectWithin, SuspectMax and Spread: the figure to build
	// thresholds on.
	Within time.Duration
}

// Timing returns p's failure-detection timing for a pool of members
// members; the zero Timing for an unknown profile.
func (p Profile) Timing(members int) Timing {
	c := p.memberlistConfig()
	if c == nil {
		return Timing{}
	}
	members = max(members, 2) // the silent member and one to notice

	t := Timing{Members: members, ProbeInterval: c.ProbeInterval, ProbeTimeout: c.ProbeTimeout}
	t.Detect = 2 * c.ProbeInterval
	t.DetectWithin = time.Duration(min(2*(members-1)-1, probeWaitIntervals)+1) * c.ProbeInterval

	// memberlist scales the suspicion timeout with log10 of the pool size
	// (never below 1) and, when at least k = SuspicionMult-2 other
	// members besides the prober and the suspect exist to confirm, starts
	// it at SuspicionMaxTimeoutMult times that and shortens it with each
	// confirmation.
	scale := math.Max(1, math.Log10(float64(members)))
	t.SuspectMin = time.Duration(float64(c.SuspicionMult) * scale * float64(c.ProbeInterval)).Round(time.Millisecond)
	t.SuspectMax = t.SuspectMin
	if confirmations := c.SuspicionMult - 2; confirmations > 0 && members-2 >= confirmations {
		t.SuspectMax = time.Duration(c.SuspicionMaxTimeoutMult) * t.SuspectMin
	}

	// Each gossip round, every member that knows tells GossipNodes
	// others: the knowing part of the pool grows (GossipNodes+1)-fold.
	rounds := math.Ceil(math.Log(float64(members)) / math.Log(float64(c.GossipNodes+1)))
	t.Spread = time.Duration(max(rounds, 1)) * c.GossipInterval

	t.Typical = t.Detect + t.SuspectMin + t.Spread
	t.Within = t.DetectWithin + t.SuspectMax + t.Spread
	return t
}
