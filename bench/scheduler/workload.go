package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/godwit/godwit/bench/internal/benchutil"
	"github.com/godwit/godwit/scheduler/fsm"
	"github.com/godwit/godwit/scheduler/placement"
	"github.com/godwit/godwit/scheduler/state"
)

// The simulated cluster: nodes of three sizes in two zones, one in
// imageHolderEvery holding the image, and containers of one service.
// Every record carries what a real one does (labels, CPU flags, versions,
// arguments, environment), so that memory and encoding costs are a real
// cluster's.
const (
	// clusterCIDR holds every container address any measurement needs.
	clusterCIDR = "10.0.0.0/8"
	// imageName is the image every container runs.
	imageName = "registry.example.com/shop/api:1.4.2"
	imageID   = "sha256:5b1c4a7e9d0f3e2a6c8b7d9e1f0a2b3c4d5e6f708192a3b4c5d6e7f809a1b2c3"
	imageSize = 48 << 20
	// imageHolderEvery: one node in this many holds the image, as in
	// placement's own benchmark.
	imageHolderEvery = 3
	// nodeSizes: a node of size k (1 to nodeSizes) has k times
	// baseMilliCPU and baseMemory.
	nodeSizes    = 3
	baseMilliCPU = 16000
	baseMemory   = 64 << 30
	// containerMilliCPU and containerMemory are each container's request.
	containerMilliCPU = 250
	containerMemory   = 256 << 20
)

// cpuFlags are an x86 server's /proc/cpuinfo flags: a node record holds
// about this many.
var cpuFlags = strings.Fields(`fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36
	clflush mmx fxsr sse sse2 ht syscall nx mmxext fxsr_opt pdpe1gb rdtscp lm constant_tsc rep_good nopl
	xtopology nonstop_tsc cpuid extd_apicid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2
	x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm cmp_legacy svm
	cr8_legacy abm sse4a misalignsse 3dnowprefetch osvw topoext perfctr_core ssbd ibrs ibpb stibp vmmcall
	fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma
	clflushopt clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx512_bf16 clzero
	xsaveerptr wbnoinvd arat npt nrip_save avx512vbmi umip pku ospke avx512_vbmi2 gfni vaes vpclmulqdq
	avx512_vnni avx512_bitalg avx512_vpopcntdq rdpid fsrm`)

// nodeName is node i's name.
func nodeName(i int) string { return fmt.Sprintf("node-%04d", i) }

// simNode is node i of the simulated cluster, as its agent registers it.
func simNode(i int) state.Node {
	size := int64(1 + i%nodeSizes)
	return state.Node{
		Name:     nodeName(i),
		Address:  fmt.Sprintf("10.%d.%d.%d:7001", 200+i/65536, i/256%256, i%256),
		Capacity: state.Resources{MilliCPU: baseMilliCPU * size, MemoryBytes: baseMemory * size},
		Labels: map[string]string{
			"zone": []string{"eu-west-1a", "eu-west-1b"}[i%2],
			"disk": "ssd",
			"rack": fmt.Sprintf("r%02d", i%40),
		},
		CPU:         state.CPU{Vendor: "AuthenticAMD", Model: "AMD EPYC 9654 96-Core Processor", Flags: cpuFlags},
		Versions:    state.Versions{Godwit: "0.5.0", Runc: "1.3.6", CRIU: "4.2.1", Kernel: "6.18.44"},
		Snapshotter: "overlay",
		Strategies:  []string{"stop-copy", "stream", "post-copy"},
	}
}

// clusterCapacity is how many containers n simulated nodes hold.
func clusterCapacity(n int) int {
	total := 0
	for i := range n {
		size := int64(1 + i%nodeSizes)
		total += int(min(baseMilliCPU*size/containerMilliCPU, baseMemory*size/containerMemory))
	}
	return total
}

// roundRobinCapacity is how many containers n simulated nodes hold when
// each gets the same number: the smallest node's share times n.
func roundRobinCapacity(n int) int {
	return n * int(min(baseMilliCPU/containerMilliCPU, baseMemory/containerMemory))
}

// simSpec is what an operator asked for container k.
func simSpec(k int) state.ContainerSpec {
	return state.ContainerSpec{
		Image: imageName,
		Args:  []string{"/usr/local/bin/api", "--listen", ":8080", "--log-level", "info"},
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"SERVICE=api", "REGION=eu-west-1", "INSTANCE=" + strconv.Itoa(k),
		},
		Labels:  map[string]string{"app": "api", "team": "shop", "tier": "backend"},
		Request: state.Resources{MilliCPU: containerMilliCPU, MemoryBytes: containerMemory},
	}
}

