package fsm

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// lookupNode returns the named node or an error wrapping
// state.ErrNotFound.
func lookupNode(tx *state.Txn, name string) (*state.Node, error) {
	if name == "" {
		return nil, fmt.Errorf("node name is empty: %w", ErrInvalid)
	}
	n, ok := tx.Node(name)
	if !ok {
		return nil, fmt.Errorf("node %q %w: list nodes with 'godwit node ls'", name, state.ErrNotFound)
	}
	return n, nil
}

// RegisterNode records an agent's registration: the facts it reports
// about its node (address, capacity, labels, CPU, versions ...). The node
// becomes alive with a new epoch (1 for a new node, the old one plus one
// otherwise). A new node starts schedulable; a known one keeps the
// operator's cordon or drain. Node.Schedulability, Health, HealthChanged,
// Epoch and Registered in the command are ignored. Result value: a
// Registration, whose node's Epoch the agent presents from then on.
//
// An agent's registration carries what the node holds (Inventory),
// applied in the same entry: the node is never seen registered with its
// old image list, or alive with containers it runs still lost from its
// last time down. Entries without it (older schedulers) record only the
// node; the images and reports then came in entries of their own.
type RegisterNode struct {
	Node      state.Node `json:"node"`
	Inventory *Inventory `json:"inventory,omitempty"`
	At        time.Time  `json:"at"`
}

// Inventory is what a registering node holds: its whole list of images
// (as SetImages), and the complete report of its containers (as
// ReportContainers with Complete; its Node, Epoch and At are taken from
// the registration).
type Inventory struct {
	Images     []state.Image    `json:"images,omitempty"`
	Containers ReportContainers `json:"containers"`
}

// Registration is RegisterNode's result value: the stored node and, with
// an inventory, what its images and report changed.
type Registration struct {
	Node   *state.Node
	Images ImagesOutcome
	Report ReportOutcome
}

func (RegisterNode) Type() CommandType { return TypeRegisterNode }
func (c RegisterNode) when() time.Time { return c.At }

func (c RegisterNode) apply(tx *state.Txn) (any, error) {
	n := c.Node.Clone()
	switch {
	case n.Name == "":
		return nil, fmt.Errorf("register node: name is empty: %w", ErrInvalid)
	case n.Address == "":
		return nil, fmt.Errorf("register node %q: address is empty: %w; start the agent with an advertise address", n.Name, ErrInvalid)
	case n.Capacity.MilliCPU < 0 || n.Capacity.MemoryBytes < 0:
		return nil, fmt.Errorf("register node %q: negative capacity: %w", n.Name, ErrInvalid)
	}
	// Placement's CPU check merges sorted flag lists.
	slices.Sort(n.CPU.Flags)
	n.Health = state.HealthAlive
	n.Registered = c.At
	n.HealthChanged = c.At
	n.Schedulability = state.Schedulable
	n.Epoch = 1
	if old, ok := tx.Node(n.Name); ok {
		n.Schedulability = old.Schedulability
		n.Epoch = old.Epoch + 1
		if old.Health == state.HealthAlive {
			n.HealthChanged = old.HealthChanged
		}
	}
	if err := tx.PutNode(n); err != nil {
		return nil, err
	}
	tx.Emit(state.EventNodeRegistered, n.Name, "", fmt.Sprintf("registered at %s, epoch %d", n.Address, n.Epoch))
	var out Registration
	out.Node, _ = tx.Node(n.Name)
	if c.Inventory == nil {
		return out, nil
	}
	images, err := SetImages{Node: n.Name, Images: c.Inventory.Images, At: c.At}.apply(tx)
	if err != nil {
		return nil, err
	}
	out.Images = images.(ImagesOutcome)
	report := c.Inventory.Containers
	report.Node, report.Epoch, report.Complete, report.At = n.Name, n.Epoch, true, c.At
	reported, err := report.apply(tx)
	if err != nil {
		return nil, err
	}
	out.Report = reported.(ReportOutcome)
	return out, nil
}

