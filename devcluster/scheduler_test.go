package devcluster_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/godwit/godwit/devcluster"
	"github.com/godwit/godwit/devcluster/devclustertest"
	"github.com/godwit/godwit/internal/testutil"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// The scheduler tests' cluster and ranges are theirs alone, so that they
// may run beside the package's other tests in another test binary.
const schedClusterName = "dcs"

var (
	schedSubnet     = netip.MustParsePrefix("10.77.38.0/24")
	schedContainers = netip.MustParsePrefix("10.78.38.0/24")
)

// registerTimeout bounds the wait for an agent to show ready: with the
// scheduler's test timings it registers within a second of its start.
const registerTimeout = 30 * time.Second

func schedConfig() devcluster.Config {
	return devcluster.Config{Name: schedClusterName, Subnet: schedSubnet, ContainerCIDR: schedContainers}
}

// TestSchedulerRegistersAnAgent runs one scheduler (--bootstrap-expect 1)
// and one agent joining its gossip pool on the same host, over mutual TLS
// and in plaintext: the scheduler leads, the agent shows ready in
// ListNodes, a scheduler killed and started again leads again with its
// state, and Close leaves no process behind.
func TestSchedulerRegistersAnAgent(t *testing.T) {
	for _, tt := range []struct {
		name     string
		insecure bool
	}{
		{"mutual TLS", false},
		{"insecure", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := devclustertest.Start(t, schedConfig(), "a")
			h := c.Host("a")
			s, err := h.StartScheduler(ctx, devcluster.SchedulerOptions{BootstrapExpect: 1, Insecure: tt.insecure})
			if err != nil {
				t.Fatal(err)
			}
			if want := schedClusterName + "-a.sched"; s.Name() != want {
				t.Errorf("scheduler name = %q, want %q", s.Name(), want)
			}
			if want := "10.77.38.2:7712"; s.GossipAddr() != want {
				t.Errorf("gossip address = %q, want %q", s.GossipAddr(), want)
			}
			if h.Scheduler() != s {
				t.Error("Host.Scheduler does not return the scheduler just started")
			}
			if leader, err := c.WaitLeader(ctx, s); err != nil || leader != s {
				t.Fatalf("WaitLeader = %v, %v; want %s", leader, err, s.Name())
			}

			a, err := h.StartAgent(ctx, devcluster.AgentOptions{Insecure: tt.insecure, Join: []string{s.GossipAddr()}})
			if err != nil {
				t.Fatal(err)
			}
			waitNodeReady(t, s, a)

			if !tt.insecure {
				t.Run("a plaintext client is refused", func(t *testing.T) {
					conn, err := grpc.NewClient(s.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close()
					cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					defer cancel()
					if _, err := pb.NewClusterServiceClient(conn).ListNodes(cctx, &pb.ListNodesRequest{}); err == nil {
						t.Fatal("a plaintext ListNodes to a TLS scheduler succeeded")
					}
				})
			}

			t.Run("killed and started again, it leads with its state", func(t *testing.T) {
				pid := s.Pid()
				s.Kill()
				if s.Running() {
					t.Fatal("Running after Kill")
				}
				select {
				case <-s.Exited():
				default:
					t.Fatal("Exited not closed after Kill")
				}
				if isAlive(pid) {
					t.Fatalf("scheduler pid %d still runs after Kill", pid)
				}
				again, err := h.StartScheduler(ctx, devcluster.SchedulerOptions{BootstrapExpect: 1, Insecure: tt.insecure})
				if err != nil {
					t.Fatal(err)
				}
				s = again
				if _, err := c.WaitLeader(ctx, again); err != nil {
					t.Fatal(err)
				}
				// The node was registered before the kill: the raft log
				// under the host's dir kept it.
				waitNodeReady(t, again, a)
			})

			t.Run("a second scheduler on a running host is refused", func(t *testing.T) {
				_, err := h.StartScheduler(ctx, devcluster.SchedulerOptions{BootstrapExpect: 1, Insecure: tt.insecure})
				if !errors.Is(err, devcluster.ErrSchedulerRunning) {
					t.Fatalf("StartScheduler on a host whose scheduler runs: err = %v, want ErrSchedulerRunning", err)
				}
			})

			t.Run("Close stops the scheduler and the agent", func(t *testing.T) {
				spid, apid := s.Pid(), a.Pid()
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				for what, pid := range map[string]int{"scheduler": spid, "agent": apid} {
					if isAlive(pid) {
						t.Errorf("the %s (pid %d) runs after Close", what, pid)
					}
				}
			})
		})
	}
}

