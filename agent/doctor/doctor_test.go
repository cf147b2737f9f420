package doctor

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/godwit/godwit/agent/internal/version"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		name  string
		parse func(string) (version.Version, error)
		in    string
		want  version.Version
	}{
		{"criu 4.2.1", parseCRIUVersion, "Version: 4.2.1\n", version.Version{Major: 4, Minor: 2, Patch: 1}},
		{"criu 3.17 without patch level", parseCRIUVersion, "Version: 3.17\n", version.Version{Major: 3, Minor: 17, Patch: 0}},
		{"criu with GitID line", parseCRIUVersion, "Version: 4.1\nGitID: v4.1-23-gdeadbeef\n", version.Version{Major: 4, Minor: 1, Patch: 0}},
		{"runc plain", parseRuncVersion, "runc version 1.3.6\ncommit: v1.3.6-0-g123\nspec: 1.2.1\n", version.Version{Major: 1, Minor: 3, Patch: 6}},
		{"runc debian suffix", parseRuncVersion, "runc version 1.3.6+ds1\ncommit: 1.3.6+ds1-1\n", version.Version{Major: 1, Minor: 3, Patch: 6}},
		{"runc release candidate", parseRuncVersion, "runc version 1.4.0-rc.1\n", version.Version{Major: 1, Minor: 4, Patch: 0}},
		{"kernel release", parseKernelVersion, "6.18.44-fc-v782", version.Version{Major: 6, Minor: 18, Patch: 44}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.in)
			if err != nil {
				t.Fatalf("parse %q: %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("parse %q = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseVersionRejectsGarbage(t *testing.T) {
	tests := []struct {
		name  string
		parse func(string) (version.Version, error)
		in    string
	}{
		{"criu empty", parseCRIUVersion, ""},
		{"criu usage text", parseCRIUVersion, "Usage:\n  criu dump|pre-dump -t PID\n"},
		{"runc from another tool", parseRuncVersion, "crun version 1.8\n"},
		{"kernel without numbers", parseKernelVersion, "custom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v, err := tt.parse(tt.in); !errors.Is(err, errNoVersion) {
				t.Errorf("parse %q = %s, %v; want errNoVersion", tt.in, v, err)
			}
		})
	}
}

func TestDetectCgroups(t *testing.T) {
	tests := []struct {
		name        string
		mounts      string
		wantMode    cgroupMode
		wantFreezer bool
	}{
		{"hybrid", hybridMounts, cgroupHybrid, true},
		{
			"v2 unified",
			"cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot 0 0\n",
			cgroupV2, false,
		},
		{
			"v1 only",
			"tmpfs /sys/fs/cgroup tmpfs ro,mode=755 0 0\n" +
				"cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,cpu,cpuacct 0 0\n" +
				"cgroup /sys/fs/cgroup/freezer cgroup rw,nosuid,freezer 0 0\n",
			cgroupV1, true,
		},
		{
			"v1 without freezer",
			"cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n",
			cgroupV1, false,
		},
		{
			"cgroup2 mounted elsewhere does not make hybrid",
			"cgroup /sys/fs/cgroup/freezer cgroup rw,freezer 0 0\ncgroup2 /tmp/test-cg cgroup2 rw 0 0\n",
			cgroupV1, true,
		},
		{
			"only a stray cgroup2 below the root is none",
			"tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
			cgroupNone, false,
		},
		{"nothing mounted", "/dev/vda / ext4 rw 0 0\n", cgroupNone, false},
		{"garbage lines ignored", "short line\n\n", cgroupNone, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := detectCgroups(tt.mounts)
			if got.mode != tt.wantMode {
				t.Errorf("mode = %s, want %s", got.mode, tt.wantMode)
			}
			if got.has(freezerController) != tt.wantFreezer {
				t.Errorf("freezer = %v, want %v (controllers %v)", !tt.wantFreezer, tt.wantFreezer, got.v1Controllers)
			}
			if slices.Contains(got.v1Controllers, "name=systemd") || slices.Contains(got.v1Controllers, "rw") {
				t.Errorf("controllers %v include mount options", got.v1Controllers)
			}
		})
	}
}

