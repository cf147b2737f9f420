package balance

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy is the balancer's settings: what Plan decides with, and what
// the leader's loop runs it with (Enabled, Interval). It is stored in
// raft as JSON; operators change one key at a time with
// `godwit balance set KEY=VALUE` (Set), and every key is listed, with
// its meaning and default, in docs/balance.md.
//
// Units: fractions (Trigger, Target, StableTolerance, Headroom) are
// plain numbers (0.2 is 20%); a gain is 100 x nodes x the reduction of
// the squared imbalance (see Move.Gain); a cost is DowntimeWeight per
// second of predicted downtime plus GiBWeight per GiB of predicted
// transfer (see Move.Cost).
type Policy struct {
	// Enabled lets the leader execute plans; Plan itself ignores it, so
	// that `balance plan` (a dry run) works on a disabled balancer.
	Enabled bool `json:"enabled"`
	// Interval is how often the leader plans.
	Interval time.Duration `json:"interval"`

	// Trigger is the imbalance above which balancing starts; Target the
	// imbalance at which it stops (hysteresis: between the two, a
	// balancer that was balancing goes on, one that was not stays idle).
	Trigger float64 `json:"trigger"`
	Target  float64 `json:"target"`
	// CPUWeight and MemoryWeight weigh the CPU and memory coefficients of
	// variation in the imbalance.
	CPUWeight    float64 `json:"cpu_weight"`
	MemoryWeight float64 `json:"memory_weight"`
	// MeanFloor is the least mean utilisation a coefficient of variation
	// is taken over: on nodes used less than that on average, spread
	// counts as if they were that full, so that a lightly used resource
	// (nodes at 10% and 30% of their memory) does not pay for moves that
	// relieve nothing. 0 gives the plain coefficient of variation.
	MeanFloor float64 `json:"mean_floor"`

	// Window is how far back load samples are read.
	Window time.Duration `json:"window"`
	// StableFor is how long a container's load must have been steady for
	// its move's gain to count in full; a load steady for half of it
	// counts half. Zero counts every gain in full.
	StableFor time.Duration `json:"stable_for"`
	// StableTolerance is how far (a fraction of the level) a sample may
	// stray from the load's level and still count as the same level.
	StableTolerance float64 `json:"stable_tolerance"`

	// CostMultiple: a move is made only when its gain, times its
	// stability weight, exceeds CostMultiple times its cost.
	CostMultiple float64 `json:"cost_multiple"`
	// DowntimeWeight is the cost of one second of predicted downtime.
	DowntimeWeight float64 `json:"downtime_weight"`
	// GiBWeight is the cost of one GiB of predicted transfer.
	GiBWeight float64 `json:"gib_weight"`
	// Bandwidth (bytes per second) is assumed between two nodes when
	// neither a measurement of the pair nor any past migration says
	// better.
	Bandwidth int64 `json:"bandwidth"`
	// DowntimePerGiB is the downtime assumed per GiB moved when no past
	// migration of the strategy says better; MinDowntime is the least
	// downtime any move is predicted (a freeze, a restore and a
	// commit cost that much whatever the size).
	DowntimePerGiB time.Duration `json:"downtime_per_gib"`
	MinDowntime    time.Duration `json:"min_downtime"`
	// Strategy is the migration strategy the balancer's moves ask for
	// ("auto" lets the coordinator choose); past migrations of that
	// strategy (any, for auto) predict the downtime.
	Strategy string `json:"strategy"`

	// Cooldown: no container is moved again within Cooldown of its last
	// move, whoever moved it.
	Cooldown time.Duration `json:"cooldown"`
	// ReturnAfter: no container is moved back to a node it left less
	// than ReturnAfter ago (the ping-pong guard); at least Cooldown.
	ReturnAfter time.Duration `json:"return_after"`
	// Headroom is the fraction of a destination's capacity that must stay
	// free after a move, in requests and in measured use alike.
	Headroom float64 `json:"headroom"`
	// MaxMoves is how many migrations may be open at once in the whole
	// cluster, whoever started them; MaxMovesPerNode how many may touch
	// one node (as source or destination).
	MaxMoves        int `json:"max_moves"`
	MaxMovesPerNode int `json:"max_moves_per_node"`
}

