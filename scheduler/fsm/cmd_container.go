package fsm

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/godwit/godwit/scheduler/state"
)

// firstGeneration is a new container's generation; moves bump it, and 0
// is left to mean "unset" in agent commands.
const firstGeneration = 1

// NewContainer is one container of a PlaceContainers batch: what the
// operator asked for and the node placement chose.
type NewContainer struct {
	ID   string              `json:"id"`
	Name string              `json:"name"`
	Spec state.ContainerSpec `json:"spec"`
	Node string              `json:"node"`
}

// PlaceOutcome is what became of one container of a batch: the stored
// container, with its address (the store's record: read it, never change
// it), or why it was refused. With
// ErrContainerExists, Container is the one already stored under the ID,
// so a proposer that retried a batch can tell that it committed before.
type PlaceOutcome struct {
	Container *state.Container
	Err       error
}

// PlaceContainers records containers placed on nodes, desired running
// and pending until their node reports them. Each one gets the lowest free
// address of the cluster CIDR, generation 1 and the command's time as
// its creation time. Each is checked on its own: a container whose ID
// exists, whose name is taken, whose node is unknown or down, or for
// which no address is left is refused and the others go on (one batch
// per raft entry is how the leader reaches thousands of placements a
// second). The FSM does not check capacity: placement did, on the
// leader, which serialises placements. Result value: []PlaceOutcome, one
// per container, in order; Result.Err is set only when the whole batch is
// refused (it is empty).
type PlaceContainers struct {
	Containers []NewContainer `json:"containers"`
	At         time.Time      `json:"at"`
}

func (PlaceContainers) Type() CommandType { return TypePlaceContainers }
func (c PlaceContainers) when() time.Time { return c.At }

func (c PlaceContainers) apply(tx *state.Txn) (any, error) {
	if len(c.Containers) == 0 {
		return nil, fmt.Errorf("place containers: the batch is empty: %w", ErrInvalid)
	}
	out := make([]PlaceOutcome, len(c.Containers))
	for i, nc := range c.Containers {
		ctr, err := placeOne(tx, nc, c.At)
		if err != nil && !isRefusal(err) {
			// The transaction may be half done: drop the whole batch.
			return nil, err
		}
		out[i] = PlaceOutcome{Container: ctr, Err: err}
	}
	return out, nil
}

