package fsm_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/state"
)

// cmdCase is one command applied to a prepared state.
type cmdCase struct {
	name  string
	setup func(h *harness)
	cmd   fsm.Command
	// wantErr: the command is refused with this error and the state does
	// not change.
	wantErr error
	check   func(t *testing.T, h *harness, value any)
}

func runCases(t *testing.T, base func(testing.TB) *harness, cases []cmdCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := base(t)
			if tc.setup != nil {
				tc.setup(h)
			}
			before := h.snap()
			res := h.apply(tc.cmd)
			if tc.wantErr != nil {
				if !errors.Is(res.Err, tc.wantErr) {
					t.Fatalf("apply %T = %v, want an error wrapping %v", tc.cmd, res.Err, tc.wantErr)
				}
				if after := h.snap(); after.Index() != before.Index() {
					t.Errorf("a refused command changed the state: index %d -> %d", before.Index(), after.Index())
				}
				if kinds := h.eventKinds(); len(kinds) != 0 {
					t.Errorf("a refused command emitted events %v", kinds)
				}
				return
			}
			if res.Err != nil {
				t.Fatalf("apply %T: %v", tc.cmd, res.Err)
			}
			if tc.check != nil {
				tc.check(t, h, res.Value)
			}
		})
	}
}

func wantEvents(t *testing.T, h *harness, kinds ...string) {
	t.Helper()
	if got := h.eventKinds(); !slices.Equal(got, kinds) {
		t.Errorf("events %v, want %v", got, kinds)
	}
}

func TestInitCluster(t *testing.T) {
	cidr := netip.MustParsePrefix(testCIDR)
	runCases(t, newHarness, []cmdCase{
		{name: "first", cmd: fsm.InitCluster{ClusterCIDR: cidr, At: t0}, check: func(t *testing.T, h *harness, v any) {
			if got := h.snap().Config().ClusterCIDR; got != cidr {
				t.Errorf("cluster CIDR %s, want %s", got, cidr)
			}
			if v.(state.Config).ClusterCIDR != cidr {
				t.Errorf("result %v, want the config", v)
			}
			wantEvents(t, h, state.EventClusterInitialized)
		}},
		{name: "same CIDR again changes nothing",
			setup: func(h *harness) { h.must(fsm.InitCluster{ClusterCIDR: cidr}) },
			cmd:   fsm.InitCluster{ClusterCIDR: cidr},
			check: func(t *testing.T, h *harness, v any) {
				if h.snap().Index() != 1 {
					t.Errorf("state index %d, want 1: a repeated init is not a change", h.snap().Index())
				}
			}},
		{name: "another CIDR is refused",
			setup:   func(h *harness) { h.must(fsm.InitCluster{ClusterCIDR: cidr}) },
			cmd:     fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix("10.2.0.0/16")},
			wantErr: fsm.ErrCIDRConflict},
		{name: "host bits set", cmd: fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix("10.1.0.1/24")}, wantErr: fsm.ErrInvalid},
		{name: "no room", cmd: fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix("10.1.0.0/31")}, wantErr: fsm.ErrInvalid},
		{name: "unset", cmd: fsm.InitCluster{}, wantErr: fsm.ErrInvalid},
	})
}

func TestRegisterNode(t *testing.T) {
	t1 := t0.Add(time.Minute)
	runCases(t, cluster, []cmdCase{
		{name: "new node", cmd: fsm.RegisterNode{Node: testNode("n3"), At: t1}, check: func(t *testing.T, h *harness, v any) {
			n := h.node("n3")
			if n.Epoch != 1 || n.Health != state.HealthAlive || n.Schedulability != state.Schedulable ||
				!n.Registered.Equal(t1) || !n.HealthChanged.Equal(t1) {
				t.Errorf("new node %+v: want epoch 1, alive, schedulable, registered and health changed at %v", n, t1)
			}
			if !slices.Equal(n.CPU.Flags, []string{"avx2", "sse4_2"}) {
				t.Errorf("CPU flags %v, want them sorted", n.CPU.Flags)
			}
			if v.(fsm.Registration).Node.Epoch != 1 {
				t.Errorf("result %+v, want the stored node", v)
			}
			wantEvents(t, h, state.EventNodeRegistered)
		}},
		{name: "known node keeps its cordon and gets a new epoch",
			setup: func(h *harness) {
				h.must(fsm.SetSchedulability{Name: "n1", Schedulability: state.Cordoned})
			},
			cmd: fsm.RegisterNode{Node: func() state.Node { n := testNode("n1"); n.Address = "n1:9000"; return n }(), At: t1},
			check: func(t *testing.T, h *harness, _ any) {
				n := h.node("n1")
				if n.Epoch != 2 || n.Schedulability != state.Cordoned || n.Address != "n1:9000" {
					t.Errorf("re-registered node %+v: want epoch 2, still cordoned, new address", n)
				}
				if !n.HealthChanged.Equal(t0) {
					t.Errorf("health changed %v, want %v: it was alive already", n.HealthChanged, t0)
				}
			}},
		{name: "a down node comes back alive",
			setup: func(h *harness) { h.must(fsm.MarkNodeLost{Name: "n1", At: t0}) },
			cmd:   fsm.RegisterNode{Node: testNode("n1"), At: t1},
			check: func(t *testing.T, h *harness, _ any) {
				n := h.node("n1")
				if n.Health != state.HealthAlive || n.Epoch != 2 || !n.HealthChanged.Equal(t1) {
					t.Errorf("node %+v: want alive since %v at epoch 2", n, t1)
				}
			}},
		{name: "the command cannot set epoch or health",
			cmd: fsm.RegisterNode{Node: func() state.Node {
				n := testNode("n1")
				n.Epoch, n.Health, n.Schedulability = 99, state.HealthDown, state.Draining
				return n
			}()},
			check: func(t *testing.T, h *harness, _ any) {
				n := h.node("n1")
				if n.Epoch != 2 || n.Health != state.HealthAlive || n.Schedulability != state.Schedulable {
					t.Errorf("node %+v: want epoch 2, alive, schedulable", n)
				}
			}},
		{name: "no name", cmd: fsm.RegisterNode{Node: state.Node{Address: "x:1"}}, wantErr: fsm.ErrInvalid},
		{name: "no address", cmd: fsm.RegisterNode{Node: state.Node{Name: "n9"}}, wantErr: fsm.ErrInvalid},
	})
}

