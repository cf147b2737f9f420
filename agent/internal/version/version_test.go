package version

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Version
	}{
		{"three numbers", "4.2.1", Version{Major: 4, Minor: 2, Patch: 1}},
		{"missing patch level reads as zero", "3.17", Version{Major: 3, Minor: 17}},
		{"git tag prefix", "v1.3.6", Version{Major: 1, Minor: 3, Patch: 6}},
		{"debian suffix", "1.3.6+ds1", Version{Major: 1, Minor: 3, Patch: 6}},
		{"release candidate", "1.4.0-rc.1", Version{Major: 1, Minor: 4}},
		{"kernel release", "6.18.44-fc-v782", Version{Major: 6, Minor: 18, Patch: 44}},
		{"fourth number ignored", "1.2.3.4", Version{Major: 1, Minor: 2, Patch: 3}},
		{"trailing text", "4.2 (GitID v4.2)", Version{Major: 4, Minor: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr error
		wantMsg string
	}{
		{"empty", "", ErrNoVersion, `"" is not a version number`},
		{"word", "new", ErrNoVersion, `"new" is not a version number`},
		{"single number", "4", ErrNoVersion, `"4" is not a version number`},
		{"not at the start", "runc version 1.3.6", ErrNoVersion, `"runc version 1.3.6" is not a version number`},
		{"uppercase prefix", "V1.2", ErrNoVersion, `"V1.2" is not a version number`},
		{"number too large", "99999999999999999999.1", strconv.ErrRange, "value out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := Parse(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse(%q) = %s, %v; want %v", tt.in, v, err, tt.wantErr)
			}
			if got := err.Error(); !strings.Contains(got, tt.wantMsg) {
				t.Errorf("Parse(%q) error %q, want it to contain %q", tt.in, got, tt.wantMsg)
			}
		})
	}
}

func TestLess(t *testing.T) {
	tests := []struct {
		name string
		a, b Version
		want bool
	}{
		{"major decides", Version{3, 17, 0}, Version{4, 2, 0}, true},
		{"minor decides", Version{4, 1, 9}, Version{4, 2, 0}, true},
		{"patch decides", Version{4, 2, 0}, Version{4, 2, 1}, true},
		{"equal is not less", Version{4, 2, 0}, Version{4, 2, 0}, false},
		{"newer is not less", Version{4, 2, 1}, Version{4, 2, 0}, false},
		{"minor above ten", Version{1, 10, 0}, Version{1, 9, 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.a.Less(tt.b); got != tt.want {
				t.Errorf("%s < %s = %v, want %v", tt.a, tt.b, got, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		name string
		in   Version
		want string
	}{
		{"full", Version{Major: 1, Minor: 3, Patch: 6}, "1.3.6"},
		{"zero patch is printed", Version{Major: 4, Minor: 2}, "4.2.0"},
		{"zero value", Version{}, "0.0.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.in.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
		})
	}
}