// Defaults. The reasoning behind each is in docs/balance.md.
const (
	DefaultInterval = 30 * time.Second
	DefaultTrigger  = 0.25
	DefaultTarget   = 0.15
	// DefaultMeanFloor: spread is judged as if nodes were at least half
	// used.
	DefaultMeanFloor       = 0.5
	DefaultWindow          = 5 * time.Minute
	DefaultStableFor       = 2 * time.Minute
	DefaultStableTolerance = 0.25
	DefaultCostMultiple    = 2.0
	DefaultDowntimeWeight  = 1.0
	DefaultGiBWeight       = 1.0
	// DefaultBandwidth is 100 MiB/s: below what CRIU's page server moved
	// between two nodes here over TLS (about 220 MiB/s), since a real
	// network is shared.
	DefaultBandwidth = 100 << 20
	// DefaultDowntimePerGiB: stop-copy froze 256 MiB for 1.4 to 1.6 s
	// here (about 6 s/GiB), post-copy about 0.6 s whatever the size;
	// 4 s/GiB sits between until the cluster has its own figures.
	DefaultDowntimePerGiB  = 4 * time.Second
	DefaultMinDowntime     = 300 * time.Millisecond
	DefaultStrategy        = StrategyAuto
	DefaultCooldown        = 10 * time.Minute
	DefaultReturnAfter     = 30 * time.Minute
	DefaultHeadroom        = 0.10
	DefaultMaxMoves        = 32
	DefaultMaxMovesPerNode = 2
)

// StrategyAuto lets the coordinator choose the strategy of each move.
// The other words are migrate.Strategy's, repeated here since balance
// imports nothing of the migration engine.
const StrategyAuto = "auto"

// strategies are the words Policy.Strategy accepts.
var strategies = []string{StrategyAuto, "stop-copy", "stream", "pre-copy", "post-copy"}

// Bounds that keep a policy sensible.
const (
	// maxImbalance bounds Trigger and Target: a coefficient of variation
	// of 10 means one node holds everything among a hundred.
	maxImbalance = 10
	// maxTolerance bounds StableTolerance: beyond 10x any sample is the
	// same level.
	maxTolerance = 10
)

// Default returns the policy a new cluster starts with: disabled.
func Default() Policy {
	return Policy{
		Interval:        DefaultInterval,
		Trigger:         DefaultTrigger,
		Target:          DefaultTarget,
		CPUWeight:       1,
		MemoryWeight:    1,
		MeanFloor:       DefaultMeanFloor,
		Window:          DefaultWindow,
		StableFor:       DefaultStableFor,
		StableTolerance: DefaultStableTolerance,
		CostMultiple:    DefaultCostMultiple,
		DowntimeWeight:  DefaultDowntimeWeight,
		GiBWeight:       DefaultGiBWeight,
		Bandwidth:       DefaultBandwidth,
		DowntimePerGiB:  DefaultDowntimePerGiB,
		MinDowntime:     DefaultMinDowntime,
		Strategy:        DefaultStrategy,
		Cooldown:        DefaultCooldown,
		ReturnAfter:     DefaultReturnAfter,
		Headroom:        DefaultHeadroom,
		MaxMoves:        DefaultMaxMoves,
		MaxMovesPerNode: DefaultMaxMovesPerNode,
	}
}