// waitNodeReady waits until s lists a's node as ready at a's address.
func waitNodeReady(t *testing.T, s *devcluster.Scheduler, a *devcluster.Agent) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), registerTimeout)
	defer cancel()
	last := "no answer"
	for {
		resp, err := s.Client().ListNodes(ctx, &pb.ListNodesRequest{})
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprint(resp.GetNodes())
			for _, n := range resp.GetNodes() {
				if n.GetName() == a.Node() && n.GetStatus() == "ready" && n.GetAddress() == a.Addr() {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("node %s is not ready at %s after %s; the scheduler lists: %s\nagent log:\n%s",
				a.Node(), a.Addr(), registerTimeout, last, a.LogTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestDetachedClusterOutlivesItsProcess detaches a cluster with a running
// agent: the agent runs on, New refuses the name, and Remove removes it
// all.
func TestDetachedClusterOutlivesItsProcess(t *testing.T) {
	ctx := context.Background()
	c := devclustertest.Start(t, schedConfig(), "a")
	t.Cleanup(func() {
		if err := devcluster.Remove(ctx, schedClusterName, nil); err != nil {
			t.Errorf("remove the detached cluster: %v", err)
		}
	})
	a, err := c.Host("a").StartAgent(ctx, devcluster.AgentOptions{Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	pid, workDir := a.Pid(), c.WorkDir()
	if err := c.Detach(); err != nil {
		t.Fatal(err)
	}
	if !isAlive(pid) {
		t.Fatalf("the agent (pid %d) did not outlive Detach", pid)
	}
	if _, err := c.AddHost(ctx, "b"); !errors.Is(err, devcluster.ErrClosed) {
		t.Errorf("AddHost after Detach: err = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil || !isAlive(pid) {
		t.Fatalf("Close after Detach: err = %v, agent alive = %v; want nil and the agent running on", err, isAlive(pid))
	}
	if ok, err := devcluster.Exists(schedClusterName); err != nil || !ok {
		t.Fatalf("Exists of the detached cluster = %v, %v; want true", ok, err)
	}

	_, err = devcluster.New(ctx, devcluster.Config{Name: schedClusterName, Subnet: netip.MustParsePrefix("10.77.37.0/24"),
		ContainerCIDR: netip.MustParsePrefix("10.78.37.0/24"), Bin: testutil.Godwit(t)})
	if !errors.Is(err, devcluster.ErrDetached) {
		t.Fatalf("New with a detached cluster's name: err = %v, want ErrDetached", err)
	}
	if !isAlive(pid) {
		t.Fatal("the refused New removed the detached cluster's agent")
	}

	if err := devcluster.Remove(ctx, schedClusterName, nil); err != nil {
		t.Fatal(err)
	}
	if isAlive(pid) {
		t.Errorf("the agent (pid %d) runs after Remove", pid)
	}
	if _, err := os.Stat(workDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("work dir %s after Remove: %v, want it gone", workDir, err)
	}
	if ok, err := devcluster.Exists(schedClusterName); err != nil || ok {
		t.Errorf("Exists after Remove = %v, %v; want false", ok, err)
	}
}

// isAlive reports whether pid is a process that has not exited (a
// zombie has).
func isAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	for i := len(stat) - 1; i > 0; i-- {
		if stat[i] == ')' {
			return i+2 < len(stat) && stat[i+2] != 'Z' && stat[i+2] != 'X'
		}
	}
	return true
}