// A registration with its inventory is one entry: the node that comes
// back from down is never alive with its containers still lost or its
// old images.
func TestRegisterNodeWithItsInventory(t *testing.T) {
	t1 := t0.Add(time.Minute)
	bb := state.Image{Name: "busybox:latest", ID: "sha256:bb", Size: 10}
	// n1 ran a and b, then went down: both lost.
	base := func(tb testing.TB) *harness {
		h := cluster(tb)
		h.place("a", "web", "n1", 100)
		h.place("b", "db", "n1", 100)
		h.must(fsm.MarkNodeLost{Name: "n1", At: t0})
		return h
	}
	inventory := func(images []state.Image, reports ...fsm.Report) *fsm.Inventory {
		inv := &fsm.Inventory{Images: images}
		for _, r := range reports {
			inv.Containers.Reports = append(inv.Containers.Reports, r)
			inv.Containers.Seen = append(inv.Containers.Seen, r.ID)
		}
		return inv
	}
	runCases(t, base, []cmdCase{
		{name: "alive, its images and containers as it reports them",
			cmd: fsm.RegisterNode{Node: testNode("n1"), At: t1,
				Inventory: inventory([]state.Image{bb}, fsm.Report{ID: "a", State: state.ReportedRunning})},
			check: func(t *testing.T, h *harness, v any) {
				reg := v.(fsm.Registration)
				if n := h.node("n1"); n.Health != state.HealthAlive || n.Epoch != 2 || reg.Node.Epoch != 2 {
					t.Errorf("node %+v, result %+v: want alive at epoch 2", n, reg.Node)
				}
				if a := h.container("a"); a.Reported != state.ReportedRunning || !a.ReportedAt.Equal(t1) {
					t.Errorf("a %s at %v, want running at %v", a.Reported, a.ReportedAt, t1)
				}
				if b := h.container("b"); b.Reported != state.ReportedLost {
					t.Errorf("b %s, want still lost: n1 does not have it", b.Reported)
				}
				if !h.snap().HasImage("n1", "busybox") || !slices.Equal(reg.Images.Added, []string{"busybox:latest"}) {
					t.Errorf("n1's images %v (added %v), want busybox", h.snap().Images("n1"), reg.Images.Added)
				}
				wantEvents(t, h, state.EventNodeRegistered, state.EventImageAdded, state.EventContainerState)
			}},
		{name: "a container it no longer has is lost in the same entry",
			setup: func(h *harness) {
				h.must(fsm.RegisterNode{Node: testNode("n1"), At: t0,
					Inventory: inventory(nil, fsm.Report{ID: "a", State: state.ReportedRunning}, fsm.Report{ID: "b", State: state.ReportedRunning})})
			},
			cmd: fsm.RegisterNode{Node: testNode("n1"), At: t1, Inventory: inventory(nil, fsm.Report{ID: "a", State: state.ReportedRunning})},
			check: func(t *testing.T, h *harness, v any) {
				if got := v.(fsm.Registration).Report.Lost; !slices.Equal(got, []string{"b"}) {
					t.Errorf("lost %v, want [b]", got)
				}
				if h.node("n1").Epoch != 3 || h.container("b").Reported != state.ReportedLost {
					t.Errorf("n1 at epoch %d, b %s: want epoch 3, b lost", h.node("n1").Epoch, h.container("b").Reported)
				}
			}},
		{name: "an inventory refused refuses the registration",
			cmd: fsm.RegisterNode{Node: testNode("n1"), At: t1,
				Inventory: inventory(nil, fsm.Report{ID: "a", State: state.ReportedLost})},
			wantErr: fsm.ErrInvalid},
	})
}

