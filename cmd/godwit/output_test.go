package main

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1048576", want: 1 << 20},
		{in: "512m", want: 512 << 20},
		{in: "64MiB", want: 64 << 20},
		{in: "1g", want: 1 << 30},
		{in: "1.5G", want: 3 << 29},
		{in: "10k", want: 10 << 10},
		{in: "", wantErr: true},
		{in: "lots", wantErr: true},
		{in: "-1m", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseSize(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("parseSize(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("parseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseKeyValues(t *testing.T) {
	got, err := parseKeyValues([]string{"zone=a", "disk=ssd=fast"}, "--label")
	if err != nil {
		t.Fatal(err)
	}
	if got["zone"] != "a" || got["disk"] != "ssd=fast" {
		t.Fatalf("parseKeyValues = %v", got)
	}
	if _, err := parseKeyValues([]string{"novalue"}, "--label"); err == nil {
		t.Fatal("parseKeyValues accepted a pair without '='")
	}
}
