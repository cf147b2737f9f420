package doctor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/internal/version"
)

const (
	// commandTimeout bounds each external command; `criu check` takes about
	// 0.1 s on a healthy host.
	commandTimeout = 30 * time.Second

	// installFix is the fix for a missing or too old runc, CRIU or iptables.
	installFix = "run scripts/install-deps.sh as root (CRIU and runc from Debian unstable, pinned; iptables)"

	// criuPipeSize is the pipe size CRIU's page server asks for when it
	// streams pages (stream and post-copy): 1024 pages of 4 KiB. Above
	// fs.pipe-max-size only CAP_SYS_RESOURCE may do that; without it the
	// page server ignores the error and dies with
	// "splice: -1: Bad file descriptor".
	criuPipeSize = 4 << 20
)

var (
	// CRIU 3.17 (Debian 12) cannot start on kernel 6.18 (vDSO layout), and
	// CRIU 4.1 cannot dump any socket on kernels from 6.16 (SO_PASSCRED).
	minCRIU = version.Version{Major: 4, Minor: 2}
	// godwit is tested with runc 1.3; releases before 1.1 were never tried
	// with it.
	minRunc = version.Version{Major: 1, Minor: 1}
)

const (
	pathMounts         = "/proc/self/mounts"
	pathFilesystems    = "/proc/filesystems"
	pathNetns          = "/proc/self/ns/net"
	pathIPForward      = "/proc/sys/net/ipv4/ip_forward"
	pathPipeMaxSize    = "/proc/sys/fs/pipe-max-size"
	pathUnprivUFFD     = "/proc/sys/vm/unprivileged_userfaultfd"
	pathDevUserfaultfd = "/dev/userfaultfd"
	pathCgroupRoot     = "/sys/fs/cgroup"
)

// errExitStatus marks a command that ran and exited non-zero, as opposed to
// one that could not run at all.
var errExitStatus = errors.New("non-zero exit status")

// prober runs the checks against one host.
type prober struct {
	ctx  context.Context
	opts Options
	host host
	log  *slog.Logger

	criuResolved bool // criuPath and criuErr are set
	criuPath     string
	criuErr      error
}

// checks lists the check functions in the order the report shows them.
func (p *prober) checks() []func() Check {
	return []func() Check{
		p.checkRoot, p.checkKernel, p.checkCRIU, p.checkRunc, p.checkCgroups,
		p.checkOverlayfs, p.checkBtrfs, p.checkNetns, p.checkNetworkLock,
		p.checkIPForward, p.checkUserfaultfd, p.checkLazyPages,
		p.checkSoftDirty, p.checkPipeMaxSize, p.checkPageServer, p.checkFreePageReporting,
	}
}

func pass(name string, required bool, detail string) Check {
	return Check{Name: name, Status: StatusPass, Required: required, Detail: detail}
}

func fail(name string, required bool, detail, fix string) Check {
	return Check{Name: name, Status: StatusFail, Required: required, Detail: detail, Fix: fix}
}

// command runs a program; err is non-nil when it could not run or exited
// non-zero, and the output is returned either way.
func (p *prober) command(name string, args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(p.ctx, commandTimeout)
	defer cancel()
	start := time.Now()
	res, err := p.host.command(ctx, name, args...)
	p.log.Debug("doctor command", "cmd", name, "args", args, "exit", res.exitCode, "took", time.Since(start), "err", err)
	if err == nil && res.exitCode != 0 {
		err = fmt.Errorf("%s %s: exit status %d: %w", name, strings.Join(args, " "), res.exitCode, errExitStatus)
	}
	return res.stdout, res.stderr, err
}

// criu resolves the CRIU binary once.
func (p *prober) criu() (string, error) {
	if !p.criuResolved {
		p.criuPath, p.criuErr = p.host.lookPath(p.opts.CRIU)
		p.criuResolved = true
	}
	return p.criuPath, p.criuErr
}

// criuFix is the fix for a CRIU check that failed: CRIU refuses to work
// without CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE, so as non-root that is the
// first thing to fix whatever it reported.
func (p *prober) criuFix(fix string) string {
	if p.host.geteuid() != 0 {
		return "run godwit doctor as root: CRIU needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE"
	}
	return fix
}

