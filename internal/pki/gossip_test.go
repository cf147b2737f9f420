package pki

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGossipKeyCreatedOnceAndLoaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := CreateGossipKey(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != GossipKeyFileMode {
		t.Errorf("mode %#o, want %#o", perm, GossipKeyFileMode)
	}
	key, err := LoadGossipKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(key) != GossipKeySize {
		t.Errorf("key of %d bytes, want %d", len(key), GossipKeySize)
	}
	before, _ := os.ReadFile(path)
	if err := CreateGossipKey(path); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "same key") {
		t.Errorf("a second CreateGossipKey: %v, want refused with fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the refused CreateGossipKey changed the key")
	}
	other := filepath.Join(t.TempDir(), "gossip.key")
	if err := CreateGossipKey(other); err != nil {
		t.Fatal(err)
	}
	if again, _ := LoadGossipKey(other); bytes.Equal(key, again) {
		t.Error("two keys are the same: they must be random")
	}
}

func TestLoadGossipKeyRefusesABadFile(t *testing.T) {
	write := func(t *testing.T, content string, mode os.FileMode) string {
		p := filepath.Join(t.TempDir(), "gossip.key")
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		// want is a part of the error; empty for success.
		want string
	}{
		{"16 bytes (AES-128)", b64(16), 0o600, ""},
		{"24 bytes with white space", "  " + b64(24) + "\n\n", 0o400, ""},
		{"readable by others", b64(32), 0o644, "chmod 600"},
		{"readable by the group", b64(32), 0o640, "chmod 600"},
		{"not base64", "this is no key!", 0o600, "not base64"},
		{"a key of 10 bytes", b64(10), 0o600, "10 bytes long"},
		{"an empty file", "", 0o600, "0 bytes long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := LoadGossipKey(write(t, tt.content, tt.mode))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(key, bytes.Repeat([]byte{7}, len(key))) {
					t.Errorf("key %x is not what the file holds", key)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadGossipKey: %v, want an error saying %q", err, tt.want)
			}
		})
	}
	if _, err := LoadGossipKey(filepath.Join(t.TempDir(), "nope")); err == nil || !strings.Contains(err.Error(), "gossip-key create") {
		t.Errorf("a missing file: %v, want advice to create one", err)
	}
}
