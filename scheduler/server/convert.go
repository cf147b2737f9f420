package server

import (
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pb "github.com/godwit/godwit/proto/godwit/v1"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// Conversions between the cluster state and the API's messages. Generated
// types stop here: the state, the FSM and placement never see them.

var reportedToProto = map[state.ReportedState]pb.ContainerState{
	state.ReportedPending:   pb.ContainerState_CONTAINER_STATE_PENDING,
	state.ReportedCreated:   pb.ContainerState_CONTAINER_STATE_CREATED,
	state.ReportedRunning:   pb.ContainerState_CONTAINER_STATE_RUNNING,
	state.ReportedStopped:   pb.ContainerState_CONTAINER_STATE_STOPPED,
	state.ReportedExited:    pb.ContainerState_CONTAINER_STATE_EXITED,
	state.ReportedMigrating: pb.ContainerState_CONTAINER_STATE_MIGRATING,
	state.ReportedLost:      pb.ContainerState_CONTAINER_STATE_LOST,

	state.ReportedCheckpointed: pb.ContainerState_CONTAINER_STATE_CHECKPOINTED,
}

// reportedFromProto is the state an agent's report means in the cluster.
var reportedFromProto = map[pb.ContainerState]state.ReportedState{
	pb.ContainerState_CONTAINER_STATE_CREATED:      state.ReportedCreated,
	pb.ContainerState_CONTAINER_STATE_RUNNING:      state.ReportedRunning,
	pb.ContainerState_CONTAINER_STATE_STOPPED:      state.ReportedStopped,
	pb.ContainerState_CONTAINER_STATE_EXITED:       state.ReportedExited,
	pb.ContainerState_CONTAINER_STATE_CHECKPOINTED: state.ReportedCheckpointed,
	pb.ContainerState_CONTAINER_STATE_MIGRATING:    state.ReportedMigrating,
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// containerToProto is the cluster's record of c, in the agent API's
// message, so that `ps -o json` keeps the agent mode's keys.
func containerToProto(c *state.Container) *pb.Container {
	out := &pb.Container{
		Id:          c.ID,
		Name:        c.Name,
		Image:       c.Spec.Image,
		State:       reportedToProto[c.Reported],
		Node:        c.Node,
		Args:        c.Spec.Args,
		Env:         c.Spec.Env,
		WorkingDir:  c.Spec.WorkingDir,
		Hostname:    c.Spec.Hostname,
		User:        c.Spec.User,
		Cpus:        float64(c.Spec.Request.MilliCPU) / 1000,
		MemoryBytes: c.Spec.Request.MemoryBytes,
		Labels:      c.Spec.Labels,
		Created:     timestamp(c.Created),
		Generation:  c.Generation,
		// A container checkpointed away waits in this checkpoint.
		LastCheckpoint: c.Checkpoint,
	}
	if c.IP.IsValid() {
		out.Ip = c.IP.String()
	}
	return out
}

func resourcesToProto(r state.Resources) *pb.Resources {
	return &pb.Resources{MilliCpu: r.MilliCPU, MemoryBytes: r.MemoryBytes}
}

// nodeToProto is node n as operators see it, with what is placed on it.
func nodeToProto(n *state.Node, allocated state.Resources, containers int, load *pb.NodeLoad) *pb.Node {
	return &pb.Node{
		Name:           n.Name,
		Address:        n.Address,
		Status:         string(n.Status()),
		Labels:         n.Labels,
		Containers:     int32(containers),
		Capacity:       resourcesToProto(n.Capacity),
		Allocated:      resourcesToProto(allocated),
		Health:         string(n.Health),
		Schedulability: string(n.Schedulability),
		Epoch:          n.Epoch,
		Registered:     timestamp(n.Registered),
		HealthChanged:  timestamp(n.HealthChanged),
		RuncVersion:    n.Versions.Runc,
		CriuVersion:    n.Versions.CRIU,
		KernelVersion:  n.Versions.Kernel,
		GodwitVersion:  n.Versions.Godwit,
		CpuVendor:      n.CPU.Vendor,
		CpuModel:       n.CPU.Model,
		CpuFlags:       n.CPU.Flags,
		Strategies:     n.Strategies,
		Snapshotter:    n.Snapshotter,
		Load:           load,
	}
}

// nodeFromRegister is the node an agent's registration describes.
func nodeFromRegister(r *pb.RegisterRequest) state.Node {
	return state.Node{
		Name:     r.GetName(),
		Address:  r.GetAddress(),
		Capacity: state.Resources{MilliCPU: r.GetCapacity().GetMilliCpu(), MemoryBytes: r.GetCapacity().GetMemoryBytes()},
		Labels:   r.GetLabels(),
		CPU:      state.CPU{Vendor: r.GetCpuVendor(), Model: r.GetCpuModel(), Flags: r.GetCpuFlags()},
		Versions: state.Versions{
			Godwit: r.GetGodwitVersion(),
			Runc:   r.GetRuncVersion(),
			CRIU:   r.GetCriuVersion(),
			Kernel: r.GetKernelVersion(),
		},
		Snapshotter: r.GetSnapshotter(),
		Strategies:  r.GetStrategies(),
	}
}

// imagesFromProto are the images an agent reports, as the node's records.
func imagesFromProto(node string, imgs []*pb.Image) []state.Image {
	out := make([]state.Image, 0, len(imgs))
	for _, img := range imgs {
		layers := make([]string, len(img.GetLayers()))
		for i, l := range img.GetLayers() {
			layers[i] = l.GetDigest()
		}
		im := state.Image{Node: node, Name: img.GetName(), ID: img.GetId(), Layers: layers, Size: img.GetSize()}
		if img.GetCreated() != nil {
			im.Created = img.GetCreated().AsTime()
		}
		out = append(out, im)
	}
	return out
}

func imageToProto(img *state.Image) *pb.ClusterImage {
	layers := make([]*pb.Layer, len(img.Layers))
	for i, d := range img.Layers {
		layers[i] = &pb.Layer{Digest: d}
	}
	return &pb.ClusterImage{Node: img.Node, Image: &pb.Image{Name: img.Name, Id: img.ID, Layers: layers, Size: img.Size, Created: timestamp(img.Created)}}
}

// specFromRun is the container spec of a run request; errors name the
// flag to fix.
func specFromRun(req *pb.RunRequest) (state.ContainerSpec, error) {
	c := req.GetContainer()
	if c.GetImage() == "" {
		return state.ContainerSpec{}, fmt.Errorf("run: no image: give the image to run")
	}
	if c.GetCpus() < 0 || math.IsNaN(c.GetCpus()) || c.GetMemoryBytes() < 0 {
		return state.ContainerSpec{}, fmt.Errorf("run: --cpus and --memory must not be negative")
	}
	spec := state.ContainerSpec{
		Image:      c.GetImage(),
		Args:       c.GetArgs(),
		Env:        c.GetEnv(),
		WorkingDir: c.GetWorkingDir(),
		Hostname:   c.GetHostname(),
		User:       c.GetUser(),
		Labels:     c.GetLabels(),
		Request:    state.Resources{MilliCPU: int64(math.Round(c.GetCpus() * 1000)), MemoryBytes: c.GetMemoryBytes()},
		Node:       req.GetNode(),
		Pinned:     req.GetPin(),
	}
	for _, kv := range req.GetConstraints() {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return state.ContainerSpec{}, fmt.Errorf("--constraint %q: write it as KEY=VALUE (a node label)", kv)
		}
		spec.Constraints = append(spec.Constraints, state.Constraint{Key: k, Value: v})
	}
	return spec, nil
}

func placementToProto(d placement.Decision) *pb.Placement {
	out := &pb.Placement{Node: d.Node}
	for _, c := range d.Candidates {
		pc := &pb.PlacementCandidate{Node: c.Node, Score: c.Score}
		for _, p := range c.Parts {
			pc.Parts = append(pc.Parts, &pb.ScorePart{Name: p.Name, Value: p.Value})
		}
		out.Candidates = append(out.Candidates, pc)
	}
	for _, r := range d.Rejected {
		reason := r.Reason
		if r.Advice != "" {
			reason += ": " + r.Advice
		}
		out.Rejected = append(out.Rejected, &pb.PlacementRejection{Node: r.Node, Filter: r.Filter, Reason: reason})
	}
	return out
}
