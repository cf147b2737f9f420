package state

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Txn is a write transaction, handed to the function given to
// Store.Write. It reads its own writes (new containers and usage rows
// wait in a buffer until the write commits: see pending). Every Put but
// PutContainerOwned stores a deep copy of what it is given, so the caller
// may keep and reuse its value; records read from the Txn are shared and
// must not be modified (Clone first).
//
// A method that refuses (an error wrapping ErrNotFound, ErrNameTaken,
// ErrAddressTaken, ErrNoClusterCIDR or ErrCIDRFull) has changed nothing,
// so the caller may go on with the rest of its command. Any other error
// means the transaction may be half done: return it from the function so
// that the whole write is dropped.
type Txn struct {
	reader
	index   uint64
	at      time.Time
	ipHint  netip.Addr
	touched []string
	events  []Event
}

// WriteIndex returns the raft index this transaction writes at.
func (t *Txn) WriteIndex() uint64 { return t.index }

// Time returns the leader's time of the command being applied.
func (t *Txn) Time() time.Time { return t.at }

// Emit records an event of this write; it joins the ring if the write
// commits.
func (t *Txn) Emit(kind, node, container, message string) {
	t.events = append(t.events, Event{
		Index: t.index, Time: t.at, Kind: kind, Node: node, Container: container, Message: message,
	})
}

// EmitEvent records e as an event of this write, with the write's index
// and time in place of e's: for events that name more than a node and a
// container (a migration).
func (t *Txn) EmitEvent(e Event) {
	e.Index, e.Time = t.index, t.at
	t.events = append(t.events, e)
}

func (t *Txn) touch(table string) {
	if !slices.Contains(t.touched, table) {
		t.touched = append(t.touched, table)
	}
}

// SetConfig replaces the cluster's settings.
func (t *Txn) SetConfig(c Config) error {
	if err := t.tx.Insert(TableConfig, &configRecord{Key: configKey, Config: c}); err != nil {
		return fmt.Errorf("store config: %w", err)
	}
	t.p.config, t.p.configRead = c, true
	// The hint belongs to the old CIDR.
	t.ipHint = netip.Addr{}
	t.touch(TableConfig)
	return nil
}

// PutNode inserts or replaces the node with n's name.
func (t *Txn) PutNode(n *Node) error {
	if err := t.tx.Insert(TableNodes, n.Clone()); err != nil {
		return fmt.Errorf("store node %q: %w", n.Name, err)
	}
	t.touch(TableNodes)
	return nil
}

// DeleteNode removes the node and the images it held. It does not look at
// containers: the caller decides what becomes of them.
func (t *Txn) DeleteNode(name string) error {
	n, ok := t.Node(name)
	if !ok {
		return fmt.Errorf("node %q %w", name, ErrNotFound)
	}
	if err := t.tx.Delete(TableNodes, n); err != nil {
		return fmt.Errorf("delete node %q: %w", name, err)
	}
	t.touch(TableNodes)
	removed, err := t.tx.DeleteAll(TableImages, indexNode, name)
	if err != nil {
		return fmt.Errorf("delete images of node %q: %w", name, err)
	}
	if removed > 0 {
		t.touch(TableImages)
	}
	return nil
}

// PutContainer inserts or replaces the container with c's ID. It refuses
// a name or an address that another container holds.
func (t *Txn) PutContainer(c *Container) error {
	old, err := t.checkContainer(c)
	if err != nil {
		return err
	}
	return t.storeContainer(old, c.Clone())
}

// PutContainerOwned is PutContainer without the copy: the store keeps c
// itself, shared from then on by every snapshot that sees it, so neither
// c nor anything it refers to (its spec's slices and maps) may be
// changed afterwards, by the caller or anyone it hands c to. For a
// container the caller has just built or cloned.
func (t *Txn) PutContainerOwned(c *Container) error {
	old, err := t.checkContainer(c)
	if err != nil {
		return err
	}
	return t.storeContainer(old, c)
}

// checkContainer refuses c's name or address when another container
// holds it, and returns the container c replaces, if any.
func (t *Txn) checkContainer(c *Container) (*Container, error) {
	if other, ok := t.ContainerByName(c.Name); ok && other.ID != c.ID {
		return nil, fmt.Errorf("container name %q %w by %s: choose another name or remove that container", c.Name, ErrNameTaken, other.ID)
	}
	if c.IP.IsValid() {
		if other, ok := t.first(TableContainers, indexIP, c.IP).(*Container); ok && other.ID != c.ID {
			return nil, fmt.Errorf("address %s %w by container %s", c.IP, ErrAddressTaken, other.ID)
		}
	}
	old, _ := t.ContainerByID(c.ID)
	return old, nil
}

