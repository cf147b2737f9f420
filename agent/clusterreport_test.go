package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// reportTestAgent is an agent named n1 with containers in the given
// states, ID "id-"+name, whose load comes from the fake host h.
func reportTestAgent(t *testing.T, h *fakeHost, states map[string]State) *Agent {
	t.Helper()
	a, _ := testAgent(t)
	a.cfg.Name = "n1"
	a.containers = map[string]*entry{}
	for name, st := range states {
		id := "id-" + name
		a.containers[id] = &entry{c: &Container{ID: id, Name: name, State: st, Started: time.Now().Add(-time.Minute)}}
	}
	a.report.once.Do(func() { a.report.sampler = newLoadSampler(h.src) })
	return a
}

func reported(req *pb.HeartbeatRequest) map[string]pb.ContainerState {
	out := map[string]pb.ContainerState{}
	for _, c := range req.GetContainers() {
		out[c.GetName()] = c.GetState()
	}
	return out
}

func TestHeartbeatReportCarriesContainersAndLoad(t *testing.T) {
	h := newFakeHost(t, fakeV1)
	h.procStat(100, 300)
	h.v1("/godwit/n1/id-web", 1e9, 50<<20, 10<<20)
	h.v1("/godwit/n1/id-done", 1e9, 50<<20, 10<<20)
	a := reportTestAgent(t, h, map[string]State{"web": StateRunning, "done": StateRunning, "old": StateStopped})
	// done's process ended: its shim recorded the exit, nobody listed it.
	exitDir := a.paths("id-done").state()
	if err := os.MkdirAll(exitDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(exitDir, "exit.json"), []byte(`{"code":0}`), 0o600); err != nil {
		t.Fatal(err)
	}

	req, err := a.HeartbeatReport(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]pb.ContainerState{
		"web":  pb.ContainerState_CONTAINER_STATE_RUNNING,
		"done": pb.ContainerState_CONTAINER_STATE_EXITED,
		"old":  pb.ContainerState_CONTAINER_STATE_STOPPED,
	}
	if got := reported(req); len(got) != len(want) || got["web"] != want["web"] || got["done"] != want["done"] || got["old"] != want["old"] {
		t.Fatalf("containers = %v, want %v", got, want)
	}
	if req.GetName() != "n1" {
		t.Fatalf("name = %q, want n1", req.GetName())
	}
	load := req.GetLoad()
	if load.GetMemoryBytes() != 600*1024 || load.GetCpuMillis() != 500 || load.GetSampled() == nil {
		t.Fatalf("node load = %v, want 600 KiB, 500 millis and a time", load)
	}
	if cs := load.GetContainers(); len(cs) != 1 || cs[0].GetId() != "id-web" || cs[0].GetMemoryBytes() != 40<<20 {
		t.Fatalf("container loads = %v, want web alone (the others do not run) with 40 MiB", cs)
	}
}

func TestHeartbeatReportDoesNotWaitForABusyContainer(t *testing.T) {
	h := newFakeHost(t, fakeV2)
	h.procStat(100, 300)
	a := reportTestAgent(t, h, map[string]State{"web": StateRunning, "new": StateCreated})
	busy := func(name string) *entry { return a.containers["id-"+name] }

	// new is being made (a run holds its lock): reported as created.
	busy("new").op.Lock()
	first := heartbeatWithin(t, a)
	if got := reported(first)["new"]; got != pb.ContainerState_CONTAINER_STATE_CREATED {
		t.Fatalf("a busy container never seen is reported %v, want created", got)
	}
	busy("new").op.Unlock()

	// web is being checkpointed for minutes: the heartbeat reports it as
	// last seen, running, instead of waiting.
	_ = heartbeatWithin(t, a)
	busy("web").op.Lock()
	defer busy("web").op.Unlock()
	busy("web").c.State = StateCheckpointed // in the middle of the operation
	second := heartbeatWithin(t, a)
	if got := reported(second)["web"]; got != pb.ContainerState_CONTAINER_STATE_RUNNING {
		t.Fatalf("a busy container is reported %v, want running as last seen", got)
	}
}

// heartbeatWithin builds a heartbeat report, failing if it takes longer
// than a heartbeat may.
func heartbeatWithin(t *testing.T, a *Agent) *pb.HeartbeatRequest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan *pb.HeartbeatRequest, 1)
	go func() {
		req, err := a.HeartbeatReport(ctx)
		if err != nil {
			t.Error(err)
		}
		done <- req
	}()
	select {
	case req := <-done:
		return req
	case <-ctx.Done():
		t.Fatal("the heartbeat report waited for a busy container")
		return nil
	}
}