// criuFeature runs `criu check --feature name`; ok is its exit status, msg
// what CRIU said about it.
func (p *prober) criuFeature(name string) (ok bool, msg string, err error) {
	bin, err := p.criu()
	if err != nil {
		return false, "", err
	}
	stdout, stderr, err := p.command(bin, "check", "--feature", name)
	msg = criuMessage(stdout, stderr)
	if errors.Is(err, errExitStatus) {
		return false, msg, nil
	}
	if err != nil {
		return false, msg, fmt.Errorf("criu check --feature %s: %w", name, err)
	}
	return true, msg, nil
}

func (p *prober) checkRoot() Check {
	if euid := p.host.geteuid(); euid != 0 {
		return fail(CheckRoot, true, fmt.Sprintf("euid %d: runc, CRIU, mounts and network setup need root", euid),
			"run godwit as root")
	}
	return pass(CheckRoot, true, "euid 0")
}

func (p *prober) checkKernel() Check {
	release, err := p.host.kernelRelease()
	if err != nil {
		return Check{Name: CheckKernel, Status: StatusWarn, Detail: err.Error()}
	}
	if _, err := parseKernelVersion(release); err != nil {
		return Check{Name: CheckKernel, Status: StatusWarn, Detail: err.Error()}
	}
	return pass(CheckKernel, false, release)
}

func (p *prober) checkCRIU() Check {
	bin, err := p.criu()
	if err != nil {
		return fail(CheckCRIU, true, fmt.Sprintf("%s not found: %v", p.opts.CRIU, err), installFix)
	}
	stdout, stderr, err := p.command(bin, "--version")
	if err != nil {
		return fail(CheckCRIU, true, fmt.Sprintf("%v: %s", err, criuMessage(stdout, stderr)), installFix)
	}
	v, err := parseCRIUVersion(stdout)
	if err != nil {
		return fail(CheckCRIU, true, err.Error(), installFix)
	}
	if v.Less(minCRIU) {
		return fail(CheckCRIU, true,
			fmt.Sprintf("%s < %s: CRIU 3.17 (Debian 12) cannot start on this kernel and 4.1 cannot dump sockets on kernels from 6.16", v, minCRIU),
			installFix)
	}
	stdout, stderr, err = p.command(bin, "check")
	verdict := lowerFirst(criuMessage(stdout, stderr))
	if err != nil {
		return fail(CheckCRIU, true, fmt.Sprintf("%s (criu check failed: %s)", v, verdict),
			p.criuFix("run `criu check` as root and fix what it reports"))
	}
	return pass(CheckCRIU, true, fmt.Sprintf("%s (criu check: %s)", v, verdict))
}

func (p *prober) checkRunc() Check {
	bin, err := p.host.lookPath(p.opts.Runc)
	if err != nil {
		return fail(CheckRunc, true, fmt.Sprintf("%s not found: %v", p.opts.Runc, err), installFix)
	}
	stdout, _, err := p.command(bin, "--version")
	if err != nil {
		return fail(CheckRunc, true, err.Error(), installFix)
	}
	v, err := parseRuncVersion(stdout)
	if err != nil {
		return fail(CheckRunc, true, err.Error(), installFix)
	}
	if v.Less(minRunc) {
		return fail(CheckRunc, true, fmt.Sprintf("%s < %s", v, minRunc), installFix)
	}
	return pass(CheckRunc, true, v.String())
}

func (p *prober) checkCgroups() Check {
	mounts, err := p.host.readFile(pathMounts)
	if err != nil {
		return fail(CheckCgroups, true, fmt.Sprintf("read mount table: %v", err), "mount /proc")
	}
	cg := detectCgroups(string(mounts))
	switch cg.mode {
	case cgroupNone:
		return fail(CheckCgroups, true, "neither cgroup2 on "+pathCgroupRoot+" nor cgroup v1 controllers under it",
			"mount cgroup2 on "+pathCgroupRoot+" (or let systemd do it)")
	case cgroupV2:
		return pass(CheckCgroups, true, string(cg.mode))
	}
	// v1 and hybrid: runc runs containers under the v1 controllers, and
	// checkpointing freezes them with the v1 freezer.
	if !cg.has(freezerController) {
		return fail(CheckCgroups, true, fmt.Sprintf("%s without the freezer controller: runc cannot checkpoint", cg.mode),
			"mount the freezer controller on "+pathCgroupRoot+"/freezer")
	}
	return pass(CheckCgroups, true, fmt.Sprintf("%s (v1 controllers: %s)", cg.mode, strings.Join(cg.v1Controllers, ",")))
}

