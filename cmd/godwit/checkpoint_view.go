package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
	"github.com/godwit/godwit/internal/units"
	pb "github.com/godwit/godwit/proto/godwit/v1"
)

// checkpointView is a checkpoint as `checkpoint ls -o json` prints it, and
// the top level of `checkpoint inspect -o json`. Its keys are part of the
// CLI's contract.
type checkpointView struct {
	ID             string              `json:"id"`
	Container      string              `json:"container"`
	ContainerID    string              `json:"container_id,omitempty"`
	Image          string              `json:"image"`
	ImageLayers    []string            `json:"image_layers"`
	IP             string              `json:"ip,omitempty"`
	Created        time.Time           `json:"created"`
	SizeBytes      int64               `json:"size_bytes"`
	LeaveRunning   bool                `json:"leave_running"`
	TCPEstablished bool                `json:"tcp_established"`
	Node           string              `json:"node"`
	CRIUVersion    string              `json:"criu_version"`
	RuncVersion    string              `json:"runc_version"`
	KernelVersion  string              `json:"kernel_version"`
	Stats          checkpointStatsView `json:"stats"`
}

// checkpointStatsView is CRIU's statistics, in CRIU's microseconds.
type checkpointStatsView struct {
	FreezingTimeUs     int64 `json:"freezing_time_us"`
	FrozenTimeUs       int64 `json:"frozen_time_us"`
	MemdumpTimeUs      int64 `json:"memdump_time_us"`
	MemwriteTimeUs     int64 `json:"memwrite_time_us"`
	PagesScanned       int64 `json:"pages_scanned"`
	PagesSkippedParent int64 `json:"pages_skipped_parent"`
	PagesWritten       int64 `json:"pages_written"`
	RestoreTimeUs      int64 `json:"restore_time_us"`
	PagesRestored      int64 `json:"pages_restored"`
	ImageBytes         int64 `json:"image_bytes"`
}

// checkpointDetailView is `checkpoint inspect -o json`: the checkpoint's
// summary and what its CRIU images hold. A stored checkpoint (through the
// agent) and an archive file (read here) give the same shape.
type checkpointDetailView struct {
	checkpointView
	Processes   []criuimg.Process `json:"processes"`
	Mounts      []criuimg.Mount   `json:"mounts"`
	MemoryBytes int64             `json:"memory_bytes"`
	Warnings    []string          `json:"warnings"`
}

// checkpointResultView is `checkpoint NAME -o json`.
type checkpointResultView struct {
	checkpointView
	Archive *archiveView `json:"archive,omitempty"`
}

type archiveView struct {
	Path      string `json:"path"`
	SizeBytes int64  `json:"size_bytes"`
	Encrypted bool   `json:"encrypted"`
}

// restoreView is `restore -o json`.
type restoreView struct {
	Container  containerView   `json:"container"`
	Checkpoint *checkpointView `json:"checkpoint,omitempty"`
	Warnings   []string        `json:"warnings"`
}

func newCheckpointView(c *pb.Checkpoint) checkpointView {
	s := c.GetStats()
	return checkpointView{
		ID: c.GetId(), Container: c.GetContainerName(), ContainerID: c.GetContainerId(),
		Image: c.GetImage(), ImageLayers: nonNil(c.GetImageLayers()), IP: c.GetIp(),
		Created: c.GetCreated().AsTime(), SizeBytes: c.GetSizeBytes(),
		LeaveRunning: c.GetLeaveRunning(), TCPEstablished: c.GetTcpEstablished(),
		Node: c.GetNode(), CRIUVersion: c.GetCriuVersion(), RuncVersion: c.GetRuncVersion(),
		KernelVersion: c.GetKernelVersion(),
		Stats: checkpointStatsView{
			FreezingTimeUs: s.GetFreezingTimeUs(), FrozenTimeUs: s.GetFrozenTimeUs(),
			MemdumpTimeUs: s.GetMemdumpTimeUs(), MemwriteTimeUs: s.GetMemwriteTimeUs(),
			PagesScanned: s.GetPagesScanned(), PagesSkippedParent: s.GetPagesSkippedParent(),
			PagesWritten: s.GetPagesWritten(), RestoreTimeUs: s.GetRestoreTimeUs(),
			PagesRestored: s.GetPagesRestored(), ImageBytes: s.GetImageBytes(),
		},
	}
}

