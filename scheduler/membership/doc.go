// Package membership owns godwit's gossip pool: every agent and every
// scheduler replica is a member of one hashicorp/memberlist pool, which
// tells each of them, within seconds and without a leader, who is in the
// cluster, where to reach them and who stopped answering. The scheduler
// leader turns these events into raft updates of node health; nothing
// else in the cluster state comes from gossip.
//
// A member announces itself with Tags (its gRPC address; a scheduler's
// raft address and --bootstrap-expect; a few extra words), carried with
// its Role as memberlist node metadata, JSON of at most 512 bytes. Start
// and UpdateTags refuse larger tags with ErrMetaTooLarge.
//
// Gossip is encrypted and authenticated with the cluster's gossip key
// (AES-GCM, memberlist's keyring) in both directions: a member without
// the key, or with another one, can neither join nor be heard. Insecure
// pools are for one-host tests.
//
// # Events
//
// Events reports joins, tag updates, departures (EventLeave, after Leave)
// and failures (EventFail, a member that stopped answering). memberlist
// v0.7.0 reports a leave and a failure alike, so Leave first gossips a
// leaving flag in the member's metadata and sends every scheduler a leave
// notice directly (gossip may lose the flag, or let the leave overtake
// it), then memberlist's leave: a departure whose member carried the
// flag, or announced itself, is a leave. memberlist
// delivers them with its node lock held, so the pool never makes it
// wait: it queues them, keeping only the latest undelivered event per
// member, and a goroutine hands them to the Events channel. Members is
// built from the same callbacks, since the node records memberlist's own
// Members returns keep changing under its lock; it lists failed and left
// members for a day after they went. memberlist v0.7.0 reports no event
// when a member becomes suspect, and no race-free way to see it, so a
// suspect member still shows alive here until it is declared failed: the
// scheduler's own suspect state comes from its lease.
//
// # Failure detection
//
// Each member probes one other member per probe interval, round robin in
// an order it reshuffles every round: a UDP ping, then, after the probe
// timeout, indirect pings through three other members and a TCP ping. A
// member that stays silent until the end of that interval becomes
// suspect and the suspicion is gossiped; it can refute it (it was busy,
// not gone) until the suspicion timeout passes, after which it is
// declared failed and every member reports EventFail. The suspicion
// timeout is
//
//	suspect min = SuspicionMult × max(1, log10 N) × probe interval
//
// for a pool of N members, and starts at SuspicionMaxTimeoutMult times
// that, shortening as other members confirm the suspicion (reaching the
// minimum after SuspicionMult-2 confirmations, which a healthy pool gives
// within a few probe intervals). Pools too small to give those
// confirmations wait the minimum.
//
// Profile.Timing computes the figures below. "typical" is two probe
// intervals to detect (the pool probes about one given member per
// interval), the minimum suspicion, and the gossip rounds that spread the
// verdict. "within" holds with 99.9% probability: some member has probed
// the silent one within min(2N-3, 7) intervals (the chance that none has
// after k intervals is below e^-k), then one interval for the probe to
// fail, the maximum suspicion and the spread. An overloaded member
// stretches its own probe interval up to eight times, and detects
// failures that much later.
//
// ProfileLAN (memberlist's LAN defaults: SuspicionMult 4,
// SuspicionMaxTimeoutMult 6, probe timeout 500ms, gossip every 200ms to
// 3 members):
//
//	members  probe     suspect min  suspect max  typical   within
//	3        1s        4s           4s           6.2s      8.2s
//	10       1s        4s           24s          6.4s      32.4s
//	100      1s        8s           48s          10.8s     56.8s
//	1000     1s        12s          1m12s        15s       1m21s
//
// ProfileTest (SuspicionMult 4, SuspicionMaxTimeoutMult 3, probe timeout
// 50ms, gossip every 20ms to 3 members):
//
//	members  probe     suspect min  suspect max  typical   within
//	3        100ms     400ms        400ms        620ms     820ms
//	10       100ms     400ms        1.2s         640ms     2.04s
//	100      100ms     800ms        2.4s         1.08s     3.28s
//	1000     100ms     1.2s         3.6s         1.5s      4.5s
//
// A leave, by contrast, spreads within a few gossip intervals.
package membership
