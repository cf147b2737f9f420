package criuimg

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/godwit/godwit/internal/units"
)

// Layout of WriteText's tables.
const (
	tabMinWidth = 0
	tabWidth    = 8
	tabPadding  = 2
	tabPadChar  = ' '
	tabFlags    = 0
	treeIndent  = "   "
	treeBranch  = "├─ "
	treeLast    = "└─ "
	treeLine    = "│  "
)

// WriteText writes the report for a person: the process tree, each
// process's files and sockets, the mounts, and the statistics.
func (r *Report) WriteText(w io.Writer) error {
	ew := &errWriter{w: w}
	r.writeTree(ew)
	r.writeProcesses(ew)
	r.writeMounts(ew)
	r.writeStats(ew)
	if len(r.Warnings) > 0 {
		ew.printf("\nWarnings\n")
		for _, warning := range r.Warnings {
			ew.printf("  %s\n", warning)
		}
	}
	return ew.err
}

// writeTree draws the process tree from the PPID links, children in
// pstree order. Processes whose parent was not dumped are roots.
func (r *Report) writeTree(ew *errWriter) {
	ew.printf("Process tree (memory %s)\n", units.FormatBytes(r.MemoryBytes))
	byPID := make(map[int]bool, len(r.Processes))
	for _, p := range r.Processes {
		byPID[p.PID] = true
	}
	children := make(map[int][]int, len(r.Processes))
	index := make(map[int]int, len(r.Processes))
	var roots []int
	for i, p := range r.Processes {
		index[p.PID] = i
		if byPID[p.PPID] && p.PPID != p.PID {
			children[p.PPID] = append(children[p.PPID], p.PID)
		} else {
			roots = append(roots, p.PID)
		}
	}
	visited := make(map[int]bool, len(r.Processes))
	var walk func(pid int, prefix, branch, next string)
	walk = func(pid int, prefix, branch, next string) {
		if visited[pid] { // a crafted pstree with a cycle
			return
		}
		visited[pid] = true
		p := r.Processes[index[pid]]
		ew.printf("%s%s%d %s\n", prefix, branch, p.PID, p.commandLine())
		kids := children[pid]
		for i, kid := range kids {
			if i == len(kids)-1 {
				walk(kid, prefix+next, treeLast, treeIndent)
			} else {
				walk(kid, prefix+next, treeBranch, treeLine)
			}
		}
	}
	for _, pid := range roots {
		walk(pid, "", "", "")
	}
}

// commandLine is the command line if known, else the comm in brackets
// (as ps shows a process without one).
func (p Process) commandLine() string {
	if len(p.Cmdline) == 0 {
		return "[" + p.Comm + "]"
	}
	return strings.Join(p.Cmdline, " ")
}

func (r *Report) writeProcesses(ew *errWriter) {
	for _, p := range r.Processes {
		ew.printf("\nProcess %d (%s), %s, parent %d, %d thread(s), memory %s\n",
			p.PID, p.Comm, p.State, p.PPID, p.Threads, units.FormatBytes(p.MemoryBytes))
		if p.Exe != "" {
			ew.printf("  exe   %s\n", p.Exe)
		}
		if p.Cwd != "" {
			ew.printf("  cwd   %s\n", p.Cwd)
		}
		if p.Root != "" && p.Root != "/" {
			ew.printf("  root  %s\n", p.Root)
		}
		if len(p.Files)+len(p.Sockets) == 0 {
			continue
		}
		type row struct {
			fd         int
			kind, what string
		}
		rows := make([]row, 0, len(p.Files)+len(p.Sockets))
		for _, f := range p.Files {
			rows = append(rows, row{f.FD, f.Type, f.Path})
		}
		for _, s := range p.Sockets {
			rows = append(rows, row{s.FD, s.kind(), s.describe()})
		}
		sort.SliceStable(rows, func(i, j int) bool { return rows[i].fd < rows[j].fd })
		tw := tabwriter.NewWriter(ew, tabMinWidth, tabWidth, tabPadding, tabPadChar, tabFlags)
		fmt.Fprintf(tw, "  FD\tTYPE\tWHAT\n")
		for _, r := range rows {
			fmt.Fprintf(tw, "  %d\t%s\t%s\n", r.fd, r.kind, r.what)
		}
		ew.check(tw.Flush())
	}
}

