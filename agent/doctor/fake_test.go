package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// hybridMounts is this project's build machine: cgroup v1 with a v2
// hierarchy beside it.
const hybridMounts = `/dev/vda / ext4 rw,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime,nsdelegate 0 0
`

// fakeMachine describes a host in plain values; host() turns it into the
// function fields the checks call. The zero value of each field is the
// healthy case unless its comment says otherwise.
type fakeMachine struct {
	euid        int
	files       map[string]string    // readFile and stat
	paths       map[string]string    // lookPath: name -> path; absent: not found
	commands    map[string]cmdResult // "name arg ..." -> result; absent: exit 1
	statfs      map[string]int64     // statfsType
	readOnly    map[string]bool      // writable fails
	uffdErr     error                // userfaultfd(2)
	softDirty   bool                 // the kernel sets the bit
	pipeLimit   int                  // setPipeSize fails above it unless capSysRes
	capSysRes   bool                 // CAP_SYS_RESOURCE lifts pipeLimit
	mountErr    error                // overlay test mount
	mountedIn   []string             // where mountOverlay was asked to mount
	pageServer  error                // starting a page server
	criuRPC     int                  // CRIU's version over RPC; zero: 4.2.1
	balloon     bool                 // the memory balloon reports free pages
	ranCommands []string             // every command, in order
}

// healthyMachine can do everything, strategies included.
func healthyMachine() *fakeMachine {
	return &fakeMachine{
		files: map[string]string{
			pathMounts:         hybridMounts,
			pathFilesystems:    "nodev\tproc\nnodev\toverlay\n\tbtrfs\n\text4\n",
			pathNetns:          "",
			pathIPForward:      "0\n",
			pathPipeMaxSize:    "4194304\n",
			pathUnprivUFFD:     "0\n",
			pathDevUserfaultfd: "",
			"/var/lib":         "",
		},
		paths: map[string]string{
			"criu": "/usr/sbin/criu", "runc": "/usr/sbin/runc", "iptables": "/usr/sbin/iptables",
			"iptables-restore": "/usr/sbin/iptables-restore", "ip6tables-restore": "/usr/sbin/ip6tables-restore",
		},
		commands: map[string]cmdResult{
			"/usr/sbin/criu --version":                             {stdout: "Version: 4.2.1\n"},
			"/usr/sbin/criu check":                                 {stdout: "Looks good.\n", stderr: "Warn  (criu/kerndat.c:1290): Can't keep kdat cache on non-tempfs\n"},
			"/usr/sbin/criu check --feature uffd-noncoop":          {stdout: "uffd-noncoop is supported\n"},
			"/usr/sbin/criu check --feature mem_dirty_track":       {stdout: "mem_dirty_track is supported\n"},
			"/usr/sbin/criu check --feature network_lock_nftables": {stdout: "network_lock_nftables is supported\n"},
			"/usr/sbin/runc --version":                             {stdout: "runc version 1.3.6+ds1\ncommit: 1.3.6+ds1-1\nspec: 1.2.1\n"},
			"iptables --version":                                   {stdout: "iptables v1.8.9 (nf_tables)\n"},
		},
		statfs:    map[string]int64{"/var/lib": unix.EXT4_SUPER_MAGIC},
		softDirty: true,
		pipeLimit: 4 << 20,
	}
}

func (m *fakeMachine) host() host {
	return host{
		readFile: func(path string) ([]byte, error) {
			s, ok := m.files[path]
			if !ok {
				return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
			}
			return []byte(s), nil
		},
		stat: func(path string) error {
			if _, ok := m.files[path]; !ok {
				return &fs.PathError{Op: "stat", Path: path, Err: fs.ErrNotExist}
			}
			return nil
		},
		writable: func(path string) error {
			if _, ok := m.files[path]; !ok {
				return unix.ENOENT
			}
			if m.readOnly[path] {
				return unix.EROFS
			}
			return nil
		},
		statfsType: func(path string) (int64, error) {
			t, ok := m.statfs[path]
			if !ok {
				return 0, fmt.Errorf("statfs %s: %w", path, fs.ErrNotExist)
			}
			return t, nil
		},
		lookPath: func(file string) (string, error) {
			if p, ok := m.paths[file]; ok {
				return p, nil
			}
			return "", fmt.Errorf("exec: %q: %w", file, errors.New("executable file not found in $PATH"))
		},
		command: func(_ context.Context, name string, args ...string) (cmdResult, error) {
			line := strings.Join(append([]string{name}, args...), " ")
			m.ranCommands = append(m.ranCommands, line)
			if r, ok := m.commands[line]; ok {
				return r, nil
			}
			return cmdResult{stderr: "fake host: no such command\n", exitCode: 1}, nil
		},
		geteuid:       func() int { return m.euid },
		kernelRelease: func() (string, error) { return "6.18.44-fc-v782", nil },
		userfaultfd:   func() error { return m.uffdErr },
		softDirty:     func() (bool, error) { return m.softDirty, nil },
		setPipeSize: func(size int) error {
			if size > m.pipeLimit && !m.capSysRes {
				return fmt.Errorf("F_SETPIPE_SZ %d: %w", size, unix.EPERM)
			}
			return nil
		},
		mountOverlay: func(dir string) error {
			m.mountedIn = append(m.mountedIn, dir)
			return m.mountErr
		},
		pageServer: func(context.Context, string) (pageServerProbe, error) {
			v := m.criuRPC
			if v == 0 {
				v = 40201
			}
			return pageServerProbe{version: v, port: 41203}, m.pageServer
		},
		freePageReporting: func() bool { return m.balloon },
	}
}

func (m *fakeMachine) run(t *testing.T, o Options) Report {
	t.Helper()
	return run(t.Context(), o, m.host())
}

func findCheck(t *testing.T, r Report, name string) Check {
	t.Helper()
	c, ok := r.Check(name)
	if !ok {
		t.Fatalf("report has no %q check: %+v", name, r.Checks)
	}
	return c
}

func findStrategy(t *testing.T, r Report, name string) Strategy {
	t.Helper()
	s, ok := r.Strategy(name)
	if !ok {
		t.Fatalf("report has no %q strategy: %+v", name, r.Strategies)
	}
	return s
}
