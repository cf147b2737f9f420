package main

import "testing"

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
