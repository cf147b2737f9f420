package state

import (
	"net/netip"
	"time"
)

// Health is what the cluster knows of a node's liveness: its lease and
// the gossip pool's view of it. The leader moves it; nothing else does.
type Health string

const (
	// HealthAlive: the node's lease is current.
	HealthAlive Health = "alive"
	// HealthSuspect: the lease expired (or gossip suspects the node) for
	// less than the down threshold; its containers are not moved yet.
	HealthSuspect Health = "suspect"
	// HealthDown: the node has been unreachable past the down threshold;
	// its containers are reported lost.
	HealthDown Health = "down"
)

// Schedulability is the operator's intent for a node.
type Schedulability string

const (
	// Schedulable: new containers may be placed on the node.
	Schedulable Schedulability = "ready"
	// Cordoned: nothing new is placed on the node; what runs stays.
	Cordoned Schedulability = "cordoned"
	// Draining: cordoned, and its containers are being moved away.
	Draining Schedulability = "draining"
)

// NodeStatus is the one word operators see for a node: its health when
// it is not alive, else its schedulability.
type NodeStatus string

const (
	NodeReady    NodeStatus = "ready"
	NodeCordoned NodeStatus = "cordoned"
	NodeDraining NodeStatus = "draining"
	NodeSuspect  NodeStatus = "suspect"
	NodeDown     NodeStatus = "down"
)

// Resources is an amount of CPU and memory: a node's capacity or a
// container's request.
type Resources struct {
	// MilliCPU is thousandths of a CPU.
	MilliCPU int64 `json:"milli_cpu"`
	// MemoryBytes is memory in bytes.
	MemoryBytes int64 `json:"memory_bytes"`
}

// Add returns r plus o.
func (r Resources) Add(o Resources) Resources {
	return Resources{MilliCPU: r.MilliCPU + o.MilliCPU, MemoryBytes: r.MemoryBytes + o.MemoryBytes}
}

// Sub returns r minus o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{MilliCPU: r.MilliCPU - o.MilliCPU, MemoryBytes: r.MemoryBytes - o.MemoryBytes}
}

const (
	// DefaultMilliCPU is what a container that requests no CPU counts as:
	// a hundredth of a CPU. Small, so that it never refuses a node with
	// room, but not zero, so that a full node is never chosen and
	// bin-pack does not stack every such container on one node for ever.
	DefaultMilliCPU = 10
	// DefaultMemoryBytes is what a container that requests no memory
	// counts as, for the same reasons: about what a small process and its
	// page cache use.
	DefaultMemoryBytes = 16 << 20
)

// Effective is r with DefaultMilliCPU and DefaultMemoryBytes in place of
// zeros: what a container reserves on its node.
func (r Resources) Effective() Resources {
	if r.MilliCPU == 0 {
		r.MilliCPU = DefaultMilliCPU
	}
	if r.MemoryBytes == 0 {
		r.MemoryBytes = DefaultMemoryBytes
	}
	return r
}

// Fits reports whether r fits in capacity.
func (r Resources) Fits(capacity Resources) bool {
	return r.MilliCPU <= capacity.MilliCPU && r.MemoryBytes <= capacity.MemoryBytes
}

// Versions are the versions of what a node runs containers and
// checkpoints with: a migration needs compatible ones on both ends.
type Versions struct {
	Godwit string `json:"godwit"`
	Runc   string `json:"runc"`
	CRIU   string `json:"criu"`
	Kernel string `json:"kernel"`
}

// CPU identifies a node's processor: a checkpoint restores only where
// every feature the dumping CPU had is present.
type CPU struct {
	Vendor string `json:"vendor,omitempty"`
	Model  string `json:"model,omitempty"`
	// Flags are the processor's feature words (/proc/cpuinfo "flags"),
	// sorted.
	Flags []string `json:"flags,omitempty"`
}

// Node is a registered agent.
type Node struct {
	// Name is the node's unique name, the CN of its agent's certificate.
	Name string `json:"name"`
	// Address is where the scheduler and other agents reach its agent
	// (gRPC and data connections), host:port.
	Address string `json:"address"`
	// Capacity is what containers may use on the node in all.
	Capacity Resources         `json:"capacity"`
	Labels   map[string]string `json:"labels,omitempty"`
	CPU      CPU               `json:"cpu"`
	Versions Versions          `json:"versions"`
	// Snapshotter is the agent's root filesystem driver (overlay, btrfs).
	Snapshotter string `json:"snapshotter,omitempty"`
	// Strategies are the migration strategies the agent supports.
	Strategies []string `json:"strategies,omitempty"`

	Schedulability Schedulability `json:"schedulability"`
	Health         Health         `json:"health"`
	// HealthChanged is when Health last changed (leader's clock, carried
	// in the command that changed it).
	HealthChanged time.Time `json:"health_changed"`
	// Epoch counts the node's registrations. An agent learns it when it
	// registers and presents it on its heartbeats; a node that was marked
	// down must register again (a new epoch) before it acts.
	Epoch uint64 `json:"epoch"`
	// Registered is when the node last registered.
	Registered time.Time `json:"registered"`
}

