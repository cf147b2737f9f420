package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/godwit/godwit/agent/checkpoint/bundle"
	"github.com/godwit/godwit/migrate"
)

// A stop-copy migration's checkpoint travels in bundle's transfer framing
// (bundle.Send, bundle.Receive): the source seals its dump without
// digests (CheckpointRequest.pendingDigests) and checksums the files as
// it sends them; the destination checksums them as it writes them,
// checks them against the checksums that follow the files, and keeps the
// receipt of what it wrote, so that the restore moments later checks the
// directory with a stat per file instead of a second pass over every
// page. Between agents that both take it (MigratePrepare's
// TransferChecksums), the checksum is CRC-32C rather than sha256: the
// data connection's TLS authenticates the bytes, the checksum only
// catches what changed between the two files, and sha256 cost each side
// a pass over the pages inside the freeze. The destination's copy then
// stays unsealed, vouched for by the receipt alone: an agent restarted
// since it arrived cannot restore it, and the migration aborts.
// docs/benchmarks.md has the measurements.

const (
	// transferPrefix tells bundle's transfer framing apart from an
	// exported archive (tar, zstd or age), none of which starts with it.
	transferPrefix = "GODWIT-"
	// receiveBuffer buffers the data connection a checkpoint arrives on:
	// enough to tell the framing, small, since bundle reads file data in
	// chunks of a MiB, and a read at least as large as the buffer goes
	// around it instead of being copied through it.
	receiveBuffer = 4 << 10
)

// receiveCheckpoint takes the checkpoint of migration id from r into dir
// and records its receipt for the restore: in the transfer framing, or as
// an exported archive, which a source that predates the framing sends.
// A transfer goes to the agent's tmpfs when memory allows, dir then
// linking to it (migration_scratch.go). The caller has found no
// checkpoint in dir.
func (a *Agent) receiveCheckpoint(ctx context.Context, rec *migrate.Record, dir string, r io.Reader) error {
	id := rec.ID
	if err := a.clearScratch(id, dir); err != nil {
		return fmt.Errorf("remove what an earlier transfer left: %w", err)
	}
	// The memory Prepare faulted in for the checkpoint, freed for it.
	a.releaseMemory(id, reserveReceive)
	br := bufio.NewReaderSize(r, receiveBuffer)
	var receipt *bundle.Receipt
	if head, _ := br.Peek(len(transferPrefix)); string(head) == transferPrefix {
		in, err := bundle.OpenTransfer(ctx, br)
		if err != nil {
			return err
		}
		scratch := a.scratchFor(rec, in.Manifest().Size())
		if scratch == "" {
			_, receipt, err = in.ReceiveInto(ctx, dir)
		} else if _, receipt, err = in.ReceiveInto(ctx, scratch); err == nil {
			if err = os.Symlink(scratch, dir); err != nil {
				err = errors.Join(fmt.Errorf("link the checkpoint received in memory: %w", err), a.removeScratch(id))
			}
		}
		if err != nil {
			return err
		}
	} else {
		var err error
		if _, receipt, err = bundle.ImportWithReceipt(ctx, br, dir, bundle.ImportOptions{}); err != nil {
			return err
		}
	}
	a.mig.mu.Lock()
	defer a.mig.mu.Unlock()
	if a.mig.receipts == nil {
		a.mig.receipts = map[string]*bundle.Receipt{}
	}
	a.mig.receipts[id] = receipt
	return nil
}

// verifyReceived checks migration id's checkpoint in dir before CRIU
// reads it: against the receipt of its transfer when this agent received
// it (and has not restarted since), which digests only files changed
// since, else digesting every file. The receipt is used once: a repeated
// restore verifies in full.
func (a *Agent) verifyReceived(id, dir string) (*bundle.Manifest, error) {
	a.mig.mu.Lock()
	receipt := a.mig.receipts[id]
	delete(a.mig.receipts, id)
	a.mig.mu.Unlock()
	m, err := receipt.Verify(dir)
	if err != nil {
		return nil, fmt.Errorf("migration %s: %w", id, err)
	}
	return m, nil
}

// dropReceipt forgets migration id's receipt: the checkpoint changed
// since it arrived, or the migration ends.
func (a *Agent) dropReceipt(id string) {
	a.mig.mu.Lock()
	defer a.mig.mu.Unlock()
	delete(a.mig.receipts, id)
}

// dropReceived forgets migration id's receipt and removes its checkpoint
// from the tmpfs, once the migration is committed or aborted here (the
// caller removes the checkpoint's usual place, a link to it).
func (a *Agent) dropReceived(id string) {
	a.dropReceipt(id)
	if err := a.removeScratch(id); err != nil {
		a.log.Warn("remove the migration's checkpoint from memory", "migration", id, "err", err)
	}
}

// sealForRestore digests the source's checkpoint of migration id, which
// its dump left without digests, so that it can be restored here after an
// abort (restore verifies every checkpoint). Only a failed migration pays
// for this pass.
func (a *Agent) sealForRestore(id string) error {
	if _, err := bundle.Seal(a.checkpointDir(id)); err != nil {
		return fmt.Errorf("migration %s: seal the checkpoint to restore it: %w", id, err)
	}
	return nil
}