// containerID is container k's ID: 64 hex digits like the scheduler's
// random ones (so that the state's radix trees see keys as spread out),
// but the same from run to run.
func containerID(k int) string {
	sum := sha256.Sum256([]byte("godwit-bench-container-" + strconv.Itoa(k)))
	return hex.EncodeToString(sum[:])
}

// containerName is container k's name.
func containerName(k int) string { return fmt.Sprintf("api-%06d", k) }

// fillNodes initialises the cluster and registers n simulated nodes with
// their images through c, from proposers goroutines (one entry each, as
// agents registering at once would). It is not timed.
func fillNodes(ctx context.Context, c committer, n, proposers int) error {
	at := time.Now()
	if err := commitOne(ctx, c, fsm.InitCluster{ClusterCIDR: netip.MustParsePrefix(clusterCIDR), At: at}); err != nil {
		return err
	}
	var next atomic.Int64
	errs := make([]error, proposers)
	var wg sync.WaitGroup
	for p := range proposers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				if err := commitOne(ctx, c, fsm.RegisterNode{Node: simNode(i), At: at}); err != nil {
					errs[p] = err
					return
				}
				if i%imageHolderEvery != 0 {
					continue
				}
				img := state.Image{Name: imageName, ID: imageID, Size: imageSize}
				if err := commitOne(ctx, c, fsm.SetImages{Node: nodeName(i), Images: []state.Image{img}, At: at}); err != nil {
					errs[p] = err
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// commitOne commits cmd and fails when the FSM refused it.
func commitOne(ctx context.Context, c committer, cmd fsm.Command) error {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return err
	}
	res, err := c.commit(ctx, data)
	if err != nil {
		return fmt.Errorf("commit %s: %w", cmd.Type(), err)
	}
	if res.Err != nil {
		return fmt.Errorf("%s refused: %w", cmd.Type(), res.Err)
	}
	return nil
}

// placer decides nodes for containers as a leader must: one decision at
// a time, each on the committed state plus what earlier decisions
// reserved and has not committed yet (placement.Reserve), so that
// concurrent proposers never place more on a node than it holds (the FSM
// does not check capacity).
type placer struct {
	mu    sync.Mutex
	store *state.Store
	alg   placement.Algorithm
	// held are the reservations of placed containers whose entry has not
	// committed.
	held placement.Reservations
}

func newPlacer(store *state.Store, alg placement.Algorithm) *placer {
	return &placer{store: store, alg: alg}
}

// place decides a node for each of specs (container numbers first,
// first+1 ...) and reserves them until release. Like the scheduler's Run,
// it takes the best candidate that holds the image, or the best one. It
// also returns how long it held the placer, waits excluded: placements
// are serialised, so that is the time they cost the leader.
func (p *placer) place(first int, specs []state.ContainerSpec) (_ []fsm.NewContainer, held time.Duration, err error) {
	p.mu.Lock()
	start := time.Now()
	defer func() {
		held = time.Since(start)
		p.mu.Unlock()
	}()
	snap := p.store.Snapshot()
	// As the scheduler's Placer does, the batch is decided on one table
	// read from the snapshot, each decision reserved on it too.
	table := placement.NewTable(placement.Reserve(snap, &p.held))
	out := make([]fsm.NewContainer, len(specs))
	for i, spec := range specs {
		d, err := placement.Place(table, placement.Request{Spec: spec, Algorithm: p.alg})
		if err != nil {
			p.releaseLocked(out[:i])
			return nil, 0, fmt.Errorf("place container %d: %w", first+i, err)
		}
		node := d.Node
		for _, c := range d.Candidates {
			if snap.HasImage(c.Node, spec.Image) {
				node = c.Node
				break
			}
		}
		k := first + i
		out[i] = fsm.NewContainer{ID: containerID(k), Name: containerName(k), Spec: spec, Node: node}
		p.held.Add(node, spec.Request)
		table.Add(node, spec.Request)
	}
	return out, 0, nil
}

// release drops the reservations of a batch once its entry has committed
// (the state holds them) or failed.
func (p *placer) release(batch []fsm.NewContainer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.releaseLocked(batch)
}

func (p *placer) releaseLocked(batch []fsm.NewContainer) {
	for _, c := range batch {
		p.held.Remove(c.Node, c.Spec.Request)
	}
}

// decide is how a throughput measurement chooses nodes.
type decide int

const (
	// decideAhead: nodes are chosen round robin before the batch is
	// proposed, so that the measurement is raft's and the FSM's alone.
	decideAhead decide = iota
	// decidePlace: the leader's whole loop, placement.Place on the state
	// for each container, serialised (see placer), then the commit.
	decidePlace
	// decideServer: the scheduler's own placement queue (server.Placer,
	// what Run calls): callers in parallel, one container per call; the
	// Placer decides every waiting call on one snapshot and commits them
	// as one entry (server.go).
	decideServer
)

// loadConfig is one throughput measurement.
type loadConfig struct {
	decide decide
	// placements is how many containers to place; with duration set, the
	// measurement stops proposing after duration even if fewer were.
	placements int
	duration   time.Duration
	batch      int
	proposers  int
	// callers is how many goroutines call the Placer at once, for
	// decideServer (which takes no batch or proposers: the Placer batches).
	callers int
	// nodes is how many nodes are registered, for decideAhead.
	nodes int
}

// throughputSample is what one throughput measurement found.
type throughputSample struct {
	placements int
	entries    int
	elapsed    time.Duration
	// latencies are each entry's commit time: from the proposal to the
	// leader's FSM having applied it.
	latencies []time.Duration
	// placing is the time the placer was held deciding nodes: placements
	// are serialised, so placing over elapsed is the share of the
	// measurement the leader spent deciding.
	placing time.Duration
	// verifying is the time the server's Placer spent confirming its
	// leadership before each batch (decideServer only).
	verifying time.Duration
	// cpu is the process's user and system time over the measurement:
	// every replica's, since all run in this process.
	cpu time.Duration
}

func (s throughputSample) rate() float64 { return float64(s.placements) / s.elapsed.Seconds() }

// measureThroughput places containers through c from cfg.proposers
// goroutines, cfg.batch per entry, then checks that the state holds all
// of them within capacity and that the replicas agree.
func measureThroughput(ctx context.Context, c committer, cfg loadConfig) (throughputSample, error) {
	pl := newPlacer(c.store(), placement.BinPack)
	var next, placed atomic.Int64
	var mu sync.Mutex
	var s throughputSample
	errs := make([]error, cfg.proposers)
	var wg sync.WaitGroup
	runtime.GC()
	cpu0 := benchutil.ProcessCPU()
	start := time.Now()
	// propose claims, decides and commits one batch; false when there is
	// nothing left to propose.
	propose := func(lat *[]time.Duration, placing *time.Duration) (bool, error) {
		if cfg.duration > 0 && time.Since(start) >= cfg.duration {
			return false, nil
		}
		first := int(next.Add(int64(cfg.batch))) - cfg.batch
		if first >= cfg.placements {
			return false, nil
		}
		specs := make([]state.ContainerSpec, min(cfg.batch, cfg.placements-first))
		for i := range specs {
			specs[i] = simSpec(first + i)
		}
		var batch []fsm.NewContainer
		if cfg.decide == decidePlace {
			var held time.Duration
			var err error
			batch, held, err = pl.place(first, specs)
			*placing += held
			if err != nil {
				return false, err
			}
			defer pl.release(batch)
		} else {
			batch = make([]fsm.NewContainer, len(specs))
			for i, spec := range specs {
				k := first + i
				batch[i] = fsm.NewContainer{ID: containerID(k), Name: containerName(k), Spec: spec, Node: nodeName(k % cfg.nodes)}
			}
		}
		data, err := fsm.Encode(fsm.PlaceContainers{Containers: batch, At: time.Now()})
		if err != nil {
			return false, err
		}
		t := time.Now()
		res, err := c.commit(ctx, data)
		*lat = append(*lat, time.Since(t))
		if err == nil {
			err = placedAll(res)
		}
		if err != nil {
			return false, err
		}
		placed.Add(int64(len(batch)))
		return true, nil
	}
	for p := range cfg.proposers {
		wg.Go(func() {
			var lat []time.Duration
			var placing time.Duration
			defer func() {
				mu.Lock()
				s.latencies = append(s.latencies, lat...)
				s.placing += placing
				mu.Unlock()
			}()
			for ctx.Err() == nil {
				more, err := propose(&lat, &placing)
				if err != nil || !more {
					errs[p] = err
					return
				}
			}
			errs[p] = ctx.Err()
		})
	}
	wg.Wait()
	s.elapsed = time.Since(start)
	s.cpu = benchutil.ProcessCPU() - cpu0
	s.entries = len(s.latencies)
	s.placements = int(placed.Load())
	if err := errors.Join(errs...); err != nil {
		return s, err
	}
	if s.placements == 0 {
		return s, errors.New("nothing was placed: give the measurement more time")
	}
	if err := c.settle(ctx); err != nil {
		return s, err
	}
	return s, checkPlaced(c.store().Snapshot(), s.placements)
}

// placedAll fails unless every container of a committed batch was
// placed.
func placedAll(res fsm.Result) error {
	if res.Err != nil {
		return fmt.Errorf("the batch was refused: %w", res.Err)
	}
	out, ok := res.Value.([]fsm.PlaceOutcome)
	if !ok {
		return fmt.Errorf("place-containers answered %T", res.Value)
	}
	for _, o := range out {
		if o.Err != nil {
			return fmt.Errorf("a container was refused: %w", o.Err)
		}
	}
	return nil
}

// checkPlaced checks that the state holds want containers and that no
// node holds more than its capacity.
func checkPlaced(snap *state.Snapshot, want int) error {
	if got := len(snap.Containers()); got != want {
		return fmt.Errorf("the state holds %d containers, %d were placed", got, want)
	}
	for _, n := range snap.Nodes() {
		if a := snap.Allocated(n.Name); !a.Fits(n.Capacity) {
			return fmt.Errorf("node %s holds %d milli-CPU and %d bytes of requests, more than its capacity of %d and %d",
				n.Name, a.MilliCPU, a.MemoryBytes, n.Capacity.MilliCPU, n.Capacity.MemoryBytes)
		}
	}
	return nil
}

// throughputKey names one row of a throughput table: batch is 0 and
// callers is set for decideServer, the other way round for the others.
type throughputKey struct {
	decide  decide
	batch   int
	callers int
	path    path
}

// wholeLoopPaths are the paths the leader's whole loop is measured on:
// placement costs the same on every path, so the durable one (the
// target's) and the ceiling suffice.
var wholeLoopPaths = []path{pathRaftBolt, pathFSM}

// measureAllThroughput measures every batch size on every path, runs
// times, each time on a fresh cluster with the nodes registered: first
// with the decisions made ahead (raft's and the FSM's throughput), then
// the leader's whole loop with placement, then the scheduler's placement
// queue with each number of callers, the last two for o.wholeDuration
// each. Within a run the paths take turns going first, so that a drift of
// the shared machine does not always favour the same one.
func measureAllThroughput(ctx context.Context, o options, work string, log *slog.Logger) (map[throughputKey][]throughputSample, error) {
	out := map[throughputKey][]throughputSample{}
	var whole []path
	for _, p := range wholeLoopPaths {
		if slices.Contains(o.paths, p) {
			whole = append(whole, p)
		}
	}
	for i := range o.runs {
		for _, d := range []decide{decideAhead, decidePlace, decideServer} {
			paths := o.paths
			if d != decideAhead {
				paths = whole
			}
			// Each row's key: a batch size, or for the Placer a number of
			// callers.
			var keys []throughputKey
			if d == decideServer {
				for _, n := range o.callers {
					keys = append(keys, throughputKey{decide: d, callers: n})
				}
			} else {
				for _, batch := range o.batches {
					keys = append(keys, throughputKey{decide: d, batch: batch})
				}
			}
			for ki, key := range keys {
				for k := range paths {
					key.path = paths[(i+ki+k)%len(paths)]
					cfg := loadConfig{decide: d, placements: o.placements, batch: key.batch, proposers: o.proposers, callers: key.callers, nodes: o.nodes}
					if d != decideAhead {
						cfg.duration = o.wholeDuration
					}
					log.Info("measuring throughput", "loop", d, "path", key.path, "batch", key.batch, "callers", key.callers, "run", i+1, "of", o.runs)
					s, err := throughputOnce(ctx, key.path, cfg, o, work, log)
					if err != nil {
						return nil, fmt.Errorf("%s, %s, batch %d, callers %d, run %d: %w", d, key.path, key.batch, key.callers, i+1, err)
					}
					log.Info("measured throughput", "loop", d, "path", key.path, "batch", key.batch, "callers", key.callers, "placements", s.placements,
						"entries", s.entries, "placements_per_s", fmt.Sprintf("%.0f", s.rate()), "latency_p50", percentile(s.latencies, 50),
						"latency_p99", percentile(s.latencies, 99), "placing", s.placing, "cpu", s.cpu)
					out[key] = append(out[key], s)
				}
			}
		}
	}
	return out, nil
}

func (d decide) String() string {
	switch d {
	case decidePlace:
		return "placement+commit"
	case decideServer:
		return "server placer"
	}
	return "commit"
}

// throughputOnce starts a fresh cluster of p's kind, registers the nodes,
// measures, and removes the cluster and its data dirs.
func throughputOnce(ctx context.Context, p path, cfg loadConfig, o options, work string, log *slog.Logger) (_ throughputSample, err error) {
	dir, err := os.MkdirTemp(work, string(p)+"-")
	if err != nil {
		return throughputSample{}, err
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	c, err := startCommitter(ctx, p, dir, o.timing, log)
	if err != nil {
		return throughputSample{}, err
	}
	defer func() { err = errors.Join(err, c.close()) }()
	if err := fillNodes(ctx, c, o.nodes, o.proposers); err != nil {
		return throughputSample{}, fmt.Errorf("register %d nodes: %w", o.nodes, err)
	}
	if err := c.settle(ctx); err != nil {
		return throughputSample{}, err
	}
	if cfg.decide == decideServer {
		return measureServer(ctx, c, cfg, log)
	}
	return measureThroughput(ctx, c, cfg)
}

// percentile is the p-th percentile of ds (nearest rank), 0 for none.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
