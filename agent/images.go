package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/godwit/godwit/agent/image"
	"github.com/godwit/godwit/agent/snapshot"
)

// ImportImage adds an image tarball to the node's store.
func (a *Agent) ImportImage(ctx context.Context, r io.Reader, name string) (*image.Image, error) {
	img, err := a.images.Import(ctx, r, name)
	if err != nil {
		return nil, fmt.Errorf("import image on node %s: %w", a.cfg.Name, err)
	}
	a.log.Info("image imported", "image", img.Name, "id", img.ID, "layers", len(img.Layers))
	return img, nil
}

// Images lists the node's images.
func (a *Agent) Images() ([]image.Image, error) { return a.images.List() }

// RemoveImage deletes an image that no container uses.
func (a *Agent) RemoveImage(ctx context.Context, ref string) error {
	img, err := a.images.Get(ref)
	if err != nil {
		if errors.Is(err, image.ErrNotFound) {
			return errorf(ErrNotFound, "no image %q on node %s: list them with `godwit image ls`", ref, a.cfg.Name)
		}
		return err
	}
	a.mu.Lock()
	var users []string
	for _, e := range a.containers {
		if e.c.ImageID == img.ID.String() {
			users = append(users, e.c.Name)
		}
	}
	a.mu.Unlock()
	if len(users) > 0 {
		return errorf(ErrInUse, "image %s is used by containers %v: remove them first", img.Name, users)
	}

	// Hold unpackMu so no run unpacks onto a layer snapshot being removed.
	a.unpackMu.Lock()
	defer a.unpackMu.Unlock()
	if err := a.images.Remove(img.ID.String()); err != nil {
		return err
	}
	// Drop its unpacked layers, newest first; a layer another image still
	// builds on has children and stays.
	keys := layerKeys(img)
	for i := len(keys) - 1; i >= 0; i-- {
		err := a.snaps.Remove(ctx, keys[i])
		if errors.Is(err, snapshot.ErrHasChildren) {
			break
		}
		if err != nil && !errors.Is(err, snapshot.ErrNotFound) {
			a.log.Warn("remove unpacked layer", "image", img.Name, "snapshot", keys[i], "err", err)
		}
	}
	a.log.Info("image removed", "image", img.Name, "id", img.ID)
	return nil
}

// unpack makes sure each layer of img is a committed snapshot and returns
// the key of the top one, the parent of the container's snapshot. Layer
// snapshots are keyed by chain ID (the layer and everything below it), so
// images sharing lower layers share their snapshots.
func (a *Agent) unpack(ctx context.Context, img *image.Image) (string, error) {
	a.unpackMu.Lock()
	defer a.unpackMu.Unlock()
	parent := ""
	for i, key := range layerKeys(img) {
		if _, err := a.snaps.Stat(ctx, key); err == nil {
			parent = key
			continue
		} else if !errors.Is(err, snapshot.ErrNotFound) {
			return "", err
		}
		if err := a.unpackLayer(ctx, img.Layers[i].Digest, key, parent); err != nil {
			return "", fmt.Errorf("image %s: unpack layer %s: %w", img.Name, img.Layers[i].Digest, err)
		}
		parent = key
	}
	return parent, nil
}

func (a *Agent) unpackLayer(ctx context.Context, layer digest.Digest, key, parent string) (err error) {
	active := "unpack-" + newID()[:16]
	if _, err := a.snaps.Prepare(ctx, active, parent); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.snaps.Remove(context.WithoutCancel(ctx), active))
		}
	}()
	rc, err := a.images.OpenLayer(layer)
	if err != nil {
		return err
	}
	defer rc.Close()
	if err := a.snaps.Apply(ctx, active, rc); err != nil {
		return err
	}
	return a.snaps.Commit(ctx, key, active)
}

// layerKeys returns the snapshot key of each layer of img, bottom first:
// "layer-" and the OCI chain ID of the layer.
func layerKeys(img *image.Image) []string {
	keys := make([]string, len(img.Layers))
	var chain digest.Digest
	for i, l := range img.Layers {
		if i == 0 {
			chain = l.Digest
		} else {
			chain = digest.Digest(fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(chain.String()+" "+l.Digest.String()))))
		}
		keys[i] = "layer-" + chain.Encoded()
	}
	return keys
}