// healthMove checks a health transition. Down is left only by
// registering again: an agent that was down may have missed commands,
// so it must learn the current state (a new epoch) before it acts.
func healthMove(name string, from, to state.Health) error {
	switch to {
	case state.HealthAlive, state.HealthSuspect, state.HealthDown:
	default:
		return fmt.Errorf("node %q: health %q: %w (want %s, %s or %s)", name, to, ErrInvalid,
			state.HealthAlive, state.HealthSuspect, state.HealthDown)
	}
	if from == state.HealthDown && to != state.HealthDown {
		return fmt.Errorf("node %q cannot become %s: %w; its agent must register again", name, to, ErrNodeDown)
	}
	return nil
}

// checkEpoch refuses a health decision the leader took about an older
// registration of the node (ErrStaleEpoch): the node registered again
// between the leader's look at its lease and the command's commit, so
// the decision is about a lease that no longer exists. epoch 0: any
// registration (entries written before commands carried one).
func checkEpoch(n *state.Node, epoch uint64) error {
	if epoch != 0 && epoch != n.Epoch {
		return fmt.Errorf("node %q: the decision was about epoch %d, the node registered again since (epoch %d): %w",
			n.Name, epoch, n.Epoch, ErrStaleEpoch)
	}
	return nil
}

// SetNodeHealth records the leader's view of a node's liveness (lease
// and gossip). A down node stays down until it registers again
// (ErrNodeDown). Setting the health it has changes nothing. Epoch, when
// set, is the registration the decision was about (ErrStaleEpoch once
// the node registered again). Result value: the stored *state.Node.
type SetNodeHealth struct {
	Name   string       `json:"name"`
	Health state.Health `json:"health"`
	Epoch  uint64       `json:"epoch,omitempty"`
	At     time.Time    `json:"at"`
}

func (SetNodeHealth) Type() CommandType { return TypeSetNodeHealth }
func (c SetNodeHealth) when() time.Time { return c.At }

func (c SetNodeHealth) apply(tx *state.Txn) (any, error) {
	old, err := lookupNode(tx, c.Name)
	if err != nil {
		return nil, err
	}
	if err := checkEpoch(old, c.Epoch); err != nil {
		return nil, err
	}
	if err := healthMove(c.Name, old.Health, c.Health); err != nil {
		return nil, err
	}
	if old.Health == c.Health {
		return old, nil
	}
	n := old.Clone()
	n.Health = c.Health
	n.HealthChanged = c.At
	if err := tx.PutNode(n); err != nil {
		return nil, err
	}
	tx.Emit(state.EventNodeHealth, n.Name, "", fmt.Sprintf("health %s -> %s", old.Health, n.Health))
	stored, _ := tx.Node(n.Name)
	return stored, nil
}

// SetSchedulability records the operator's cordon, drain or uncordon.
// Leaving draining while a drain of the node runs (uncordon, cordon) ends
// that drain as cancelled; what was left keeps running where it is.
// Result value: the stored *state.Node.
type SetSchedulability struct {
	Name           string               `json:"name"`
	Schedulability state.Schedulability `json:"schedulability"`
	At             time.Time            `json:"at"`
}

func (SetSchedulability) Type() CommandType { return TypeSetSchedulability }
func (c SetSchedulability) when() time.Time { return c.At }

var schedulabilityEvents = map[state.Schedulability]string{
	state.Schedulable: state.EventNodeUncordoned,
	state.Cordoned:    state.EventNodeCordoned,
	state.Draining:    state.EventNodeDraining,
}

func (c SetSchedulability) apply(tx *state.Txn) (any, error) {
	kind, ok := schedulabilityEvents[c.Schedulability]
	if !ok {
		return nil, fmt.Errorf("node %q: schedulability %q: %w (want %s, %s or %s)", c.Name, c.Schedulability, ErrInvalid,
			state.Schedulable, state.Cordoned, state.Draining)
	}
	old, err := lookupNode(tx, c.Name)
	if err != nil {
		return nil, err
	}
	if old.Schedulability == c.Schedulability {
		return old, nil
	}
	if err := setSchedulability(tx, old, c.Schedulability); err != nil {
		return nil, err
	}
	if d, ok := tx.Drain(c.Name); ok && d.Running() && c.Schedulability != state.Draining {
		why := fmt.Sprintf("the node was %s", strings.TrimPrefix(kind, "node-"))
		if err := endDrain(tx, d, state.DrainCancelled, why, c.At); err != nil {
			return nil, err
		}
	}
	stored, _ := tx.Node(c.Name)
	return stored, nil
}