// isRefusal reports whether err is a refusal that changed nothing, so
// that the rest of a batch may go on.
func isRefusal(err error) bool {
	for _, target := range []error{
		ErrInvalid, ErrNodeDown, ErrContainerExists,
		state.ErrNotFound, state.ErrNameTaken, state.ErrAddressTaken, state.ErrNoClusterCIDR, state.ErrCIDRFull,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

func validSpec(nc NewContainer) error {
	switch {
	case nc.ID == "":
		return fmt.Errorf("place container %q: ID is empty: %w", nc.Name, ErrInvalid)
	case nc.Name == "":
		return fmt.Errorf("place container %s: name is empty: %w", nc.ID, ErrInvalid)
	case nc.Node == "":
		return fmt.Errorf("place container %q: no node chosen: %w", nc.Name, ErrInvalid)
	case nc.Spec.Image == "":
		return fmt.Errorf("place container %q: image is empty: %w", nc.Name, ErrInvalid)
	case nc.Spec.Request.MilliCPU < 0 || nc.Spec.Request.MemoryBytes < 0:
		return fmt.Errorf("place container %q: negative resource request: %w", nc.Name, ErrInvalid)
	}
	return nil
}

func placeOne(tx *state.Txn, nc NewContainer, at time.Time) (*state.Container, error) {
	if err := validSpec(nc); err != nil {
		return nil, err
	}
	if existing, ok := tx.ContainerByID(nc.ID); ok {
		return existing, fmt.Errorf("place container %q: %s: %w", nc.Name, nc.ID, ErrContainerExists)
	}
	node, err := lookupNode(tx, nc.Node)
	if err != nil {
		return nil, fmt.Errorf("place container %q: %w", nc.Name, err)
	}
	if node.Health == state.HealthDown {
		return nil, fmt.Errorf("place container %q on node %q: %w; place it again", nc.Name, nc.Node, ErrNodeDown)
	}
	// PutContainer refuses a name in use before it changes anything; the
	// address allocated meanwhile is not reserved until it is stored.
	ip, err := tx.AllocateIP()
	if err != nil {
		return nil, fmt.Errorf("place container %q: %w", nc.Name, err)
	}
	ctr := &state.Container{
		ID:         nc.ID,
		Name:       nc.Name,
		Spec:       nc.Spec,
		Node:       nc.Node,
		Generation: firstGeneration,
		IP:         ip,
		Desired:    state.DesiredRunning,
		Reported:   state.ReportedPending,
		ReportedAt: at,
		Created:    at,
	}
	// ctr and its spec (decoded for this apply) are the store's from here.
	if err := tx.PutContainerOwned(ctr); err != nil {
		return nil, fmt.Errorf("place container %q: %w", nc.Name, err)
	}
	tx.Emit(state.EventContainerPlaced, nc.Node, nc.ID, placedMessage(nc.Name, nc.Node, ip))
	return ctr, nil
}

// placedMessage is the message of a container-placed event, "NAME placed
// on NODE with address IP", built in one allocation: one per placement.
func placedMessage(name, node string, ip netip.Addr) string {
	const placedOn, withAddress = " placed on ", " with address "
	var buf [64]byte // the longest IPv6 address is 45 bytes
	addr := ip.AppendTo(buf[:0])
	var b strings.Builder
	b.Grow(len(name) + len(placedOn) + len(node) + len(withAddress) + len(addr))
	b.WriteString(name)
	b.WriteString(placedOn)
	b.WriteString(node)
	b.WriteString(withAddress)
	b.Write(addr)
	return b.String()
}

// lookupContainer returns the container with the ID or an error wrapping
// state.ErrNotFound.
func lookupContainer(tx *state.Txn, id string) (*state.Container, error) {
	if id == "" {
		return nil, fmt.Errorf("container ID is empty: %w", ErrInvalid)
	}
	c, ok := tx.ContainerByID(id)
	if !ok {
		return nil, fmt.Errorf("container %s %w: list containers with 'godwit ps'", id, state.ErrNotFound)
	}
	return c, nil
}

// SetDesired records what the operator wants of a container: running or
// stopped. A stopped container gives back its reservation on its node.
// Result value: the stored *state.Container.
type SetDesired struct {
	ID      string             `json:"id"`
	Desired state.DesiredState `json:"desired"`
	At      time.Time          `json:"at"`
}

func (SetDesired) Type() CommandType { return TypeSetDesired }
func (c SetDesired) when() time.Time { return c.At }

func (c SetDesired) apply(tx *state.Txn) (any, error) {
	if c.Desired != state.DesiredRunning && c.Desired != state.DesiredStopped {
		return nil, fmt.Errorf("container %s: desired state %q: %w (want %s or %s)", c.ID, c.Desired, ErrInvalid,
			state.DesiredRunning, state.DesiredStopped)
	}
	old, err := lookupContainer(tx, c.ID)
	if err != nil {
		return nil, err
	}
	if old.Desired == c.Desired {
		return old, nil
	}
	ctr := old.Clone()
	ctr.Desired = c.Desired
	if err := tx.PutContainerOwned(ctr); err != nil {
		return nil, err
	}
	tx.Emit(state.EventContainerDesired, ctr.Node, ctr.ID, fmt.Sprintf("%s desired %s -> %s", ctr.Name, old.Desired, ctr.Desired))
	stored, _ := tx.ContainerByID(ctr.ID)
	return stored, nil
}

// Report is what a node says of one of its containers.
type Report struct {
	ID    string              `json:"id"`
	State state.ReportedState `json:"state"`
}

// ReportOutcome is the result value of ReportContainers.
type ReportOutcome struct {
	// Unknown are the IDs in Reports that the state does not have on the
	// node, in report order.
	Unknown []string `json:"unknown,omitempty"`
	// Lost are the IDs a complete report marked lost, sorted by name.
	Lost []string `json:"lost,omitempty"`
}

// Unknown is a container a node runs that the cluster does not know of.
type Unknown struct {
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// reportable are the states a node may report; pending and lost are the
// scheduler's words.
var reportable = map[state.ReportedState]bool{
	state.ReportedCreated:   true,
	state.ReportedRunning:   true,
	state.ReportedStopped:   true,
	state.ReportedExited:    true,
	state.ReportedMigrating: true,
	// A node reports a container it checkpointed (stopped) so; a
	// container whose checkpoint the cluster put on another node is
	// checkpointed there without being reported (fsm.CheckpointAway).
	state.ReportedCheckpointed: true,
}

// ReportContainers records what a node says of its containers. It is
// refused when Epoch is not the node's current one (ErrStaleEpoch) or
// the node is down (ErrNodeDown): the agent must register again.
//
// Reports carries the containers whose state changed (the leader leaves
// out the others to keep the entry small): each gets its new state, with
// the command's time as ReportedAt (ReportedAt is when Reported last
// changed). Unknown lists containers the node runs that the cluster does
// not know: each is recorded as an event (state.EventContainerUnknown),
// never killed. A container with an open migration from or to the node is
// neither: both nodes hold a copy while it moves, and only the node it is
// on in the state reports its state. When Complete is set, Seen lists
// every container the node has (changed or not), and containers the
// state has on the node that are neither in Seen nor in Reports become
// lost, except pending ones: the node may not have heard of them yet.
// Result value: ReportOutcome.
type ReportContainers struct {
	Node     string    `json:"node"`
	Epoch    uint64    `json:"epoch"`
	Reports  []Report  `json:"reports,omitempty"`
	Unknown  []Unknown `json:"unknown,omitempty"`
	Complete bool      `json:"complete,omitempty"`
	Seen     []string  `json:"seen,omitempty"`
	At       time.Time `json:"at"`
}

func (ReportContainers) Type() CommandType { return TypeReportContainers }
func (c ReportContainers) when() time.Time { return c.At }

func (c ReportContainers) apply(tx *state.Txn) (any, error) {
	node, err := lookupNode(tx, c.Node)
	if err != nil {
		return nil, err
	}
	if c.Epoch != node.Epoch {
		return nil, fmt.Errorf("report from node %q: epoch %d, current is %d: %w; the agent must register again",
			c.Node, c.Epoch, node.Epoch, ErrStaleEpoch)
	}
	if node.Health == state.HealthDown {
		return nil, fmt.Errorf("report from node %q: %w; the agent must register again", c.Node, ErrNodeDown)
	}
	reported := make(map[string]bool, len(c.Reports))
	for _, r := range c.Reports {
		if !reportable[r.State] {
			return nil, fmt.Errorf("report from node %q: container %s: state %q: %w", c.Node, r.ID, r.State, ErrInvalid)
		}
		if reported[r.ID] {
			return nil, fmt.Errorf("report from node %q: container %s reported twice: %w", c.Node, r.ID, ErrInvalid)
		}
		reported[r.ID] = true
	}
	var out ReportOutcome
	for _, r := range c.Reports {
		ctr, ok := tx.ContainerByID(r.ID)
		if ok && ctr.Node != c.Node && movingThrough(tx, r.ID, c.Node) {
			continue
		}
		if !ok || ctr.Node != c.Node {
			out.Unknown = append(out.Unknown, r.ID)
			continue
		}
		if ctr.Reported == r.State {
			continue
		}
		if err := setReported(tx, ctr, r.State, c.At); err != nil {
			return nil, err
		}
	}
	for _, u := range c.Unknown {
		if movingThrough(tx, u.ID, c.Node) {
			continue
		}
		name := u.Name
		if name == "" {
			name = u.ID
		}
		tx.Emit(state.EventContainerUnknown, c.Node, u.ID,
			fmt.Sprintf("node %s runs container %s, which the cluster does not know; it was left running", c.Node, name))
	}
	if c.Complete {
		seen := make(map[string]bool, len(c.Seen))
		for _, id := range c.Seen {
			seen[id] = true
		}
		for _, ctr := range tx.ContainersOn(c.Node) {
			if seen[ctr.ID] || reported[ctr.ID] || ctr.Reported == state.ReportedLost || ctr.Reported == state.ReportedPending {
				continue
			}
			if ctr.Checkpoint != "" {
				continue // the node keeps its checkpoint, not a container
			}
			if err := setReported(tx, ctr, state.ReportedLost, c.At); err != nil {
				return nil, err
			}
			out.Lost = append(out.Lost, ctr.ID)
		}
	}
	return out, nil
}

// movingThrough reports whether the container has an open migration from
// or to the node: while a move is open both nodes hold a copy (the
// destination's before the commit, the source's after it), which is
// expected and neither unknown nor the container's state.
func movingThrough(tx *state.Txn, id, node string) bool {
	m, ok := tx.OpenMigrationOf(id)
	return ok && (m.Source == node || m.Dest == node)
}

// setReported stores ctr with a new reported state and emits the event.
// A container its node reports in a state of its own (not checkpointed,
// not lost) no longer waits in a checkpoint there: it was restored.
func setReported(tx *state.Txn, old *state.Container, reported state.ReportedState, at time.Time) error {
	ctr := old.Clone()
	ctr.Reported = reported
	ctr.ReportedAt = at
	if reported != state.ReportedCheckpointed && reported != state.ReportedLost {
		ctr.Checkpoint = ""
	}
	if err := tx.PutContainerOwned(ctr); err != nil {
		return err
	}
	tx.Emit(state.EventContainerState, ctr.Node, ctr.ID, fmt.Sprintf("%s %s -> %s", ctr.Name, old.Reported, ctr.Reported))
	return nil
}

// DeleteContainer forgets a container; its address is free again. It is
// refused while the container has an open migration
// (state.ErrMigrationOpen): the move must end first, or its record would
// point at nothing. Result value: the deleted *state.Container.
type DeleteContainer struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

func (DeleteContainer) Type() CommandType { return TypeDeleteContainer }
func (c DeleteContainer) when() time.Time { return c.At }

func (c DeleteContainer) apply(tx *state.Txn) (any, error) {
	old, err := lookupContainer(tx, c.ID)
	if err != nil {
		return nil, err
	}
	if m, ok := tx.OpenMigrationOf(c.ID); ok {
		return nil, fmt.Errorf("delete %s: container %w: %s (%s); wait for it or cancel it with 'godwit migration cancel %s'",
			old.Name, state.ErrMigrationOpen, m.ID, m.Phase, m.ID)
	}
	if err := tx.DeleteContainer(c.ID); err != nil {
		return nil, err
	}
	msg := old.Name + " deleted"
	if old.IP.IsValid() {
		msg += fmt.Sprintf(", address %s freed", old.IP)
	}
	tx.Emit(state.EventContainerDeleted, old.Node, old.ID, msg)
	return old, nil
}
