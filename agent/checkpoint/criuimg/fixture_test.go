package criuimg

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/crit"
	criu_core "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fs"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mm"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/mnt"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pagemap"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pipe"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/pstree"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/regfile"
	sk_inet "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-inet"
	sk_unix "github.com/checkpoint-restore/go-criu/v7/crit/images/sk-unix"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/stats"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// realStatsDump is a stats-dump written by CRIU 4.2.1 (testdata), and
// what it holds.
const realStatsDump = "testdata/stats-dump"

var realDumpStats = DumpStats{
	FreezingTime:       661 * 1000,
	FrozenTime:         126557 * 1000,
	MemdumpTime:        2787 * 1000,
	MemwriteTime:       1200 * 1000,
	PagesScanned:       426,
	PagesWritten:       318,
	PagePipes:          8,
	PagePipeBufs:       8,
	PagesSkippedParent: 0,
}

// writeImage encodes entries into dir/name with go-criu's encoder, as CRIU
// writes them. Required fields the test leaves out are set to zero.
func writeImage(t *testing.T, dir, name, magic string, entries ...proto.Message) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := &crit.CriuImage{Magic: magic}
	for _, e := range entries {
		fillRequired(e.ProtoReflect())
		img.Entries = append(img.Entries, &crit.CriuEntry{Message: e})
	}
	if err := crit.New(nil, f, "", false, false).Encode(img); err != nil {
		t.Fatalf("encode %s: %v", name, err)
	}
}

// fillRequired sets m's unset required fields, recursively, to their
// zero values, so that fixtures name only the fields a test is about.
func fillRequired(m protoreflect.Message) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		isMsg := fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
		if fd.Cardinality() == protoreflect.Required && !m.Has(fd) {
			if isMsg {
				m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
			} else {
				m.Set(fd, fd.Default())
			}
		}
		switch {
		case isMsg && fd.IsList() && m.Has(fd):
			l := m.Get(fd).List()
			for j := range l.Len() {
				fillRequired(l.Get(j).Message())
			}
		case isMsg && !fd.IsList() && !fd.IsMap() && m.Has(fd):
			fillRequired(m.Get(fd).Message())
		}
	}
}

// ipv4 and ipv6 store an address the way CRIU does.
func ipv4(a, b, c, d byte) []uint32 {
	return []uint32{binary.NativeEndian.Uint32([]byte{a, b, c, d})}
}

func ipv6(b [16]byte) []uint32 {
	w := make([]uint32, 4)
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}

// withNrPages64 sets pagemap_entry's field 5, the 64-bit page count CRIU
// 4 writes and go-criu v7.2.0 does not know, leaving nr_pages at 0 as
// CRIU does.
func withNrPages64(e *pagemap.PagemapEntry, n uint64) *pagemap.PagemapEntry {
	e.NrPages = proto.Uint32(0)
	b := protowire.AppendTag(nil, pagemapNrPages, protowire.VarintType)
	b = protowire.AppendVarint(b, n)
	e.ProtoReflect().SetUnknown(b)
	return e
}

// Fixture layout: file ids, addresses and the like.
const (
	fxCwdID      = 100
	fxRootID     = 101
	fxExeID      = 102
	fxLogID      = 103
	fxNullID     = 104
	fxPipeID     = 110
	fxListenID   = 120
	fxEstabID    = 121
	fxUnixID     = 122
	fxUDPID      = 123
	fxPidfdID    = 124
	fxArgPage    = 0x7ffd0000
	fxArgOffset  = 0xff0 // argv straddles two pagemap entries
	fxFiles1     = 1
	fxFiles2     = 2
	fxListenPort = 8080
	fxPeerPort   = 40000
	fxUDPPort    = 53
)

var fxRootArgs = "/bin/sh\x00-c\x00sleep 1000 & nc -l -p 8080\x00"

