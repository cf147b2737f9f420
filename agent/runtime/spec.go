package runtime

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// Annotation keys godwit writes into every spec, so that a restarted agent
// can tell from runc's state alone whose container it is.
const (
	AnnotationID          = "org.godwit.id"
	AnnotationName        = "org.godwit.name"
	LabelAnnotationPrefix = "org.godwit.label."
)

const (
	// DefaultPath is the PATH a container gets when its env has none, the
	// same as runc's and Docker's defaults.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

	// cpuPeriodUsec is the CFS period the CPU quota is expressed against;
	// 100 ms is the kernel's default period.
	cpuPeriodUsec = 100000
	// minCPUQuotaUsec is the smallest CFS quota the kernel accepts (1 ms).
	minCPUQuotaUsec = 1000
	// minMemoryBytes is the smallest memory limit with which runc and a
	// shell can still start in the container; smaller limits OOM at once.
	minMemoryBytes = 6 << 20
	// maxHostnameLen is the kernel's limit on a UTS hostname.
	maxHostnameLen = 64
	// shortIDLen is how much of the container id a default hostname uses.
	shortIDLen = 12

	// nofileSoft and nofileHard follow systemd's and containerd's defaults:
	// a soft limit of 1024 keeps programs that close every possible fd at
	// start-up fast, and the hard limit lets servers raise it themselves.
	// Both are capped at the agent's own hard limit (see nofileLimit).
	nofileSoft = 1024
	nofileHard = 524288

	// devTmpfsSize and shmSize are the sizes runc's default spec gives the
	// container's /dev and /dev/shm tmpfs mounts.
	devTmpfsSize = "size=65536k"
	shmSize      = "size=65536k"
)

// SpecOptions is what the agent was asked to run, already resolved against
// the image's defaults (args, env, working dir, user).
type SpecOptions struct {
	// ID is the container id (also runc's id); Name its human name.
	ID, Name string
	// Args is the command line; it must not be empty.
	Args []string
	// Env holds KEY=VALUE entries; PATH defaults to DefaultPath and HOME to
	// the user's home directory when missing.
	Env []string
	// Cwd is the absolute working directory; "" means "/".
	Cwd string
	// Hostname defaults to Name, else the first 12 characters of ID.
	Hostname string
	// User is "uid[:gid]", "name[:group]" or "root"; "" means root. Names
	// are looked up in the rootfs's /etc/passwd and /etc/group.
	User string
	// CPUs is how many CPUs the container may use (0.5 is half of one);
	// 0 means unlimited.
	CPUs float64
	// MemoryBytes is the memory limit; 0 means unlimited.
	MemoryBytes int64
	// Labels become annotations "org.godwit.label.<key>".
	Labels map[string]string
	// RootfsPath is the absolute path of the already mounted root
	// filesystem; the container writes to it.
	RootfsPath string
	// NetnsPath is the path of a network namespace bind mount for the
	// container to join; "" gives it a new, empty network namespace.
	NetnsPath string
	// CgroupsPath is the container's cgroup path for runc's cgroupfs
	// driver, such as "/godwit/<node>/<id>"; "" leaves the choice to runc.
	CgroupsPath string
	// Annotations are added as they are, after the labels (for example
	// "org.criu.config").
	Annotations map[string]string
}

// GenerateSpec turns o into a spec that runc runs as root without a
// terminal: the default mounts, runc's default capabilities, masked and
// read-only paths, new PID, IPC, UTS and mount namespaces plus the network
// namespace o names, no user namespace, and the CPU and memory limits. It
// reads the rootfs only to resolve user and group names. Invalid options
// give an error wrapping ErrInvalidSpec that names the field.
func GenerateSpec(o SpecOptions) (*specs.Spec, error) {
	if len(o.Args) == 0 || o.Args[0] == "" {
		return nil, fmt.Errorf("%w: args are empty: give the command to run", ErrInvalidSpec)
	}
	if o.RootfsPath == "" || !filepath.IsAbs(o.RootfsPath) {
		return nil, fmt.Errorf("%w: rootfs path %q is not absolute", ErrInvalidSpec, o.RootfsPath)
	}
	cwd := o.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("%w: working directory %q is not absolute", ErrInvalidSpec, o.Cwd)
	}
	if o.NetnsPath != "" && !filepath.IsAbs(o.NetnsPath) {
		return nil, fmt.Errorf("%w: network namespace path %q is not absolute", ErrInvalidSpec, o.NetnsPath)
	}
	if o.CgroupsPath != "" && !filepath.IsAbs(o.CgroupsPath) {
		return nil, fmt.Errorf("%w: cgroups path %q is not absolute", ErrInvalidSpec, o.CgroupsPath)
	}
	hostname, err := hostnameFor(o)
	if err != nil {
		return nil, err
	}
	user, home, err := resolveUser(o.RootfsPath, o.User)
	if err != nil {
		return nil, err
	}
	env, err := containerEnv(o.Env, home)
	if err != nil {
		return nil, err
	}
	resources, err := resourcesFor(o.CPUs, o.MemoryBytes)
	if err != nil {
		return nil, err
	}
	annotations, err := annotationsFor(o)
	if err != nil {
		return nil, err
	}

	caps := defaultCapabilities()
	s := &specs.Spec{
		Version: specs.Version,
		Process: &specs.Process{
			Terminal: false,
			User:     user,
			Args:     append([]string(nil), o.Args...),
			Env:      env,
			Cwd:      cwd,
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  caps,
				Effective: caps,
				Permitted: caps,
			},
			Rlimits:         []specs.POSIXRlimit{nofileLimit()},
			NoNewPrivileges: true,
		},
		Root:        &specs.Root{Path: o.RootfsPath, Readonly: false},
		Hostname:    hostname,
		Mounts:      defaultMounts(),
		Annotations: annotations,
		Linux: &specs.Linux{
			CgroupsPath: o.CgroupsPath,
			Resources:   resources,
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.NetworkNamespace, Path: o.NetnsPath},
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi",
				"/proc/asound",
				"/proc/kcore",
				"/proc/keys",
				"/proc/latency_stats",
				"/proc/timer_list",
				"/proc/timer_stats",
				"/proc/sched_debug",
				"/proc/scsi",
				"/sys/firmware",
				"/sys/devices/virtual/powercap",
			},
			ReadonlyPaths: []string{
				"/proc/bus",
				"/proc/fs",
				"/proc/irq",
				"/proc/sys",
				"/proc/sysrq-trigger",
			},
		},
	}
	return s, nil
}