func TestCheckCRIU(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(m *fakeMachine)
		wantStatus Status
		wantDetail []string // substrings
		wantFix    string   // substring; "" means no fix
	}{
		{"4.2.1 and check good", func(*fakeMachine) {}, StatusPass, []string{"4.2.1", "criu check: looks good"}, ""},
		{
			"not installed",
			func(m *fakeMachine) { delete(m.paths, "criu") },
			StatusFail, []string{"criu not found"}, "install-deps.sh",
		},
		{
			"Debian 12's 3.17",
			func(m *fakeMachine) { m.commands["/usr/sbin/criu --version"] = cmdResult{stdout: "Version: 3.17\n"} },
			StatusFail, []string{"3.17.0 < 4.2.0", "cannot start", "cannot dump sockets"}, "install-deps.sh",
		},
		{
			"4.1 cannot dump sockets",
			func(m *fakeMachine) { m.commands["/usr/sbin/criu --version"] = cmdResult{stdout: "Version: 4.1\n"} },
			StatusFail, []string{"4.1.0 < 4.2.0", "6.16"}, "install-deps.sh",
		},
		{
			"criu check fails",
			func(m *fakeMachine) {
				m.commands["/usr/sbin/criu check"] = cmdResult{
					stderr:   "Error (criu/cr-check.c:1425): Kernel doesn't support PTRACE_O_SUSPEND_SECCOMP\n",
					exitCode: 1,
				}
			},
			StatusFail, []string{"criu check failed", "PTRACE_O_SUSPEND_SECCOMP"}, "criu check",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			tt.edit(m)
			c := findCheck(t, m.run(t, Options{}), CheckCRIU)
			assertCheck(t, c, tt.wantStatus, tt.wantDetail, tt.wantFix)
			if !c.Required {
				t.Error("criu check is not required")
			}
		})
	}
}

func TestCheckRunc(t *testing.T) {
	tests := []struct {
		name       string
		out        string
		wantStatus Status
		wantDetail string
	}{
		{"1.3.6", "runc version 1.3.6\n", StatusPass, "1.3.6"},
		{"1.1.0 is the minimum", "runc version 1.1.0\n", StatusPass, "1.1.0"},
		{"1.0.2 too old", "runc version 1.0.2\n", StatusFail, "1.0.2 < 1.1.0"},
		{"unparsable", "something else\n", StatusFail, "no version number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			m.commands["/usr/sbin/runc --version"] = cmdResult{stdout: tt.out}
			c := findCheck(t, m.run(t, Options{}), CheckRunc)
			assertCheck(t, c, tt.wantStatus, []string{tt.wantDetail}, "")
		})
	}
}

func TestCheckCgroups(t *testing.T) {
	tests := []struct {
		name       string
		mounts     string
		wantStatus Status
		wantDetail string
	}{
		{"hybrid passes", hybridMounts, StatusPass, "hybrid"},
		{"v2 passes", "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", StatusPass, "v2"},
		{"v1 without freezer fails", "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n", StatusFail, "freezer"},
		{"none fails", "/dev/vda / ext4 rw 0 0\n", StatusFail, "neither cgroup2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			m.files[pathMounts] = tt.mounts
			c := findCheck(t, m.run(t, Options{}), CheckCgroups)
			assertCheck(t, c, tt.wantStatus, []string{tt.wantDetail}, "")
		})
	}
}

func TestCheckPipeMaxSize(t *testing.T) {
	tests := []struct {
		name       string
		sysctl     string
		capSysRes  bool
		readOnly   bool
		wantStatus Status
		wantDetail string
		wantFix    string
	}{
		{"4 MiB", "4194304\n", false, true, StatusPass, "4194304 >= 4194304", ""},
		{"1 MiB, read-only", "1048576\n", false, true, StatusFail, "1048576 < 4194304 and not writable", "sysctl -w fs.pipe-max-size=4194304"},
		{"1 MiB, writable: the agent raises it", "1048576\n", false, false, StatusPass, "writable: a godwit agent raises it", ""},
		{"1 MiB but CAP_SYS_RESOURCE", "1048576\n", true, true, StatusPass, "CAP_SYS_RESOURCE", ""},
		{"unreadable value", "lots\n", false, false, StatusFail, "parse", "sysctl -w fs.pipe-max-size=4194304"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			m.files[pathPipeMaxSize] = tt.sysctl
			fmt.Sscan(tt.sysctl, &m.pipeLimit)
			m.capSysRes = tt.capSysRes
			m.readOnly = map[string]bool{pathPipeMaxSize: tt.readOnly}
			c := findCheck(t, m.run(t, Options{}), CheckPipeMaxSize)
			assertCheck(t, c, tt.wantStatus, []string{tt.wantDetail}, tt.wantFix)
		})
	}
}

