package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/server"
)

// The memory measurement runs in a child process, this binary started
// again with childEnv set, so that its resident memory is one replica's
// and nothing the parent measured before.
const (
	// childEnv selects the child's work; childConfigEnv carries its
	// memoryConfig as JSON. Its result is JSON on its standard output.
	childEnv       = "GODWIT_BENCH_SCHEDULER_CHILD"
	childConfigEnv = "GODWIT_BENCH_SCHEDULER_CONFIG"
	childMemory    = "memory"
	// memoryFillBatch is how many containers one entry of the fill
	// places.
	memoryFillBatch = 256
	// fillProposers is how many goroutines register the nodes.
	fillProposers = 8
)

// memoryConfig is the child's work: the simulated cluster's size and
// where its raft data dir goes.
type memoryConfig struct {
	Nodes      int    `json:"nodes"`
	Containers int    `json:"containers"`
	Dir        string `json:"dir"`
	// FastRaft elects the single voter faster, for tests.
	FastRaft bool `json:"fast_raft,omitempty"`
}

// memoryState is the process's memory at one moment, in bytes.
type memoryState struct {
	// RSS, RSSAnon and RSSFile are VmRSS, RssAnon and RssFile of
	// /proc/self/status: RSSFile is mostly bolt's memory-mapped file.
	RSS     int64 `json:"rss"`
	RSSAnon int64 `json:"rss_anon"`
	RSSFile int64 `json:"rss_file"`
	// HeapInuse is the Go heap's spans in use after a GC, HeapAlloc the
	// live objects in them; Sys is all the runtime got from the OS.
	HeapInuse uint64 `json:"heap_inuse"`
	HeapAlloc uint64 `json:"heap_alloc"`
	Sys       uint64 `json:"sys"`
}

// memoryResult is what the child measured.
type memoryResult struct {
	Nodes      int `json:"nodes"`
	Containers int `json:"containers"`
	// Before is the process with raft started, empty; After the same
	// after the fill, the snapshot and a GC; Settled after the runtime
	// returned every free page to the OS, where it lands at rest.
	Before  memoryState `json:"before"`
	After   memoryState `json:"after"`
	Settled memoryState `json:"settled"`
	// Peak is VmHWM: the most the process ever held, fill and snapshot
	// included.
	Peak int64 `json:"peak"`
	// Fill is how long the fill took through raft.
	Fill time.Duration `json:"fill"`
	// SnapshotBytes is the FSM snapshot's size; RaftDirBytes the raft
	// data dir's (bolt file and snapshots) at the end.
	SnapshotBytes int64 `json:"snapshot_bytes"`
	RaftDirBytes  int64 `json:"raft_dir_bytes"`
}

// runChild does the child's work when this process is one, and says so.
func runChild() (code int, isChild bool) {
	if os.Getenv(childEnv) != childMemory {
		return 0, false
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("child", childMemory)
	var cfg memoryConfig
	if err := json.Unmarshal([]byte(os.Getenv(childConfigEnv)), &cfg); err != nil {
		log.Error("bad child configuration", "err", err)
		return 2, true
	}
	res, err := memoryChild(context.Background(), cfg, log)
	if err != nil {
		log.Error("memory measurement failed", "err", err)
		return 1, true
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		log.Error("write result", "err", err)
		return 1, true
	}
	return 0, true
}

// measureMemory runs the memory measurement in a child process.
func measureMemory(ctx context.Context, cfg memoryConfig, log *slog.Logger) (memoryResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return memoryResult{}, fmt.Errorf("find this program to run it again: %w", err)
	}
	conf, err := json.Marshal(cfg)
	if err != nil {
		return memoryResult{}, err
	}
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), childEnv+"="+childMemory, childConfigEnv+"="+string(conf))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return memoryResult{}, fmt.Errorf("memory child (its log is above): %w", err)
	}
	var res memoryResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		return memoryResult{}, fmt.Errorf("memory child's result %q: %w", out.String(), err)
	}
	log.Debug("memory child done", "result", res)
	return res, nil
}