// Validate returns nil for a usable policy, else an error wrapping
// ErrInvalidPolicy that names every bad key and what to set it to.
func (p Policy) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: %s: %s (godwit balance set %s=VALUE)", ErrInvalidPolicy, key, fmt.Sprintf(format, args...), key))
	}
	finite := func(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
	if p.Interval <= 0 {
		bad("interval", "%s: the balancer needs a positive interval, such as 30s", p.Interval)
	}
	if !finite(p.Target) || p.Target < 0 || p.Target > maxImbalance {
		bad("target", "%g is outside 0 to %d", p.Target, maxImbalance)
	}
	if !finite(p.Trigger) || p.Trigger <= 0 || p.Trigger > maxImbalance {
		bad("trigger", "%g is outside (0, %d]", p.Trigger, maxImbalance)
	} else if p.Trigger <= p.Target {
		bad("trigger", "%g is not above the target %g: balancing starts above the trigger and stops at the target, so the trigger must be the higher (raise it, or lower target first)", p.Trigger, p.Target)
	}
	if !finite(p.CPUWeight) || p.CPUWeight < 0 {
		bad("cpu_weight", "%g must be zero or more", p.CPUWeight)
	}
	if !finite(p.MemoryWeight) || p.MemoryWeight < 0 {
		bad("memory_weight", "%g must be zero or more", p.MemoryWeight)
	}
	if !finite(p.MeanFloor) || p.MeanFloor < 0 || p.MeanFloor > 1 {
		bad("mean_floor", "%g is outside [0, 1]: it is a utilisation", p.MeanFloor)
	}
	if p.CPUWeight == 0 && p.MemoryWeight == 0 {
		bad("cpu_weight", "CPU and memory weights are both zero: the imbalance would weigh nothing; give one of them a positive weight")
	}
	if p.Window <= 0 {
		bad("window", "%s: load samples need a positive window, such as 5m", p.Window)
	}
	if p.StableFor < 0 || p.StableFor > p.Window {
		bad("stable_for", "%s must be between 0 and the window (%s): no load can look steady for longer than the samples kept", p.StableFor, p.Window)
	}
	if !finite(p.StableTolerance) || p.StableTolerance <= 0 || p.StableTolerance > maxTolerance {
		bad("stable_tolerance", "%g is outside (0, %d]", p.StableTolerance, maxTolerance)
	}
	if !finite(p.CostMultiple) || p.CostMultiple < 0 {
		bad("cost_multiple", "%g must be zero or more", p.CostMultiple)
	}
	if !finite(p.DowntimeWeight) || p.DowntimeWeight < 0 {
		bad("downtime_weight", "%g must be zero or more", p.DowntimeWeight)
	}
	if !finite(p.GiBWeight) || p.GiBWeight < 0 {
		bad("gib_weight", "%g must be zero or more", p.GiBWeight)
	}
	if p.Bandwidth <= 0 {
		bad("bandwidth", "%d bytes/s: assume a positive bandwidth, such as 100MiB", p.Bandwidth)
	}
	if p.DowntimePerGiB < 0 {
		bad("downtime_per_gib", "%s must be zero or more", p.DowntimePerGiB)
	}
	if p.MinDowntime < 0 {
		bad("min_downtime", "%s must be zero or more", p.MinDowntime)
	}
	if !slices.Contains(strategies, p.Strategy) {
		bad("strategy", "%q is not one of %s", p.Strategy, strings.Join(strategies, ", "))
	}
	if p.Cooldown < 0 {
		bad("cooldown", "%s must be zero or more", p.Cooldown)
	}
	if p.ReturnAfter < p.Cooldown {
		bad("return_after", "%s is shorter than the cooldown (%s): a container could go back where it came from as soon as it may move again; set it to the cooldown or longer", p.ReturnAfter, p.Cooldown)
	}
	if !finite(p.Headroom) || p.Headroom < 0 || p.Headroom >= 1 {
		bad("headroom", "%g is outside [0, 1): it is the fraction of a destination's capacity kept free", p.Headroom)
	}
	if p.MaxMoves < 1 {
		bad("max_moves", "%d: allow at least one move at a time (disable the balancer to stop it: godwit balance disable)", p.MaxMoves)
	}
	if p.MaxMovesPerNode < 1 {
		bad("max_moves_per_node", "%d: allow at least one move per node at a time", p.MaxMovesPerNode)
	}
	return errors.Join(errs...)
}

// Setting is one policy key as `balance status` shows it.
type Setting struct {
	Key   string `json:"key"`
	Value string `json:"value"`
	// Help says what the key means, in one line.
	Help string `json:"help"`
}

// setting is one key: how to read it, how to parse it into a policy.
type setting struct {
	key, help string
	get       func(p *Policy) string
	set       func(p *Policy, v string) error
}