// storeContainer puts stored, which replaces old (nil for a new
// container): a new container waits in the buffer until the transaction
// commits (see pending), a changed one goes to memdb at once.
func (t *Txn) storeContainer(old, stored *Container) error {
	switch {
	case old == nil && bufferable(stored):
		t.p.add(stored)
	default:
		if old != nil && t.p.holds(old.ID) {
			t.p.flush(t.tx)
		}
		if err := t.tx.Insert(TableContainers, stored); err != nil {
			return fmt.Errorf("store container %s: %w", stored.ID, err)
		}
	}
	t.p.stored()
	t.touch(TableContainers)
	if old != nil && old.IP.IsValid() && old.IP != stored.IP {
		t.addressFreed(old.IP)
	}
	if stored.IP.IsValid() && stored.IP == t.ipHint {
		t.ipHint = stored.IP.Next()
	}
	t.updateUsage(old, stored)
	return nil
}

// DeleteContainer removes the container; its address is free again.
func (t *Txn) DeleteContainer(id string) error {
	old, ok := t.ContainerByID(id)
	if !ok {
		return fmt.Errorf("container %s %w", id, ErrNotFound)
	}
	if t.p.holds(id) {
		t.p.flush(t.tx)
	}
	if err := t.tx.Delete(TableContainers, old); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	t.touch(TableContainers)
	if old.IP.IsValid() {
		t.addressFreed(old.IP)
	}
	t.updateUsage(old, nil)
	return nil
}

// reserves reports whether c holds its request on its node (see
// Allocated for why).
func reserves(c *Container) bool {
	return c.Desired == DesiredRunning && c.Reported != ReportedLost
}

// updateUsage moves the usage of the node(s) from what old added to what
// c adds (either may be nil). The rows change in the transaction's buffer
// (pending), which writes each changed row once, at commit.
func (t *Txn) updateUsage(old, c *Container) {
	if old != nil {
		t.addUsage(old, -1)
	}
	if c != nil {
		t.addUsage(c, 1)
	}
}

func (t *Txn) addUsage(c *Container, sign int64) {
	u := t.p.usageRow(t.tx, c.Node)
	u.Count += int(sign)
	if reserves(c) {
		req := c.Spec.Request.Effective()
		u.Reserved.MilliCPU += sign * req.MilliCPU
		u.Reserved.MemoryBytes += sign * req.MemoryBytes
	}
}

// SetImages makes images the node's whole list of images (each one's
// Node is set to node). It returns the names added and removed, sorted;
// an image whose ID or content changed under the same name is neither.
// Names must be unique and non-empty: the caller validates.
func (t *Txn) SetImages(node string, images []Image) (added, removed []string, err error) {
	old := map[string]*Image{}
	for _, img := range t.Images(node) {
		old[img.Name] = img
	}
	keep := map[string]bool{}
	for i := range images {
		img := images[i].Clone()
		img.Node = node
		keep[img.Name] = true
		prev, had := old[img.Name]
		if had && sameImage(prev, img) {
			continue
		}
		if !had {
			added = append(added, img.Name)
		}
		if err := t.tx.Insert(TableImages, img); err != nil {
			return nil, nil, fmt.Errorf("store image %q of node %q: %w", img.Name, node, err)
		}
		t.touch(TableImages)
	}
	for name, img := range old {
		if keep[name] {
			continue
		}
		if err := t.tx.Delete(TableImages, img); err != nil {
			return nil, nil, fmt.Errorf("delete image %q of node %q: %w", name, node, err)
		}
		removed = append(removed, name)
		t.touch(TableImages)
	}
	slices.Sort(added)
	slices.Sort(removed)
	return added, removed, nil
}

func sameImage(a, b *Image) bool {
	return a.Node == b.Node && a.Name == b.Name && a.ID == b.ID && a.Size == b.Size && slices.Equal(a.Layers, b.Layers)
}

// AppendAudit stores the record under its Index, which the caller sets
// (the raft index of the command that carries it).
func (t *Txn) AppendAudit(r *AuditRecord) error {
	rec := *r
	if err := t.tx.Insert(TableAudit, &rec); err != nil {
		return fmt.Errorf("store audit record %d: %w", r.Index, err)
	}
	t.touch(TableAudit)
	return nil
}
