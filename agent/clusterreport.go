package agent

import (
	"context"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/godwit/godwit/agent/runtime"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// clusterReport is what the agent keeps to report itself to the
// scheduler (agent/clusterlink calls RegisterFacts and HeartbeatReport):
// the load sampler, made on first use, and the containers as last seen.
type clusterReport struct {
	once    sync.Once
	sampler *loadSampler

	mu   sync.Mutex
	seen map[string]containerSnapshot
	// loadErr is the last load sampling failure logged, so that one that
	// repeats on every heartbeat is logged once.
	loadErr string
}

// RegisterFacts is what the node tells the scheduler when it registers:
// its address, capacity, labels, CPU, versions, migration strategies,
// and the containers and images it holds now. It fails only when ctx
// ends first or the image store cannot be read.
func (a *Agent) RegisterFacts(ctx context.Context) (*pb.RegisterRequest, error) {
	info := a.NodeInfo(ctx)
	host := a.host()
	strategies, err := a.MigrationStrategies(ctx)
	if err != nil {
		return nil, err
	}
	imgs, err := a.images.List()
	if err != nil {
		return nil, err
	}
	req := &pb.RegisterRequest{
		Name:          info.Name,
		Address:       info.Address,
		Capacity:      &pb.Resources{MilliCpu: int64(info.CPUs) * millisPerCPU, MemoryBytes: info.MemoryBytes},
		Labels:        info.Labels,
		CpuVendor:     host.CPU.Vendor,
		CpuModel:      host.CPU.Model,
		CpuFlags:      host.CPU.Flags,
		RuncVersion:   info.RuncVersion,
		CriuVersion:   info.CRIUVersion,
		KernelVersion: info.KernelVersion,
		GodwitVersion: info.GodwitVersion,
		Snapshotter:   info.Snapshotter,
		Containers:    containerReports(a.snapshotContainers()),
	}
	for _, s := range strategies {
		if s.Supported {
			req.Strategies = append(req.Strategies, string(s.Strategy))
		}
	}
	for i := range imgs {
		req.Images = append(req.Images, imageToProto(&imgs[i]))
	}
	return req, nil
}

// HeartbeatReport is what the node sends with each heartbeat: its
// containers and a load sample. A sample that could not be read whole is
// sent as far as it was read, and the failure logged (once while it
// repeats). It fails only when ctx ends first. The caller fills in the
// epoch.
func (a *Agent) HeartbeatReport(ctx context.Context) (*pb.HeartbeatRequest, error) {
	containers := a.snapshotContainers()
	load, err := a.sample(ctx, containers)
	if ctxErr := ctx.Err(); ctxErr != nil {
		return nil, ctxErr
	}
	a.report.mu.Lock()
	switch {
	case err != nil && err.Error() != a.report.loadErr:
		a.log.Warn("load sample incomplete", "err", err)
		a.report.loadErr = err.Error()
	case err == nil:
		a.report.loadErr = ""
	}
	a.report.mu.Unlock()
	return &pb.HeartbeatRequest{Name: a.cfg.Name, Containers: containerReports(containers), Load: loadToProto(load)}, nil
}

func containerReports(cs []containerSnapshot) []*pb.ContainerReport {
	out := make([]*pb.ContainerReport, len(cs))
	for i, c := range cs {
		out[i] = &pb.ContainerReport{Id: c.ID, Name: c.Name, State: stateToProto[c.State]}
	}
	return out
}

func loadToProto(l Load) *pb.NodeLoad {
	out := &pb.NodeLoad{Sampled: timestamppb.New(l.Sampled), CpuMillis: l.CPUMillis, MemoryBytes: l.MemoryBytes}
	for _, c := range l.Containers {
		out.Containers = append(out.Containers, &pb.ContainerLoad{Id: c.ID, CpuMillis: c.CPUMillis, MemoryBytes: c.MemoryBytes})
	}
	return out
}

// containerSnapshot is what the cluster is told of a container, read
// without waiting for an operation on it.
type containerSnapshot struct {
	ID, Name string
	State    State
	Started  time.Time
}

// snapshotContainers lists the containers by ID without blocking on the
// ones busy with a long operation (a checkpoint, a migration step, a
// start): heartbeats must not wait minutes for a dump, or the lease
// lapses. A busy container is reported as last seen, or as created when
// never seen (it is being made: a run, a restore). A running container
// whose shim recorded its exit is reported exited, from the exit file: a
// file read, never a runc call, since heartbeats list every container
// every few seconds.
func (a *Agent) snapshotContainers() []containerSnapshot {
	a.mu.Lock()
	entries := make([]*entry, 0, len(a.containers))
	for _, e := range a.containers {
		entries = append(entries, e)
	}
	a.mu.Unlock()

	a.report.mu.Lock()
	last := a.report.seen
	a.report.mu.Unlock()
	out := make([]containerSnapshot, 0, len(entries))
	seen := make(map[string]containerSnapshot, len(entries))
	for _, e := range entries {
		var s containerSnapshot
		if e.op.TryLock() {
			s = containerSnapshot{ID: e.c.ID, Name: e.c.Name, State: e.c.State, Started: e.c.Started}
			e.op.Unlock()
			if s.State == StateRunning {
				if _, exited, err := runtime.ReadExit(a.paths(s.ID).state()); err == nil && exited {
					s.State = StateExited
				}
			}
		} else {
			var ok bool
			if s, ok = last[e.c.ID]; !ok { // ID and Name never change once the entry is listed
				s = containerSnapshot{ID: e.c.ID, Name: e.c.Name, State: StateCreated}
			}
		}
		out = append(out, s)
		seen[s.ID] = s
	}
	a.report.mu.Lock()
	a.report.seen = seen
	a.report.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
