package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/hashicorp/memberlist"
)

// MemberState is a member's state as this member's pool sees it.
type MemberState string

const (
	// MemberAlive: the member answers (or is suspected for less than its
	// suspicion timeout; memberlist gives no race-free view of suspicion).
	MemberAlive MemberState = "alive"
	// MemberDead: the pool declared the member failed (EventFail).
	MemberDead MemberState = "dead"
	// MemberLeft: the member left on purpose (EventLeave).
	MemberLeft MemberState = "left"
)

// Member is one member of the pool.
type Member struct {
	Name string
	// Role is empty when the member's metadata could not be read (another
	// godwit version, or not a godwit member); the pool logs why.
	Role Role
	// Addr is the member's gossip address, IP:port.
	Addr  string
	Tags  Tags
	State MemberState
}

// departedRetention is how long Members keeps listing a member that
// failed or left, so that a scheduler that takes over as leader can tell
// a node that failed from one it never heard of. A registered node that
// Members does not list at all has been gone longer: treat it as failed.
const departedRetention = 24 * time.Hour

// tagsBroadcastTimeout bounds how long UpdateTags waits for memberlist to
// send the new tags out; if it passes, the tags still spread with the
// next gossip round or push/pull sync.
const tagsBroadcastTimeout = 5 * time.Second

// Pool is this process's membership in the cluster's gossip pool: one
// memberlist instance, the member table built from its events, and the
// event stream. Its methods are safe for concurrent use.
type Pool struct {
	cfg Config
	log *slog.Logger
	ml  *memberlist.Memberlist

	// updateMu serializes UpdateTags: new metadata and its broadcast go
	// together.
	updateMu sync.Mutex

	mu   sync.Mutex
	tags Tags
	meta []byte
	// leaving is set by Leave and gossiped in meta; see wireMeta.Leaving.
	leaving bool
	// members is fed by memberlist's event callbacks, which run under
	// memberlist's node lock and so see consistent node records; nodes
	// memberlist's Members returns are shared with its own goroutines.
	members map[string]*tracked

	queue *eventQueue
	out   chan Event
	done  chan struct{}
	pumps sync.WaitGroup

	// life guards the shutdown: memberlist panics on a Leave after its
	// Shutdown, so Leave holds it for reading while it runs.
	life        sync.RWMutex
	closed      bool
	shutdownErr error
}

type tracked struct {
	member   Member
	departed time.Time // when it failed or left; zero while alive
	// leaving: the member told this one directly that it leaves (see
	// tellSchedulersLeaving); its departure is a leave.
	leaving bool
}

// Start creates this member's pool: it listens on cfg.BindAddr and is a
// pool of one until Join. Every member must use the same gossip key
// (cfg.Key) or be Insecure alike.
func Start(cfg Config) (*Pool, error) {
	bindIP, bindPort, advIP, advPort, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	meta, err := encodeMeta(cfg.Role, cfg.Tags, false)
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg.Key = slices.Clone(cfg.Key)
	p := &Pool{
		cfg:     cfg,
		log:     logger,
		tags:    cfg.Tags.clone(),
		meta:    meta,
		members: make(map[string]*tracked),
		queue:   newEventQueue(),
		out:     make(chan Event, eventBuffer),
		done:    make(chan struct{}),
	}

	if cfg.Profile == "" {
		p.cfg.Profile = ProfileLAN
	}
	mc := p.cfg.Profile.memberlistConfig()
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = bindIP, bindPort
	if advIP != "" {
		if advPort == 0 {
			advPort = bindPort // memberlist would advertise port 0 otherwise
		}
		mc.AdvertiseAddr, mc.AdvertisePort = advIP, advPort
	}
	if !cfg.Insecure {
		mc.SecretKey = cfg.Key
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	}
	d := delegate{p: p}
	mc.Delegate, mc.Events, mc.Conflict = d, d, d
	mc.Logger = newMemberlistLogger(logger)

	p.pumps.Add(1)
	go func() {
		defer p.pumps.Done()
		p.queue.pump(p.out, p.done)
	}()
	ml, err := memberlist.Create(mc)
	if err != nil {
		close(p.done)
		p.pumps.Wait()
		return nil, fmt.Errorf("start gossip on %s: %w: check that the address is one of this host's and the port is free",
			net.JoinHostPort(bindIP, strconv.Itoa(bindPort)), err)
	}
	p.ml = ml
	logger.Info("gossip pool started", "member", cfg.Name, "role", cfg.Role, "addr", p.LocalMember().Addr,
		"encrypted", !cfg.Insecure, "profile", p.cfg.Profile)
	return p, nil
}

