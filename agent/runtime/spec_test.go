package runtime

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// baseOptions is a valid request every case starts from.
func baseOptions(t *testing.T) SpecOptions {
	t.Helper()
	return SpecOptions{
		ID:         "0123456789abcdef0123",
		Name:       "web",
		Args:       []string{"sh", "-c", "sleep 1"},
		RootfsPath: t.TempDir(),
	}
}

func TestGenerateSpec(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*SpecOptions)
		check  func(*testing.T, *specs.Spec)
	}{
		{
			name:   "no limits leaves resources unlimited",
			modify: func(*SpecOptions) {},
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.Resources.CPU != nil || s.Linux.Resources.Memory != nil {
					t.Errorf("cpu %+v memory %+v, want both unset", s.Linux.Resources.CPU, s.Linux.Resources.Memory)
				}
			},
		},
		{
			name: "half a cpu is a 50ms quota per 100ms period",
			modify: func(o *SpecOptions) {
				o.CPUs = 0.5
			},
			check: func(t *testing.T, s *specs.Spec) {
				cpu := s.Linux.Resources.CPU
				if cpu == nil || *cpu.Quota != 50000 || *cpu.Period != 100000 {
					t.Errorf("cpu = %+v, want quota 50000 period 100000", cpu)
				}
			},
		},
		{
			name:   "two cpus",
			modify: func(o *SpecOptions) { o.CPUs = 2 },
			check: func(t *testing.T, s *specs.Spec) {
				if q := *s.Linux.Resources.CPU.Quota; q != 200000 {
					t.Errorf("quota = %d, want 200000", q)
				}
			},
		},
		{
			name:   "memory limit in bytes",
			modify: func(o *SpecOptions) { o.MemoryBytes = 64 << 20 },
			check: func(t *testing.T, s *specs.Spec) {
				if m := s.Linux.Resources.Memory; m == nil || *m.Limit != 64<<20 {
					t.Errorf("memory = %+v, want limit %d", m, 64<<20)
				}
			},
		},
		{
			name: "labels and extra annotations",
			modify: func(o *SpecOptions) {
				o.Labels = map[string]string{"tier": "web", "team": "core"}
				o.Annotations = map[string]string{"org.criu.config": "/run/criu.conf"}
			},
			check: func(t *testing.T, s *specs.Spec) {
				want := map[string]string{
					"org.godwit.label.tier": "web",
					"org.godwit.label.team": "core",
					"org.criu.config":       "/run/criu.conf",
					AnnotationID:            "0123456789abcdef0123",
					AnnotationName:          "web",
				}
				for k, v := range want {
					if s.Annotations[k] != v {
						t.Errorf("annotation %s = %q, want %q", k, s.Annotations[k], v)
					}
				}
				labels := LabelsFromAnnotations(s.Annotations)
				if len(labels) != 2 || labels["tier"] != "web" || labels["team"] != "core" {
					t.Errorf("LabelsFromAnnotations = %v, want the two labels back", labels)
				}
			},
		},
		{
			name:   "network namespace by path",
			modify: func(o *SpecOptions) { o.NetnsPath = "/run/godwit/n1/netns/c1" },
			check: func(t *testing.T, s *specs.Spec) {
				if got := namespacePath(s, specs.NetworkNamespace); got != "/run/godwit/n1/netns/c1" {
					t.Errorf("network namespace path = %q", got)
				}
			},
		},
		{
			name:   "without a netns path runc makes a new one",
			modify: func(*SpecOptions) {},
			check: func(t *testing.T, s *specs.Spec) {
				if !hasNamespace(s, specs.NetworkNamespace) || namespacePath(s, specs.NetworkNamespace) != "" {
					t.Errorf("namespaces = %+v, want a new network namespace", s.Linux.Namespaces)
				}
			},
		},
		{
			name:   "isolation namespaces and no user namespace",
			modify: func(*SpecOptions) {},
			check: func(t *testing.T, s *specs.Spec) {
				for _, ns := range []specs.LinuxNamespaceType{specs.PIDNamespace, specs.IPCNamespace, specs.UTSNamespace, specs.MountNamespace} {
					if !hasNamespace(s, ns) {
						t.Errorf("missing %s namespace", ns)
					}
				}
				if hasNamespace(s, specs.UserNamespace) {
					t.Error("has a user namespace")
				}
			},
		},
		{
			name:   "cgroups path passed through",
			modify: func(o *SpecOptions) { o.CgroupsPath = "/godwit/n1/abc" },
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.CgroupsPath != "/godwit/n1/abc" {
					t.Errorf("cgroups path = %q", s.Linux.CgroupsPath)
				}
			},
		},
		{
			name:   "PATH and HOME are added when missing",
			modify: func(o *SpecOptions) { o.Env = []string{"A=1"} },
			check: func(t *testing.T, s *specs.Spec) {
				want := []string{"A=1", "PATH=" + DefaultPath, "HOME=/root"}
				if !slices.Equal(s.Process.Env, want) {
					t.Errorf("env = %v, want %v", s.Process.Env, want)
				}
			},
		},
		{
			name:   "a given PATH is kept",
			modify: func(o *SpecOptions) { o.Env = []string{"PATH=/opt/bin", "HOME=/data"} },
			check: func(t *testing.T, s *specs.Spec) {
				if !slices.Equal(s.Process.Env, []string{"PATH=/opt/bin", "HOME=/data"}) {
					t.Errorf("env = %v", s.Process.Env)
				}
			},
		},
		{
			name:   "hostname defaults to the name",
			modify: func(*SpecOptions) {},
			check: func(t *testing.T, s *specs.Spec) {
				if s.Hostname != "web" {
					t.Errorf("hostname = %q, want web", s.Hostname)
				}
			},
		},
		{
			name:   "hostname defaults to the short id without a name",
			modify: func(o *SpecOptions) { o.Name = "" },
			check: func(t *testing.T, s *specs.Spec) {
				if s.Hostname != "0123456789ab" {
					t.Errorf("hostname = %q, want 0123456789ab", s.Hostname)
				}
			},
		},
		{
			name:   "explicit hostname and cwd",
			modify: func(o *SpecOptions) { o.Hostname = "db-1"; o.Cwd = "/srv" },
			check: func(t *testing.T, s *specs.Spec) {
				if s.Hostname != "db-1" || s.Process.Cwd != "/srv" {
					t.Errorf("hostname %q cwd %q", s.Hostname, s.Process.Cwd)
				}
			},
		},
		{
			name:   "runs as root without a terminal, like runc's defaults",
			modify: func(*SpecOptions) {},
			check: func(t *testing.T, s *specs.Spec) {
				p := s.Process
				if p.Terminal || p.User.UID != 0 || p.User.GID != 0 || p.Cwd != "/" || !p.NoNewPrivileges {
					t.Errorf("process = %+v", p)
				}
				if !slices.Equal(p.Capabilities.Bounding, []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}) {
					t.Errorf("capabilities = %v", p.Capabilities.Bounding)
				}
				// runc cannot raise the hard limit above the agent's own.
				var own unix.Rlimit
				if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &own); err != nil {
					t.Fatal(err)
				}
				if len(p.Rlimits) != 1 || p.Rlimits[0].Type != "RLIMIT_NOFILE" ||
					p.Rlimits[0].Hard > own.Max || p.Rlimits[0].Soft > p.Rlimits[0].Hard || p.Rlimits[0].Soft == 0 {
					t.Errorf("rlimits = %+v, want NOFILE within the agent's hard limit %d", p.Rlimits, own.Max)
				}
				if s.Root.Readonly || !filepath.IsAbs(s.Root.Path) {
					t.Errorf("root = %+v, want a writable absolute rootfs", s.Root)
				}
				var dests []string
				for _, m := range s.Mounts {
					dests = append(dests, m.Destination)
				}
				for _, d := range []string{"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"} {
					if !slices.Contains(dests, d) {
						t.Errorf("no %s mount in %v", d, dests)
					}
				}
				if !slices.Contains(s.Linux.MaskedPaths, "/proc/kcore") || !slices.Contains(s.Linux.ReadonlyPaths, "/proc/sys") {
					t.Errorf("masked %v readonly %v", s.Linux.MaskedPaths, s.Linux.ReadonlyPaths)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions(t)
			tc.modify(&o)
			s, err := GenerateSpec(o)
			if err != nil {
				t.Fatalf("GenerateSpec: %v", err)
			}
			tc.check(t, s)
		})
	}
}

