package membership

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/hashicorp/memberlist"
)

// Role is what a member does in the cluster; it travels in the member's
// gossip metadata so that every member can tell schedulers from agents.
type Role string

const (
	// RoleScheduler is a scheduler replica: a raft voter or candidate.
	RoleScheduler Role = "scheduler"
	// RoleAgent is a node agent.
	RoleAgent Role = "agent"
)

func (r Role) valid() bool { return r == RoleScheduler || r == RoleAgent }

// DefaultBindAddr is where a pool listens (UDP and TCP, one port) when
// Config.BindAddr is empty; 7946 is memberlist's customary port.
const DefaultBindAddr = "0.0.0.0:7946"

// Config configures one member's pool.
type Config struct {
	// Name is the member's name, unique in the pool: the node name (the
	// CN of its certificate).
	Name string
	// Role is RoleScheduler or RoleAgent.
	Role Role
	// BindAddr is the IP and port the pool listens on, UDP and TCP alike;
	// port 0 takes any free port (tests bind 127.0.0.1:0). Empty means
	// DefaultBindAddr.
	BindAddr string
	// AdvertiseAddr is the IP, with an optional port, that other members
	// reach this one at when it differs from BindAddr (NAT, or a bind to
	// 0.0.0.0). The port defaults to the bound one. Empty: memberlist
	// uses the bound IP, or picks a private address of this host when
	// bound to 0.0.0.0.
	AdvertiseAddr string
	// Key is the cluster's gossip key: 16, 24 or 32 bytes (AES-128, -192
	// or -256). Every member must hold the same key; messages without it
	// are refused in both directions. Required unless Insecure.
	Key []byte
	// Insecure gossips in plaintext: for one-host use and tests only.
	Insecure bool
	// Tags are what this member tells the others about itself.
	Tags Tags
	// Profile sets the failure-detection timing; empty means ProfileLAN.
	Profile Profile
	// Logger receives the pool's and memberlist's logs; nil discards
	// them.
	Logger *slog.Logger
}

// validate checks cfg and returns its bind and advertise addresses split
// into host and port.
func (cfg *Config) validate() (bindIP string, bindPort int, advIP string, advPort int, err error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case cfg.Name == "":
		return "", 0, "", 0, invalid("no member name: give the node's name")
	case !cfg.Role.valid():
		return "", 0, "", 0, invalid("role %q: want %q or %q", cfg.Role, RoleScheduler, RoleAgent)
	case !cfg.Profile.valid():
		return "", 0, "", 0, invalid("profile %q: want %q or %q", cfg.Profile, ProfileLAN, ProfileTest)
	case cfg.Insecure && len(cfg.Key) > 0:
		return "", 0, "", 0, invalid("both a gossip key and insecure are set: drop one")
	case !cfg.Insecure && len(cfg.Key) == 0:
		return "", 0, "", 0, invalid("no gossip key: give the cluster's gossip key file (or run insecure, for one-host tests only)")
	case !cfg.Insecure && memberlist.ValidateKey(cfg.Key) != nil:
		return "", 0, "", 0, invalid("gossip key is %d bytes, want 16, 24 or 32: check the gossip key file", len(cfg.Key))
	case cfg.Tags.Expect < 0:
		return "", 0, "", 0, invalid("bootstrap-expect %d is negative", cfg.Tags.Expect)
	}

	bind := cfg.BindAddr
	if bind == "" {
		bind = DefaultBindAddr
	}
	bindIP, portStr, err := net.SplitHostPort(bind)
	if err != nil {
		return "", 0, "", 0, invalid("bind address %q: %v: want IP:port", bind, err)
	}
	if bindIP == "" {
		bindIP = "0.0.0.0"
	}
	if net.ParseIP(bindIP) == nil {
		return "", 0, "", 0, invalid("bind address %q: %q is not an IP address", bind, bindIP)
	}
	if bindPort, err = parsePort(portStr); err != nil {
		return "", 0, "", 0, invalid("bind address %q: %v", bind, err)
	}

	if cfg.AdvertiseAddr != "" {
		advIP, portStr = cfg.AdvertiseAddr, ""
		if h, p, splitErr := net.SplitHostPort(cfg.AdvertiseAddr); splitErr == nil {
			advIP, portStr = h, p
		}
		if net.ParseIP(advIP) == nil {
			return "", 0, "", 0, invalid("advertise address %q: %q is not an IP address", cfg.AdvertiseAddr, advIP)
		}
		if portStr != "" {
			if advPort, err = parsePort(portStr); err != nil {
				return "", 0, "", 0, invalid("advertise address %q: %v", cfg.AdvertiseAddr, err)
			}
		}
	}
	return bindIP, bindPort, advIP, advPort, nil
}

func parsePort(s string) (int, error) {
	port, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q is not a number from 0 to 65535", s)
	}
	return int(port), nil
}