func (p *prober) checkOverlayfs() Check {
	listed, err := p.filesystemListed("overlay")
	if err != nil {
		return fail(CheckOverlayfs, true, err.Error(), "mount /proc")
	}
	const fix = "modprobe overlay; the data dir must be on a filesystem overlayfs accepts as an upper layer (ext4, xfs, btrfs, tmpfs)"
	if p.host.geteuid() != 0 {
		if !listed {
			return fail(CheckOverlayfs, true, "overlay not in "+pathFilesystems, fix)
		}
		return pass(CheckOverlayfs, true, "in "+pathFilesystems+" (test mount skipped: not root)")
	}
	// A real mount also loads the module when it is not listed yet, and
	// proves the data dir's filesystem can hold an upper layer.
	dir := os.TempDir()
	if p.opts.DataDir != "" {
		if dir, err = p.existingAncestor(p.opts.DataDir); err != nil {
			return fail(CheckOverlayfs, true, err.Error(), "create the data dir")
		}
	}
	if err := p.host.mountOverlay(dir); err != nil {
		return fail(CheckOverlayfs, true, err.Error(), fix)
	}
	return pass(CheckOverlayfs, true, "test mount in "+dir+" worked")
}

func (p *prober) checkBtrfs() Check {
	listed, err := p.filesystemListed("btrfs")
	if err != nil {
		return Check{Name: CheckBtrfs, Status: StatusWarn, Detail: err.Error()}
	}
	if !listed {
		return Check{Name: CheckBtrfs, Status: StatusWarn,
			Detail: "btrfs not in " + pathFilesystems + ": snapshots use overlayfs",
			Fix:    "modprobe btrfs, if you want btrfs snapshots"}
	}
	if p.opts.DataDir == "" {
		return pass(CheckBtrfs, false, "available (a data dir on btrfs gets btrfs snapshots)")
	}
	dir, err := p.existingAncestor(p.opts.DataDir)
	if err != nil {
		return Check{Name: CheckBtrfs, Status: StatusWarn, Detail: err.Error()}
	}
	magic, err := p.host.statfsType(dir)
	if err != nil {
		return Check{Name: CheckBtrfs, Status: StatusWarn, Detail: err.Error()}
	}
	if magic == unix.BTRFS_SUPER_MAGIC {
		return pass(CheckBtrfs, false, fmt.Sprintf("data dir %s is on btrfs: snapshots use btrfs", p.opts.DataDir))
	}
	return pass(CheckBtrfs, false, fmt.Sprintf("available; data dir %s is on %s: snapshots use overlayfs",
		p.opts.DataDir, FilesystemName(magic)))
}

func (p *prober) checkNetns() Check {
	if err := p.host.stat(pathNetns); err != nil {
		return fail(CheckNetns, true, fmt.Sprintf("no network namespaces: %v", err),
			"use a kernel built with CONFIG_NET_NS (every container gets its own)")
	}
	return pass(CheckNetns, true, pathNetns+" present")
}

// checkNetworkLock: CRIU blocks a container's traffic while it dumps and
// restores it, by default with iptables-restore and ip6tables-restore
// inside the container's netns; a CRIU built with libnftables can use
// nftables instead.
func (p *prober) checkNetworkLock() Check {
	var missing []string
	for _, tool := range []string{"iptables-restore", "ip6tables-restore"} {
		if _, err := p.host.lookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		detail := "iptables"
		if stdout, _, err := p.command("iptables", "--version"); err == nil {
			detail = strings.TrimSpace(firstLine(stdout))
		}
		return pass(CheckNetworkLock, true, detail+" (CRIU's default network lock)")
	}
	notFound := strings.Join(missing, " and ") + " not found"
	ok, msg, err := p.criuFeature("network_lock_nftables")
	if err == nil && ok {
		return pass(CheckNetworkLock, true, notFound+"; CRIU can lock with nftables (needs network-lock nftables in its config)")
	}
	if msg == "" && err != nil {
		msg = err.Error()
	}
	return fail(CheckNetworkLock, true, fmt.Sprintf("%s, and CRIU cannot lock with nftables (%s)", notFound, msg),
		"apt-get install iptables")
}

