package devcluster

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
)

// A detached cluster outlives the process that built it: `godwit dev up`
// builds one and exits, `godwit dev down` removes it. Its record says so,
// because the lock cannot: the lock goes with the process, and a free lock
// beside a record otherwise means an interrupted run, which New sweeps.

// ErrDetached means a cluster of that name runs detached (Detach): New
// refuses the name, and only Remove removes it.
var ErrDetached = errors.New("cluster runs detached")

// Detach leaves the cluster running without this process, for `godwit dev
// up`: its agents and schedulers run on (each in a session of its own),
// and its hosts, bridge, routes and work dir stay. It marks the cluster's
// record detached, so that New of the name refuses it (ErrDetached) rather
// than removing it as an interrupted run's leftovers, and Remove (`godwit
// dev down`) removes it. It then closes this process's handles and
// clients and releases the name: the Cluster is closed afterwards, its
// methods return ErrClosed and Close does nothing. When the record cannot
// be written, Detach changes nothing and the caller still owns the
// cluster (and should Close it).
func (c *Cluster) Detach() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	names := make([]string, 0, len(c.hosts))
	for _, h := range c.hosts {
		names = append(names, h.name)
	}
	// Under c.mu, so that no AddHost rewrites the record meanwhile.
	if err := writeRecord(c.name, record{WorkDir: c.workDir, Hosts: names, Detached: true}); err != nil {
		c.mu.Unlock()
		return err
	}
	c.closed, c.detached = true, true
	hosts := c.hosts
	schedulers := c.schedulers
	c.mu.Unlock()

	for _, h := range hosts {
		if a := h.Agent(); a != nil {
			a.closeConn()
		}
		if s := schedulers[h.name]; s != nil {
			s.closeConn()
		}
		h.closeHandles()
	}
	if c.root != nil {
		c.root.Close()
		c.root = nil
	}
	if c.rootNS.IsOpen() {
		_ = c.rootNS.Close()
	}
	err := c.lock.Close()
	c.lock = nil
	if err != nil {
		return fmt.Errorf("release cluster lock: %w", err)
	}
	c.log.Info("cluster detached: it runs on until removed", "hosts", names)
	return nil
}

// checkNotDetached fails with ErrDetached when the record of the cluster
// named name says it runs detached. The caller holds the cluster's lock.
func checkNotDetached(name string) error {
	rec, err := readRecord(name)
	if err != nil {
		return err
	}
	if rec.Detached {
		return fmt.Errorf("cluster %q: %w (built by `godwit dev up`, work dir %s): remove it with `godwit dev down --name %s`, or pick another name",
			name, ErrDetached, rec.WorkDir, name)
	}
	return nil
}

// Exists reports whether anything of the cluster named name is left on
// this machine: its record, a host's pinned network namespace or its
// bridge. It takes no lock: the answer may be stale by the time it is
// read.
func Exists(name string) (bool, error) {
	if err := validateClusterName(name); err != nil {
		return false, err
	}
	if _, err := os.Stat(recordPath(name)); err == nil {
		return true, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("cluster record: %w", err)
	}
	if len(leftoverHosts(name, record{})) > 0 {
		return true, nil
	}
	_, err := netlink.LinkByName(bridgeName(name))
	if isLinkNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("find bridge %s: %w", bridgeName(name), err)
	}
	return true, nil
}