func TestSetNodeHealth(t *testing.T) {
	t1 := t0.Add(time.Minute)
	health := func(name string, h state.Health) fsm.Command {
		return fsm.SetNodeHealth{Name: name, Health: h, At: t1}
	}
	runCases(t, cluster, []cmdCase{
		{name: "alive to suspect", cmd: health("n1", state.HealthSuspect), check: func(t *testing.T, h *harness, _ any) {
			n := h.node("n1")
			if n.Health != state.HealthSuspect || !n.HealthChanged.Equal(t1) || n.Status() != state.NodeSuspect {
				t.Errorf("node %+v: want suspect since %v", n, t1)
			}
			wantEvents(t, h, state.EventNodeHealth)
		}},
		{name: "suspect back to alive",
			setup: func(h *harness) { h.must(health("n1", state.HealthSuspect)) },
			cmd:   health("n1", state.HealthAlive),
			check: func(t *testing.T, h *harness, _ any) {
				if h.node("n1").Health != state.HealthAlive {
					t.Error("node is not alive")
				}
			}},
		{name: "same health is no change", cmd: health("n1", state.HealthAlive), check: func(t *testing.T, h *harness, _ any) {
			wantEvents(t, h)
			if !h.node("n1").HealthChanged.Equal(t0) {
				t.Error("HealthChanged moved without a change")
			}
		}},
		{name: "down stays down until it registers",
			setup:   func(h *harness) { h.must(health("n1", state.HealthDown)) },
			cmd:     health("n1", state.HealthAlive),
			wantErr: fsm.ErrNodeDown},
		{name: "unknown node", cmd: health("n9", state.HealthSuspect), wantErr: state.ErrNotFound},
		{name: "unknown health", cmd: health("n1", "sleepy"), wantErr: fsm.ErrInvalid},
		{name: "decided on the current registration",
			cmd: fsm.SetNodeHealth{Name: "n1", Health: state.HealthSuspect, Epoch: 1, At: t1},
			check: func(t *testing.T, h *harness, _ any) {
				if h.node("n1").Health != state.HealthSuspect {
					t.Error("node is not suspect")
				}
			}},
		{name: "decided on a registration the node has replaced",
			setup:   func(h *harness) { h.must(fsm.RegisterNode{Node: testNode("n1"), At: t1}) },
			cmd:     fsm.SetNodeHealth{Name: "n1", Health: state.HealthSuspect, Epoch: 1, At: t1},
			wantErr: fsm.ErrStaleEpoch},
	})
}

// A leader that decided a node was down before the node registered
// again must not put the fresh registration down, nor lose its
// containers.
func TestMarkNodeLostOnAReplacedRegistration(t *testing.T) {
	h := cluster(t)
	h.place("a", "web", "n1", 100)
	h.must(fsm.RegisterNode{Node: testNode("n1"), At: t1})
	if res := h.apply(fsm.MarkNodeLost{Name: "n1", Epoch: 1, At: t1}); !errors.Is(res.Err, fsm.ErrStaleEpoch) {
		t.Fatalf("mark lost on epoch 1 after epoch 2 registered: %v, want ErrStaleEpoch", res.Err)
	}
	if n := h.node("n1"); n.Health != state.HealthAlive {
		t.Errorf("node is %s, want alive", n.Health)
	}
	if c := h.container("a"); c.Reported == state.ReportedLost {
		t.Error("its container was marked lost")
	}
	h.must(fsm.MarkNodeLost{Name: "n1", Epoch: 2, At: t1})
	if c := h.container("a"); c.Reported != state.ReportedLost {
		t.Errorf("container is %s after its node was marked lost, want lost", c.Reported)
	}
}

func TestSetSchedulability(t *testing.T) {
	set := func(s state.Schedulability) fsm.Command {
		return fsm.SetSchedulability{Name: "n1", Schedulability: s, At: t0}
	}
	runCases(t, cluster, []cmdCase{
		{name: "cordon", cmd: set(state.Cordoned), check: func(t *testing.T, h *harness, _ any) {
			if h.node("n1").Status() != state.NodeCordoned {
				t.Errorf("status %s, want cordoned", h.node("n1").Status())
			}
			wantEvents(t, h, state.EventNodeCordoned)
		}},
		{name: "drain", cmd: set(state.Draining), check: func(t *testing.T, h *harness, _ any) {
			if h.node("n1").Status() != state.NodeDraining {
				t.Errorf("status %s, want draining", h.node("n1").Status())
			}
			wantEvents(t, h, state.EventNodeDraining)
		}},
		{name: "uncordon",
			setup: func(h *harness) { h.must(set(state.Cordoned)) },
			cmd:   set(state.Schedulable),
			check: func(t *testing.T, h *harness, _ any) {
				if h.node("n1").Status() != state.NodeReady {
					t.Errorf("status %s, want ready", h.node("n1").Status())
				}
				wantEvents(t, h, state.EventNodeUncordoned)
			}},
		{name: "unknown word", cmd: set("paused"), wantErr: fsm.ErrInvalid},
		{name: "unknown node", cmd: fsm.SetSchedulability{Name: "n9", Schedulability: state.Cordoned}, wantErr: state.ErrNotFound},
	})
}