// nofileLimit is the container's RLIMIT_NOFILE: the defaults, capped at the
// agent's own hard limit, which runc inherits through the shim and cannot
// raise without CAP_SYS_RESOURCE (root in a container often lacks it).
func nofileLimit() specs.POSIXRlimit {
	hard := uint64(nofileHard)
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &cur); err == nil && cur.Max < hard {
		hard = cur.Max
	}
	return specs.POSIXRlimit{Type: "RLIMIT_NOFILE", Hard: hard, Soft: min(nofileSoft, hard)}
}

// defaultCapabilities are the capabilities of runc's default spec: enough
// for a root process to bind low ports and signal its own processes, and
// nothing that reaches beyond the container.
func defaultCapabilities() []string {
	return []string{"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
}

// defaultMounts are the mounts of runc's default spec. None of them is a
// bind mount of a host path, which keeps the container checkpointable
// without external mount mappings.
func defaultMounts() []specs.Mount {
	return []specs.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc"},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs",
			Options: []string{"nosuid", "strictatime", "mode=755", devTmpfsSize}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts",
			Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", shmSize}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue",
			Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs",
			Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup",
			Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
}

func hostnameFor(o SpecOptions) (string, error) {
	if o.Hostname != "" {
		if len(o.Hostname) > maxHostnameLen {
			return "", fmt.Errorf("%w: hostname %q is longer than %d characters", ErrInvalidSpec, o.Hostname, maxHostnameLen)
		}
		return o.Hostname, nil
	}
	h := o.Name
	if h == "" {
		h = o.ID
		if len(h) > shortIDLen {
			h = h[:shortIDLen]
		}
	}
	if len(h) > maxHostnameLen {
		h = h[:maxHostnameLen]
	}
	return h, nil
}

// containerEnv validates env and adds PATH and HOME when they are missing.
func containerEnv(in []string, home string) ([]string, error) {
	env := make([]string, 0, len(in)+2)
	var hasPath, hasHome bool
	for _, kv := range in {
		k, _, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: environment entry %q is not KEY=VALUE", ErrInvalidSpec, kv)
		}
		switch k {
		case "PATH":
			hasPath = true
		case "HOME":
			hasHome = true
		}
		env = append(env, kv)
	}
	if !hasPath {
		env = append(env, "PATH="+DefaultPath)
	}
	if !hasHome {
		env = append(env, "HOME="+home)
	}
	return env, nil
}

func resourcesFor(cpus float64, memory int64) (*specs.LinuxResources, error) {
	r := &specs.LinuxResources{
		// Deny every device; runc then allows its default set (null, zero,
		// full, random, urandom, tty, ptmx).
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
	}
	if math.IsNaN(cpus) || math.IsInf(cpus, 0) || cpus < 0 {
		return nil, fmt.Errorf("%w: cpus %v must be a non-negative number", ErrInvalidSpec, cpus)
	}
	if cpus > 0 {
		quota := int64(math.Round(cpus * cpuPeriodUsec))
		if quota < minCPUQuotaUsec {
			return nil, fmt.Errorf("%w: cpus %v is below the kernel's minimum of %v",
				ErrInvalidSpec, cpus, float64(minCPUQuotaUsec)/cpuPeriodUsec)
		}
		period := uint64(cpuPeriodUsec)
		r.CPU = &specs.LinuxCPU{Quota: &quota, Period: &period}
	}
	if memory < 0 {
		return nil, fmt.Errorf("%w: memory limit %d must not be negative", ErrInvalidSpec, memory)
	}
	if memory > 0 {
		if memory < minMemoryBytes {
			return nil, fmt.Errorf("%w: memory limit %d bytes is below the minimum of %d bytes (6 MiB)",
				ErrInvalidSpec, memory, minMemoryBytes)
		}
		limit := memory
		r.Memory = &specs.LinuxMemory{Limit: &limit}
	}
	return r, nil
}

