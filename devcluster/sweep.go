package devcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent"
	"github.com/godwit/godwit/agent/runtime"
	"github.com/godwit/godwit/internal/netnsutil"
)

// The sweep removes everything a cluster created, from its name and its
// record alone: it finishes Close after partial failures, and removes what
// an interrupted run (a test binary killed, a ^C) left behind before a new
// cluster of the same name starts. It never needs the agents' help.

const (
	// recordVersion is the format of the record file; another version is
	// refused rather than misread.
	recordVersion = 1
	// runRootMode keeps locks and records private to root.
	runRootMode = 0o700
	// recordFileMode is the record file's mode.
	recordFileMode = 0o600
	// processExitTimeout bounds the wait for SIGKILLed processes to leave
	// the process table.
	processExitTimeout = 5 * time.Second
	// cgroupRemoveTimeout covers processes still leaving a node's cgroups
	// after they were killed.
	cgroupRemoveTimeout = 5 * time.Second
	// runcDeleteTimeout bounds one `runc delete --force`.
	runcDeleteTimeout = 15 * time.Second
	// pollInterval is how often the sweep looks again while it waits.
	pollInterval = 50 * time.Millisecond
)

// ErrInUse means another live process holds a cluster of that name.
var ErrInUse = errors.New("cluster name in use")

// record is what a cluster created, written before each object is made so
// that a run killed at any point leaves enough to remove it.
type record struct {
	Version int    `json:"version"`
	WorkDir string `json:"workDir"`
	// Hosts are the host names in the order they were added.
	Hosts []string `json:"hosts"`
	// Detached: the cluster runs on without the process that created it
	// (Detach), so a free lock does not mean an interrupted run, and only
	// Remove removes it.
	Detached bool `json:"detached,omitempty"`
}

func readRecord(cluster string) (record, error) {
	data, err := os.ReadFile(recordPath(cluster))
	if errors.Is(err, os.ErrNotExist) {
		return record{}, nil
	}
	if err != nil {
		return record{}, fmt.Errorf("read cluster record: %w", err)
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}, fmt.Errorf("cluster record %s is corrupt (remove it once its work dir is gone): %w", recordPath(cluster), err)
	}
	if r.Version != recordVersion {
		return record{}, fmt.Errorf("cluster record %s has version %d, this godwit reads %d", recordPath(cluster), r.Version, recordVersion)
	}
	return r, nil
}

// writeRecord replaces the record atomically, so a run killed mid-write
// leaves the old one.
func writeRecord(cluster string, r record) error {
	r.Version = recordVersion
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := recordPath(cluster) + ".tmp"
	if err := os.WriteFile(tmp, data, recordFileMode); err != nil {
		return fmt.Errorf("write cluster record: %w", err)
	}
	if err := os.Rename(tmp, recordPath(cluster)); err != nil {
		return fmt.Errorf("write cluster record: %w", err)
	}
	return nil
}

// lockCluster takes the lock that says cluster is in use. The kernel
// drops it when the process dies however it dies, so a lock that is free
// while a record exists means the record is an interrupted run's.
func lockCluster(cluster string) (*os.File, error) {
	if err := os.MkdirAll(runRoot, runRootMode); err != nil {
		return nil, fmt.Errorf("create %s: %w", runRoot, err)
	}
	f, err := os.OpenFile(lockPath(cluster), os.O_RDWR|os.O_CREATE, recordFileMode)
	if err != nil {
		return nil, fmt.Errorf("open cluster lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("cluster %q: %w by another process (lock %s): pick another name, or stop that process first",
				cluster, ErrInUse, lockPath(cluster))
		}
		return nil, fmt.Errorf("lock cluster %q: %w", cluster, err)
	}
	return f, nil
}