func TestGenerateSpecErrors(t *testing.T) {
	tests := []struct {
		name     string
		modify   func(*SpecOptions)
		wantText string
	}{
		{"empty args", func(o *SpecOptions) { o.Args = nil }, "args are empty"},
		{"empty program", func(o *SpecOptions) { o.Args = []string{""} }, "args are empty"},
		{"relative rootfs", func(o *SpecOptions) { o.RootfsPath = "rootfs" }, "not absolute"},
		{"missing rootfs", func(o *SpecOptions) { o.RootfsPath = "" }, "not absolute"},
		{"relative cwd", func(o *SpecOptions) { o.Cwd = "srv" }, "working directory"},
		{"relative netns", func(o *SpecOptions) { o.NetnsPath = "netns/c1" }, "network namespace"},
		{"negative cpus", func(o *SpecOptions) { o.CPUs = -1 }, "cpus"},
		{"too few cpus", func(o *SpecOptions) { o.CPUs = 0.001 }, "minimum"},
		{"negative memory", func(o *SpecOptions) { o.MemoryBytes = -1 }, "memory"},
		{"too little memory", func(o *SpecOptions) { o.MemoryBytes = 1 << 20 }, "minimum"},
		{"bad env entry", func(o *SpecOptions) { o.Env = []string{"NOVALUE"} }, "KEY=VALUE"},
		{"empty label key", func(o *SpecOptions) { o.Labels = map[string]string{"": "x"} }, "label"},
		{"long hostname", func(o *SpecOptions) { o.Hostname = strings.Repeat("h", 65) }, "hostname"},
		{"unknown user name", func(o *SpecOptions) { o.User = "nobody" }, "not in the image's /etc/passwd"},
		{"uid out of range", func(o *SpecOptions) { o.User = "4294967295" }, "out of range"},
		{"empty group", func(o *SpecOptions) { o.User = "1000:" }, "uid[:gid]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions(t)
			tc.modify(&o)
			_, err := GenerateSpec(o)
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("err = %v, want ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("err = %q, want it to mention %q", err, tc.wantText)
			}
		})
	}
}