// memoryChild starts one scheduler raft node (bolt stores, TLS) alone,
// reads its memory, fills it with cfg's cluster through raft, takes a raft
// snapshot, and reads its memory again.
func memoryChild(ctx context.Context, cfg memoryConfig, log *slog.Logger) (_ memoryResult, err error) {
	dir, err := os.MkdirTemp(cfg.Dir, "memory-")
	if err != nil {
		return memoryResult{}, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	timing := server.DefaultRaftTiming()
	if cfg.FastRaft {
		timing = server.FastRaftTiming()
	}
	// Snapshots only when asked, below, so that the fill is the same
	// work from run to run.
	timing.SnapshotThreshold = 1 << 62
	c, err := startBoltCluster(ctx, dir, 1, timing, quiet(log))
	if err != nil {
		return memoryResult{}, err
	}
	defer func() { err = errors.Join(err, c.close()) }()

	res := memoryResult{Nodes: cfg.Nodes, Containers: cfg.Containers}
	if res.Before, err = readMemory(); err != nil {
		return res, err
	}
	start := time.Now()
	if err := fillNodes(ctx, c, cfg.Nodes, fillProposers); err != nil {
		return res, fmt.Errorf("register %d nodes: %w", cfg.Nodes, err)
	}
	if err := fillContainers(ctx, c, cfg.Nodes, cfg.Containers); err != nil {
		return res, err
	}
	res.Fill = time.Since(start)
	snap := c.store().Snapshot()
	if got := len(snap.Containers()); got != cfg.Containers {
		return res, fmt.Errorf("the state holds %d containers after the fill, want %d", got, cfg.Containers)
	}
	if got := len(snap.Nodes()); got != cfg.Nodes {
		return res, fmt.Errorf("the state holds %d nodes after the fill, want %d", got, cfg.Nodes)
	}
	snap = nil
	if res.SnapshotBytes, err = c.leader.snapshot(ctx); err != nil {
		return res, err
	}
	res.RaftDirBytes = dirSize(dir)
	if res.After, err = readMemory(); err != nil {
		return res, err
	}
	debug.FreeOSMemory()
	if res.Settled, err = readMemory(); err != nil {
		return res, err
	}
	status, err := procStatus()
	if err != nil {
		return res, err
	}
	// The kernel updates VmHWM lazily: it can trail a VmRSS read just
	// before.
	res.Peak = max(status["VmHWM"], res.Before.RSS, res.After.RSS, res.Settled.RSS)
	// The state must still be live here, or the GC above would have
	// freed it: read it once more.
	if got := len(c.store().Snapshot().Containers()); got != cfg.Containers {
		return res, fmt.Errorf("the state holds %d containers at the end, want %d", got, cfg.Containers)
	}
	return res, nil
}

// fillContainers places containers 0 to n-1 round robin on the nodes
// through c, memoryFillBatch per entry: the memory measurement needs the
// records, not placement's choices.
func fillContainers(ctx context.Context, c committer, nodes, n int) error {
	at := time.Now()
	for first := 0; first < n; first += memoryFillBatch {
		batch := make([]fsm.NewContainer, min(memoryFillBatch, n-first))
		for i := range batch {
			k := first + i
			batch[i] = fsm.NewContainer{ID: containerID(k), Name: containerName(k), Spec: simSpec(k), Node: nodeName(k % nodes)}
		}
		data, err := fsm.Encode(fsm.PlaceContainers{Containers: batch, At: at})
		if err != nil {
			return err
		}
		res, err := c.commit(ctx, data)
		if err == nil {
			err = placedAll(res)
		}
		if err != nil {
			return fmt.Errorf("place containers %d to %d: %w", first, first+len(batch)-1, err)
		}
	}
	return nil
}

// readMemory collects garbage and reads the process's memory.
func readMemory() (memoryState, error) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	status, err := procStatus()
	if err != nil {
		return memoryState{}, err
	}
	return memoryState{
		RSS: status["VmRSS"], RSSAnon: status["RssAnon"], RSSFile: status["RssFile"],
		HeapInuse: ms.HeapInuse, HeapAlloc: ms.HeapAlloc, Sys: ms.Sys,
	}, nil
}

// procStatus reads the kB fields of /proc/self/status (VmRSS, VmHWM,
// RssAnon ...) in bytes.
func procStatus() (map[string]int64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, err
	}
	return parseStatus(data)
}

// parseStatus reads the "Name:  N kB" lines of a /proc/PID/status file,
// in bytes; it fails when VmRSS or VmHWM is missing.
func parseStatus(data []byte) (map[string]int64, error) {
	out := map[string]int64{}
	for line := range bytes.Lines(data) {
		f := bytes.Fields(line)
		if len(f) != 3 || string(f[2]) != "kB" || !bytes.HasSuffix(f[0], []byte(":")) {
			continue
		}
		kb, err := strconv.ParseInt(string(f[1]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc status line %q: %w", bytes.TrimSpace(line), err)
		}
		out[string(bytes.TrimSuffix(f[0], []byte(":")))] = kb << 10
	}
	for _, k := range []string{"VmRSS", "VmHWM"} {
		if _, ok := out[k]; !ok {
			return nil, fmt.Errorf("no %s in /proc status: not a Linux process status file", k)
		}
	}
	return out, nil
}