// writeFixture writes a small, complete CRIU image directory:
//
//	1 sh      running; argv split over two pagemap entries (CRIU 4 format);
//	          files, a pipe, TCP listener and IPv6 connection, a UNIX
//	          listener, an unconnected UDP socket, a pidfd
//	├─ 2 sleep   running; old-format pagemap (32-bit nr_pages, no flags)
//	│  └─ 6      zombie
//	├─ 3 lazy    its argv page left for lazy restore
//	├─ 4 pre     its argv page in the pre-dump parent (old in_parent flag)
//	└─ 5         zombie
//
// two mount namespaces, and stats (a real stats-dump and a restore). It
// returns the report Inspect should make of it, minus stats and warnings.
func writeFixture(t *testing.T, dir string) *Report {
	t.Helper()
	page := int(pageSize)
	writeImage(t, dir, "pstree.img", magicPstree,
		&pstree.PstreeEntry{Pid: proto.Uint32(1), Ppid: proto.Uint32(0), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{1, 7}},
		&pstree.PstreeEntry{Pid: proto.Uint32(2), Ppid: proto.Uint32(1), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{2}},
		&pstree.PstreeEntry{Pid: proto.Uint32(6), Ppid: proto.Uint32(2), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{6}},
		&pstree.PstreeEntry{Pid: proto.Uint32(3), Ppid: proto.Uint32(1), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{3}},
		&pstree.PstreeEntry{Pid: proto.Uint32(4), Ppid: proto.Uint32(1), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{4}},
		&pstree.PstreeEntry{Pid: proto.Uint32(5), Ppid: proto.Uint32(1), Pgid: proto.Uint32(1), Sid: proto.Uint32(1), Threads: []uint32{5}},
	)

	reg := func(id uint32, name string) *fdinfo.FileEntry {
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_REG.Enum(), Id: proto.Uint32(id),
			Reg: &regfile.RegFileEntry{Id: proto.Uint32(id), Name: proto.String(name)}}
	}
	inet := func(id uint32, sk *sk_inet.InetSkEntry) *fdinfo.FileEntry {
		sk.Id = proto.Uint32(id)
		return &fdinfo.FileEntry{Type: fdinfo.FdTypes_INETSK.Enum(), Id: proto.Uint32(id), Isk: sk}
	}
	loop6 := [16]byte{15: 1}
	writeImage(t, dir, "files.img", magicFiles,
		reg(fxCwdID, "/srv"), reg(fxRootID, "/"), reg(fxExeID, "/bin/busybox"),
		reg(fxLogID, "/var/log/app.log"), reg(fxNullID, "/dev/null"),
		&fdinfo.FileEntry{Type: fdinfo.FdTypes_PIPE.Enum(), Id: proto.Uint32(fxPipeID),
			Pipe: &pipe.PipeEntry{Id: proto.Uint32(fxPipeID), PipeId: proto.Uint32(77)}},
		inet(fxListenID, &sk_inet.InetSkEntry{Ino: proto.Uint32(5001), Family: proto.Uint32(unix.AF_INET),
			Type: proto.Uint32(unix.SOCK_STREAM), Proto: proto.Uint32(unix.IPPROTO_TCP), State: proto.Uint32(10),
			SrcPort: proto.Uint32(fxListenPort), SrcAddr: ipv4(0, 0, 0, 0), DstAddr: ipv4(0, 0, 0, 0)}),
		inet(fxEstabID, &sk_inet.InetSkEntry{Ino: proto.Uint32(5002), Family: proto.Uint32(unix.AF_INET6),
			Type: proto.Uint32(unix.SOCK_STREAM), Proto: proto.Uint32(unix.IPPROTO_TCP), State: proto.Uint32(1),
			SrcPort: proto.Uint32(fxListenPort), DstPort: proto.Uint32(fxPeerPort), SrcAddr: ipv6(loop6), DstAddr: ipv6(loop6)}),
		inet(fxUDPID, &sk_inet.InetSkEntry{Ino: proto.Uint32(5003), Family: proto.Uint32(unix.AF_INET),
			Type: proto.Uint32(unix.SOCK_DGRAM), Proto: proto.Uint32(unix.IPPROTO_UDP), State: proto.Uint32(7),
			SrcPort: proto.Uint32(fxUDPPort), SrcAddr: ipv4(10, 0, 0, 5), DstAddr: ipv4(0, 0, 0, 0)}),
		&fdinfo.FileEntry{Type: fdinfo.FdTypes_UNIXSK.Enum(), Id: proto.Uint32(fxUnixID),
			Usk: &sk_unix.UnixSkEntry{Id: proto.Uint32(fxUnixID), Ino: proto.Uint32(5004), Type: proto.Uint32(unix.SOCK_STREAM),
				State: proto.Uint32(10), Name: []byte("\x00godwit")}},
		&fdinfo.FileEntry{Type: fdTypePidfd.Enum(), Id: proto.Uint32(fxPidfdID)},
	)

	fd := func(n int, id uint32, typ fdinfo.FdTypes) *fdinfo.FdinfoEntry {
		return &fdinfo.FdinfoEntry{Fd: proto.Uint32(uint32(n)), Id: proto.Uint32(id), Type: typ.Enum()}
	}
	writeImage(t, dir, fmt.Sprintf("fdinfo-%d.img", fxFiles1), magicFdinfo,
		fd(0, fxPipeID, fdinfo.FdTypes_PIPE), fd(1, fxLogID, fdinfo.FdTypes_REG),
		fd(3, fxListenID, fdinfo.FdTypes_INETSK), fd(4, fxEstabID, fdinfo.FdTypes_INETSK),
		fd(5, fxUnixID, fdinfo.FdTypes_UNIXSK), fd(6, fxUDPID, fdinfo.FdTypes_INETSK),
		fd(7, fxPidfdID, fdTypePidfd))
	writeImage(t, dir, fmt.Sprintf("fdinfo-%d.img", fxFiles2), magicFdinfo, fd(0, fxNullID, fdinfo.FdTypes_REG))

	type proc struct {
		pid      uint32
		comm     string
		filesID  uint32
		args     string // written at fxArgPage+fxArgOffset
		pagemap  []proto.Message
		pagesImg []byte
	}
	argPage := func(args string) []byte { // two pages holding args at fxArgOffset
		b := make([]byte, 2*page)
		copy(b[fxArgOffset:], args)
		return b
	}
	procs := []proc{
		{pid: 1, comm: "sh", filesID: fxFiles1, args: fxRootArgs,
			pagemap: []proto.Message{
				&pagemap.PagemapHead{PagesId: proto.Uint32(1)},
				withNrPages64(&pagemap.PagemapEntry{Vaddr: proto.Uint64(0x400000), Flags: proto.Uint32(pagePresent)}, 2),
				withNrPages64(&pagemap.PagemapEntry{Vaddr: proto.Uint64(fxArgPage), Flags: proto.Uint32(pagePresent)}, 1),
				withNrPages64(&pagemap.PagemapEntry{Vaddr: proto.Uint64(fxArgPage + uint64(page)), Flags: proto.Uint32(pagePresent)}, 1),
			},
			pagesImg: append(make([]byte, 2*page), argPage(fxRootArgs)...)},
		{pid: 2, comm: "sleep", filesID: fxFiles2, args: "sleep\x001000\x00",
			pagemap: []proto.Message{
				&pagemap.PagemapHead{PagesId: proto.Uint32(2)},
				&pagemap.PagemapEntry{Vaddr: proto.Uint64(fxArgPage), NrPages: proto.Uint32(2)},
			},
			pagesImg: argPage("sleep\x001000\x00")},
		{pid: 3, comm: "lazy", filesID: fxFiles2, args: "lazy\x00",
			pagemap: []proto.Message{
				&pagemap.PagemapHead{PagesId: proto.Uint32(3)},
				withNrPages64(&pagemap.PagemapEntry{Vaddr: proto.Uint64(fxArgPage), Flags: proto.Uint32(pageLazy)}, 2),
			}},
		{pid: 4, comm: "pre", filesID: fxFiles2, args: "pre\x00",
			pagemap: []proto.Message{
				&pagemap.PagemapHead{PagesId: proto.Uint32(4)},
				&pagemap.PagemapEntry{Vaddr: proto.Uint64(fxArgPage), NrPages: proto.Uint32(2), InParent: proto.Bool(true)},
			}},
	}
	for _, p := range procs {
		writeImage(t, dir, fmt.Sprintf("core-%d.img", p.pid), magicCore, &criu_core.CoreEntry{
			Mtype: criu_core.CoreEntry_X86_64.Enum(),
			Tc:    &criu_core.TaskCoreEntry{TaskState: proto.Uint32(taskAlive), Comm: proto.String(p.comm)},
		})
		writeImage(t, dir, fmt.Sprintf("ids-%d.img", p.pid), magicIDs, &criu_core.TaskKobjIdsEntry{FilesId: proto.Uint32(p.filesID)})
		writeImage(t, dir, fmt.Sprintf("fs-%d.img", p.pid), magicFS, &fs.FsEntry{CwdId: proto.Uint32(fxCwdID), RootId: proto.Uint32(fxRootID)})
		writeImage(t, dir, fmt.Sprintf("mm-%d.img", p.pid), magicMM, &mm.MmEntry{
			ExeFileId:  proto.Uint32(fxExeID),
			MmArgStart: proto.Uint64(fxArgPage + fxArgOffset),
			MmArgEnd:   proto.Uint64(fxArgPage + fxArgOffset + uint64(len(p.args))),
		})
		writeImage(t, dir, fmt.Sprintf("pagemap-%d.img", p.pid), magicPagemap, p.pagemap...)
		if p.pagesImg != nil {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("pages-%d.img", p.pid)), p.pagesImg, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, pid := range []uint32{5, 6} {
		writeImage(t, dir, fmt.Sprintf("core-%d.img", pid), magicCore, &criu_core.CoreEntry{
			Mtype: criu_core.CoreEntry_X86_64.Enum(),
			Tc:    &criu_core.TaskCoreEntry{TaskState: proto.Uint32(taskDead), Comm: proto.String("zombie")},
		})
	}

	mount := func(id, parent uint32, fstype mnt.Fstype, mp, source string) *mnt.MntEntry {
		return &mnt.MntEntry{MntId: proto.Uint32(id), ParentMntId: proto.Uint32(parent), Fstype: proto.Uint32(uint32(fstype)),
			Mountpoint: proto.String(mp), Source: proto.String(source), Root: proto.String("/"), Options: proto.String("rw")}
	}
	hosts := mount(3, 1, mnt.Fstype_UNSUPPORTED, "/etc/hosts", "/dev/vda1")
	hosts.Root, hosts.ExtKey = proto.String("/var/lib/godwit/hosts"), proto.String("/etc/hosts")
	sshfs := mount(20, 1, mnt.Fstype_AUTO, "/mnt/remote", "host:/data")
	sshfs.Fsname = proto.String("fuse.sshfs")
	// Namespace 10 sorts before 9 as text: Inspect orders by number.
	writeImage(t, dir, "mountpoints-10.img", magicMnts, sshfs)
	// CRIU writes children first; Inspect lists parents first.
	writeImage(t, dir, "mountpoints-9.img", magicMnts,
		mount(2, 1, mnt.Fstype_PROC, "/proc", "proc"), hosts, mount(1, 0, mnt.Fstype_OVERLAYFS, "/", "overlay"))
	if err := os.WriteFile(filepath.Join(dir, "mountpoints-x.img"), []byte("not CRIU's"), 0o644); err != nil {
		t.Fatal(err)
	}

	copyFile(t, realStatsDump, filepath.Join(dir, crit.StatsDump))
	writeImage(t, dir, crit.StatsRestore, magicStats, &stats.StatsEntry{Restore: &stats.RestoreStatsEntry{
		ForkingTime: proto.Uint32(1500), RestoreTime: proto.Uint32(85000), PagesRestored: proto.Uint64(300),
	}})

	files := []File{{FD: 0, Type: "PIPE", Path: "pipe:[77]"}, {FD: 1, Type: "REG", Path: "/var/log/app.log"}, {FD: 7, Type: "PIDFD", Path: "anon_inode:[pidfd]"}}
	sockets := []Socket{
		{FD: 3, Family: "IPv4", Type: "STREAM", Protocol: "TCP", State: "LISTEN", LocalAddr: "0.0.0.0", LocalPort: fxListenPort, Inode: 5001},
		{FD: 4, Family: "IPv6", Type: "STREAM", Protocol: "TCP", State: "ESTABLISHED", LocalAddr: "::1", LocalPort: fxListenPort,
			RemoteAddr: "::1", RemotePort: fxPeerPort, Inode: 5002},
		{FD: 5, Family: "UNIX", Type: "STREAM", State: "LISTEN", Path: "@godwit", Inode: 5004},
		{FD: 6, Family: "IPv4", Type: "DGRAM", Protocol: "UDP", LocalAddr: "10.0.0.5", LocalPort: fxUDPPort, Inode: 5003},
	}
	null := []File{{FD: 0, Type: "REG", Path: "/dev/null"}}
	alive := func(pid, ppid int, comm string, threads int, pages int64, cmdline []string, files []File, sockets []Socket) Process {
		return Process{PID: pid, PPID: ppid, PGID: 1, SID: 1, State: "running", Comm: comm, Cmdline: cmdline,
			Exe: "/bin/busybox", Cwd: "/srv", Root: "/", Threads: threads, MemoryBytes: pages * int64(page),
			Files: files, Sockets: sockets}
	}
	zombie := func(pid, ppid int) Process {
		return Process{PID: pid, PPID: ppid, PGID: 1, SID: 1, State: "zombie", Comm: "zombie", Threads: 1}
	}
	return &Report{
		Processes: []Process{
			alive(1, 0, "sh", 2, 4, []string{"/bin/sh", "-c", "sleep 1000 & nc -l -p 8080"}, files, sockets),
			alive(2, 1, "sleep", 1, 2, []string{"sleep", "1000"}, null, nil),
			zombie(6, 2),
			alive(3, 1, "lazy", 1, 2, nil, null, nil),
			alive(4, 1, "pre", 1, 2, nil, null, nil),
			zombie(5, 1),
		},
		Mounts: []Mount{
			{ID: 1, ParentID: 0, Mountpoint: "/", FSType: "overlay", Source: "overlay", Root: "/", Options: "rw"},
			{ID: 3, ParentID: 1, Mountpoint: "/etc/hosts", FSType: "unsupported", Source: "/dev/vda1", Root: "/var/lib/godwit/hosts", Options: "rw", External: true},
			{ID: 2, ParentID: 1, Mountpoint: "/proc", FSType: "proc", Source: "proc", Root: "/", Options: "rw"},
			{ID: 20, ParentID: 1, Mountpoint: "/mnt/remote", FSType: "fuse.sshfs", Source: "host:/data", Root: "/", Options: "rw"},
		},
		MemoryBytes: 10 * int64(page),
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