func TestGenerateSpecUser(t *testing.T) {
	rootfs := t.TempDir()
	writeFile(t, filepath.Join(rootfs, "etc/passwd"), strings.Join([]string{
		"root:x:0:0:root:/root:/bin/sh",
		"# a comment",
		"app:x:1000:1000:app:/home/app:/bin/sh",
		"svc:x:1001:1001::/srv:/bin/false",
	}, "\n")+"\n")
	writeFile(t, filepath.Join(rootfs, "etc/group"), strings.Join([]string{
		"root:x:0:",
		"app:x:1000:",
		"svc:x:1001:",
		"staff:x:50:app,svc",
		"audio:x:29:app",
	}, "\n")+"\n")

	tests := []struct {
		name     string
		rootfs   string
		user     string
		wantUID  uint32
		wantGID  uint32
		wantAdd  []uint32
		wantHome string
	}{
		{"default is root", rootfs, "", 0, 0, nil, "/root"},
		{"root by name", rootfs, "root", 0, 0, nil, "/root"},
		{"numeric uid takes gid from passwd", rootfs, "1000", 1000, 1000, []uint32{50, 29}, "/home/app"},
		{"numeric uid and gid", rootfs, "1000:50", 1000, 50, []uint32{29}, "/home/app"},
		{"unknown numeric uid", rootfs, "4242", 4242, 0, nil, "/"},
		{"unknown numeric uid and gid", rootfs, "4242:4243", 4242, 4243, nil, "/"},
		{"name", rootfs, "svc", 1001, 1001, []uint32{50}, "/srv"},
		{"name and group name", rootfs, "app:staff", 1000, 50, []uint32{29}, "/home/app"},
		{"root without passwd", t.TempDir(), "root", 0, 0, nil, "/root"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions(t)
			o.RootfsPath, o.User = tc.rootfs, tc.user
			s, err := GenerateSpec(o)
			if err != nil {
				t.Fatalf("GenerateSpec: %v", err)
			}
			u := s.Process.User
			if u.UID != tc.wantUID || u.GID != tc.wantGID || !slices.Equal(u.AdditionalGids, tc.wantAdd) {
				t.Errorf("user = %+v, want uid %d gid %d additional %v", u, tc.wantUID, tc.wantGID, tc.wantAdd)
			}
			if !slices.Contains(s.Process.Env, "HOME="+tc.wantHome) {
				t.Errorf("env = %v, want HOME=%s", s.Process.Env, tc.wantHome)
			}
		})
	}

	t.Run("passwd symlink to the host's is resolved inside the rootfs", func(t *testing.T) {
		// The host's /etc/passwd has "daemon"; a hostile image links to it.
		escaping := t.TempDir()
		if err := os.MkdirAll(filepath.Join(escaping, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/proc/self/root/etc/passwd", filepath.Join(escaping, "etc/passwd")); err != nil {
			t.Fatal(err)
		}
		o := baseOptions(t)
		o.RootfsPath, o.User = escaping, "daemon"
		if _, err := GenerateSpec(o); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("err = %v, want ErrInvalidSpec: the host's passwd must not be read", err)
		}
	})

	t.Run("unknown group name", func(t *testing.T) {
		o := baseOptions(t)
		o.RootfsPath, o.User = rootfs, "app:wheel"
		if _, err := GenerateSpec(o); !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "wheel") {
			t.Errorf("err = %v, want ErrInvalidSpec naming the group", err)
		}
	})
}