// Status is the node's status word: down and suspect win over the
// operator's cordon or drain.
func (n *Node) Status() NodeStatus {
	switch n.Health {
	case HealthDown:
		return NodeDown
	case HealthSuspect:
		return NodeSuspect
	}
	switch n.Schedulability {
	case Cordoned:
		return NodeCordoned
	case Draining:
		return NodeDraining
	}
	return NodeReady
}

// DesiredState is what the operator wants of a container.
type DesiredState string

const (
	DesiredRunning DesiredState = "running"
	DesiredStopped DesiredState = "stopped"
)

// ReportedState is what the container's node last said of it.
type ReportedState string

const (
	// ReportedPending: placed, not yet confirmed by its node.
	ReportedPending   ReportedState = "pending"
	ReportedCreated   ReportedState = "created"
	ReportedRunning   ReportedState = "running"
	ReportedStopped   ReportedState = "stopped"
	ReportedExited    ReportedState = "exited"
	ReportedMigrating ReportedState = "migrating"
	// ReportedCheckpointed: the container is stopped with a checkpoint
	// of it: its node says so (it was checkpointed there), or the
	// cluster put it on the node that keeps its checkpoint (Checkpoint),
	// where `godwit start` restores it.
	ReportedCheckpointed ReportedState = "checkpointed"
	// ReportedLost: its node is down, or the node no longer has it.
	ReportedLost ReportedState = "lost"
)

// Constraint requires a node label to have a value.
type Constraint struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// ContainerSpec is what an operator asked to run; it does not change
// when the container moves.
type ContainerSpec struct {
	Image      string            `json:"image"`
	Args       []string          `json:"args,omitempty"`
	Env        []string          `json:"env,omitempty"`
	WorkingDir string            `json:"working_dir,omitempty"`
	Hostname   string            `json:"hostname,omitempty"`
	User       string            `json:"user,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	// Request is what placement reserves on the node.
	Request Resources `json:"request"`
	// Constraints are node labels the container's node must have.
	Constraints []Constraint `json:"constraints,omitempty"`
	// Node is the node `run --node` placed the container on: placement,
	// drains and moves without --to keep it there; the balancer may move
	// it (Pinned keeps it off), and a move elsewhere drops it.
	Node string `json:"node,omitempty"`
	// Pinned keeps the balancer from moving the container (run --pin).
	Pinned bool `json:"pinned,omitempty"`
}

// Container is a container the cluster runs.
type Container struct {
	// ID is the container's cluster-wide ID, also its ID on its node.
	ID   string        `json:"id"`
	Name string        `json:"name"`
	Spec ContainerSpec `json:"spec"`
	// Node is the node the container is on.
	Node string `json:"node"`
	// Generation is bumped each time a move of the container commits;
	// agents refuse commands that carry an older one.
	Generation uint64 `json:"generation"`
	// IP is the container's cluster address, allocated once for its life.
	IP netip.Addr `json:"ip"`

	Desired  DesiredState  `json:"desired"`
	Reported ReportedState `json:"reported"`
	// Checkpoint is the ID of the checkpoint Node keeps of the
	// container, which holds no container of it yet: set when a drain's
	// deadline checkpointed it away from its node (fsm.CheckpointAway);
	// `godwit start` restores it from there. Cleared once the node
	// reports the container in any other state.
	Checkpoint string    `json:"checkpoint,omitempty"`
	ReportedAt time.Time `json:"reported_at"`
	Created    time.Time `json:"created"`
}

// Image is an image held by one node.
type Image struct {
	Node string `json:"node"`
	// Name is the image's reference (name:tag).
	Name string `json:"name"`
	// ID is the image's digest.
	ID     string   `json:"id"`
	Layers []string `json:"layers,omitempty"`
	Size   int64    `json:"size"`
	// Created is when the image was built, as its config says.
	Created time.Time `json:"created,omitzero"`
}

// AuditRecord is one operator action: who asked for what, and how it
// ended.
type AuditRecord struct {
	// Index is the raft index of the record, its unique ID.
	Index uint64    `json:"index"`
	Time  time.Time `json:"time"`
	// Who is the caller's certificate name, and Role its role.
	Who  string `json:"who"`
	Role string `json:"role"`
	// Action is the API call (run, stop, node cordon ...), Target what it
	// named (a container or node).
	Action string `json:"action"`
	Target string `json:"target"`
	// Outcome is "ok" or the error's message.
	Outcome string `json:"outcome"`
}