// manifestView summarises a manifest read here from an archive, as the
// agent summarises the ones it stores.
func manifestView(m *bundle.Manifest) checkpointView {
	v := checkpointView{
		ID: m.ID, Container: m.Container.Name, ContainerID: m.Container.ID,
		Image: m.Image.Name, ImageLayers: []string{}, IP: m.Container.IP,
		Created: m.Created.UTC(), SizeBytes: m.Size(),
		LeaveRunning: m.Options.LeaveRunning, TCPEstablished: m.Options.TCPEstablished,
		Node: m.Host.Node, CRIUVersion: m.Host.CRIUVersion, RuncVersion: m.Host.RuncVersion,
		KernelVersion: m.Host.Kernel,
		Stats: checkpointStatsView{
			FreezingTimeUs: m.Stats.FreezingTimeUs, FrozenTimeUs: m.Stats.FrozenTimeUs,
			MemdumpTimeUs: m.Stats.MemdumpTimeUs, MemwriteTimeUs: m.Stats.MemwriteTimeUs,
			PagesScanned: m.Stats.PagesScanned, PagesSkippedParent: m.Stats.PagesSkippedParent,
			PagesWritten: m.Stats.PagesWritten, RestoreTimeUs: m.Stats.RestoreTimeUs,
			PagesRestored: m.Stats.PagesRestored,
		},
	}
	for _, d := range m.Image.Layers {
		v.ImageLayers = append(v.ImageLayers, d.String())
	}
	for _, f := range m.Files {
		if strings.HasPrefix(f.Path, bundle.CRIUDir+"/") {
			v.Stats.ImageBytes += f.Size
		}
	}
	return v
}

func newCheckpointDetailView(d *pb.CheckpointDetail) checkpointDetailView {
	v := checkpointDetailView{
		checkpointView: newCheckpointView(d.GetCheckpoint()),
		Processes:      []criuimg.Process{},
		Mounts:         []criuimg.Mount{},
		MemoryBytes:    d.GetMemoryBytes(),
		Warnings:       nonNil(d.GetWarnings()),
	}
	for _, p := range d.GetProcesses() {
		cp := criuimg.Process{
			PID: int(p.GetPid()), PPID: int(p.GetPpid()), PGID: int(p.GetPgid()), SID: int(p.GetSid()),
			State: p.GetState(), Comm: p.GetComm(), Cmdline: p.GetCmdline(), Exe: p.GetExe(),
			Cwd: p.GetCwd(), Root: p.GetRoot(), Threads: int(p.GetThreads()), MemoryBytes: p.GetMemoryBytes(),
		}
		for _, f := range p.GetFiles() {
			cp.Files = append(cp.Files, criuimg.File{FD: int(f.GetFd()), Type: f.GetType(), Path: f.GetPath()})
		}
		for _, s := range p.GetSockets() {
			cp.Sockets = append(cp.Sockets, criuimg.Socket{
				FD: int(s.GetFd()), Family: s.GetFamily(), Type: s.GetType(), Protocol: s.GetProtocol(),
				State: s.GetState(), LocalAddr: s.GetLocalAddr(), LocalPort: int(s.GetLocalPort()),
				RemoteAddr: s.GetRemoteAddr(), RemotePort: int(s.GetRemotePort()), Path: s.GetPath(),
				Inode: s.GetInode(), PeerInode: s.GetPeerInode(),
			})
		}
		v.Processes = append(v.Processes, cp)
	}
	for _, m := range d.GetMounts() {
		v.Mounts = append(v.Mounts, criuimg.Mount{
			ID: int(m.GetId()), ParentID: int(m.GetParentId()), Mountpoint: m.GetMountpoint(),
			FSType: m.GetFstype(), Source: m.GetSource(), Root: m.GetRoot(), Options: m.GetOptions(),
			External: m.GetExternal(),
		})
	}
	return v
}

