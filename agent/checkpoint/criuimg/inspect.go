package criuimg

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	criu_core "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
)

// Report describes what a checkpoint holds, as `godwit checkpoint
// inspect` shows it.
type Report struct {
	// Processes are in CRIU's pstree order: the root task first, every
	// parent before its children.
	Processes []Process `json:"processes"`
	// Mounts are the dumped mount namespaces' mounts, parents first and
	// siblings by mount point. A process tree dumped from the host's
	// mount namespace has none.
	Mounts []Mount `json:"mounts,omitempty"`
	// MemoryBytes is the private memory CRIU dumped for all processes,
	// whether its pages are in this directory, in a pre-dump parent or
	// left for lazy restore.
	MemoryBytes int64 `json:"memory_bytes"`
	// Stats are the dump and restore statistics (see ReadStats).
	Stats *Stats `json:"stats"`
	// Warnings say what could not be shown and why, such as a command
	// line whose pages are not in this directory.
	Warnings []string `json:"warnings,omitempty"`
}

// Process is one dumped task.
type Process struct {
	PID  int `json:"pid"`
	PPID int `json:"ppid"`
	PGID int `json:"pgid"`
	SID  int `json:"sid"`
	// State is running, stopped or zombie ("unknown (N)" for a state
	// CRIU does not dump). Only running and stopped tasks have files,
	// memory and a command line in the images.
	State string `json:"state"`
	// Comm is the kernel's task name (at most 15 bytes), always present.
	Comm string `json:"comm"`
	// Cmdline is the argument vector read back from the dumped memory;
	// empty when those pages are not in this directory (see Warnings).
	Cmdline []string `json:"cmdline,omitempty"`
	// Exe is the path of the executable, as the dumped task saw it.
	Exe     string `json:"exe,omitempty"`
	Cwd     string `json:"cwd,omitempty"`
	Root    string `json:"root,omitempty"`
	Threads int    `json:"threads"`
	// MemoryBytes is the private memory CRIU dumped for this process.
	MemoryBytes int64 `json:"memory_bytes"`
	// Files are the open descriptors that are not sockets.
	Files []File `json:"files,omitempty"`
	// Sockets are the open socket descriptors.
	Sockets []Socket `json:"sockets,omitempty"`
}

// File is one open file descriptor.
type File struct {
	FD int `json:"fd"`
	// Type is CRIU's descriptor type: REG, PIPE, FIFO, TTY, EVENTFD,
	// EVENTPOLL, SIGNALFD, TIMERFD, INOTIFY, FANOTIFY, MEMFD, NS, TUNF,
	// EXT, BPFMAP, PIDFD.
	Type string `json:"type"`
	// Path is the file's path for REG and FIFO, otherwise a description
	// in the style of /proc/PID/fd: pipe:[ID], anon_inode:[eventfd].
	Path string `json:"path"`
}

