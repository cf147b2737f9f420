package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/internal/failpoint"
	"github.com/godwit/godwit/migrate"
)

// Image layers the destination lacks come from the source before anything
// else (migration_rootfs.go has the rest of the root filesystem): the
// source sends the image's record and those layers as it stores them
// (image.Store.Send), the destination checks every layer against its
// digest and records the image only then (image.Store.Receive).

// FailpointSourceTamperLayer ("corrupt") makes the source send each
// layer with one bit of its content flipped, compressed anew so that only
// the digest check can tell: a fault test of a damaged or substituted
// layer.
const FailpointSourceTamperLayer = "migrate/source/tamper-layer"

// MigrateSendLayers sends the record of the migrating container's image
// and its layers named in layers (digests) to w, the destination's data
// connection, reporting progress.
func (a *Agent) MigrateSendLayers(ctx context.Context, id string, layers []string, w io.Writer, progress func(done, total int64)) error {
	rec, unlock, err := a.migration(id, migrate.RoleSource, false)
	if err != nil {
		return err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseAborted {
		return fenced(id, migrate.ErrAborted)
	}
	c, err := a.Inspect(ctx, rec.Container)
	if err != nil {
		return err
	}
	img, err := a.images.Get(c.Image)
	if err != nil || img.ID.String() != c.ImageID {
		return errorf(ErrInvalidState, "migration %s: container %s runs image %s (%.19s), which node %s no longer has under that name",
			id, c.Name, c.Image, c.ImageID, a.cfg.Name)
	}
	ds := make([]digest.Digest, len(layers))
	for i, l := range layers {
		if ds[i], err = digest.Parse(l); err != nil {
			return errorf(ErrInvalid, "migration %s: layer %q: %w", id, l, err)
		}
	}
	if failpoint.Armed(FailpointSourceTamperLayer) == failpoint.ActionCorrupt {
		return a.sendTamperedLayers(img, ds, w)
	}
	if err := a.images.Send(ctx, img.Name, ds, w, progress); err != nil {
		if errors.Is(err, image.ErrInvalid) {
			return errorf(ErrInvalid, "migration %s: %w", id, err)
		}
		return fmt.Errorf("migration %s: send image %s: %w", id, img.Name, err)
	}
	return nil
}

// sendTamperedLayers is MigrateSendLayers under FailpointSourceTamperLayer.
func (a *Agent) sendTamperedLayers(img *image.Image, layers []digest.Digest, w io.Writer) error {
	tw := image.NewTransferWriter(w)
	if err := tw.WriteImage(img); err != nil {
		return err
	}
	for _, d := range layers {
		rc, err := a.images.OpenLayer(d)
		if err != nil {
			return err
		}
		content, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		content[len(content)/2] ^= 0x01
		var buf bytes.Buffer
		zw, err := zstd.NewWriter(&buf)
		if err != nil {
			return err
		}
		if _, err := zw.Write(content); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		a.log.Warn("failpoint: sending a tampered layer", "failpoint", FailpointSourceTamperLayer, "layer", d)
		if err := tw.WriteLayer(d, int64(buf.Len()), &buf); err != nil {
			return err
		}
	}
	return tw.Close()
}

// MigrateReceiveLayers takes the image the source sends on r: the image
// the container needs, as Prepare recorded it, whose layers are checked
// against their digests before the image is recorded. A repeated call
// for an image this node has takes the stream and changes nothing.
func (a *Agent) MigrateReceiveLayers(ctx context.Context, id string, r io.Reader) (migrate.Phase, error) {
	rec, unlock, err := a.migration(id, migrate.RoleDestination, false)
	if err != nil {
		return "", err
	}
	defer unlock()
	if rec.Phase == migrate.PhaseAborted {
		return rec.Phase, fenced(id, migrate.ErrAborted)
	}
	st, err := a.loadRootfs(id)
	if err != nil {
		return rec.Phase, err
	}
	if st == nil || st.Image == "" {
		return rec.Phase, errorf(ErrInvalidState, "migration %s: node %s did not prepare it: prepare first", id, a.cfg.Name)
	}
	want := image.Want{Name: st.Image}
	for _, l := range st.Layers {
		want.Layers = append(want.Layers, digest.Digest(l))
	}
	_, getErr := a.images.Get(st.Image)
	had := getErr == nil
	img, err := a.images.Receive(ctx, r, want)
	if err != nil {
		if errors.Is(err, image.ErrInvalid) {
			return rec.Phase, errorf(ErrInvalid, "migration %s: image from the source refused: %w", id, err)
		}
		return rec.Phase, fmt.Errorf("migration %s: %w", id, err)
	}
	if !had {
		st.FetchedImage = true
		if err := a.saveRootfs(id, st); err != nil {
			return rec.Phase, err
		}
		a.log.Info("image fetched from the migration's source", "migration", id, "image", img.Name, "id", img.ID, "layers", len(img.Layers))
	}
	return rec.Phase, nil
}