func TestRemoveNode(t *testing.T) {
	runCases(t, cluster, []cmdCase{
		{name: "empty node, with its images",
			setup: func(h *harness) {
				h.must(fsm.SetImages{Node: "n1", Images: []state.Image{{Name: "busybox:latest", ID: "sha256:bb"}}})
			},
			cmd: fsm.RemoveNode{Name: "n1"},
			check: func(t *testing.T, h *harness, _ any) {
				if _, ok := h.snap().Node("n1"); ok {
					t.Error("node n1 is still in the state")
				}
				if imgs := h.snap().Images("n1"); len(imgs) != 0 {
					t.Errorf("n1's images %v are still in the state", imgs)
				}
				wantEvents(t, h, state.EventNodeRemoved)
			}},
		{name: "refused with containers on it",
			setup:   func(h *harness) { h.place("c1", "web", "n1", 100) },
			cmd:     fsm.RemoveNode{Name: "n1"},
			wantErr: fsm.ErrNodeNotEmpty},
		{name: "refused with a stopped container on it",
			setup: func(h *harness) {
				h.place("c1", "web", "n1", 100)
				h.must(fsm.SetDesired{ID: "c1", Desired: state.DesiredStopped})
			},
			cmd:     fsm.RemoveNode{Name: "n1"},
			wantErr: fsm.ErrNodeNotEmpty},
		{name: "unknown node", cmd: fsm.RemoveNode{Name: "n9"}, wantErr: state.ErrNotFound},
		{name: "refused while a move to it is open",
			setup: func(h *harness) {
				h.place("c1", "web", "n1", 100)
				h.must(fsm.CreateMigration{ID: "m1", Container: "c1", Source: "n1", Dest: "n2", Strategy: "stop-copy", Reason: "operator", At: t1})
			},
			cmd:     fsm.RemoveNode{Name: "n2"},
			wantErr: state.ErrMigrationOpen},
		{name: "an aborted move's cleanup is owed no more",
			setup: func(h *harness) {
				h.place("c1", "web", "n1", 100)
				h.must(fsm.CreateMigration{ID: "m1", Container: "c1", Source: "n1", Dest: "n2", Strategy: "stop-copy", Reason: "operator", At: t1})
				h.must(fsm.AbortMigration{ID: "m1", Error: "n2 did not answer", DestinationCleanup: true, At: t1})
			},
			cmd: fsm.RemoveNode{Name: "n2"},
			check: func(t *testing.T, h *harness, _ any) {
				if m, _ := h.snap().Migration("m1"); m.DestinationCleanup {
					t.Error("m1 still owes n2, removed, a cleanup")
				}
			}},
	})
}