func TestCheckSoftDirty(t *testing.T) {
	tests := []struct {
		name       string
		kernel     bool
		criu       cmdResult
		wantStatus Status
		wantDetail string
	}{
		{"kernel and criu track", true, cmdResult{stdout: "mem_dirty_track is supported\n"}, StatusPass, "tracks soft-dirty"},
		{
			"kernel without CONFIG_MEM_SOFT_DIRTY", false,
			cmdResult{stderr: "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n", exitCode: 1},
			StatusFail, "(needs CONFIG_MEM_SOFT_DIRTY); criu check --feature mem_dirty_track: Dirty tracking is OFF",
		},
		{
			"kernel tracks but criu disagrees", true,
			cmdResult{stderr: "Warn  (criu/cr-check.c:824): Dirty tracking is OFF.\n", exitCode: 1},
			StatusFail, "CRIU does not",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			m.softDirty = tt.kernel
			m.commands["/usr/sbin/criu check --feature mem_dirty_track"] = tt.criu
			c := findCheck(t, m.run(t, Options{}), CheckSoftDirty)
			assertCheck(t, c, tt.wantStatus, []string{tt.wantDetail}, "")
		})
	}
}

func TestCheckNetworkLock(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(m *fakeMachine)
		wantStatus Status
		wantDetail string
	}{
		{"iptables", func(*fakeMachine) {}, StatusPass, "iptables v1.8.9 (nf_tables)"},
		{
			"nftables through CRIU",
			func(m *fakeMachine) { delete(m.paths, "iptables-restore"); delete(m.paths, "ip6tables-restore") },
			StatusPass, "CRIU can lock with nftables",
		},
		{
			"neither",
			func(m *fakeMachine) {
				delete(m.paths, "ip6tables-restore")
				m.commands["/usr/sbin/criu check --feature network_lock_nftables"] = cmdResult{
					stderr: "Warn  (criu/cr-check.c:1500): CRIU was built without libnftables support\n", exitCode: 1}
			},
			StatusFail, "ip6tables-restore not found, and CRIU cannot lock with nftables (CRIU was built without libnftables support)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			tt.edit(m)
			c := findCheck(t, m.run(t, Options{}), CheckNetworkLock)
			assertCheck(t, c, tt.wantStatus, []string{tt.wantDetail}, "")
			if !c.Required {
				t.Error("network-lock is not required")
			}
		})
	}
}

func TestCheckOverlayfsAndBtrfsUseDataDir(t *testing.T) {
	tests := []struct {
		name          string
		dataDir       string
		fsType        int64
		wantMountIn   string
		wantBtrfsText string
	}{
		{"no data dir", "", unix.EXT4_SUPER_MAGIC, "", "available"},
		{"data dir to be created on ext4", "/var/lib/godwit/n1", unix.EXT4_SUPER_MAGIC, "/var/lib", "is on ext4: snapshots use overlayfs"},
		{"data dir on btrfs", "/var/lib/godwit/n1", unix.BTRFS_SUPER_MAGIC, "/var/lib", "is on btrfs: snapshots use btrfs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			m.statfs["/var/lib"] = tt.fsType
			r := m.run(t, Options{DataDir: tt.dataDir})
			if c := findCheck(t, r, CheckOverlayfs); c.Status != StatusPass {
				t.Errorf("overlayfs: %+v", c)
			}
			if tt.wantMountIn != "" && !slices.Equal(m.mountedIn, []string{tt.wantMountIn}) {
				t.Errorf("test mount made in %v, want [%s]", m.mountedIn, tt.wantMountIn)
			}
			assertCheck(t, findCheck(t, r, CheckBtrfs), StatusPass, []string{tt.wantBtrfsText}, "")
		})
	}
}

func TestCheckOverlayfsMountFails(t *testing.T) {
	m := healthyMachine()
	m.mountErr = fmt.Errorf("mount overlay in /tmp/x: %w", unix.EINVAL)
	r := m.run(t, Options{})
	assertCheck(t, findCheck(t, r, CheckOverlayfs), StatusFail, []string{"invalid argument"}, "modprobe overlay")
	if r.OK {
		t.Error("report OK without a working overlayfs")
	}
}

