package datachan

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

const (
	// tokenBytes is a token's randomness: 256 bits, which nobody guesses
	// within a call's lifetime.
	tokenBytes = 32
	// TokenLen is the length of a token: tokenBytes in lowercase hex.
	TokenLen = 2 * tokenBytes
)

// probeToken is the token of a probe (Dialer.Probe), which the server
// answers at once and no call claims: all zeros, which NewToken never
// returns.
var probeToken = strings.Repeat("0", TokenLen)

// NewToken returns a fresh random token for one call.
func NewToken() (string, error) {
	var b [tokenBytes]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return "", fmt.Errorf("make data token: %w", err)
		}
		if t := hex.EncodeToString(b[:]); t != probeToken {
			return t, nil
		}
	}
}

// validToken reports whether t has a token's form. Only that form is
// accepted, so that a client cannot weaken its own call with a short or
// guessable token.
func validToken[T string | []byte](t T) bool {
	if len(t) != TokenLen {
		return false
	}
	for i := range len(t) {
		c := t[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// tokenKey is what Mux files a token under: its SHA-256. Looking a token
// up in a map compares keys in variable time; comparing digests instead of
// the tokens means that what the timing could reveal (how much of a
// digest matched) tells nothing about the token itself, which is what a
// constant-time comparison protects.
type tokenKey [sha256.Size]byte

func keyOf[T string | []byte](t T) tokenKey { return sha256.Sum256([]byte(t)) }