func TestPlaceContainers(t *testing.T) {
	nc := func(id, name, node string) fsm.NewContainer {
		return fsm.NewContainer{ID: id, Name: name, Node: node, Spec: spec(100)}
	}
	place := func(cs ...fsm.NewContainer) fsm.Command { return fsm.PlaceContainers{Containers: cs, At: t0} }
	// outcome checks a batch's per-container results: an address or an
	// error wrapping the given one.
	outcome := func(want ...any) func(*testing.T, *harness, any) {
		return func(t *testing.T, h *harness, v any) {
			out := v.([]fsm.PlaceOutcome)
			if len(out) != len(want) {
				t.Fatalf("%d outcomes, want %d", len(out), len(want))
			}
			for i, w := range want {
				switch w := w.(type) {
				case string:
					if out[i].Err != nil || out[i].Container.IP.String() != w {
						t.Errorf("container %d: %+v, %v; want address %s", i, out[i].Container, out[i].Err, w)
					}
				case error:
					if !errors.Is(out[i].Err, w) {
						t.Errorf("container %d: error %v, want %v", i, out[i].Err, w)
					}
				}
			}
		}
	}
	runCases(t, cluster, []cmdCase{
		{name: "batch", cmd: place(nc("a", "web", "n1"), nc("b", "db", "n2")),
			check: func(t *testing.T, h *harness, v any) {
				outcome("10.1.0.2", "10.1.0.3")(t, h, v)
				c := h.container("a")
				if c.Desired != state.DesiredRunning || c.Reported != state.ReportedPending || c.Generation != 1 ||
					!c.Created.Equal(t0) || c.Node != "n1" || c.Spec.Image != "busybox" {
					t.Errorf("placed container %+v: want running, pending, generation 1, created at %v on n1", c, t0)
				}
				if got := h.snap().Allocated("n1"); got.MilliCPU != 100 {
					t.Errorf("n1 allocated %+v, want the request", got)
				}
				wantEvents(t, h, state.EventContainerPlaced, state.EventContainerPlaced)
			}},
		{name: "name taken in the state",
			setup: func(h *harness) { h.place("a", "web", "n1", 100) },
			cmd:   place(nc("b", "web", "n1"), nc("c", "api", "n1")),
			check: func(t *testing.T, h *harness, v any) {
				outcome(state.ErrNameTaken, "10.1.0.3")(t, h, v)
				if _, ok := h.snap().ContainerByID("b"); ok {
					t.Error("the refused container was stored")
				}
			}},
		{name: "name twice in the batch", cmd: place(nc("a", "web", "n1"), nc("b", "web", "n2")),
			check: outcome("10.1.0.2", state.ErrNameTaken)},
		{name: "ID exists (a retried batch)",
			setup: func(h *harness) { h.place("a", "web", "n1", 100) },
			cmd:   place(nc("a", "web", "n1")),
			check: func(t *testing.T, h *harness, v any) {
				out := v.([]fsm.PlaceOutcome)
				if !errors.Is(out[0].Err, fsm.ErrContainerExists) || out[0].Container == nil || out[0].Container.ID != "a" {
					t.Errorf("outcome %+v: want ErrContainerExists with the stored container", out[0])
				}
				if n := len(h.snap().Containers()); n != 1 {
					t.Errorf("%d containers, want 1", n)
				}
			}},
		{name: "unknown node", cmd: place(nc("a", "web", "n9")), check: outcome(state.ErrNotFound)},
		{name: "down node",
			setup: func(h *harness) { h.must(fsm.MarkNodeLost{Name: "n2"}) },
			cmd:   place(nc("a", "web", "n2"), nc("b", "db", "n1")),
			check: outcome(fsm.ErrNodeDown, "10.1.0.2")},
		{name: "invalid container", cmd: place(fsm.NewContainer{ID: "a", Name: "web", Node: "n1"}), check: outcome(fsm.ErrInvalid)},
		{name: "empty batch", cmd: place(), wantErr: fsm.ErrInvalid},
	})

	t.Run("full CIDR refuses the containers it cannot address", func(t *testing.T) {
		h := newHarness(t)
		h.must(fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix("10.1.0.0/30")}) // one address: .2
		h.must(fsm.RegisterNode{Node: testNode("n1")})
		out := h.must(place(nc("a", "web", "n1"), nc("b", "db", "n1"))).([]fsm.PlaceOutcome)
		if out[0].Err != nil || !errors.Is(out[1].Err, state.ErrCIDRFull) {
			t.Fatalf("outcomes %v, %v: want the first placed and the second refused with ErrCIDRFull", out[0].Err, out[1].Err)
		}
		if !strings.Contains(out[1].Err.Error(), "grow the cluster CIDR") {
			t.Errorf("error %q does not say what to do", out[1].Err)
		}
	})

	t.Run("without a cluster CIDR", func(t *testing.T) {
		h := newHarness(t)
		h.must(fsm.RegisterNode{Node: testNode("n1")})
		out := h.must(place(nc("a", "web", "n1"))).([]fsm.PlaceOutcome)
		if !errors.Is(out[0].Err, state.ErrNoClusterCIDR) {
			t.Fatalf("outcome %v, want ErrNoClusterCIDR", out[0].Err)
		}
	})
}

func TestSetDesired(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := cluster(tb)
		h.place("a", "web", "n1", 100)
		return h
	}
	runCases(t, base, []cmdCase{
		{name: "stop gives back the reservation", cmd: fsm.SetDesired{ID: "a", Desired: state.DesiredStopped},
			check: func(t *testing.T, h *harness, v any) {
				if c := v.(*state.Container); c.Desired != state.DesiredStopped {
					t.Errorf("result %+v, want the stopped container", c)
				}
				if got := h.snap().Allocated("n1"); got != (state.Resources{}) {
					t.Errorf("n1 allocated %+v after the stop, want zero", got)
				}
				if got := h.snap().ContainerCount("n1"); got != 1 {
					t.Errorf("n1 counts %d containers, want 1: a stopped container stays", got)
				}
				wantEvents(t, h, state.EventContainerDesired)
			}},
		{name: "start takes it again",
			setup: func(h *harness) { h.must(fsm.SetDesired{ID: "a", Desired: state.DesiredStopped}) },
			cmd:   fsm.SetDesired{ID: "a", Desired: state.DesiredRunning},
			check: func(t *testing.T, h *harness, _ any) {
				if got := h.snap().Allocated("n1"); got.MilliCPU != 100 {
					t.Errorf("n1 allocated %+v after the start, want the request", got)
				}
			}},
		{name: "unknown container", cmd: fsm.SetDesired{ID: "zz", Desired: state.DesiredStopped}, wantErr: state.ErrNotFound},
		{name: "unknown word", cmd: fsm.SetDesired{ID: "a", Desired: "paused"}, wantErr: fsm.ErrInvalid},
	})
}