// Join contacts the members at addrs (host:port; a name may resolve to
// several addresses) and exchanges the full member list with each. It
// returns how many it reached; it fails with ErrJoin only when it reached
// none, and logs the addresses it missed otherwise. When ctx ends first,
// Join returns ctx's error; the attempt in flight may still complete in
// the background.
func (p *Pool) Join(ctx context.Context, addrs []string) (int, error) {
	if p.isShutdown() {
		return 0, ErrShutdown
	}
	if len(addrs) == 0 {
		return 0, nil
	}
	type result struct {
		n   int
		err error
	}
	res := make(chan result, 1)
	go func() {
		n, err := p.ml.Join(addrs)
		res <- result{n, err}
	}()
	var r result
	select {
	case r = <-res:
	case <-ctx.Done():
		return 0, fmt.Errorf("join gossip pool via %s: %w", strings.Join(addrs, ", "), ctx.Err())
	}
	if r.err != nil && r.n == 0 {
		return 0, fmt.Errorf("%w via %s: %w: check each address and port, that a member listens there, and that it uses the same gossip key",
			ErrJoin, strings.Join(addrs, ", "), flatten(r.err))
	}
	if r.err != nil {
		p.log.Warn("some gossip join addresses were not reached", "reached", r.n, "error", flatten(r.err))
	}
	p.log.Info("joined gossip pool", "via", addrs, "reached", r.n)
	return r.n, nil
}

// flatten turns memberlist's multierror, whose text spans several lines,
// into errors.Join of its parts.
func flatten(err error) error {
	var me *multierror.Error
	if errors.As(err, &me) {
		return errors.Join(me.WrappedErrors()...)
	}
	return err
}

// Members lists every member this pool knows, sorted by name: alive ones,
// and those that failed or left within the last 24 hours (MemberDead,
// MemberLeft). The local member is included.
func (p *Pool) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	out := make([]Member, 0, len(p.members))
	for name, t := range p.members {
		if !t.departed.IsZero() && now.Sub(t.departed) > departedRetention {
			delete(p.members, name)
			continue
		}
		m := t.member
		m.Tags = m.Tags.clone()
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// NumMembers counts the alive members, the local one included.
func (p *Pool) NumMembers() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, t := range p.members {
		if t.member.State == MemberAlive {
			n++
		}
	}
	return n
}

// LocalMember is this member as the pool sees it.
func (p *Pool) LocalMember() Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.members[p.cfg.Name]; ok {
		m := t.member
		m.Tags = m.Tags.clone()
		return m
	}
	// Unreachable once Start returned: memberlist reports the local
	// member's own join while it starts.
	return Member{Name: p.cfg.Name, Role: p.cfg.Role, Tags: p.tags.clone(), State: MemberAlive}
}

// Events streams changes of members, the local member's own join
// included. The channel is closed by Shutdown. The pool keeps at most one
// undelivered event per member, the latest, so a consumer that falls
// behind sees every member's latest state but may miss intermediate ones
// (a member that failed and came back shows as a join): treat an event as
// "this member is now like this", and reconcile against Members from time
// to time.
func (p *Pool) Events() <-chan Event { return p.out }

// UpdateTags replaces this member's tags and gossips them; the others see
// an EventUpdate. It waits up to 5 seconds for the broadcast to go out;
// when that passes it returns an error, but the new tags are in place and
// still spread with the next gossip exchange. Tags too large fail with
// ErrMetaTooLarge and leave the old ones in place.
func (p *Pool) UpdateTags(t Tags) error {
	if p.isShutdown() {
		return ErrShutdown
	}
	p.updateMu.Lock()
	defer p.updateMu.Unlock()
	p.mu.Lock()
	leaving := p.leaving
	p.mu.Unlock()
	meta, err := encodeMeta(p.cfg.Role, t, leaving)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.tags, p.meta = t.clone(), meta
	p.mu.Unlock()
	if err := p.ml.UpdateNode(tagsBroadcastTimeout); err != nil {
		return fmt.Errorf("gossip new tags: %w (they are set, and spread with the next exchange)", err)
	}
	return nil
}