// Remove removes everything a cluster named name left behind: its agents
// and other processes in its hosts, its agents' containers and cgroups,
// every mount under its work dir and the dir itself, its hosts' network
// namespaces, its veths and bridge (and with them its routes). It is for a
// cluster whose process is gone (`godwit dev down` after a crash); it
// fails with ErrInUse while a live process holds the cluster. Removing
// nothing is not an error.
func Remove(ctx context.Context, name string, log *slog.Logger) error {
	if err := validateClusterName(name); err != nil {
		return err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lock, err := lockCluster(name)
	if err != nil {
		return err
	}
	defer lock.Close()
	warnLeftovers(name, log)
	return sweep(ctx, name, "", log)
}

// sweep removes what the cluster named name created; workDir is its work
// dir when the caller knows it, else the record's. The caller holds the
// cluster's lock. It goes on past errors, so one stuck object does not
// keep the others, and returns them all.
func sweep(ctx context.Context, name, workDir string, log *slog.Logger) error {
	rec, err := readRecord(name)
	if err != nil {
		return err
	}
	if workDir == "" {
		workDir = rec.WorkDir
	}
	hosts := leftoverHosts(name, rec)
	var errs []error

	// Processes first: every process in a host's namespace (agents, their
	// shims, commands run with Exec), then the containers, whose
	// processes live in namespaces of their own.
	var pins []string
	for _, h := range hosts {
		pins = append(pins, netnsPath(name, h))
	}
	if err := killInNetns(pins, log); err != nil {
		errs = append(errs, err)
	}
	for _, h := range hosts {
		if workDir == "" {
			break
		}
		if err := deleteContainers(ctx, runcRoot(hostDir(workDir, h)), log); err != nil {
			errs = append(errs, err)
		}
	}
	var nodes []string
	for _, h := range hosts {
		nodes = append(nodes, nodeName(name, h))
	}
	if err := killInCgroups(nodes, log); err != nil {
		errs = append(errs, err)
	}
	for _, n := range nodes {
		if err := removeNodeCgroups(n); err != nil {
			errs = append(errs, err)
		}
	}

	// Then the files: the agents' snapshots and container namespaces are
	// mounted under the work dir.
	if workDir != "" {
		if err := removeWorkDir(workDir, log); err != nil {
			errs = append(errs, err)
		}
	}

	// Then the network: a namespace goes with its last process and pin,
	// and takes its end of the veth pair, and so the pair, with it; the
	// bridge takes the routes through it.
	for _, p := range pins {
		if err := netnsutil.Remove(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := removeLinks(name, hosts); err != nil {
		errs = append(errs, err)
	}

	if len(errs) == 0 {
		if err := os.Remove(recordPath(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove cluster record: %w", err))
		}
	}
	return errors.Join(errs...)
}

// warnLeftovers logs what an earlier run of the cluster left, if anything,
// before the sweep removes it.
func warnLeftovers(name string, log *slog.Logger) {
	rec, err := readRecord(name)
	if err != nil {
		return // the sweep reports it
	}
	hosts := leftoverHosts(name, rec)
	switch {
	case rec.Detached:
		// Left running on purpose (Detach): removing it is no surprise.
		log.Info("removing the detached cluster", "work_dir", rec.WorkDir, "hosts", hosts)
	case rec.Version != 0 || len(hosts) > 0:
		log.Warn("removing what an earlier run of this cluster left", "work_dir", rec.WorkDir, "hosts", hosts)
	}
}

// leftoverHosts are the hosts the record names and those whose pinned
// namespaces exist, in case a run died between pinning and recording.
func leftoverHosts(name string, rec record) []string {
	hosts := slices.Clone(rec.Hosts)
	entries, _ := os.ReadDir(netnsDir) // none pinned: nothing more to find
	for _, e := range entries {
		if h, ok := strings.CutPrefix(e.Name(), netnsPrefix(name)); ok && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// hostDir holds a host's agent data dir and log.
func hostDir(workDir, host string) string { return filepath.Join(workDir, host) }

// agentDataDir is the agent's --data-dir; its run dir is the default one
// inside it, so that everything the agent mounts is under the work dir.
func agentDataDir(hostDir string) string { return filepath.Join(hostDir, "data") }

// runcRoot is the runc --root of the agent whose host dir is hostDir (the
// agent's default run dir, DATA-DIR/run, and runc under it).
func runcRoot(hostDir string) string { return filepath.Join(agentDataDir(hostDir), "run", "runc") }

// killInNetns SIGKILLs every process whose network namespace is pinned at
// one of pins, and waits for them to go.
func killInNetns(pins []string, log *slog.Logger) error {
	inodes := map[string]bool{}
	for _, p := range pins {
		if ino, ok := netnsutil.PinnedInode(p); ok {
			inodes[fmt.Sprintf("net:[%d]", ino)] = true
		}
	}
	if len(inodes) == 0 {
		return nil
	}
	return killMatching("in the cluster's network namespaces", log, func(pid int) bool {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		return err == nil && inodes[link]
	})
}

// killInCgroups SIGKILLs every process in the cgroups of the named nodes
// (containers, and shims the agents started) and waits for them to go.
func killInCgroups(nodes []string, log *slog.Logger) error {
	var cgroups []string
	for _, n := range nodes {
		cgroups = append(cgroups, agent.NodeCgroups(n)...)
	}
	if len(cgroups) == 0 {
		return nil
	}
	return killMatching("in the agents' cgroups", log, func(pid int) bool {
		return inCgroups(pid, cgroups)
	})
}

// inCgroups reports whether the process is in one of cgroups, or below
// one, in any hierarchy.
func inCgroups(pid int, cgroups []string) bool {
	f, err := os.Open(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return false
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		// HIERARCHY-ID:CONTROLLERS:PATH
		parts := strings.SplitN(s.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, cg := range cgroups {
			if parts[2] == cg || strings.HasPrefix(parts[2], cg+"/") {
				return true
			}
		}
	}
	return false
}

// killMatching SIGKILLs every process but this one that match selects,
// and waits for processExitTimeout for them to leave the process table.
func killMatching(where string, log *slog.Logger, match func(pid int) bool) error {
	var killed []int
	for _, pid := range processes() {
		if pid == os.Getpid() || !match(pid) {
			continue
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err == nil {
			killed = append(killed, pid)
		}
	}
	if len(killed) == 0 {
		return nil
	}
	log.Info("killed leftover processes", "where", where, "pids", killed)
	deadline := time.Now().Add(processExitTimeout)
	for {
		var alive []int
		for _, pid := range killed {
			if isRunning(pid) {
				alive = append(alive, pid)
			}
		}
		if len(alive) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v %s did not exit within %s of SIGKILL (frozen? stuck in the kernel? see /proc/PID/stack)",
				alive, where, processExitTimeout)
		}
		time.Sleep(pollInterval)
	}
}

// processes lists the process ids in /proc.
func processes() []int {
	entries, _ := os.ReadDir("/proc") // unreadable /proc: nothing to kill
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// isRunning reports whether pid is a process that has not exited: a
// zombie has exited, and waits only for its parent to reap it.
func isRunning(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// PID (COMM) STATE ...: COMM may contain spaces and parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// deleteContainers force-deletes every runc container under root, which
// kills its processes (thawing a frozen one) and removes its cgroup.
func deleteContainers(ctx context.Context, root string, log *slog.Logger) error {
	entries, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list runc containers: %w", err)
	}
	var errs []error
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		log.Info("deleting leftover container", "runc_root", root, "id", e.Name())
		cctx, cancel := context.WithTimeout(ctx, runcDeleteTimeout)
		out, err := exec.CommandContext(cctx, "runc", "--root", root, "delete", "--force", e.Name()).CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("runc --root %s delete --force %s: %w: %s", root, e.Name(), err, strings.TrimSpace(string(out))))
		}
	}
	return errors.Join(errs...)
}

// removeNodeCgroups removes the cgroups an agent keeps for its next start,
// retrying while killed processes are still leaving them.
func removeNodeCgroups(node string) error {
	deadline := time.Now().Add(cgroupRemoveTimeout)
	for _, cg := range agent.NodeCgroups(node) {
		for {
			err := runtime.RemoveCgroup(cg)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("node %s: %w", node, err)
			}
			time.Sleep(pollInterval)
		}
	}
	return nil
}

// removeWorkDir unmounts everything below dir, deepest first, and removes
// dir. If a mount cannot be removed it removes nothing: deleting files
// through a live mount could reach outside the directory.
func removeWorkDir(dir string, log *slog.Logger) error {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) == "/" {
		return fmt.Errorf("refusing to remove work dir %q: not an absolute path below /", dir)
	}
	mounts, err := mountsBelow(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		log.Info("unmounting leftover mount", "path", m)
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if left, err := mountsBelow(dir); err != nil || len(left) > 0 {
		return errors.Join(err, fmt.Errorf("%v still mounted under %s: unmount them, then remove it", left, dir))
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove work dir: %w", err)
	}
	return nil
}

// mountsBelow lists the mount points strictly below dir, deepest first.
func mountsBelow(dir string) ([]string, error) {
	// mountinfo shows paths with symlinks resolved.
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	var below []string
	for _, line := range strings.Split(string(data), "\n") {
		// Field 5 is the mount point, with spaces and the like escaped
		// as octal; godwit's paths have none.
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") && !slices.Contains(below, f[4]) {
			below = append(below, f[4])
		}
	}
	sort.Slice(below, func(i, j int) bool { return len(below[i]) > len(below[j]) })
	return below, nil
}

// removeLinks deletes the cluster's bridge and every link it or the
// hosts' veth names account for in the root namespace.
func removeLinks(name string, hosts []string) error {
	links, err := retryDump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	doomed := map[string]bool{bridgeName(name): true}
	for _, h := range hosts {
		doomed[vethName(name, h)] = true
	}
	brIndex := 0
	for _, l := range links {
		if l.Attrs().Name == bridgeName(name) {
			brIndex = l.Attrs().Index
		}
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if !doomed[a.Name] && (brIndex == 0 || a.MasterIndex != brIndex) {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !isLinkNotFound(err) {
			errs = append(errs, fmt.Errorf("delete link %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

// dumpRetries bounds how often a netlink dump is repeated when the kernel
// reports it interrupted by a concurrent change: other tests add and
// remove links and routes all the time.
const dumpRetries = 20

// retryDump runs a netlink dump until it is consistent, or returns the
// last, possibly incomplete, result with netlink.ErrDumpInterrupted.
func retryDump[T any](dump func() ([]T, error)) ([]T, error) {
	for i := 0; ; i++ {
		res, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || i == dumpRetries {
			return res, err
		}
	}
}

// deleteLink deletes the link named name through h; a link that does not
// exist is not an error.
func deleteLink(h *netlink.Handle, name string) error {
	link, err := h.LinkByName(name)
	if isLinkNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("find link %s: %w", name, err)
	}
	if err := h.LinkDel(link); err != nil && !isLinkNotFound(err) {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	return nil
}

// isLinkNotFound reports whether err says a link does not exist (deleting a
// veth takes its peer with it, so a listed link may be gone).
func isLinkNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}
