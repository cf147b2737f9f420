package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// State is a container's lifecycle state as the agent reports it.
type State string

const (
	StateCreated      State = "created"
	StateRunning      State = "running"
	StateStopped      State = "stopped" // stopped by an operator
	StateExited       State = "exited"  // its process ended on its own
	StateCheckpointed State = "checkpointed"
	StateMigrating    State = "migrating"
)

// transitions lists, for each state, the states it may move to. Anything
// else is a bug or a request to refuse (see transition).
var transitions = map[State][]State{
	StateCreated:      {StateRunning, StateExited},
	StateRunning:      {StateStopped, StateExited, StateCheckpointed, StateMigrating},
	StateStopped:      {StateRunning},
	StateExited:       {StateRunning},
	StateCheckpointed: {StateRunning},
	StateMigrating:    {StateRunning, StateStopped},
}

// transition moves c to next, refusing moves the state machine does not
// allow with ErrInvalidState.
func (c *Container) transition(next State) error {
	for _, s := range transitions[c.State] {
		if s == next {
			c.State = next
			return nil
		}
	}
	return errorf(ErrInvalidState, "container %s is %s, cannot become %s", c.Name, c.State, next)
}

// Container is the agent's durable record of one container. It is written
// to containers/<id>/container.json on every change.
type Container struct {
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Image       string            `json:"image"`
	ImageID     string            `json:"image_id"`
	State       State             `json:"state"`
	IP          string            `json:"ip"`
	Args        []string          `json:"args"`
	Env         []string          `json:"env"`
	WorkingDir  string            `json:"working_dir"`
	Hostname    string            `json:"hostname"`
	User        string            `json:"user,omitempty"`
	CPUs        float64           `json:"cpus,omitempty"`
	MemoryBytes int64             `json:"memory_bytes,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Snapshotter string            `json:"snapshotter"`
	// SnapshotKey names the container's writable snapshot.
	SnapshotKey string    `json:"snapshot_key"`
	Pid         int       `json:"pid,omitempty"`
	ShimPid     int       `json:"shim_pid,omitempty"`
	Created     time.Time `json:"created"`
	Started     time.Time `json:"started,omitzero"`
	Finished    time.Time `json:"finished,omitzero"`
	ExitCode    int       `json:"exit_code"`
	ExitSignal  string    `json:"exit_signal,omitempty"`
	// LastCheckpoint is the ID of the container's latest checkpoint on
	// this node, the one `restore NAME` picks.
	LastCheckpoint string `json:"last_checkpoint,omitempty"`
	// RootfsCheckpoint is the checkpoint the writable layer still matches
	// (the container has not run since it was taken); restoring another
	// checkpoint resets the layer from that checkpoint's diff first.
	RootfsCheckpoint string `json:"rootfs_checkpoint,omitempty"`
	// Generation is the newest generation of the container the agent
	// knows: the cluster bumps it each time a move of the container
	// commits, and the agent refuses commands that carry an older one
	// (generation.go). 0: none known (a standalone agent's container).
	Generation uint64 `json:"generation,omitempty"`
	// ArrivalEpoch is the node's registration epoch when the container
	// came to this node (run here, or moved here): a later registration
	// that does not place it here says the cluster moved it away. 0:
	// standalone, or before this was recorded.
	ArrivalEpoch uint64 `json:"arrival_epoch,omitempty"`
}

// containerPaths are where one container's files live.
type containerPaths struct{ dir string }

func (p containerPaths) record() string { return filepath.Join(p.dir, "container.json") }
func (p containerPaths) bundle() string { return filepath.Join(p.dir, "bundle") }
func (p containerPaths) rootfs() string { return filepath.Join(p.dir, "bundle", "rootfs") }

// state is the shim's directory: its pid, the exit status and the logs.
func (p containerPaths) state() string { return filepath.Join(p.dir, "state") }

// dumpWork and restoreWork hold CRIU's logs and statistics of the
// container's last checkpoint and last restore.
func (p containerPaths) dumpWork() string    { return filepath.Join(p.dir, "state", "criu-dump") }
func (p containerPaths) restoreWork() string { return filepath.Join(p.dir, "state", "criu-restore") }

// criuConfig is the CRIU configuration a held restore uses.
func (p containerPaths) criuConfig() string { return filepath.Join(p.dir, "state", "criu-held.conf") }

func (a *Agent) paths(id string) containerPaths {
	return containerPaths{dir: filepath.Join(a.cfg.containersDir(), id)}
}

// save writes the record atomically, so a crash leaves the old or the new
// record and never half of one.
func (a *Agent) save(c *Container) error {
	p := a.paths(c.ID)
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return fmt.Errorf("container %s: %w", c.Name, err)
	}
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp := p.record() + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("container %s: write record: %w", c.Name, err)
	}
	if err := os.Rename(tmp, p.record()); err != nil {
		return fmt.Errorf("container %s: write record: %w", c.Name, err)
	}
	return nil
}

// loadRecords reads every container record under the data dir.
func (a *Agent) loadRecords() ([]*Container, error) {
	entries, err := os.ReadDir(a.cfg.containersDir())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Container
	for _, e := range entries {
		data, err := os.ReadFile(a.paths(e.Name()).record())
		if os.IsNotExist(err) {
			continue // a run that failed before its first save
		}
		if err != nil {
			return nil, err
		}
		c := &Container{}
		if err := json.Unmarshal(data, c); err != nil {
			return nil, fmt.Errorf("container record %s: %w", e.Name(), err)
		}
		out = append(out, c)
	}
	return out, nil
}
