package migrate

import (
	"context"
	"fmt"
	"slices"
)

// The root filesystem before the freeze: the image layers the destination
// lacks, then the writable layer's sync while the container runs. Both go
// over data connections with tokens of their own, like the checkpoint.

// beforeSync takes the destination's answer to Prepare: it has the source
// send the image layers the destination lacks, still in PhasePrepare, and
// notes the format of the writable layer's sync for PhaseSync, and the
// checksum of the checkpoint's transfer.
func (d *driver) beforeSync(ctx context.Context, p Prepared) error {
	d.rootfsFormat = p.RootfsFormat
	if slices.Contains(p.TransferChecksums, ChecksumCRC32C) {
		d.transferChecksum = ChecksumCRC32C
	}
	if len(p.MissingLayers) == 0 && !p.MissingImage {
		return nil
	}
	d.emit(Event{Phase: PhasePrepare, Message: fmt.Sprintf("sending the image and the %d layers the destination lacks", len(p.MissingLayers))})
	addr := d.dst.Address()
	sent, _, err := d.send(ctx, PhasePrepare, "sending image layers",
		func(ctx context.Context, token string) error {
			if err := d.dst.ReceiveLayers(ctx, d.rec.ID, token); err != nil {
				return fmt.Errorf("receive image layers on the destination: %w", err)
			}
			return nil
		},
		func(ctx context.Context, token string, progress func(done, total int64)) error {
			if err := d.src.SendLayers(ctx, d.rec.ID, p.MissingLayers, addr, token, progress); err != nil {
				return fmt.Errorf("send image layers from the source to %s: %w", addr, err)
			}
			return nil
		})
	d.mu.Lock()
	d.layerBytes += sent
	d.mu.Unlock()
	return err
}

// syncRootfs has the source send the container's writable layer while it
// runs, in the format the destination chose; the dump then carries only
// what changed since.
func (d *driver) syncRootfs(ctx context.Context) error {
	d.rootfsSynced = true
	addr := d.dst.Address()
	sent, _, err := d.send(ctx, PhaseSync, "syncing the root filesystem while the container runs",
		func(ctx context.Context, token string) error {
			if err := d.dst.ReceiveRootfs(ctx, d.rec.ID, token); err != nil {
				return fmt.Errorf("receive the root filesystem on the destination: %w", err)
			}
			return nil
		},
		func(ctx context.Context, token string, progress func(done, total int64)) error {
			if err := d.src.SyncRootfs(ctx, d.rec.ID, d.rootfsFormat, addr, token, progress); err != nil {
				return fmt.Errorf("sync the root filesystem from the source to %s: %w", addr, err)
			}
			return nil
		})
	d.mu.Lock()
	d.syncBytes += sent
	d.mu.Unlock()
	return err
}

// dropRootfsSync has the source forget the sync of its writable layer
// after an abort that left the container running (Source.Resume). The
// container never stopped, so a failure only leaves disk space taken: a
// warning.
func (d *driver) dropRootfsSync(ctx context.Context) {
	err := d.retry(ctx, "drop the root filesystem sync on the source", func(ctx context.Context) error {
		return d.call(ctx, func(ctx context.Context) error { return d.src.Resume(ctx, d.rec.ID) })
	}, nil)
	if err != nil {
		d.warn(fmt.Sprintf("the container runs on the source, but the source could not drop what it kept of the root filesystem sync of migration %s (%v): run `godwit migrate --abort %s` to remove it",
			d.rec.ID, err, d.rec.ID))
	}
}