func annotationsFor(o SpecOptions) (map[string]string, error) {
	a := make(map[string]string, len(o.Labels)+len(o.Annotations)+2)
	if o.ID != "" {
		a[AnnotationID] = o.ID
	}
	if o.Name != "" {
		a[AnnotationName] = o.Name
	}
	for k, v := range o.Labels {
		if k == "" {
			return nil, fmt.Errorf("%w: a label has an empty key", ErrInvalidSpec)
		}
		a[LabelAnnotationPrefix+k] = v
	}
	for k, v := range o.Annotations {
		if k == "" {
			return nil, fmt.Errorf("%w: an annotation has an empty key", ErrInvalidSpec)
		}
		a[k] = v
	}
	return a, nil
}

// LabelsFromAnnotations returns the labels GenerateSpec stored in a spec's
// annotations, for an agent that rebuilds its view from runc's state.
func LabelsFromAnnotations(a map[string]string) map[string]string {
	labels := make(map[string]string)
	for k, v := range a {
		if name, ok := strings.CutPrefix(k, LabelAnnotationPrefix); ok {
			labels[name] = v
		}
	}
	return labels
}

// WriteBundle writes s as dir/config.json, creating dir if needed. The file
// is replaced atomically, so runc never reads a half-written config. The
// spec's root path must be absolute: the bundle does not contain the
// rootfs, it points at the mounted snapshot.
func WriteBundle(dir string, s *specs.Spec) error {
	if s == nil || s.Root == nil || !filepath.IsAbs(s.Root.Path) {
		return fmt.Errorf("%w: bundle %s: the spec's root path must be absolute", ErrInvalidSpec, dir)
	}
	data, err := json.MarshalIndent(s, "", "\t")
	if err != nil {
		return fmt.Errorf("encode spec for bundle %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bundle %s: %w", dir, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		return fmt.Errorf("write bundle %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it and
// renames it over path, so readers see the old content or the new, never a
// part.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	cleanup := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		return cleanup(err)
	}
	if err := f.Chmod(perm); err != nil {
		return cleanup(err)
	}
	if err := f.Sync(); err != nil {
		return cleanup(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

// ReadBundle reads the spec of the bundle in dir (see WriteBundle).
func ReadBundle(dir string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("read bundle %s: %w", dir, err)
	}
	return ParseSpec(data)
}

// ParseSpec decodes an OCI runtime spec written by GenerateSpec (it may come
// from a checkpoint made on another node) and checks the parts Relocate
// and restore depend on.
func ParseSpec(data []byte) (*specs.Spec, error) {
	var s specs.Spec
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if s.Process == nil || len(s.Process.Args) == 0 || s.Root == nil || s.Linux == nil {
		return nil, fmt.Errorf("%w: the spec has no process, root or linux section", ErrInvalidSpec)
	}
	return &s, nil
}

// Relocation is where a spec's node-local paths point on the node that
// runs it.
type Relocation struct {
	ID, Name    string
	RootfsPath  string
	NetnsPath   string
	CgroupsPath string
}

// Relocate points s at another node's (or another container's) paths,
// keeping everything the process sees (arguments, environment, user,
// limits, mounts): a checkpoint's spec is restored where the images expect
// the same process, but the paths of the node that dumped it mean nothing
// where it is restored.
func Relocate(s *specs.Spec, r Relocation) error {
	switch {
	case !filepath.IsAbs(r.RootfsPath):
		return fmt.Errorf("%w: rootfs path %q is not absolute", ErrInvalidSpec, r.RootfsPath)
	case !filepath.IsAbs(r.CgroupsPath):
		return fmt.Errorf("%w: cgroups path %q is not absolute", ErrInvalidSpec, r.CgroupsPath)
	case s.Root == nil || s.Linux == nil:
		return fmt.Errorf("%w: the spec has no root or linux section", ErrInvalidSpec)
	}
	s.Root.Path = r.RootfsPath
	s.Linux.CgroupsPath = r.CgroupsPath
	found := false
	for i := range s.Linux.Namespaces {
		if s.Linux.Namespaces[i].Type == specs.NetworkNamespace {
			s.Linux.Namespaces[i].Path = r.NetnsPath
			found = true
		}
	}
	if !found {
		return fmt.Errorf("%w: the spec has no network namespace", ErrInvalidSpec)
	}
	if s.Annotations == nil {
		s.Annotations = map[string]string{}
	}
	s.Annotations[AnnotationID] = r.ID
	s.Annotations[AnnotationName] = r.Name
	return nil
}