func TestCheckNotRoot(t *testing.T) {
	m := healthyMachine()
	m.euid = 1000
	m.commands["/usr/sbin/criu check"] = cmdResult{
		stdout:   "CRIU needs to have the CAP_SYS_ADMIN or the CAP_CHECKPOINT_RESTORE capability: \nsetcap cap_checkpoint_restore+eip criu\n",
		exitCode: 1,
	}
	m.commands["/usr/sbin/criu check --feature uffd-noncoop"] = m.commands["/usr/sbin/criu check"]
	r := m.run(t, Options{})
	for _, name := range []string{CheckCRIU, CheckLazyPages} {
		assertCheck(t, findCheck(t, r, name), StatusFail, []string{"CAP_CHECKPOINT_RESTORE"}, "run godwit doctor as root")
	}
	assertCheck(t, findCheck(t, r, CheckRoot), StatusFail, []string{"euid 1000"}, "root")
	if len(m.mountedIn) != 0 {
		t.Errorf("tried a test mount as non-root in %v", m.mountedIn)
	}
	assertCheck(t, findCheck(t, r, CheckOverlayfs), StatusPass, []string{"test mount skipped"}, "")
	if r.OK {
		t.Error("report OK as non-root")
	}
}

func TestCheckIPForward(t *testing.T) {
	tests := []struct {
		name       string
		value      string
		readOnly   bool
		wantStatus Status
	}{
		{"on", "1\n", true, StatusPass},
		{"off but writable", "0\n", false, StatusPass},
		{"off and read-only", "0\n", true, StatusFail},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			m.files[pathIPForward] = tt.value
			m.readOnly = map[string]bool{pathIPForward: tt.readOnly}
			r := m.run(t, Options{})
			if c := findCheck(t, r, CheckIPForward); c.Status != tt.wantStatus || c.Required {
				t.Errorf("ip-forward = %+v, want %s and not required", c, tt.wantStatus)
			}
			if !r.OK {
				t.Error("ip-forward made the report fail")
			}
		})
	}
}

func TestCheckUserfaultfd(t *testing.T) {
	tests := []struct {
		name       string
		uffdErr    error
		devExists  bool
		wantStatus Status
		wantFix    string
	}{
		{"syscall works", nil, true, StatusPass, ""},
		{"syscall refused, device usable", unix.EPERM, true, StatusPass, ""},
		{"refused and no device", unix.EPERM, false, StatusFail, "vm.unprivileged_userfaultfd=1"},
		{"not in the kernel", unix.ENOSYS, false, StatusFail, "CONFIG_USERFAULTFD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			m.uffdErr = tt.uffdErr
			if !tt.devExists {
				delete(m.files, pathDevUserfaultfd)
			}
			c := findCheck(t, m.run(t, Options{}), CheckUserfaultfd)
			assertCheck(t, c, tt.wantStatus, []string{"vm.unprivileged_userfaultfd=0"}, tt.wantFix)
		})
	}
}