// Leave tells the pool this member is leaving on purpose, so that the
// others report it left (EventLeave) rather than failed, and waits up to
// timeout (0: no limit) for that to go out. It gossips the intent in its
// metadata, tells every scheduler directly, then sends memberlist's leave
// message: a member that heard neither the intent nor the notice reports
// a failure instead. Call Shutdown after it; leaving twice is harmless.
func (p *Pool) Leave(timeout time.Duration) error {
	p.life.RLock()
	defer p.life.RUnlock()
	if p.closed {
		return ErrShutdown
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	remaining := func() time.Duration {
		if deadline.IsZero() {
			return 0
		}
		return max(time.Until(deadline), time.Millisecond)
	}

	p.updateMu.Lock()
	p.mu.Lock()
	first := !p.leaving
	p.leaving = true
	meta, err := encodeMeta(p.cfg.Role, p.tags, true)
	if err == nil { // the size was checked with the flag set when the tags were taken
		p.meta = meta
	}
	p.mu.Unlock()
	if first {
		// UpdateNode returns once the flag has been sent out as often as
		// memberlist retransmits anything: only then is the leave queued
		// behind it.
		if err := p.ml.UpdateNode(remaining()); err != nil {
			p.log.Warn("gossiping the intent to leave timed out; some members may report a failure", "error", err)
		}
	}
	p.updateMu.Unlock()
	p.tellSchedulersLeaving(deadline)

	if err := p.ml.Leave(remaining()); err != nil {
		return fmt.Errorf("leave gossip pool: %w (the others will report this member failed instead of left)", err)
	}
	p.log.Info("left gossip pool", "member", p.cfg.Name)
	return nil
}

// leaveNotice is the kind byte of the user message tellSchedulersLeaving
// sends; the leaving member's name follows it.
const leaveNotice byte = 1

// tellSchedulersLeaving sends every alive scheduler a leave notice over
// memberlist's stream connection (TCP, encrypted like the gossip).
// Gossip alone may carry the leaving flag to some members only, or let
// the leave message overtake it (a member's newer message replaces an
// older one in every queue it waits in), and a scheduler that missed the
// flag would take the departure for a failure and keep a scheduler that
// left a raft voter. Schedulers are the members that act on the
// difference; a notice that cannot be sent is logged.
func (p *Pool) tellSchedulersLeaving(deadline time.Time) {
	notice := append([]byte{leaveNotice}, p.cfg.Name...)
	for _, m := range p.Members() {
		if m.Role != RoleScheduler || m.State != MemberAlive || m.Name == p.cfg.Name {
			continue
		}
		if !deadline.IsZero() && time.Now().After(deadline) {
			p.log.Warn("no time left to tell the other schedulers this member leaves; they may report a failure", "scheduler", m.Name)
			return
		}
		to, err := memberlistNode(m)
		if err == nil {
			err = p.ml.SendReliable(to, notice)
		}
		if err != nil {
			p.log.Warn("telling a scheduler this member leaves failed; it may report a failure", "scheduler", m.Name, "addr", m.Addr, "error", err)
		}
	}
}

// memberlistNode addresses m for memberlist's sends.
func memberlistNode(m Member) (*memberlist.Node, error) {
	host, port, err := net.SplitHostPort(m.Addr)
	if err != nil {
		return nil, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("gossip address %s: %w", m.Addr, err)
	}
	return &memberlist.Node{Name: m.Name, Addr: net.ParseIP(host), Port: uint16(p)}, nil
}

// heardLeaving records a leave notice. A notice that comes after the
// departure it announces (the leave message overtook it) turns the
// recorded failure into a leave, and reports it again as one.
func (p *Pool) heardLeaving(msg []byte) {
	if len(msg) < 2 || msg[0] != leaveNotice {
		p.log.Warn("gossip user message of an unknown kind dropped (another godwit version?)", "bytes", len(msg))
		return
	}
	name := string(msg[1:])
	p.mu.Lock()
	t := p.members[name]
	var left *Event
	switch {
	case t == nil || t.member.State == MemberLeft:
	case t.member.State == MemberAlive:
		t.leaving = true
	case t.member.State == MemberDead:
		t.member.State = MemberLeft
		left = &Event{Kind: EventLeave, Member: t.member}
		left.Member.Tags = left.Member.Tags.clone()
	}
	p.mu.Unlock()
	if left != nil {
		p.log.Debug("gossip member left; its notice came after its departure", "member", name)
		p.queue.push(*left)
	}
}

// Shutdown stops gossiping and closes the Events channel; it waits for a
// Leave in progress. Without Leave first, the others declare this member
// failed once their probes go unanswered (see Timing). Calling it again
// returns the first result.
func (p *Pool) Shutdown() error {
	p.life.Lock()
	defer p.life.Unlock()
	if p.closed {
		return p.shutdownErr
	}
	p.closed = true
	if err := p.ml.Shutdown(); err != nil {
		p.shutdownErr = fmt.Errorf("shut down gossip: %w", err)
	}
	close(p.done)
	p.pumps.Wait()
	close(p.out)
	return p.shutdownErr
}

func (p *Pool) isShutdown() bool {
	p.life.RLock()
	defer p.life.RUnlock()
	return p.closed
}

// observe records a member's new state and queues its event; for a
// departure, kind is EventFail, and observe makes it EventLeave when the
// member had announced it was leaving. memberlist calls it with its node
// lock held: it must not block.
func (p *Pool) observe(kind EventKind, n *memberlist.Node) {
	m := Member{Name: n.Name, Addr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))), State: MemberAlive}
	role, tags, leaving, err := decodeMeta(n.Meta)
	if err != nil {
		p.log.Warn("gossip member's tags unreadable; listing it without role or tags",
			"member", n.Name, "addr", m.Addr, "error", err)
	}
	m.Role, m.Tags = role, tags

	p.mu.Lock()
	prev := p.members[n.Name]
	// A notice (heardLeaving) holds until the member departs; a member
	// that joins again starts afresh.
	noticed := kind != EventJoin && prev != nil && prev.leaving
	var departed time.Time
	if kind == EventFail {
		m.State, departed = MemberDead, time.Now()
		if leaving || noticed {
			kind, m.State = EventLeave, MemberLeft
		}
	}
	p.members[n.Name] = &tracked{member: m, departed: departed, leaving: noticed}
	p.mu.Unlock()
	if kind == EventUpdate && prev != nil && prev.member.State == MemberAlive && prev.member.Addr == m.Addr &&
		prev.member.Role == m.Role && prev.member.Tags.Equal(m.Tags) {
		return // only the leaving flag changed: the leave itself is the event
	}
	p.log.Debug("gossip member changed", "event", kind, "member", m.Name, "addr", m.Addr, "role", m.Role)

	ev := Event{Kind: kind, Member: m}
	ev.Member.Tags = ev.Member.Tags.clone()
	p.queue.push(ev)
}