func TestReportContainers(t *testing.T) {
	t1 := t0.Add(time.Minute)
	// n1 holds a (pending), b and c (reported running).
	base := func(tb testing.TB) *harness {
		h := cluster(tb)
		h.place("a", "web", "n1", 100)
		h.place("b", "db", "n1", 100)
		h.place("c", "cache", "n1", 100)
		h.place("d", "other", "n2", 100)
		h.must(fsm.ReportContainers{Node: "n1", Epoch: 1, Reports: []fsm.Report{
			{ID: "b", State: state.ReportedRunning}, {ID: "c", State: state.ReportedRunning},
		}})
		return h
	}
	runCases(t, base, []cmdCase{
		{name: "state changes",
			cmd: fsm.ReportContainers{Node: "n1", Epoch: 1, At: t1, Reports: []fsm.Report{
				{ID: "a", State: state.ReportedRunning}, {ID: "b", State: state.ReportedExited},
			}},
			check: func(t *testing.T, h *harness, v any) {
				a, b, c := h.container("a"), h.container("b"), h.container("c")
				if a.Reported != state.ReportedRunning || !a.ReportedAt.Equal(t1) || b.Reported != state.ReportedExited {
					t.Errorf("a %s at %v, b %s: want a running at %v, b exited", a.Reported, a.ReportedAt, b.Reported, t1)
				}
				if c.Reported != state.ReportedRunning {
					t.Errorf("c %s: an incomplete report must not touch unreported containers", c.Reported)
				}
				wantEvents(t, h, state.EventContainerState, state.EventContainerState)
			}},
		{name: "containers elsewhere or unknown are listed, not taken",
			cmd: fsm.ReportContainers{Node: "n1", Epoch: 1, Reports: []fsm.Report{
				{ID: "d", State: state.ReportedStopped}, {ID: "zz", State: state.ReportedRunning},
			}, Unknown: []fsm.Unknown{{ID: "zz", Name: "stray"}}},
			check: func(t *testing.T, h *harness, v any) {
				if got := v.(fsm.ReportOutcome).Unknown; !slices.Equal(got, []string{"d", "zz"}) {
					t.Errorf("unknown %v, want [d zz]", got)
				}
				if h.container("d").Reported != state.ReportedPending {
					t.Error("n1 changed the state of n2's container")
				}
				wantEvents(t, h, state.EventContainerUnknown)
			}},
		{name: "complete report loses the unseen, not the pending",
			cmd: fsm.ReportContainers{Node: "n1", Epoch: 1, At: t1, Complete: true, Seen: []string{"c"}},
			check: func(t *testing.T, h *harness, v any) {
				if got := v.(fsm.ReportOutcome).Lost; !slices.Equal(got, []string{"b"}) {
					t.Errorf("lost %v, want [b]", got)
				}
				if b := h.container("b"); b.Reported != state.ReportedLost || !b.ReportedAt.Equal(t1) {
					t.Errorf("b %s at %v, want lost at %v", b.Reported, b.ReportedAt, t1)
				}
				if h.container("a").Reported != state.ReportedPending || h.container("c").Reported != state.ReportedRunning {
					t.Error("pending a or seen c changed")
				}
				if got := h.snap().Allocated("n1").MilliCPU; got != 200 {
					t.Errorf("n1 allocated %d mCPU, want 200: the lost container gives its reservation back", got)
				}
			}},
		{name: "stale epoch",
			setup:   func(h *harness) { h.must(fsm.RegisterNode{Node: testNode("n1")}) },
			cmd:     fsm.ReportContainers{Node: "n1", Epoch: 1, Reports: []fsm.Report{{ID: "a", State: state.ReportedRunning}}},
			wantErr: fsm.ErrStaleEpoch},
		{name: "down node",
			setup:   func(h *harness) { h.must(fsm.SetNodeHealth{Name: "n1", Health: state.HealthDown}) },
			cmd:     fsm.ReportContainers{Node: "n1", Epoch: 1, Reports: []fsm.Report{{ID: "a", State: state.ReportedRunning}}},
			wantErr: fsm.ErrNodeDown},
		{name: "a node cannot report lost",
			cmd:     fsm.ReportContainers{Node: "n1", Epoch: 1, Reports: []fsm.Report{{ID: "a", State: state.ReportedLost}}},
			wantErr: fsm.ErrInvalid},
		{name: "unknown node", cmd: fsm.ReportContainers{Node: "n9", Epoch: 1}, wantErr: state.ErrNotFound},
	})
}