func (p *prober) checkIPForward() Check {
	raw, err := p.host.readFile(pathIPForward)
	if err != nil {
		return fail(CheckIPForward, false, fmt.Sprintf("read %s: %v", pathIPForward, err), "mount /proc")
	}
	value := strings.TrimSpace(string(raw))
	if value == "1" {
		return pass(CheckIPForward, false, "net.ipv4.ip_forward=1")
	}
	if err := p.host.writable(pathIPForward); err != nil {
		return fail(CheckIPForward, false,
			fmt.Sprintf("net.ipv4.ip_forward=%s and not writable (%v): other nodes cannot reach this node's containers", value, err),
			"sysctl -w net.ipv4.ip_forward=1 on the host, or run the agent where /proc/sys is writable")
	}
	return pass(CheckIPForward, false, fmt.Sprintf("net.ipv4.ip_forward=%s, writable: the agent turns it on", value))
}

func (p *prober) checkUserfaultfd() Check {
	unpriv := "unknown"
	if raw, err := p.host.readFile(pathUnprivUFFD); err == nil {
		unpriv = strings.TrimSpace(string(raw))
	}
	info := "vm.unprivileged_userfaultfd=" + unpriv
	sysErr := p.host.userfaultfd()
	if sysErr == nil {
		return pass(CheckUserfaultfd, false, "userfaultfd(2) works; "+info)
	}
	if err := p.host.writable(pathDevUserfaultfd); err == nil {
		return pass(CheckUserfaultfd, false, fmt.Sprintf("%v, but %s is usable; %s", sysErr, pathDevUserfaultfd, info))
	}
	fix := "use a kernel built with CONFIG_USERFAULTFD"
	if errors.Is(sysErr, unix.EPERM) {
		fix = "run as root, or sysctl -w vm.unprivileged_userfaultfd=1"
	}
	return fail(CheckUserfaultfd, false, fmt.Sprintf("%v and no usable %s; %s", sysErr, pathDevUserfaultfd, info), fix)
}

// checkLazyPages asks CRIU whether it can run lazy pages. CRIU knows no
// feature named lazy_pages: its lazy-pages daemon needs non-cooperative
// userfaultfd (fork, remap and remove events), which is what the
// uffd-noncoop feature checks.
func (p *prober) checkLazyPages() Check {
	const feature = "uffd-noncoop"
	ok, msg, err := p.criuFeature(feature)
	if err != nil {
		return fail(CheckLazyPages, false, err.Error(), installFix)
	}
	if !ok {
		return fail(CheckLazyPages, false, fmt.Sprintf("criu check --feature %s: %s", feature, msg),
			p.criuFix("use a kernel with non-cooperative userfaultfd events (4.11 or later, CONFIG_USERFAULTFD)"))
	}
	return pass(CheckLazyPages, false, fmt.Sprintf("criu check --feature %s: %s", feature, msg))
}

// checkSoftDirty probes the kernel itself and asks CRIU: pre-copy needs
// both the kernel's tracking and a CRIU that uses it.
func (p *prober) checkSoftDirty() Check {
	const fix = "use a kernel built with CONFIG_MEM_SOFT_DIRTY=y; only pre-copy needs it"
	tracks, err := p.host.softDirty()
	if err != nil {
		return fail(CheckSoftDirty, false, fmt.Sprintf("probe soft-dirty bits: %v", err), fix)
	}
	criuOK, criuMsg, criuErr := p.criuFeature("mem_dirty_track")
	criuSays := "criu check --feature mem_dirty_track: " + criuMsg
	if criuErr != nil {
		criuSays = criuErr.Error()
	}
	switch {
	case !tracks:
		return fail(CheckSoftDirty, false,
			"the kernel does not mark written pages soft-dirty (needs CONFIG_MEM_SOFT_DIRTY); "+criuSays, fix)
	case criuErr != nil || !criuOK:
		return fail(CheckSoftDirty, false, "the kernel tracks soft-dirty pages but CRIU does not: "+criuSays,
			p.criuFix("run `criu check --feature mem_dirty_track` as root and fix what it reports"))
	}
	return pass(CheckSoftDirty, false, "the kernel tracks soft-dirty pages; "+criuSays)
}

