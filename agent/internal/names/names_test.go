package names

import (
	"strings"
	"testing"
)

func TestValidContainer(t *testing.T) {
	tests := []struct {
		name string
		want bool
	}{
		{"c1", true},
		{"web_1.blue-2", true},
		{strings.Repeat("a", 63), true},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"-lead", false},
		{".hidden", false},
		{"a/b", false},
		{"a b", false},
		{"../x", false},
	}
	for _, tt := range tests {
		if got := ValidContainer(tt.name); got != tt.want {
			t.Errorf("ValidContainer(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}