func TestMarkNodeLost(t *testing.T) {
	t1 := t0.Add(time.Minute)
	base := func(tb testing.TB) *harness {
		h := cluster(tb)
		h.place("a", "web", "n1", 100)
		h.place("b", "db", "n1", 100)
		h.place("c", "other", "n2", 100)
		return h
	}
	runCases(t, base, []cmdCase{
		{name: "containers of the node become lost", cmd: fsm.MarkNodeLost{Name: "n1", At: t1},
			check: func(t *testing.T, h *harness, v any) {
				if got := v.([]string); !slices.Equal(got, []string{"b", "a"}) {
					t.Errorf("lost %v, want [b a] (by name: db, web)", got)
				}
				n := h.node("n1")
				if n.Health != state.HealthDown || !n.HealthChanged.Equal(t1) {
					t.Errorf("node %s since %v, want down since %v", n.Health, n.HealthChanged, t1)
				}
				if h.container("a").Reported != state.ReportedLost || h.container("c").Reported != state.ReportedPending {
					t.Error("want a lost and c (on n2) untouched")
				}
				if got := h.snap().Allocated("n1"); got != (state.Resources{}) {
					t.Errorf("n1 allocated %+v, want zero", got)
				}
				if got := h.container("a").IP.String(); got != "10.1.0.2" {
					t.Errorf("lost container's address %s, want it kept (10.1.0.2)", got)
				}
				wantEvents(t, h, state.EventNodeHealth, state.EventContainerState, state.EventContainerState)
			}},
		{name: "again loses nothing more",
			setup: func(h *harness) { h.must(fsm.MarkNodeLost{Name: "n1"}) },
			cmd:   fsm.MarkNodeLost{Name: "n1"},
			check: func(t *testing.T, h *harness, v any) {
				if got := v.([]string); len(got) != 0 {
					t.Errorf("lost %v again", got)
				}
				wantEvents(t, h)
			}},
		{name: "unknown node", cmd: fsm.MarkNodeLost{Name: "n9"}, wantErr: state.ErrNotFound},
	})
}

func TestDeleteContainer(t *testing.T) {
	base := func(tb testing.TB) *harness {
		h := cluster(tb)
		h.place("a", "web", "n1", 100)
		h.place("b", "db", "n1", 100)
		return h
	}
	runCases(t, base, []cmdCase{
		{name: "frees its name and address", cmd: fsm.DeleteContainer{ID: "a"},
			check: func(t *testing.T, h *harness, v any) {
				if v.(*state.Container).ID != "a" {
					t.Errorf("result %+v, want the deleted container", v)
				}
				if got := h.snap().ContainerCount("n1"); got != 1 {
					t.Errorf("n1 counts %d containers, want 1", got)
				}
				wantEvents(t, h, state.EventContainerDeleted)
				c := h.place("c", "web", "n2", 100)
				if c.IP.String() != "10.1.0.2" {
					t.Errorf("the next container got %s, want the freed 10.1.0.2", c.IP)
				}
			}},
		{name: "unknown", cmd: fsm.DeleteContainer{ID: "zz"}, wantErr: state.ErrNotFound},
	})
}

func TestSetImages(t *testing.T) {
	bb := state.Image{Name: "busybox:latest", ID: "sha256:bb", Size: 10}
	al := state.Image{Name: "alpine:3.20", ID: "sha256:al", Size: 20}
	ng := state.Image{Name: "nginx:1", ID: "sha256:ng", Size: 30}
	base := func(tb testing.TB) *harness {
		h := cluster(tb)
		h.must(fsm.SetImages{Node: "n1", Images: []state.Image{bb, al}})
		return h
	}
	runCases(t, base, []cmdCase{
		{name: "replace the list", cmd: fsm.SetImages{Node: "n1", Images: []state.Image{bb, ng}},
			check: func(t *testing.T, h *harness, v any) {
				out := v.(fsm.ImagesOutcome)
				if !slices.Equal(out.Added, []string{"nginx:1"}) || !slices.Equal(out.Removed, []string{"alpine:3.20"}) {
					t.Errorf("outcome %+v, want nginx added and alpine removed", out)
				}
				snap := h.snap()
				if !snap.HasImage("n1", "nginx:1") || snap.HasImage("n1", "alpine:3.20") || !snap.HasImage("n1", "busybox") {
					t.Error("n1 should hold busybox and nginx, not alpine")
				}
				if imgs := snap.Images("n1"); imgs[0].Node != "n1" {
					t.Errorf("image %+v: Node not set", imgs[0])
				}
				wantEvents(t, h, state.EventImageAdded, state.EventImageRemoved)
			}},
		{name: "empty list", cmd: fsm.SetImages{Node: "n1"}, check: func(t *testing.T, h *harness, _ any) {
			if imgs := h.snap().Images("n1"); len(imgs) != 0 {
				t.Errorf("n1 holds %d images, want none", len(imgs))
			}
		}},
		{name: "same list is no change", cmd: fsm.SetImages{Node: "n1", Images: []state.Image{al, bb}},
			check: func(t *testing.T, h *harness, _ any) { wantEvents(t, h) }},
		{name: "name twice", cmd: fsm.SetImages{Node: "n1", Images: []state.Image{bb, bb}}, wantErr: fsm.ErrInvalid},
		{name: "unknown node", cmd: fsm.SetImages{Node: "n9", Images: []state.Image{bb}}, wantErr: state.ErrNotFound},
	})
}

