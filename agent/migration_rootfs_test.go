package agent

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// TestSyncStreamTrailer: the sync stream's receiver gets exactly what the
// sender wrote, and refuses a stream that was damaged or cut on the way.
func TestSyncStreamTrailer(t *testing.T) {
	payload := bytes.Repeat([]byte("layer bytes "), 20000) // several reads' worth
	var wire bytes.Buffer
	tw := newTrailerWriter(&wire)
	if _, err := tw.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := tw.finish(); err != nil {
		t.Fatal(err)
	}
	intact := wire.Bytes()
	tests := []struct {
		name    string
		stream  []byte
		wantErr string // "" for none
	}{
		{"intact", intact, ""},
		{"a flipped bit", func() []byte { b := bytes.Clone(intact); b[len(b)/2] ^= 1; return b }(), "damaged"},
		{"a flipped bit in the trailer", func() []byte { b := bytes.Clone(intact); b[len(b)-1] ^= 1; return b }(), "damaged"},
		{"cut short", intact[:len(intact)-trailerLen-7], "damaged"},
		{"only part of a trailer", intact[:10], "cut short"},
		{"empty", nil, "cut short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newTrailerReader(bytes.NewReader(tt.stream))
			got, err := io.ReadAll(io.LimitReader(tr, int64(len(payload)/3))) // the consumer stops early
			if err != nil {
				t.Fatal(err)
			}
			err = tr.verify()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("verify: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("verify = %v, want an error saying %q", err, tt.wantErr)
			}
			if tt.wantErr == "" && !bytes.Equal(got, payload[:len(got)]) {
				t.Errorf("the receiver read other bytes than were sent")
			}
		})
	}
}