// archiveDetailView is what inspecting an archive file shows: the same as
// for a stored checkpoint, statistics from the manifest included, so that
// both print alike.
func archiveDetailView(m *bundle.Manifest, r *criuimg.Report) checkpointDetailView {
	return checkpointDetailView{
		checkpointView: manifestView(m),
		Processes:      nonNil(r.Processes),
		Mounts:         nonNil(r.Mounts),
		MemoryBytes:    r.MemoryBytes,
		Warnings:       nonNil(r.Warnings),
	}
}

// nonNil makes JSON print an empty list as [], not null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// criuStats turns the statistics back into criuimg's form for its text.
func (s checkpointStatsView) criuStats() *criuimg.Stats {
	us := func(v int64) time.Duration { return time.Duration(v) * time.Microsecond }
	out := &criuimg.Stats{
		ImageBytes: s.ImageBytes,
		Dump: &criuimg.DumpStats{
			FreezingTime: us(s.FreezingTimeUs), FrozenTime: us(s.FrozenTimeUs),
			MemdumpTime: us(s.MemdumpTimeUs), MemwriteTime: us(s.MemwriteTimeUs),
			PagesScanned: s.PagesScanned, PagesSkippedParent: s.PagesSkippedParent,
			PagesWritten: s.PagesWritten,
		},
	}
	if s.RestoreTimeUs != 0 || s.PagesRestored != 0 {
		out.Restore = &criuimg.RestoreStats{RestoreTime: us(s.RestoreTimeUs), PagesRestored: s.PagesRestored}
	}
	return out
}

// shortDuration rounds a duration to what a person compares: 1.23s,
// 126.6ms, 450µs.
func shortDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}

func usDuration(us int64) string { return shortDuration(time.Duration(us) * time.Microsecond) }

// writeCheckpointDetail prints inspect's text: the summary, then the
// process tree, files, sockets, mounts and statistics.
func writeCheckpointDetail(w io.Writer, v checkpointDetailView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, val string) { fmt.Fprintf(tw, "%s\t%s\n", k, val) }
	row("Checkpoint", v.ID)
	container := v.Container
	if v.ContainerID != "" {
		container += " (" + shortDigest(v.ContainerID) + ")"
	}
	row("Container", container)
	layers := "layers"
	if len(v.ImageLayers) == 1 {
		layers = "layer"
	}
	row("Image", fmt.Sprintf("%s (%d %s)", v.Image, len(v.ImageLayers), layers))
	if v.IP != "" {
		row("IP", v.IP)
	}
	row("Created", v.Created.Local().Format(time.DateTime))
	row("Node", v.Node)
	row("Versions", fmt.Sprintf("CRIU %s, runc %s, kernel %s", v.CRIUVersion, v.RuncVersion, v.KernelVersion))
	row("Size", fmt.Sprintf("%s (CRIU images %s)", units.FormatBytes(v.SizeBytes), units.FormatBytes(v.Stats.ImageBytes)))
	var opts []string
	if v.TCPEstablished {
		opts = append(opts, "tcp-established")
	}
	if v.LeaveRunning {
		opts = append(opts, "leave-running")
	}
	if len(opts) > 0 {
		row("Options", strings.Join(opts, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	report := &criuimg.Report{
		Processes:   v.Processes,
		Mounts:      v.Mounts,
		MemoryBytes: v.MemoryBytes,
		Stats:       v.Stats.criuStats(),
		Warnings:    v.Warnings,
	}
	return report.WriteText(w)
}
