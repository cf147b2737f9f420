package agent

import (
	"context"
	"errors"
	"io"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/agent/checkpoint/criuimg"
)

// Checkpoint phases, as CheckpointRequest.Progress reports them.
const (
	PhaseDumping = "dumping" // CRIU is freezing the container and writing its memory
	PhaseRootfs  = "rootfs"  // the writable layer's diff is being written
	PhaseSealing = "sealing" // every file is being hashed into the manifest
	PhaseDone    = "done"
)

// Progress is how far a long operation has come: its phase, and the bytes
// done out of the total in that phase (Total is 0 when unknown).
type Progress struct {
	Phase       string
	Done, Total int64
}

// CheckpointRequest asks for a checkpoint of a running container.
type CheckpointRequest struct {
	// LeaveRunning keeps the container running; otherwise it ends
	// checkpointed, with its root filesystem and IP kept for a restore.
	LeaveRunning bool
	// Progress, when set, is called as the checkpoint advances.
	Progress func(Progress)
}

// RestoreRequest asks to restore a container from a checkpoint stored on
// this node.
type RestoreRequest struct {
	// Container names the container; with CheckpointID empty, its latest
	// checkpoint is restored.
	Container    string
	CheckpointID string
	// Name, when set, restores as a new container of that name.
	Name string
}

// RestoreResult is a restored container and what it was restored from.
type RestoreResult struct {
	Container *Container
	// Checkpoint is the restored checkpoint's manifest, with the
	// restore's statistics in its Stats.
	Checkpoint *bundle.Manifest
	// Warnings are compatibility differences that did not prevent the
	// restore.
	Warnings []string
}

var errNotYet = errors.New("not implemented yet")

// Checkpoint dumps a running container into a new checkpoint under the
// data dir and returns its manifest.
func (a *Agent) Checkpoint(ctx context.Context, ref string, req CheckpointRequest) (*bundle.Manifest, error) {
	return nil, errNotYet
}

// ListCheckpoints returns the manifests of the stored checkpoints, oldest
// first: all of them, or those of one container (by name or ID).
func (a *Agent) ListCheckpoints(ctx context.Context, container string) ([]*bundle.Manifest, error) {
	return nil, errNotYet
}

// InspectCheckpoint returns a stored checkpoint's manifest and what its
// CRIU images hold.
func (a *Agent) InspectCheckpoint(ctx context.Context, ref string) (*bundle.Manifest, *criuimg.Report, error) {
	return nil, nil, errNotYet
}

// RemoveCheckpoint deletes a stored checkpoint.
func (a *Agent) RemoveCheckpoint(ctx context.Context, ref string) error {
	return errNotYet
}

// ExportCheckpoint writes a stored checkpoint to w as an unencrypted
// archive, reporting progress (bytes of the checkpoint's files, before
// compression) when progress is set.
func (a *Agent) ExportCheckpoint(ctx context.Context, ref string, w io.Writer, compression bundle.Compression, progress func(done, total int64)) error {
	return errNotYet
}

// Restore restores a container from a checkpoint stored on this node.
func (a *Agent) Restore(ctx context.Context, req RestoreRequest) (*RestoreResult, error) {
	return nil, errNotYet
}

// RestoreArchive imports the archive r (unencrypted), verifying every
// digest, and restores the container it holds, named name when name is
// set. The imported checkpoint is removed afterwards.
func (a *Agent) RestoreArchive(ctx context.Context, r io.Reader, name string) (*RestoreResult, error) {
	return nil, errNotYet
}