// settings lists every key in the order `balance status` shows them;
// the keys are the policy's JSON names.
var settings = []setting{
	boolKey("enabled", "the leader executes plans (balance enable|disable)", func(p *Policy) *bool { return &p.Enabled }),
	durationKey("interval", "how often the leader plans", func(p *Policy) *time.Duration { return &p.Interval }),
	fractionKey("trigger", "imbalance above which balancing starts", func(p *Policy) *float64 { return &p.Trigger }),
	fractionKey("target", "imbalance at which balancing stops", func(p *Policy) *float64 { return &p.Target }),
	floatKey("cpu_weight", "weight of CPU in the imbalance", func(p *Policy) *float64 { return &p.CPUWeight }),
	floatKey("memory_weight", "weight of memory in the imbalance", func(p *Policy) *float64 { return &p.MemoryWeight }),
	fractionKey("mean_floor", "least mean utilisation the imbalance divides the spread by", func(p *Policy) *float64 { return &p.MeanFloor }),
	durationKey("window", "how far back load samples are read", func(p *Policy) *time.Duration { return &p.Window }),
	durationKey("stable_for", "how long a load must be steady for its move's gain to count in full", func(p *Policy) *time.Duration { return &p.StableFor }),
	fractionKey("stable_tolerance", "how far a sample may stray from the load's level and still be steady", func(p *Policy) *float64 { return &p.StableTolerance }),
	floatKey("cost_multiple", "a move's weighted gain must exceed this many times its cost", func(p *Policy) *float64 { return &p.CostMultiple }),
	floatKey("downtime_weight", "cost of one second of predicted downtime", func(p *Policy) *float64 { return &p.DowntimeWeight }),
	floatKey("gib_weight", "cost of one GiB of predicted transfer", func(p *Policy) *float64 { return &p.GiBWeight }),
	bytesKey("bandwidth", "bandwidth (per second) assumed between nodes without measurements", func(p *Policy) *int64 { return &p.Bandwidth }),
	durationKey("downtime_per_gib", "downtime assumed per GiB without past migrations", func(p *Policy) *time.Duration { return &p.DowntimePerGiB }),
	durationKey("min_downtime", "least downtime any move is predicted", func(p *Policy) *time.Duration { return &p.MinDowntime }),
	{
		key: "strategy", help: "strategy the balancer's moves use (" + strings.Join(strategies, ", ") + ")",
		get: func(p *Policy) string { return p.Strategy },
		set: func(p *Policy, v string) error { p.Strategy = v; return nil },
	},
	durationKey("cooldown", "no container moves again within this of its last move", func(p *Policy) *time.Duration { return &p.Cooldown }),
	durationKey("return_after", "no container goes back to a node it left within this", func(p *Policy) *time.Duration { return &p.ReturnAfter }),
	fractionKey("headroom", "fraction of a destination's capacity kept free", func(p *Policy) *float64 { return &p.Headroom }),
	intKey("max_moves", "most migrations open at once in the cluster", func(p *Policy) *int { return &p.MaxMoves }),
	intKey("max_moves_per_node", "most migrations open at once touching one node", func(p *Policy) *int { return &p.MaxMovesPerNode }),
}

// Keys returns every key Set accepts, in the order Settings lists them.
func Keys() []string {
	keys := make([]string, len(settings))
	for i, s := range settings {
		keys[i] = s.key
	}
	return keys
}

// Settings returns every key of p with its value formatted as Set
// accepts it back.
func (p Policy) Settings() []Setting {
	out := make([]Setting, len(settings))
	for i, s := range settings {
		out[i] = Setting{Key: s.key, Value: s.get(&p), Help: s.help}
	}
	return out
}

