package server

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// slogTraceLevel is where hclog's Trace lands in slog: below Debug, so a
// handler at Debug still leaves raft's per-RPC chatter out.
const slogTraceLevel = slog.LevelDebug - 4

// hclogAdapter lets hashicorp/raft, which logs through hclog, write to the
// slog.Logger that godwit injects, so that raft's lines carry the same
// handler, format and scope (node ID) as the rest of the scheduler.
type hclogAdapter struct {
	logger *slog.Logger
	name   string
	// implied are the key/values With added, kept for ImpliedArgs.
	implied []any
}

var _ hclog.Logger = (*hclogAdapter)(nil)

// newHCLogger adapts logger for raft; name scopes its lines (raft, raft-net).
func newHCLogger(logger *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{logger: logger.With("component", name), name: name}
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slogTraceLevel
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

// fixArgs turns hclog's Format values (printf-style arguments) into
// strings; everything else slog renders itself.
func fixArgs(args []any) []any {
	for i, a := range args {
		if f, ok := a.(hclog.Format); ok && len(f) > 0 {
			format, _ := f[0].(string)
			args[i] = fmt.Sprintf(format, f[1:]...)
		}
	}
	return args
}

func (h *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	h.logger.Log(context.Background(), slogLevel(level), msg, fixArgs(args)...)
}

func (h *hclogAdapter) Trace(msg string, args ...any) { h.Log(hclog.Trace, msg, args...) }
func (h *hclogAdapter) Debug(msg string, args ...any) { h.Log(hclog.Debug, msg, args...) }
func (h *hclogAdapter) Info(msg string, args ...any)  { h.Log(hclog.Info, msg, args...) }
func (h *hclogAdapter) Warn(msg string, args ...any)  { h.Log(hclog.Warn, msg, args...) }
func (h *hclogAdapter) Error(msg string, args ...any) { h.Log(hclog.Error, msg, args...) }

func (h *hclogAdapter) enabled(level hclog.Level) bool {
	return h.logger.Enabled(context.Background(), slogLevel(level))
}

func (h *hclogAdapter) IsTrace() bool { return h.enabled(hclog.Trace) }
func (h *hclogAdapter) IsDebug() bool { return h.enabled(hclog.Debug) }
func (h *hclogAdapter) IsInfo() bool  { return h.enabled(hclog.Info) }
func (h *hclogAdapter) IsWarn() bool  { return h.enabled(hclog.Warn) }
func (h *hclogAdapter) IsError() bool { return h.enabled(hclog.Error) }

func (h *hclogAdapter) ImpliedArgs() []any { return h.implied }

func (h *hclogAdapter) With(args ...any) hclog.Logger {
	args = fixArgs(args)
	return &hclogAdapter{
		logger:  h.logger.With(args...),
		name:    h.name,
		implied: append(append([]any(nil), h.implied...), args...),
	}
}

func (h *hclogAdapter) Name() string { return h.name }

func (h *hclogAdapter) Named(name string) hclog.Logger {
	full := name
	if h.name != "" {
		full = h.name + "." + name
	}
	return h.ResetNamed(full)
}

func (h *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{logger: h.logger.With("subsystem", name), name: name, implied: h.implied}
}

// SetLevel is ignored: the injected slog handler decides what is logged.
func (h *hclogAdapter) SetLevel(hclog.Level) {}

// GetLevel reports the most verbose level the slog handler accepts.
func (h *hclogAdapter) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if h.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

func (h *hclogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	level := slog.LevelInfo
	if opts != nil && opts.ForceLevel != hclog.NoLevel {
		level = slogLevel(opts.ForceLevel)
	}
	return slog.NewLogLogger(h.logger.Handler(), level)
}

func (h *hclogAdapter) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return h.StandardLogger(opts).Writer()
}
