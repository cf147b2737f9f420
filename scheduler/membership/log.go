package membership

import (
	"context"
	"log"
	"log/slog"
	"strings"
)

// gossipKeyHint is added to memberlist's log lines that mean a peer holds
// another gossip key, or none.
const gossipKeyHint = "a member uses another gossip key (or none): check that every member reads the same gossip key file"

// keyMismatchSigns are fragments of memberlist's messages when a peer's
// traffic cannot be decrypted or is not encrypted as this member expects.
var keyMismatchSigns = []string{
	"no installed keys could decrypt",
	"encryption is configured but remote state is not encrypted",
	"remote state is encrypted and encryption is not configured",
	"cannot decrypt",
	"unsupported encryption version",
	"payload is too small to decrypt",
}

// slogWriter takes memberlist's log lines ("[LEVEL] memberlist: text")
// and logs them to slog at the matching level.
type slogWriter struct{ log *slog.Logger }

// newMemberlistLogger returns a *log.Logger, which memberlist takes, that
// writes to l.
func newMemberlistLogger(l *slog.Logger) *log.Logger {
	return log.New(slogWriter{log: l.With("component", "memberlist")}, "", 0)
}

func (w slogWriter) Write(p []byte) (int, error) {
	level, msg := parseMemberlistLine(string(p))
	if !w.log.Enabled(context.Background(), level) {
		return len(p), nil
	}
	var attrs []any
	lower := strings.ToLower(msg)
	for _, sign := range keyMismatchSigns {
		if strings.Contains(lower, sign) {
			attrs = append(attrs, "hint", gossipKeyHint)
			break
		}
	}
	w.log.Log(context.Background(), level, msg, attrs...)
	return len(p), nil
}

// parseMemberlistLine splits a memberlist log line into its level and
// text; a line without a known level tag logs at info.
func parseMemberlistLine(line string) (slog.Level, string) {
	line = strings.TrimRight(line, "\r\n")
	level := slog.LevelInfo
	if rest, ok := strings.CutPrefix(line, "["); ok {
		if tag, text, ok := strings.Cut(rest, "] "); ok {
			switch tag {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN", "WARNING":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			default:
				text = line
			}
			line = text
		}
	}
	return level, strings.TrimPrefix(line, "memberlist: ")
}
