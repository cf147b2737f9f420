package migrate

import (
	"errors"
	"strings"
	"testing"
)

// thisMachine is what `godwit doctor` reports here: no soft-dirty, and a
// pipe-max-size that an agent raises itself.
var thisMachine = Capabilities{
	StopCopy: {Supported: true},
	Stream:   {Supported: true},
	PreCopy:  {Supported: false, Reason: "soft-dirty tracking: not in this kernel"},
	PostCopy: {Supported: true},
}

func TestChoose(t *testing.T) {
	noStream := Capabilities{
		StopCopy: {Supported: true},
		Stream:   {Supported: false, Reason: "pipe-max-size 1 MiB: raise fs.pipe-max-size to 4 MiB"},
		PostCopy: {Supported: false, Reason: "userfaultfd: not allowed"},
	}
	everything := Capabilities{StopCopy: {Supported: true}, Stream: {Supported: true}, PreCopy: {Supported: true}, PostCopy: {Supported: true}}
	tests := []struct {
		name             string
		want             Strategy
		src, dst         Capabilities
		minimiseDowntime bool
		got              Strategy
		errFrags         []string // the error must name these; empty: no error
		reasonFrags      []string
	}{
		{name: "auto here takes stream, saying why not pre-copy once", want: Auto, src: thisMachine, dst: thisMachine,
			got: Stream, reasonFrags: []string{"not pre-copy: both hosts: soft-dirty tracking: not in this kernel"}},
		{name: "auto names each host's own reason", want: Auto, src: thisMachine, dst: Capabilities{
			StopCopy: {Supported: true}, Stream: {Supported: true}, PreCopy: {Reason: "soft-dirty: criu too old"}},
			got: Stream, reasonFrags: []string{"not pre-copy: source: soft-dirty tracking: not in this kernel; destination: soft-dirty: criu too old"}},
		{name: "auto with soft-dirty on both takes pre-copy", want: Auto, src: everything, dst: everything, got: PreCopy},
		{name: "auto never takes post-copy unasked", want: Auto, src: noStream, dst: everything, got: StopCopy},
		{name: "auto minimising downtime takes post-copy", want: Auto, src: thisMachine, dst: thisMachine, minimiseDowntime: true, got: PostCopy},
		{name: "auto minimising downtime without post-copy falls back", want: Auto, src: noStream, dst: thisMachine, minimiseDowntime: true, got: StopCopy},
		{name: "named and supported", want: PostCopy, src: thisMachine, dst: everything, got: PostCopy},
		{name: "named, the destination lacks it", want: Stream, src: thisMachine, dst: noStream,
			errFrags: []string{"stream", "destination", "pipe-max-size"}},
		{name: "named, not reported by the source", want: PreCopy, src: Capabilities{}, dst: everything,
			errFrags: []string{"source did not report it"}},
		{name: "auto, nothing in common", want: Auto, src: Capabilities{}, dst: thisMachine,
			errFrags: []string{"no strategy", "stop-copy"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Choose(tt.want, tt.src, tt.dst, tt.minimiseDowntime)
			if len(tt.errFrags) > 0 {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("err = %v, want ErrUnsupported", err)
				}
				for _, f := range tt.errFrags {
					if !strings.Contains(err.Error(), f) {
						t.Errorf("error %q does not name %q", err, f)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Strategy != tt.got {
				t.Errorf("chose %s (%s), want %s", c.Strategy, c.Reason, tt.got)
			}
			for _, f := range tt.reasonFrags {
				if !strings.Contains(c.Reason, f) {
					t.Errorf("reason %q does not say %q", c.Reason, f)
				}
			}
		})
	}
}

func TestParseStrategy(t *testing.T) {
	for _, s := range []string{"auto", "stop-copy", "stream", "pre-copy", "post-copy"} {
		if got, err := ParseStrategy(s); err != nil || string(got) != s {
			t.Errorf("ParseStrategy(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseStrategy("live"); err == nil || !strings.Contains(err.Error(), "stop-copy") {
		t.Errorf("ParseStrategy(live) = %v, want an error listing the strategies", err)
	}
}