// TestStrategies checks what an operator reads from `godwit doctor`: which
// strategies a host supports, why not, and whether it is fit at all.
func TestStrategies(t *testing.T) {
	const sysctlFix = "sysctl -w fs.pipe-max-size=4194304"
	tests := []struct {
		name        string
		edit        func(m *fakeMachine)
		wantOK      bool
		unsupported map[string]string // strategy -> substring of its reason
	}{
		{"healthy host supports all", func(*fakeMachine) {}, true, nil},
		{
			"pipe-max-size 1 MiB, read-only",
			func(m *fakeMachine) {
				m.files[pathPipeMaxSize] = "1048576\n"
				m.pipeLimit = 1 << 20
				m.readOnly = map[string]bool{pathPipeMaxSize: true}
			},
			true,
			map[string]string{Stream: sysctlFix, PostCopy: sysctlFix},
		},
		{
			"no page server",
			func(m *fakeMachine) { m.pageServer = errors.New("operation failed (msg: err: 13)") },
			true,
			map[string]string{Stream: "needs page-server: go-criu could not start", PostCopy: "page-server"},
		},
		{
			"CRIU over RPC older than CLI's",
			func(m *fakeMachine) { m.criuRPC = 31700 },
			true,
			map[string]string{Stream: "CRIU 3.17.0 answers go-criu", PostCopy: "page-server"},
		},
		{
			"no soft-dirty",
			func(m *fakeMachine) { m.softDirty = false },
			true,
			map[string]string{PreCopy: "CONFIG_MEM_SOFT_DIRTY"},
		},
		{
			"no userfaultfd",
			func(m *fakeMachine) {
				m.uffdErr = unix.ENOSYS
				delete(m.files, pathDevUserfaultfd)
				m.commands["/usr/sbin/criu check --feature uffd-noncoop"] = cmdResult{
					stderr: "Error (criu/uffd.c:300): uffd: Unable to open an userfaultfd descriptor\n", exitCode: 1}
			},
			true,
			map[string]string{PostCopy: "needs userfaultfd"},
		},
		{
			// Root without CAP_SYS_RESOURCE, pipe-max-size at its 1 MiB
			// default but writable (the agent raises it), no soft-dirty.
			"this project's machine",
			func(m *fakeMachine) {
				m.files[pathPipeMaxSize] = "1048576\n"
				m.pipeLimit = 1 << 20
				m.softDirty = false
				m.commands["/usr/sbin/criu check --feature mem_dirty_track"] = cmdResult{
					stderr: "Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n", exitCode: 1}
			},
			true,
			map[string]string{PreCopy: "soft-dirty"},
		},
		{
			"required check failed: nothing is supported",
			func(m *fakeMachine) { delete(m.paths, "runc") },
			false,
			map[string]string{
				StopCopy: "required checks failed: runc", Stream: "runc", PreCopy: "runc", PostCopy: "runc",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			tt.edit(m)
			r := m.run(t, Options{})
			if r.OK != tt.wantOK {
				t.Errorf("OK = %v, want %v; checks %+v", r.OK, tt.wantOK, r.Checks)
			}
			for _, name := range []string{StopCopy, Stream, PreCopy, PostCopy} {
				s := findStrategy(t, r, name)
				want, unsupported := tt.unsupported[name]
				switch {
				case unsupported && s.Supported:
					t.Errorf("%s supported, want unsupported because of %q", name, want)
				case unsupported && !strings.Contains(s.Reason, want):
					t.Errorf("%s reason %q does not mention %q", name, s.Reason, want)
				case !unsupported && !s.Supported:
					t.Errorf("%s unsupported: %s", name, s.Reason)
				case !unsupported && s.Reason != "":
					t.Errorf("%s supported with a reason %q", name, s.Reason)
				}
				if r.Supports(name) != s.Supported {
					t.Errorf("Supports(%s) = %v, strategy says %v", name, r.Supports(name), s.Supported)
				}
			}
		})
	}
}

func TestDeriveStrategiesMissingCheck(t *testing.T) {
	// A report from a node whose doctor knew no soft-dirty check.
	checks := []Check{
		{Name: CheckRoot, Status: StatusPass, Required: true},
		{Name: CheckPipeMaxSize, Status: StatusPass},
	}
	for _, s := range DeriveStrategies(checks) {
		if s.Name == PreCopy && (s.Supported || !strings.Contains(s.Reason, "soft-dirty: not checked")) {
			t.Errorf("pre-copy = %+v, want unsupported: soft-dirty not checked", s)
		}
		if s.Name == StopCopy && !s.Supported {
			t.Errorf("stop-copy = %+v, want supported", s)
		}
	}
}

