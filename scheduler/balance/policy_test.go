package balance_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/godwit/godwit/scheduler/balance"
)

func TestDefaultPolicyIsValid(t *testing.T) {
	p := balance.Default()
	if err := p.Validate(); err != nil {
		t.Fatalf("Default().Validate() = %v", err)
	}
	if p.Enabled {
		t.Errorf("the default policy is enabled: a new cluster must not start moving containers on its own")
	}
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(p *balance.Policy)
		// key must be named in the error.
		key string
	}{
		{"trigger not above the target", func(p *balance.Policy) { p.Trigger = p.Target }, "trigger"},
		{"negative target", func(p *balance.Policy) { p.Target = -0.1 }, "target"},
		{"no weight at all", func(p *balance.Policy) { p.CPUWeight, p.MemoryWeight = 0, 0 }, "cpu_weight"},
		{"stable_for longer than the window", func(p *balance.Policy) { p.StableFor = p.Window + time.Second }, "stable_for"},
		{"zero tolerance", func(p *balance.Policy) { p.StableTolerance = 0 }, "stable_tolerance"},
		{"negative cost multiple", func(p *balance.Policy) { p.CostMultiple = -1 }, "cost_multiple"},
		{"no bandwidth", func(p *balance.Policy) { p.Bandwidth = 0 }, "bandwidth"},
		{"unknown strategy", func(p *balance.Policy) { p.Strategy = "teleport" }, "strategy"},
		{"return_after shorter than the cooldown", func(p *balance.Policy) { p.ReturnAfter = p.Cooldown - time.Second }, "return_after"},
		{"headroom of all", func(p *balance.Policy) { p.Headroom = 1 }, "headroom"},
		{"no moves", func(p *balance.Policy) { p.MaxMoves = 0 }, "max_moves"},
		{"no moves per node", func(p *balance.Policy) { p.MaxMovesPerNode = 0 }, "max_moves_per_node"},
		{"no interval", func(p *balance.Policy) { p.Interval = 0 }, "interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := balance.Default()
			tc.edit(&p)
			err := p.Validate()
			if !errors.Is(err, balance.ErrInvalidPolicy) {
				t.Fatalf("Validate() = %v, want ErrInvalidPolicy", err)
			}
			if !strings.Contains(err.Error(), tc.key+":") || !strings.Contains(err.Error(), "godwit balance set "+tc.key+"=") {
				t.Errorf("error %q does not name the key %s and how to set it", err, tc.key)
			}
		})
	}
}

func TestPolicySet(t *testing.T) {
	tests := []struct {
		key, value string
		check      func(p balance.Policy) bool
	}{
		{"enabled", "true", func(p balance.Policy) bool { return p.Enabled }},
		{"trigger", "30%", func(p balance.Policy) bool { return p.Trigger == 0.3 }},
		{"target", "0.05", func(p balance.Policy) bool { return p.Target == 0.05 }},
		{"cost-multiple", "3.5", func(p balance.Policy) bool { return p.CostMultiple == 3.5 }},
		{"Cooldown", "15m", func(p balance.Policy) bool { return p.Cooldown == 15*time.Minute }},
		{"bandwidth", "1.5GiB", func(p balance.Policy) bool { return p.Bandwidth == 3<<29 }},
		{"bandwidth", "250MiB/s", func(p balance.Policy) bool { return p.Bandwidth == 250<<20 }},
		{"bandwidth", "1000000", func(p balance.Policy) bool { return p.Bandwidth == 1000000 }},
		{"max_moves", "8", func(p balance.Policy) bool { return p.MaxMoves == 8 }},
		{"strategy", "post-copy", func(p balance.Policy) bool { return p.Strategy == "post-copy" }},
	}
	for _, tc := range tests {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			p := balance.Default()
			if err := p.Set(tc.key, tc.value); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if !tc.check(p) {
				t.Errorf("Set(%s, %s) gave %+v", tc.key, tc.value, p)
			}
		})
	}
}

func TestPolicySetRefuses(t *testing.T) {
	tests := []struct {
		name, key, value string
		want             error
		// say must be in the error.
		say string
	}{
		{"an unknown key", "speed", "1", balance.ErrUnknownKey, "the keys are enabled, interval"},
		{"a value that does not parse", "cooldown", "soon", balance.ErrInvalidPolicy, "want a duration"},
		{"a fraction that does not parse", "headroom", "lots", balance.ErrInvalidPolicy, "want a fraction"},
		{"a value that breaks the policy", "trigger", "0.05", balance.ErrInvalidPolicy, "lower target first"},
		{"a size without a number", "bandwidth", "fastMiB", balance.ErrInvalidPolicy, "want a size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := balance.Default()
			err := p.Set(tc.key, tc.value)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("Set(%s, %s) = %v, want %v saying %q", tc.key, tc.value, err, tc.want, tc.say)
			}
			if !reflect.DeepEqual(p, balance.Default()) {
				t.Errorf("a refused Set changed the policy to %+v", p)
			}
		})
	}
}

// TestPolicySettingsRoundTrip checks that every key Settings shows sets
// back the same value, and that the JSON form keeps everything.
func TestPolicySettingsRoundTrip(t *testing.T) {
	p := balance.Default()
	for k, v := range map[string]string{"enabled": "true", "bandwidth": "300MiB", "headroom": "0.15", "min_downtime": "250ms"} {
		if err := p.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	settings := p.Settings()
	keys := make([]string, len(settings))
	for i, s := range settings {
		keys[i] = s.Key
		if s.Help == "" {
			t.Errorf("key %s has no help", s.Key)
		}
	}
	if !slices.Equal(keys, balance.Keys()) {
		t.Errorf("Settings keys %v, Keys %v", keys, balance.Keys())
	}
	q := balance.Default()
	for _, s := range settings {
		if err := q.Set(s.Key, s.Value); err != nil {
			t.Fatalf("Set(%s, %s) of its own value: %v", s.Key, s.Value, err)
		}
	}
	if !reflect.DeepEqual(p, q) {
		t.Errorf("setting every shown value gave %+v, want %+v", q, p)
	}

	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var r balance.Policy
	if err := json.Unmarshal(b, &r); err != nil || !reflect.DeepEqual(r, p) {
		t.Errorf("JSON round trip gave %+v (err %v), want %+v", r, err, p)
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range balance.Keys() {
		if _, ok := fields[k]; !ok {
			t.Errorf("key %s is not the JSON name of a policy field (%s)", k, b)
		}
	}
}
