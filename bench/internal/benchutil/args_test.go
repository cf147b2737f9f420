package benchutil

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestParseSizes(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []int
		wantErr bool
	}{
		{"issue sizes", "64,512,2048", []int{64, 512, 2048}, false},
		{"spaces", " 64 , 512", []int{64, 512}, false},
		{"units are not taken", "512m", nil, true},
		{"zero", "0", nil, true},
		{"empty", "", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSizes(tc.in)
			if (err != nil) != tc.wantErr || !slices.Equal(got, tc.want) {
				t.Errorf("ParseSizes(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseChoices(t *testing.T) {
	got, err := ParseChoices("b, a,b", "a", "b")
	if err != nil || !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("ParseChoices = %v, %v; want [b a]", got, err)
	}
	if _, err := ParseChoices("a,c", "a", "b"); err == nil {
		t.Error("an unknown choice was accepted")
	}
}

func TestCannotFit(t *testing.T) {
	if why := CannotFit(t.TempDir(), 1, 1); why != "" {
		t.Errorf("1 MiB does not fit: %s", why)
	}
	if why := CannotFit(t.TempDir(), 1<<30, 1); why == "" {
		t.Error("1 PiB fits")
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a cancelled context = %v, want context.Canceled", err)
	}
}
