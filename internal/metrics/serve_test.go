package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// testTimeout bounds each HTTP exchange of these tests, on loopback.
const testTimeout = 5 * time.Second

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: testTimeout}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

func TestHandlerServesTheRegistry(t *testing.T) {
	reg := NewRegistry()
	m := NewAgent(reg, func() ContainerCounts { return ContainerCounts{"running": 2, "stopped": 0} })
	m.MigrationStarted("source")
	srv := httptest.NewServer(Handler(reg, discard()))
	t.Cleanup(srv.Close)

	tests := []struct {
		name, path string
		wantCode   int
		wantLines  []string
	}{
		{
			name: "metrics", path: MetricsPath, wantCode: http.StatusOK,
			wantLines: []string{
				`godwit_agent_containers{state="running"} 2`,
				`godwit_agent_containers{state="stopped"} 0`,
				`godwit_agent_migrations_started_total{role="source"} 1`,
				// The runtime's and the process's collectors are in every registry.
				`go_goroutines `,
				`process_open_fds `,
			},
		},
		{name: "health", path: HealthPath, wantCode: http.StatusOK, wantLines: []string{"ok"}},
		{name: "unknown path", path: "/nothing", wantCode: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, srv.URL+tt.path)
			if code != tt.wantCode {
				t.Fatalf("GET %s: status %d, want %d; body:\n%s", tt.path, code, tt.wantCode, body)
			}
			for _, line := range tt.wantLines {
				if !strings.Contains(body, line) {
					t.Errorf("GET %s: no %q in:\n%s", tt.path, line, body)
				}
			}
		})
	}
}

// A collector that fails leaves its metrics out; the others are still
// served.
func TestHandlerServesTheRestWhenACollectorFails(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "godwit_test_ok_total", Help: "h"})
	c.Inc()
	reg.MustRegister(c, failingCollector{})
	srv := httptest.NewServer(Handler(reg, discard()))
	t.Cleanup(srv.Close)
	code, body := get(t, srv.URL+MetricsPath)
	if code != http.StatusOK || !strings.Contains(body, "godwit_test_ok_total 1") {
		t.Fatalf("status %d, body:\n%s\nwant 200 with godwit_test_ok_total 1", code, body)
	}
}

type failingCollector struct{}

var failingDesc = prometheus.NewDesc("godwit_test_failing", "h", nil, nil)

func (failingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- failingDesc }
func (failingCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(failingDesc, errors.New("source unreachable"))
}

func TestServeUntilContextEnds(t *testing.T) {
	reg := NewRegistry()
	s, err := Listen("127.0.0.1:0", reg, discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(cancel)

	url := "http://" + s.Addr().String()
	if code, body := get(t, url+MetricsPath); code != http.StatusOK || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("GET %s: status %d, body:\n%s", MetricsPath, code, body)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after its context ended: %v, want nil", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Serve did not return once its context ended")
	}
	if conn, err := net.DialTimeout("tcp", s.Addr().String(), testTimeout); err == nil {
		conn.Close()
		t.Fatalf("the endpoint %s still accepts connections after Serve returned", s.Addr())
	}
}

func TestListenRefusesATakenAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { taken.Close() })
	_, err = Listen(taken.Addr().String(), NewRegistry(), discard())
	if !errors.Is(err, ErrListen) {
		t.Fatalf("Listen on a taken address: %v, want ErrListen", err)
	}
	if !strings.Contains(err.Error(), "--metrics") {
		t.Errorf("error %q does not say which flag to change", err)
	}
}