// kind is the socket's short kind: TCP, UDP, UNIX, NETLINK ...
func (s Socket) kind() string {
	switch {
	case s.Protocol != "" && (s.Family == "IPv4" || s.Family == "IPv6"):
		if s.Family == "IPv6" {
			return s.Protocol + "6"
		}
		return s.Protocol
	default:
		return s.Family
	}
}

// describe is the socket's addresses and state, as ss would show them.
func (s Socket) describe() string {
	var parts []string
	switch s.Family {
	case "IPv4", "IPv6":
		parts = append(parts, hostPort(s.LocalAddr, s.LocalPort))
		if s.RemotePort != 0 {
			parts = append(parts, "->", hostPort(s.RemoteAddr, s.RemotePort))
		}
	case "UNIX":
		parts = append(parts, strings.ToLower(s.Type))
		if s.Path != "" {
			parts = append(parts, s.Path)
		}
		if s.PeerInode != 0 {
			parts = append(parts, fmt.Sprintf("peer %d", s.PeerInode))
		}
	case "NETLINK":
		parts = append(parts, s.Protocol)
	default:
		parts = append(parts, s.Type)
	}
	if s.State != "" {
		parts = append(parts, s.State)
	}
	return strings.Join(parts, " ")
}

func hostPort(addr string, port int) string {
	if strings.Contains(addr, ":") {
		return fmt.Sprintf("[%s]:%d", addr, port)
	}
	return fmt.Sprintf("%s:%d", addr, port)
}

func (r *Report) writeMounts(ew *errWriter) {
	if len(r.Mounts) == 0 {
		return
	}
	ew.printf("\nMounts\n")
	tw := tabwriter.NewWriter(ew, tabMinWidth, tabWidth, tabPadding, tabPadChar, tabFlags)
	fmt.Fprintf(tw, "  MOUNTPOINT\tTYPE\tSOURCE\tOPTIONS\n")
	for _, m := range r.Mounts {
		source := m.Source
		if m.External {
			source += " (external)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", m.Mountpoint, m.FSType, source, m.Options)
	}
	ew.check(tw.Flush())
}

func (r *Report) writeStats(ew *errWriter) {
	s := r.Stats
	if s == nil {
		return
	}
	ew.printf("\nStatistics\n")
	tw := tabwriter.NewWriter(ew, tabMinWidth, tabWidth, tabPadding, tabPadChar, tabFlags)
	fmt.Fprintf(tw, "  image size\t%s\n", units.FormatBytes(s.ImageBytes))
	if d := s.Dump; d != nil {
		fmt.Fprintf(tw, "  freezing time\t%s\n", formatDuration(d.FreezingTime))
		fmt.Fprintf(tw, "  frozen time\t%s\n", formatDuration(d.FrozenTime))
		fmt.Fprintf(tw, "  memory dump time\t%s\n", formatDuration(d.MemdumpTime))
		fmt.Fprintf(tw, "  memory write time\t%s\n", formatDuration(d.MemwriteTime))
		fmt.Fprintf(tw, "  pages scanned\t%d\n", d.PagesScanned)
		fmt.Fprintf(tw, "  pages skipped (parent)\t%d\n", d.PagesSkippedParent)
		fmt.Fprintf(tw, "  pages written\t%d\n", d.PagesWritten)
		if d.PagesLazy != 0 {
			fmt.Fprintf(tw, "  pages lazy\t%d\n", d.PagesLazy)
		}
	} else {
		fmt.Fprintf(tw, "  dump\tno stats-dump in the images\n")
	}
	if rs := s.Restore; rs != nil {
		fmt.Fprintf(tw, "  restore time\t%s\n", formatDuration(rs.RestoreTime))
		fmt.Fprintf(tw, "  forking time\t%s\n", formatDuration(rs.ForkingTime))
		fmt.Fprintf(tw, "  pages restored\t%d\n", rs.PagesRestored)
	}
	ew.check(tw.Flush())
}

// formatDuration rounds to what a person compares: 1.234ms, 2.5s.
func formatDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(time.Microsecond).String()
	default:
		return d.String()
	}
}

// errWriter keeps the first write error so the text can be written
// without checking every line.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) {
	fmt.Fprintf(e, format, args...)
}

func (e *errWriter) check(err error) {
	if e.err == nil {
		e.err = err
	}
}