// Set parses `balance set KEY=VALUE`'s key and value into p. Keys are
// the JSON names (a dash may stand for an underscore); durations are Go
// durations (90s, 10m); fractions take 0.2 or 20%; bandwidth takes bytes
// or a size with KiB, MiB or GiB (per second). Set changes p only when
// the whole policy, changed, still passes Validate; its errors wrap
// ErrUnknownKey or ErrInvalidPolicy and say what to do.
func (p *Policy) Set(key, value string) error {
	k := strings.ReplaceAll(strings.ToLower(strings.TrimSpace(key)), "-", "_")
	i := slices.IndexFunc(settings, func(s setting) bool { return s.key == k })
	if i < 0 {
		return fmt.Errorf("%w %q: the keys are %s", ErrUnknownKey, key, strings.Join(Keys(), ", "))
	}
	next := *p
	if err := settings[i].set(&next, strings.TrimSpace(value)); err != nil {
		return fmt.Errorf("%w: %s=%s: %w", ErrInvalidPolicy, k, value, err)
	}
	if err := next.Validate(); err != nil {
		return err
	}
	*p = next
	return nil
}

func boolKey(key, help string, field func(*Policy) *bool) setting {
	return setting{key: key, help: help,
		get: func(p *Policy) string { return strconv.FormatBool(*field(p)) },
		set: func(p *Policy, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return errors.New("want true or false")
			}
			*field(p) = b
			return nil
		}}
}

func durationKey(key, help string, field func(*Policy) *time.Duration) setting {
	return setting{key: key, help: help,
		get: func(p *Policy) string { return field(p).String() },
		set: func(p *Policy, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return errors.New("want a duration such as 90s or 10m")
			}
			*field(p) = d
			return nil
		}}
}

func floatKey(key, help string, field func(*Policy) *float64) setting {
	return setting{key: key, help: help,
		get: func(p *Policy) string { return strconv.FormatFloat(*field(p), 'g', -1, 64) },
		set: func(p *Policy, v string) error {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return errors.New("want a number such as 1.5")
			}
			*field(p) = f
			return nil
		}}
}

func fractionKey(key, help string, field func(*Policy) *float64) setting {
	return setting{key: key, help: help,
		get: func(p *Policy) string { return strconv.FormatFloat(*field(p), 'g', -1, 64) },
		set: func(p *Policy, v string) error {
			f, err := parseFraction(v)
			if err != nil {
				return err
			}
			*field(p) = f
			return nil
		}}
}

func intKey(key, help string, field func(*Policy) *int) setting {
	return setting{key: key, help: help,
		get: func(p *Policy) string { return strconv.Itoa(*field(p)) },
		set: func(p *Policy, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return errors.New("want a whole number")
			}
			*field(p) = n
			return nil
		}}
}

func bytesKey(key, help string, field func(*Policy) *int64) setting {
	return setting{key: key, help: help,
		get: func(p *Policy) string { return formatSize(*field(p)) },
		set: func(p *Policy, v string) error {
			n, err := parseSize(v)
			if err != nil {
				return err
			}
			*field(p) = n
			return nil
		}}
}

// parseFraction reads 0.2 or 20%.
func parseFraction(v string) (float64, error) {
	scale := 1.0
	if s, ok := strings.CutSuffix(v, "%"); ok {
		v, scale = s, 0.01
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return 0, errors.New("want a fraction such as 0.2 or 20%")
	}
	return f * scale, nil
}

// sizeUnits are the suffixes parseSize accepts, largest first.
var sizeUnits = []struct {
	suffix string
	bytes  int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// parseSize reads a byte count: 104857600, 100MiB, 1.5GiB (a trailing
// "/s" is allowed, since the only size key is a bandwidth).
func parseSize(v string) (int64, error) {
	v = strings.TrimSuffix(strings.TrimSpace(v), "/s")
	unit := int64(1)
	for _, u := range sizeUnits {
		if s, ok := strings.CutSuffix(v, u.suffix); ok {
			v, unit = strings.TrimSpace(s), u.bytes
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f*float64(unit) > math.MaxInt64 {
		return 0, errors.New("want a size in bytes, or with KiB, MiB or GiB, such as 100MiB")
	}
	return int64(f * float64(unit)), nil
}

// formatSize writes n in the largest unit that divides it (100MiB), so
// that Settings' value parses back to the same number.
func formatSize(n int64) string {
	for _, u := range sizeUnits[:len(sizeUnits)-1] {
		if n != 0 && n%u.bytes == 0 {
			return strconv.FormatInt(n/u.bytes, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