// delegate receives memberlist's callbacks; it keeps them off Pool's
// exported method set.
type delegate struct{ p *Pool }

var (
	_ memberlist.Delegate         = delegate{}
	_ memberlist.EventDelegate    = delegate{}
	_ memberlist.ConflictDelegate = delegate{}
)

// NodeMeta returns the local member's encoded role and tags, which
// encodeMeta has already kept under limit.
func (d delegate) NodeMeta(limit int) []byte {
	d.p.mu.Lock()
	defer d.p.mu.Unlock()
	return slices.Clone(d.p.meta)
}

// The only user message is the leave notice, sent directly; godwit
// gossips no state of its own: cluster state lives in raft.
func (d delegate) NotifyMsg(msg []byte)                     { d.p.heardLeaving(msg) }
func (delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (delegate) LocalState(join bool) []byte                { return nil }
func (delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d delegate) NotifyJoin(n *memberlist.Node)   { d.p.observe(EventJoin, n) }
func (d delegate) NotifyUpdate(n *memberlist.Node) { d.p.observe(EventUpdate, n) }

// NotifyLeave is called for members that left and failed alike: n.State
// is never set (memberlist v0.7.0 keeps the state in a field that shadows
// it), so observe tells them apart by the leaving flag.
func (d delegate) NotifyLeave(n *memberlist.Node) { d.p.observe(EventFail, n) }

func (d delegate) NotifyConflict(existing, other *memberlist.Node) {
	d.p.log.Error("two gossip members use one name: give every node a unique name",
		"member", existing.Name, "addr", existing.Address(), "other_addr", other.Address())
}