func TestAppendAudit(t *testing.T) {
	rec := state.AuditRecord{Index: 999, Time: t0, Who: "alice", Role: "operator", Action: "run", Target: "web", Outcome: "ok"}
	runCases(t, cluster, []cmdCase{
		{name: "index from the log", cmd: fsm.AppendAudit{Record: rec}, check: func(t *testing.T, h *harness, v any) {
			got := h.snap().Audit(1)
			if len(got) != 1 || got[0].Index != h.index || got[0].Who != "alice" || !got[0].Time.Equal(t0) {
				t.Errorf("audit %+v, want alice's record at index %d", got, h.index)
			}
			evs, _, _ := h.f.Store().EventsSince(h.index - 1)
			if len(evs) != 1 || evs[0].Kind != state.EventAudit || evs[0].Message != "alice (operator) run web: ok" {
				t.Errorf("events %+v, want one audit event", evs)
			}
		}},
		{name: "no action", cmd: fsm.AppendAudit{Record: state.AuditRecord{Who: "alice"}}, wantErr: fsm.ErrInvalid},
	})
}

func TestUndecodableEntries(t *testing.T) {
	valid, err := fsm.Encode(fsm.RemoveNode{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		data    []byte
		wantErr error
	}{
		{name: "unknown type", data: append([]byte{200}, valid[1:]...), wantErr: fsm.ErrUnknownCommand},
		{name: "type zero", data: []byte{0, '{', '}'}, wantErr: fsm.ErrUnknownCommand},
		{name: "bad JSON", data: []byte{byte(fsm.TypeRemoveNode), '{', '"'}, wantErr: fsm.ErrBadCommand},
		{name: "wrong field type", data: append([]byte{byte(fsm.TypeRemoveNode)}, `{"name":7}`...), wantErr: fsm.ErrBadCommand},
		{name: "empty", data: nil, wantErr: fsm.ErrBadCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := cluster(t)
			before := h.snap().Index()
			res := h.applyData(tt.data)
			if !errors.Is(res.Err, tt.wantErr) {
				t.Fatalf("Apply = %v, want %v", res.Err, tt.wantErr)
			}
			if h.snap().Index() != before {
				t.Error("an undecodable entry changed the state")
			}
		})
	}
}

func TestApplyBatch(t *testing.T) {
	h := cluster(t)
	enc := func(cmd fsm.Command) []byte {
		data, err := fsm.Encode(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	logs := []*raft.Log{
		{Index: 10, Type: raft.LogConfiguration, Data: []byte("raft's own")},
		{Index: 11, Type: raft.LogCommand, Data: enc(fsm.SetSchedulability{Name: "n1", Schedulability: state.Cordoned})},
		{Index: 12, Type: raft.LogCommand, Data: enc(fsm.RemoveNode{Name: "n9"})},
		{Index: 13, Type: raft.LogCommand, Data: enc(fsm.SetSchedulability{Name: "n2", Schedulability: state.Draining})},
	}
	out := h.f.ApplyBatch(logs)
	if len(out) != len(logs) {
		t.Fatalf("%d results for %d entries", len(out), len(logs))
	}
	if out[0] != nil {
		t.Errorf("configuration entry answered %v, want nil", out[0])
	}
	if r := out[2].(fsm.Result); !errors.Is(r.Err, state.ErrNotFound) {
		t.Errorf("entry 12 answered %v, want ErrNotFound", r.Err)
	}
	for _, i := range []int{1, 3} {
		if r := out[i].(fsm.Result); r.Err != nil {
			t.Errorf("entry %d refused: %v", logs[i].Index, r.Err)
		}
	}
	// The refused entry in the middle did not undo its neighbours.
	if h.node("n1").Schedulability != state.Cordoned || h.node("n2").Schedulability != state.Draining {
		t.Error("the batch's accepted commands are not all applied")
	}
	if got := h.snap().Index(); got != 13 {
		t.Errorf("state index %d, want 13", got)
	}
}
