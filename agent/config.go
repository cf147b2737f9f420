package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
)

// Config is what an agent needs to start.
type Config struct {
	// Name is the node's name, unique in the cluster.
	Name string
	// DataDir holds everything that must survive a reboot: images,
	// snapshots, container records and logs.
	DataDir string
	// RunDir holds what lives only while the node is up: runc state and
	// network namespace mounts. Defaults to DataDir/run.
	RunDir string
	// Advertise is the address other nodes and the scheduler reach this
	// agent at.
	Advertise string
	// ContainerCIDR is where container addresses come from until the
	// scheduler allocates them cluster-wide.
	ContainerCIDR *net.IPNet
	Labels        map[string]string
	// Snapshotter is "overlay" or "btrfs"; empty detects it from the data
	// dir's filesystem.
	Snapshotter string
	// Self is the path of the godwit binary, re-executed as each
	// container's shim.
	Self string
	// Runc is the runc binary; empty means "runc" from PATH.
	Runc string
	// Fence is the cluster's lease gate (fence.go); nil: standalone.
	Fence Fence
	// Observer hears of migrations and checkpoints, for metrics
	// (observer.go); nil: nobody.
	Observer Observer
	Log      *slog.Logger
}

// DefaultContainerCIDR is the agent's address pool when none is given.
const DefaultContainerCIDR = "10.88.0.0/16"

func (c *Config) setDefaults() error {
	if c.Name == "" {
		return errors.New("node name is empty: pass --name")
	}
	if c.DataDir == "" {
		return errors.New("data dir is empty: pass --data-dir")
	}
	if !filepath.IsAbs(c.DataDir) {
		abs, err := filepath.Abs(c.DataDir)
		if err != nil {
			return fmt.Errorf("data dir %q: %w", c.DataDir, err)
		}
		c.DataDir = abs
	}
	if c.RunDir == "" {
		c.RunDir = filepath.Join(c.DataDir, "run")
	}
	if c.ContainerCIDR == nil {
		_, cidr, err := net.ParseCIDR(DefaultContainerCIDR)
		if err != nil {
			return err
		}
		c.ContainerCIDR = cidr
	}
	if c.Runc == "" {
		c.Runc = "runc"
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

func (c *Config) imagesDir() string      { return filepath.Join(c.DataDir, "images") }
func (c *Config) snapshotsDir() string   { return filepath.Join(c.DataDir, "snapshots") }
func (c *Config) containersDir() string  { return filepath.Join(c.DataDir, "containers") }
func (c *Config) networkDir() string     { return filepath.Join(c.DataDir, "network") }
func (c *Config) checkpointsDir() string { return filepath.Join(c.DataDir, "checkpoints") }
func (c *Config) runcRoot() string       { return filepath.Join(c.RunDir, "runc") }

// cgroupsPath is the container's cgroup under this node's own parent, so
// nodes sharing a kernel never share cgroups.
func (c *Config) cgroupsPath(id string) string { return nodeCgroup(c.Name) + "/" + id }

// shimCgroup holds this node's shims, outside the agent's cgroup (so a
// service manager stopping the agent does not kill them) and outside every
// container's (so they are not counted against a container's limits).
func (c *Config) shimCgroup() string { return nodeCgroup(c.Name) + ".shims" }

func nodeCgroup(node string) string { return "/godwit/" + node }

// NodeCgroups are the cgroups an agent named node keeps for its next
// start once its containers are gone: its shims' and its containers'
// parent, leaves first. Whoever retires the node for good (a test, a
// benchmark, a decommissioning) removes them.
func NodeCgroups(node string) []string {
	return []string{nodeCgroup(node) + ".shims", nodeCgroup(node)}
}
