package pki

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
)

const (
	// GossipKeySize is the size of a key that CreateGossipKey makes: 32
	// bytes, AES-256 for memberlist's gossip encryption.
	GossipKeySize = 32
	// GossipKeyFileMode is the mode of a gossip key file: whoever reads
	// the key can join the gossip pool and read it.
	GossipKeyFileMode = 0o600
)

// gossipKeySizes are the key sizes memberlist accepts: AES-128, AES-192
// and AES-256.
var gossipKeySizes = []int{16, 24, 32}

// CreateGossipKey writes a new random gossip key of GossipKeySize bytes
// to path, in base64 with a newline, mode GossipKeyFileMode. It refuses
// (an error wrapping fs.ErrExist) when path exists: every member of a
// cluster must hold the same key, so a key is never replaced by accident.
func CreateGossipKey(path string) (err error) {
	key := make([]byte, GossipKeySize)
	if _, err := rand.Read(key); err != nil {
		return fmt.Errorf("make a gossip key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, GossipKeyFileMode)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("gossip key %s: %w: every member of the cluster must use the same key; keep it, or remove it first to make a new one for a new cluster", path, err)
	}
	if err != nil {
		return fmt.Errorf("gossip key %s: %w", path, err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("gossip key %s: %w", path, cerr)
		}
		if err != nil {
			os.Remove(path) // never leave half a key
		}
	}()
	// The umask may have narrowed the mode; it never widens it, and a
	// key must be exactly readable by its owner.
	if err := f.Chmod(GossipKeyFileMode); err != nil {
		return fmt.Errorf("gossip key %s: %w", path, err)
	}
	if _, err := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n"); err != nil {
		return fmt.Errorf("gossip key %s: %w", path, err)
	}
	return nil
}

// LoadGossipKey reads the base64 gossip key in path (surrounding white
// space ignored) and returns its bytes. It refuses a file that others can
// read, one that is not base64, and a key that is not 16, 24 or 32 bytes
// long (AES-128, -192 or -256); each error says what to do.
func LoadGossipKey(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key %s: %w: give the file that `godwit tls gossip-key create` wrote", path, err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("gossip key %s can be read by others (mode %#o): run chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gossip key %s: %w", path, err)
	}
	key, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil {
		return nil, fmt.Errorf("gossip key %s is not base64 (%w): give the file that `godwit tls gossip-key create` wrote", path, err)
	}
	if !slices.Contains(gossipKeySizes, len(key)) {
		return nil, fmt.Errorf("gossip key %s is %d bytes long, and a key has 16, 24 or 32: make one with `godwit tls gossip-key create`", path, len(key))
	}
	return key, nil
}
