package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every godwit metric.
const namespace = "godwit"

// The endpoint's paths.
const (
	MetricsPath = "/metrics"
	HealthPath  = "/healthz"
)

// Timeouts of the HTTP endpoint. A scrape of a daemon's registry takes
// milliseconds; the limits only keep a stuck or hostile client from
// holding a connection open for ever.
const (
	readHeaderTimeout = 5 * time.Second
	// writeTimeout bounds one response; Prometheus's default scrape
	// timeout is 10 s, so a longer one would serve nobody.
	writeTimeout = 30 * time.Second
	idleTimeout  = 2 * time.Minute
	// shutdownTimeout is how long Serve lets a scrape in flight finish
	// once its context ends.
	shutdownTimeout = 5 * time.Second
	// scrapeTimeout bounds gathering the registry for one scrape, which
	// runs the daemons' callbacks.
	scrapeTimeout = 10 * time.Second
)

// ErrListen marks an address the endpoint could not listen on.
var ErrListen = errors.New("metrics endpoint cannot listen")

// NewRegistry is a daemon's own registry, with the Go runtime's and the
// process's collectors (memory, goroutines, open files, CPU) in it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves reg's metrics on MetricsPath in Prometheus's text (or
// protobuf, when asked) exposition format, and HealthPath: 200 "ok" for
// as long as the process serves HTTP, a liveness probe. A collector that
// fails is logged and its metrics left out; the rest are served.
func Handler(reg prometheus.Gatherer, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(MetricsPath, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
		Timeout:       scrapeTimeout,
	}))
	mux.HandleFunc(HealthPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	return mux
}

// promLogger adapts slog to promhttp's error log.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn("metrics scrape", "err", fmt.Sprint(v...)) }

// Server is the metrics endpoint, listening: Listen binds the address at
// once, so that a wrong one fails the daemon's start, and Serve serves
// until its context ends.
type Server struct {
	lis net.Listener
	srv *http.Server
	log *slog.Logger
}

// Listen binds addr (host:port; port 0 picks one) for reg's endpoint. The
// error matches ErrListen and says what to change.
func Listen(addr string, reg prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w on %s: %w: give --metrics another HOST:PORT, or stop what uses it", ErrListen, addr, err)
	}
	return &Server{
		lis: lis,
		log: log,
		srv: &http.Server{
			Handler:           Handler(reg, log),
			ReadHeaderTimeout: readHeaderTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		},
	}, nil
}

// Addr is the address the endpoint listens on.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Serve serves the endpoint until ctx ends, then lets the scrapes in
// flight finish (for a few seconds) and returns nil. It returns an error
// only when serving fails. Call it once.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.lis) }()
	s.log.Info("metrics endpoint serving", "listen", s.lis.Addr().String(), "path", MetricsPath)
	select {
	case err := <-errc:
		return fmt.Errorf("metrics endpoint on %s: %w", s.lis.Addr(), err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(shutdown); err != nil {
		s.srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics endpoint on %s: %w", s.lis.Addr(), err)
	}
	return nil
}

// Serve serves reg's metrics and the health probe on addr until ctx ends
// (Listen, then Server.Serve).
func Serve(ctx context.Context, addr string, reg prometheus.Gatherer, log *slog.Logger) error {
	s, err := Listen(addr, reg, log)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}
