package placement

import (
	"slices"
	"testing"
)

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{512, "512 B"},
		{1536, "1.5 KiB"},
		{128 << 20, "128 MiB"},
		{2 << 30, "2 GiB"},
		{1536 << 20, "1.5 GiB"},
		{(1 << 30) + 1, "1 GiB"},
		{3 << 40, "3 TiB"},
		{-(2 << 30), "-2 GiB"},
	}
	for _, tc := range tests {
		if got := formatBytes(tc.in); got != tc.want {
			t.Errorf("formatBytes(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFormatCPU(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 CPU"},
		{10, "0.01 CPU"},
		{500, "0.5 CPU"},
		{1000, "1 CPU"},
		{1500, "1.5 CPUs"},
		{4000, "4 CPUs"},
		{-2000, "-2 CPUs"},
	}
	for _, tc := range tests {
		if got := formatCPU(tc.in); got != tc.want {
			t.Errorf("formatCPU(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestMissingFlags covers the unsorted fallback that the harness, which
// always sorts flags as state.CPU requires, cannot reach.
func TestMissingFlags(t *testing.T) {
	tests := []struct {
		name       string
		need, have []string
		want       []string
	}{
		{"all present", []string{"avx2", "fpu"}, []string{"avx2", "fpu", "sse"}, nil},
		{"one missing in the middle", []string{"avx2", "fpu", "sse"}, []string{"avx2", "sse"}, []string{"fpu"}},
		{"missing past the end", []string{"zz"}, []string{"avx2"}, []string{"zz"}},
		{"nothing had", []string{"a", "b"}, nil, []string{"a", "b"}},
		{"nothing needed", nil, []string{"a"}, nil},
		{"unsorted node flags", []string{"avx2", "fpu", "sse"}, []string{"sse", "avx2"}, []string{"fpu"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := missingFlags(tc.need, tc.have); !slices.Equal(got, tc.want) {
				t.Errorf("missingFlags(%q, %q) = %q, want %q", tc.need, tc.have, got, tc.want)
			}
		})
	}
}