func (p *prober) checkPipeMaxSize() Check {
	fix := fmt.Sprintf("sysctl -w fs.pipe-max-size=%d (a godwit agent running as root does this itself when it starts)", criuPipeSize)
	raw, err := p.host.readFile(pathPipeMaxSize)
	if err != nil {
		return fail(CheckPipeMaxSize, false, fmt.Sprintf("read %s: %v", pathPipeMaxSize, err), fix)
	}
	limit, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return fail(CheckPipeMaxSize, false, fmt.Sprintf("parse %s %q: %v", pathPipeMaxSize, raw, err), fix)
	}
	// The sysctl is not the whole story: CAP_SYS_RESOURCE lifts it, and
	// fs.pipe-user-pages-* can still refuse. Ask for the pipe CRIU asks for.
	probeErr := p.host.setPipeSize(criuPipeSize)
	switch {
	case probeErr == nil && limit >= criuPipeSize:
		return pass(CheckPipeMaxSize, false, fmt.Sprintf("%d >= %d", limit, criuPipeSize))
	case probeErr == nil:
		return pass(CheckPipeMaxSize, false,
			fmt.Sprintf("%d < %d, but this process may exceed it (CAP_SYS_RESOURCE)", limit, criuPipeSize))
	case limit < criuPipeSize && p.host.writable(pathPipeMaxSize) == nil:
		// Like ip_forward: the agent raises it at start (RaisePipeMaxSize),
		// so a host where it may do so supports the strategies.
		return pass(CheckPipeMaxSize, false,
			fmt.Sprintf("%d < %d, but writable: a godwit agent raises it when it starts", limit, criuPipeSize))
	case limit < criuPipeSize:
		return fail(CheckPipeMaxSize, false, fmt.Sprintf("%d < %d and not writable", limit, criuPipeSize), fix)
	}
	return fail(CheckPipeMaxSize, false, fmt.Sprintf("%d >= %d, but a %d-byte pipe was refused: %v", limit, criuPipeSize, criuPipeSize, probeErr),
		"raise fs.pipe-user-pages-soft and fs.pipe-user-pages-hard, or run as root")
}

// filesystemListed reports whether /proc/filesystems names fs.
func (p *prober) filesystemListed(fs string) (bool, error) {
	raw, err := p.host.readFile(pathFilesystems)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", pathFilesystems, err)
	}
	for line := range strings.Lines(string(raw)) {
		fields := strings.Fields(line)
		if len(fields) > 0 && fields[len(fields)-1] == fs {
			return true, nil
		}
	}
	return false, nil
}

// existingAncestor returns dir, or its nearest parent that exists: the
// agent creates the data dir there, so that is the filesystem that counts.
func (p *prober) existingAncestor(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("data dir %s: %w", dir, err)
	}
	for {
		err := p.host.stat(abs)
		if err == nil {
			return abs, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("data dir %s: %w", dir, err)
		}
		parent := filepath.Dir(abs)
		if parent == abs {
			return "", fmt.Errorf("data dir %s: no existing parent: %w", dir, err)
		}
		abs = parent
	}
}

// criuMessage picks what CRIU said from its output: stdout (its verdict,
// sometimes over several lines) when it printed any, else its warnings and
// errors without the source-location prefix and without the harmless kdat
// cache notice.
func criuMessage(stdout, stderr string) string {
	if lines := nonEmptyLines(stdout); len(lines) > 0 {
		return strings.TrimSuffix(strings.Join(lines, " "), ".")
	}
	var msgs []string
	for _, line := range nonEmptyLines(stderr) {
		if strings.Contains(line, "kdat cache") {
			continue
		}
		// "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. ..."
		if _, after, ok := strings.Cut(line, "): "); ok && strings.Contains(line, "(criu/") {
			line = after
		}
		msgs = append(msgs, strings.TrimSuffix(line, "."))
	}
	return strings.Join(msgs, "; ")
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

func nonEmptyLines(s string) []string {
	var out []string
	for line := range strings.Lines(s) {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// FilesystemName names the filesystems a data dir is commonly on from
// statfs's magic number (another is named by the number), for reports.
func FilesystemName(magic int64) string {
	switch magic {
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.EXT4_SUPER_MAGIC: // also ext2 and ext3
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("filesystem type %#x", magic)
}

func (p *prober) checkFreePageReporting() Check {
	if p.host.freePageReporting() {
		return pass(CheckFreePageReporting, false, "the memory balloon reports free pages to the hypervisor, so fresh memory is slow to write "+
			"the first time: a stop-copy source faults in the memory its dump writes ahead of the freeze (migrate/README.md)")
	}
	return pass(CheckFreePageReporting, false, "no memory balloon reports free pages: fresh memory is written at memory speed, and moves reserve none ahead of the freeze")
}