// setSchedulability stores old with another schedulability, a valid
// one, and emits the event.
func setSchedulability(tx *state.Txn, old *state.Node, to state.Schedulability) error {
	if old.Schedulability == to {
		return nil
	}
	n := old.Clone()
	n.Schedulability = to
	if err := tx.PutNode(n); err != nil {
		return err
	}
	tx.Emit(schedulabilityEvents[to], n.Name, "", fmt.Sprintf("%s -> %s", old.Schedulability, n.Schedulability))
	return nil
}

// RemoveNode forgets a node and its images. It is refused while any
// container is on the node (ErrNodeNotEmpty), whatever its state, and
// while a migration from or to it is open (state.ErrMigrationOpen: the
// leader could then neither finish nor abort it). A drain of the node
// that still runs ends done, since the node is empty; its record stays as
// the node's last drain. Aborted migrations that still owed the node a
// cleanup owe nothing more: what it held goes with it. Result value: nil.
type RemoveNode struct {
	Name string    `json:"name"`
	At   time.Time `json:"at"`
}

func (RemoveNode) Type() CommandType { return TypeRemoveNode }
func (c RemoveNode) when() time.Time { return c.At }

func (c RemoveNode) apply(tx *state.Txn) (any, error) {
	if _, err := lookupNode(tx, c.Name); err != nil {
		return nil, err
	}
	if n := tx.ContainerCount(c.Name); n > 0 {
		return nil, fmt.Errorf("remove node %q: %w (%d): remove them or drain the node first", c.Name, ErrNodeNotEmpty, n)
	}
	for _, m := range tx.Migrations(state.MigrationFilter{Open: true}) {
		if m.Source == c.Name || m.Dest == c.Name {
			return nil, fmt.Errorf("remove node %q: migration %s of %s from %s to %s: %w: wait for it to end, or `godwit migration cancel %s`",
				c.Name, m.ID, m.ContainerName, m.Source, m.Dest, state.ErrMigrationOpen, m.ID)
		}
	}
	for _, m := range tx.Migrations(state.MigrationFilter{}) {
		if m.DestinationCleanup && m.Dest == c.Name {
			clean := m.Clone()
			clean.DestinationCleanup = false
			clean.Updated = c.At
			if err := tx.PutMigration(clean); err != nil {
				return nil, err
			}
		}
	}
	if err := tx.DeleteNode(c.Name); err != nil {
		return nil, err
	}
	tx.Emit(state.EventNodeRemoved, c.Name, "", "removed")
	if d, ok := tx.Drain(c.Name); ok && d.Running() {
		if err := endDrain(tx, d, state.DrainDone, "the node was removed", c.At); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// MarkNodeLost records that a node is down and that its containers are
// lost: the node's health becomes down (if it was not) and every
// container on it that was not lost yet becomes lost, giving back its
// reservation. Epoch, when set, is the registration the decision was
// about (ErrStaleEpoch once the node registered again). Result value:
// the IDs of the containers it marked lost, sorted by container name.
type MarkNodeLost struct {
	Name  string    `json:"name"`
	Epoch uint64    `json:"epoch,omitempty"`
	At    time.Time `json:"at"`
}

func (MarkNodeLost) Type() CommandType { return TypeMarkNodeLost }
func (c MarkNodeLost) when() time.Time { return c.At }

func (c MarkNodeLost) apply(tx *state.Txn) (any, error) {
	old, err := lookupNode(tx, c.Name)
	if err != nil {
		return nil, err
	}
	if err := checkEpoch(old, c.Epoch); err != nil {
		return nil, err
	}
	if old.Health != state.HealthDown {
		n := old.Clone()
		n.Health = state.HealthDown
		n.HealthChanged = c.At
		if err := tx.PutNode(n); err != nil {
			return nil, err
		}
		tx.Emit(state.EventNodeHealth, n.Name, "", fmt.Sprintf("health %s -> %s", old.Health, n.Health))
	}
	lost := []string{}
	for _, ctr := range tx.ContainersOn(c.Name) {
		if ctr.Reported == state.ReportedLost {
			continue
		}
		if err := setReported(tx, ctr, state.ReportedLost, c.At); err != nil {
			return nil, err
		}
		lost = append(lost, ctr.ID)
	}
	return lost, nil
}