// Socket is one open socket descriptor.
type Socket struct {
	FD int `json:"fd"`
	// Family is IPv4, IPv6, UNIX, NETLINK or PACKET.
	Family string `json:"family"`
	// Type is STREAM, DGRAM, SEQPACKET, RAW or PACKET.
	Type string `json:"type,omitempty"`
	// Protocol is TCP, UDP, UDPLITE, ICMP, ICMPV6 or RAW for inet
	// sockets, the netlink protocol (ROUTE, ...) for netlink sockets.
	Protocol string `json:"protocol,omitempty"`
	// State is the kernel's socket state (LISTEN, ESTABLISHED, CLOSE,
	// ...) for TCP and UNIX stream sockets.
	State      string `json:"state,omitempty"`
	LocalAddr  string `json:"local_addr,omitempty"`
	LocalPort  int    `json:"local_port,omitempty"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	RemotePort int    `json:"remote_port,omitempty"`
	// Path is a UNIX socket's bound name; abstract names start with @.
	Path  string `json:"path,omitempty"`
	Inode uint32 `json:"inode,omitempty"`
	// PeerInode is the inode of a connected UNIX socket's peer.
	PeerInode uint32 `json:"peer_inode,omitempty"`
}

// Mount is one mount of a dumped mount namespace.
type Mount struct {
	ID         int    `json:"id"`
	ParentID   int    `json:"parent_id"`
	Mountpoint string `json:"mountpoint"`
	// FSType is the kernel's file system name: overlay, proc, tmpfs ...
	FSType string `json:"fstype"`
	Source string `json:"source"`
	// Root is the mounted directory within the source file system.
	Root    string `json:"root,omitempty"`
	Options string `json:"options,omitempty"`
	// External is a bind mount from outside the container that restore
	// must be given again (runc's bind mounts are external).
	External bool `json:"external,omitempty"`
}

// Task states in core images (CRIU's criu/include/pid.h, shared with
// compel): only alive and stopped tasks have files and memory.
const (
	taskAlive   = 0x1
	taskDead    = 0x2
	taskStopped = 0x3
	taskZombie  = 0x6
)

// Inspect describes the checkpoint whose CRIU images are in dir: process
// tree with command lines, open files, sockets, mounts, memory size and
// statistics. It reads the images only; nothing is restored.
func Inspect(dir string) (*Report, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("inspect checkpoint: %w", err)
	}
	defer root.Close()

	tree, err := decodeAll(root, "pstree.img", magicPstree, &pstree.PstreeEntry{})
	if isNotExist(err) {
		return nil, fmt.Errorf("inspect %s: %w", dir, ErrNotImageDir)
	}
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", dir, err)
	}
	files, err := readFiles(root)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", dir, err)
	}
	r := &Report{Processes: make([]Process, 0, len(tree))}
	for _, e := range tree {
		p, warnings, err := inspectProcess(root, e, files)
		if err != nil {
			return nil, fmt.Errorf("inspect %s: pid %d: %w", dir, e.GetPid(), err)
		}
		r.Processes = append(r.Processes, p)
		r.Warnings = append(r.Warnings, warnings...)
		r.MemoryBytes += p.MemoryBytes
	}
	if r.Mounts, err = readMounts(root, dir); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", dir, err)
	}
	if r.Stats, err = readStats(root, dir); err != nil {
		return nil, fmt.Errorf("inspect %s: %w", dir, err)
	}
	return r, nil
}

// fileTable is files.img by file id: what every descriptor points at.
type fileTable map[uint32]*fdinfo.FileEntry

func readFiles(root *os.Root) (fileTable, error) {
	entries, err := decodeAll(root, "files.img", magicFiles, &fdinfo.FileEntry{})
	if isNotExist(err) {
		// A tree whose tasks have no descriptors at all; paths are
		// then simply unknown.
		return fileTable{}, nil
	}
	if err != nil {
		return nil, err
	}
	t := make(fileTable, len(entries))
	for _, e := range entries {
		t[e.GetId()] = e
	}
	return t, nil
}

// regPath is the path of the regular file with the given id, or "".
func (t fileTable) regPath(id uint32) string {
	return t[id].GetReg().GetName()
}

func inspectProcess(root *os.Root, e *pstree.PstreeEntry, files fileTable) (Process, []string, error) {
	pid := e.GetPid()
	p := Process{
		PID:     int(pid),
		PPID:    int(e.GetPpid()),
		PGID:    int(e.GetPgid()),
		SID:     int(e.GetSid()),
		Threads: len(e.GetThreads()),
	}
	core, err := decodeOne(root, fmt.Sprintf("core-%d.img", pid), magicCore, &criu_core.CoreEntry{})
	if err != nil {
		return p, nil, err
	}
	p.Comm = core.GetTc().GetComm()
	switch core.GetTc().GetTaskState() {
	case taskAlive:
		p.State = "running"
	case taskStopped:
		p.State = "stopped"
	case taskDead, taskZombie:
		p.State = "zombie"
		return p, nil, nil // CRIU dumps nothing else for a zombie
	default:
		// Not a state CRIU dumps a task's resources in: show what the
		// core image says and nothing more.
		p.State = fmt.Sprintf("unknown (%d)", core.GetTc().GetTaskState())
		return p, nil, nil
	}

	ids, err := decodeOne(root, fmt.Sprintf("ids-%d.img", pid), magicIDs, &criu_core.TaskKobjIdsEntry{})
	if err != nil {
		return p, nil, err
	}
	fds, err := decodeAll(root, fmt.Sprintf("fdinfo-%d.img", ids.GetFilesId()), magicFdinfo, &fdinfo.FdinfoEntry{})
	if err != nil && !isNotExist(err) { // no fdinfo: no descriptors
		return p, nil, err
	}
	for _, fd := range fds {
		f := files[fd.GetId()]
		if s, ok := socketOf(int(fd.GetFd()), fd.GetType(), f); ok {
			p.Sockets = append(p.Sockets, s)
			continue
		}
		p.Files = append(p.Files, File{FD: int(fd.GetFd()), Type: fdTypeName(fd.GetType()), Path: files.describe(fd.GetType(), f)})
	}

	fsEntry, err := decodeOne(root, fmt.Sprintf("fs-%d.img", pid), magicFS, &fs.FsEntry{})
	if err != nil {
		return p, nil, err
	}
	p.Cwd = files.regPath(fsEntry.GetCwdId())
	p.Root = files.regPath(fsEntry.GetRootId())

	mmEntry, err := decodeOne(root, fmt.Sprintf("mm-%d.img", pid), magicMM, &mm.MmEntry{})
	if err != nil {
		return p, nil, err
	}
	p.Exe = files.regPath(mmEntry.GetExeFileId())

	pm, err := readPagemap(root, pid)
	if err != nil {
		return p, nil, err
	}
	p.MemoryBytes = pm.bytes()

	var warnings []string
	args, truncated, err := pm.read(root, mmEntry.GetMmArgStart(), mmEntry.GetMmArgEnd())
	if err != nil {
		warnings = append(warnings, fmt.Sprintf("pid %d: no command line (%v); showing its name %q", pid, err, p.Comm))
		return p, warnings, nil
	}
	if truncated {
		warnings = append(warnings, fmt.Sprintf("pid %d: command line cut at %d bytes", pid, maxCmdlineBytes))
	}
	p.Cmdline = splitArgs(args)
	return p, warnings, nil
}

// splitArgs splits the NUL-separated argument area into arguments.
func splitArgs(b []byte) []string {
	s := strings.TrimRight(string(b), "\x00")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\x00")
}

// fdTypePidfd is CRIU 4's descriptor type for pidfds, which go-criu
// v7.2.0's enum does not know. Go programs hold pidfds of their children
// (os/exec since Go 1.23), so they are common.
const fdTypePidfd fdinfo.FdTypes = 20

// fdTypeName is CRIU's name for a descriptor type.
func fdTypeName(t fdinfo.FdTypes) string {
	if t == fdTypePidfd {
		return "PIDFD"
	}
	return t.String()
}

// describe names a non-socket file the way /proc/PID/fd links do.
func (t fileTable) describe(typ fdinfo.FdTypes, f *fdinfo.FileEntry) string {
	switch typ {
	case fdinfo.FdTypes_REG:
		return f.GetReg().GetName()
	case fdinfo.FdTypes_FIFO:
		return t.regPath(f.GetFifo().GetRegfId())
	case fdinfo.FdTypes_PIPE:
		return fmt.Sprintf("pipe:[%d]", f.GetPipe().GetPipeId())
	case fdinfo.FdTypes_TTY:
		return "tty"
	case fdinfo.FdTypes_EVENTFD:
		return "anon_inode:[eventfd]"
	case fdinfo.FdTypes_EVENTPOLL:
		return "anon_inode:[eventpoll]"
	case fdinfo.FdTypes_SIGNALFD:
		return "anon_inode:[signalfd]"
	case fdinfo.FdTypes_TIMERFD:
		return "anon_inode:[timerfd]"
	case fdinfo.FdTypes_INOTIFY:
		return "anon_inode:inotify"
	case fdinfo.FdTypes_FANOTIFY:
		return "anon_inode:[fanotify]"
	case fdinfo.FdTypes_BPFMAP:
		return "anon_inode:bpf-map"
	case fdinfo.FdTypes_MEMFD:
		return "memfd"
	case fdinfo.FdTypes_TUNF:
		return "/dev/net/tun"
	case fdinfo.FdTypes_NS:
		return "ns"
	case fdinfo.FdTypes_EXT:
		return "external"
	case fdTypePidfd:
		return "anon_inode:[pidfd]"
	default:
		return strings.ToLower(typ.String())
	}
}

// readMounts decodes every mountpoints-NSID.img in dir, in namespace id
// order.
func readMounts(root *os.Root, dir string) ([]Mount, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type nsFile struct {
		id   uint64
		name string
	}
	var nsFiles []nsFile
	for _, e := range entries {
		idStr, ok := strings.CutPrefix(e.Name(), "mountpoints-")
		if !ok {
			continue
		}
		if idStr, ok = strings.CutSuffix(idStr, ".img"); !ok {
			continue
		}
		id, err := strconv.ParseUint(idStr, 10, 32)
		if err != nil {
			continue // not a CRIU name
		}
		nsFiles = append(nsFiles, nsFile{id, e.Name()})
	}
	sort.Slice(nsFiles, func(i, j int) bool { return nsFiles[i].id < nsFiles[j].id })

	var mounts []Mount
	for _, nf := range nsFiles {
		ms, err := decodeAll(root, nf.name, magicMnts, &mnt.MntEntry{})
		if err != nil {
			return nil, err
		}
		ns := make([]Mount, 0, len(ms))
		for _, m := range ms {
			ns = append(ns, Mount{
				ID:         int(m.GetMntId()),
				ParentID:   int(m.GetParentMntId()),
				Mountpoint: m.GetMountpoint(),
				FSType:     fsTypeName(m),
				Source:     m.GetSource(),
				Root:       m.GetRoot(),
				Options:    m.GetOptions(),
				External:   m.GetExtMount() || m.GetExtKey() != "",
			})
		}
		mounts = append(mounts, parentsFirst(ns)...)
	}
	return mounts, nil
}

// parentsFirst orders one namespace's mounts as a walk of their tree
// (CRIU writes them children first), siblings by mount point, the way
// findmnt lists them. Mounts whose parent is not in the list are roots.
func parentsFirst(ms []Mount) []Mount {
	byID := make(map[int]bool, len(ms))
	for _, m := range ms {
		byID[m.ID] = true
	}
	children := make(map[int][]Mount, len(ms))
	var roots []Mount
	for _, m := range ms {
		if byID[m.ParentID] && m.ParentID != m.ID {
			children[m.ParentID] = append(children[m.ParentID], m)
		} else {
			roots = append(roots, m)
		}
	}
	byMountpoint := func(l []Mount) {
		sort.SliceStable(l, func(i, j int) bool { return l[i].Mountpoint < l[j].Mountpoint })
	}
	out := make([]Mount, 0, len(ms))
	visited := make(map[int]bool, len(ms))
	var walk func(l []Mount)
	walk = func(l []Mount) {
		byMountpoint(l)
		for _, m := range l {
			if visited[m.ID] { // a crafted image with a cycle
				continue
			}
			visited[m.ID] = true
			out = append(out, m)
			walk(children[m.ID])
		}
	}
	walk(roots)
	return out
}

// fsTypeNames maps CRIU's file system codes to the kernel's names.
var fsTypeNames = map[mnt.Fstype]string{
	mnt.Fstype_PROC:        "proc",
	mnt.Fstype_SYSFS:       "sysfs",
	mnt.Fstype_DEVTMPFS:    "devtmpfs",
	mnt.Fstype_BINFMT_MISC: "binfmt_misc",
	mnt.Fstype_TMPFS:       "tmpfs",
	mnt.Fstype_DEVPTS:      "devpts",
	mnt.Fstype_SIMFS:       "simfs",
	mnt.Fstype_PSTORE:      "pstore",
	mnt.Fstype_SECURITYFS:  "securityfs",
	mnt.Fstype_FUSECTL:     "fusectl",
	mnt.Fstype_DEBUGFS:     "debugfs",
	mnt.Fstype_CGROUP:      "cgroup",
	mnt.Fstype_AUFS:        "aufs",
	mnt.Fstype_MQUEUE:      "mqueue",
	mnt.Fstype_FUSE:        "fuse",
	mnt.Fstype_OVERLAYFS:   "overlay",
	mnt.Fstype_AUTOFS:      "autofs",
	mnt.Fstype_TRACEFS:     "tracefs",
	mnt.Fstype_CGROUP2:     "cgroup2",
}

// fsTypeName prefers the name CRIU recorded (it does for file systems it
// has no code for) over the code.
func fsTypeName(m *mnt.MntEntry) string {
	if n := m.GetFsname(); n != "" {
		return n
	}
	t := mnt.Fstype(m.GetFstype())
	if n, ok := fsTypeNames[t]; ok {
		return n
	}
	return strings.ToLower(t.String())
}
