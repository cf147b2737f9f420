package clusterlink

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/godwit/godwit/internal/pki"
)

// syncBuffer is a log destination safe for the link's goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestLinkVerifiesTheSchedulersCertificate(t *testing.T) {
	ca, err := pki.NewCA("test cluster")
	if err != nil {
		t.Fatal(err)
	}
	identity := func(req pki.CertRequest) *pki.Identity {
		t.Helper()
		files, err := ca.IssueTo(t.TempDir(), req)
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.Load(files)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	agent := identity(pki.CertRequest{Name: "n1", Role: pki.RoleAgent, Hosts: []string{"127.0.0.1"}})
	tests := []struct {
		name string
		// hosts the scheduler's certificate names; the link dials
		// 127.0.0.1.
		hosts    []string
		register bool
	}{
		{"certificate names the address dialled", []string{"127.0.0.1"}, true},
		{"certificate names another address", []string{"10.9.9.9"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, err := identity(pki.CertRequest{Name: "s1", Role: pki.RoleScheduler, Hosts: tt.hosts}).ServerConfig()
			if err != nil {
				t.Fatal(err)
			}
			sched := &fakeScheduler{ttl: 2 * time.Second, interval: 50 * time.Millisecond}
			addr, _ := sched.serve(t, grpc.Creds(credentials.NewTLS(server)))
			var log syncBuffer
			l := startLink(t, Config{Finder: staticFinder{addr}, ClientTLS: agent.ClientConfig(),
				Logger: slog.New(slog.NewTextHandler(&log, nil))})

			if tt.register {
				eventually(t, 5*time.Second, "a registration over mutual TLS", func() bool { return l.Check() == nil })
				return
			}
			eventually(t, 5*time.Second, "a refused registration logged", func() bool {
				return strings.Contains(log.String(), "cannot register with a scheduler")
			})
			if regs, _ := sched.counts(); regs != 0 || l.Check() == nil {
				t.Fatalf("registered with a scheduler whose certificate does not name %s", addr)
			}
			if !strings.Contains(log.String(), "certificate is valid for 10.9.9.9, not 127.0.0.1") {
				t.Fatalf("the log does not say the certificate is wrong:\n%s", log.String())
			}
		})
	}
}
