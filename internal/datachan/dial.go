package datachan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// maxReplyLen bounds the server's answer line that a client reads.
const maxReplyLen = 256

// ErrRefused: the server refused the data connection; the error says why.
var ErrRefused = errors.New("data connection refused")

// Dial opens a data connection to the server at addr (the address its
// gRPC server is reached at) presenting token, in plaintext, and waits
// until the call that sent the token claims it, or ctx ends. The server
// may answer with ErrRefused (an unknown, expired or reused token), or
// ErrTLSRequired. The bytes read and written on the connection are the
// call's. Dialer.Dial does the same over TLS.
func Dial(ctx context.Context, addr, token string) (net.Conn, error) {
	return Dialer{}.Dial(ctx, addr, token)
}

// Handshake presents token on c, a fresh connection to a Mux, and waits
// for the answer, as Dial does; for connections that Dial cannot make.
// The caller closes c when Handshake fails.
func Handshake(ctx context.Context, c net.Conn, token string) error {
	if !validToken(token) {
		return fmt.Errorf("%w: want %d lowercase hex digits", ErrInvalidToken, TokenLen)
	}
	// Unblock the reads and writes below when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	err := handshake(c, token)
	if !stop() {
		return ctx.Err()
	}
	return err
}

func handshake(c net.Conn, token string) error {
	if _, err := io.WriteString(c, magic+token+"\n"); err != nil {
		return fmt.Errorf("present data token: %w", err)
	}
	// The answer is read a byte at a time up to its newline: whatever
	// follows is the call's data and must stay in the connection.
	var line []byte
	b := make([]byte, 1)
	for len(line) < maxReplyLen {
		if _, err := io.ReadFull(c, b); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return fmt.Errorf("%w: the server closed it without an answer", ErrRefused)
			}
			return fmt.Errorf("wait for the data connection's answer: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	switch reply := string(line); {
	case reply == "OK":
		return nil
	case reply == "ERR "+reasonTLSRequired:
		return fmt.Errorf("%w: %w: %s", ErrRefused, ErrTLSRequired, reasonTLSRequired)
	case strings.HasPrefix(reply, "ERR "):
		return fmt.Errorf("%w: %s", ErrRefused, strings.TrimPrefix(reply, "ERR "))
	default:
		return fmt.Errorf("%w: unexpected answer %q (is this a godwit agent?)", ErrRefused, reply)
	}
}