func TestWriteBundle(t *testing.T) {
	s, err := GenerateSpec(baseOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "bundle")

	t.Run("writes config.json and replaces it whole", func(t *testing.T) {
		for _, hostname := range []string{"first", "second"} {
			s.Hostname = hostname
			if err := WriteBundle(dir, s); err != nil {
				t.Fatalf("WriteBundle: %v", err)
			}
		}
		data, err := os.ReadFile(filepath.Join(dir, "config.json"))
		if err != nil {
			t.Fatal(err)
		}
		var back specs.Spec
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("config.json is not a spec: %v", err)
		}
		if back.Hostname != "second" || back.Root.Path != s.Root.Path {
			t.Errorf("read back hostname %q root %q", back.Hostname, back.Root.Path)
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 1 {
			t.Errorf("bundle holds %v, want only config.json (no temporary files)", entries)
		}
	})

	t.Run("relative rootfs is refused", func(t *testing.T) {
		bad := *s
		bad.Root = &specs.Root{Path: "rootfs"}
		if err := WriteBundle(t.TempDir(), &bad); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("err = %v, want ErrInvalidSpec", err)
		}
	})
}

func hasNamespace(s *specs.Spec, typ specs.LinuxNamespaceType) bool {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == typ {
			return true
		}
	}
	return false
}

func namespacePath(s *specs.Spec, typ specs.LinuxNamespaceType) string {
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == typ {
			return ns.Path
		}
	}
	return ""
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