func TestReportOKCountsOnlyRequired(t *testing.T) {
	tests := []struct {
		name   string
		checks []Check
		want   bool
	}{
		{"all pass", []Check{{Name: "a", Status: StatusPass, Required: true}}, true},
		{"optional fails", []Check{{Name: "a", Status: StatusPass, Required: true}, {Name: "b", Status: StatusFail}}, true},
		{"warnings do not fail", []Check{{Name: "a", Status: StatusWarn}}, true},
		{"required fails", []Check{{Name: "a", Status: StatusFail, Required: true}, {Name: "b", Status: StatusPass}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := requiredPass(tt.checks); got != tt.want {
				t.Errorf("requiredPass = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckOrderAndRequiredSet(t *testing.T) {
	r := healthyMachine().run(t, Options{})
	var names, required []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
		if c.Required {
			required = append(required, c.Name)
		}
	}
	wantNames := []string{CheckRoot, CheckKernel, CheckCRIU, CheckRunc, CheckCgroups, CheckOverlayfs, CheckBtrfs,
		CheckNetns, CheckNetworkLock, CheckIPForward, CheckUserfaultfd, CheckLazyPages, CheckSoftDirty, CheckPipeMaxSize,
		CheckPageServer, CheckFreePageReporting}
	if !slices.Equal(names, wantNames) {
		t.Errorf("checks %v, want %v", names, wantNames)
	}
	wantRequired := []string{CheckRoot, CheckCRIU, CheckRunc, CheckCgroups, CheckOverlayfs, CheckNetns, CheckNetworkLock}
	if !slices.Equal(required, wantRequired) {
		t.Errorf("required %v, want %v", required, wantRequired)
	}
}

func TestCRIUMessage(t *testing.T) {
	tests := []struct {
		name, stdout, stderr, want string
	}{
		{"verdict on stdout", "Looks good.\n", "Warn  (criu/kerndat.c:1290): Can't keep kdat cache on non-tempfs\n", "Looks good"},
		{
			"warning on stderr", "",
			"Warn  (criu/kerndat.c:1290): Can't keep kdat cache on non-tempfs\nWarn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n",
			"Dirty tracking is OFF. Memory snapshot will not work",
		},
		{
			"several stdout lines joined",
			"CRIU needs to have the CAP_SYS_ADMIN or the CAP_CHECKPOINT_RESTORE capability: \nsetcap cap_checkpoint_restore+eip criu\n", "",
			"CRIU needs to have the CAP_SYS_ADMIN or the CAP_CHECKPOINT_RESTORE capability: setcap cap_checkpoint_restore+eip criu",
		},
		{"stderr without criu prefix kept whole", "", "criu: permission denied\n", "criu: permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := criuMessage(tt.stdout, tt.stderr); got != tt.want {
				t.Errorf("criuMessage = %q, want %q", got, tt.want)
			}
		})
	}
}

func assertCheck(t *testing.T, c Check, status Status, detail []string, fix string) {
	t.Helper()
	if c.Status != status {
		t.Errorf("%s status = %s, want %s (detail %q)", c.Name, c.Status, status, c.Detail)
	}
	for _, d := range detail {
		if !strings.Contains(c.Detail, d) {
			t.Errorf("%s detail %q does not mention %q", c.Name, c.Detail, d)
		}
	}
	if fix == "" && c.Status == StatusPass && c.Fix != "" {
		t.Errorf("%s passed with a fix %q", c.Name, c.Fix)
	}
	if fix != "" && !strings.Contains(c.Fix, fix) {
		t.Errorf("%s fix %q does not mention %q", c.Name, c.Fix, fix)
	}
}

func TestCheckPageServer(t *testing.T) {
	tests := []struct {
		name       string
		edit       func(m *fakeMachine)
		wantStatus Status
		wantDetail string
		wantFix    string
	}{
		{"starts and answers", func(*fakeMachine) {}, StatusPass, "go-criu started a CRIU 4.2.1 page server on 127.0.0.1:41203", ""},
		{"refused", func(m *fakeMachine) { m.pageServer = errors.New("operation failed (msg: err: 1)") }, StatusFail,
			"go-criu could not start a CRIU page server: operation failed", "criu page-server"},
		{"refused as non-root", func(m *fakeMachine) { m.euid = 1000; m.pageServer = errors.New("operation failed") }, StatusFail,
			"could not start", "run godwit doctor as root"},
		{"no criu", func(m *fakeMachine) { delete(m.paths, "criu") }, StatusFail, "criu not found", "install-deps.sh"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthyMachine()
			tt.edit(m)
			c := findCheck(t, m.run(t, Options{}), CheckPageServer)
			assertCheck(t, c, tt.wantStatus, []string{tt.wantDetail}, tt.wantFix)
		})
	}
}

func TestCheckFreePageReporting(t *testing.T) {
	for _, balloon := range []bool{true, false} {
		m := healthyMachine()
		m.balloon = balloon
		c := findCheck(t, m.run(t, Options{}), CheckFreePageReporting)
		if c.Status != StatusPass || c.Required {
			t.Errorf("balloon %v: %s, required %v; want a pass that is not required", balloon, c.Status, c.Required)
		}
		if says := strings.Contains(c.Detail, "faults in the memory"); says != balloon {
			t.Errorf("balloon %v: %q; want it to say moves fault memory in ahead of the freeze only with the balloon", balloon, c.Detail)
		}
	}
}
