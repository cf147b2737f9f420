// Package image owns a node's image store: importing image tarballs,
// verifying them, and keeping their layers content-addressed on disk for
// the snapshotters to unpack.
//
// # Formats
//
// [Store.Import] takes one tarball, compressed with gzip or zstd or not
// (detected from its magic bytes, as is each layer inside it):
//
//   - an OCI image layout (oci-layout, index.json, blobs/<alg>/<hex>);
//   - a `docker save` tarball (manifest.json, the config JSON, layer tars,
//     including the symlinks Docker writes for repeated layers);
//   - a plain root filesystem tar, which becomes a one-layer image.
//
// A tarball with an "oci-layout" member is read as OCI, else one with
// "manifest.json" as docker, else as a root filesystem.
//
// # Verification
//
// Every digest the tarball states is checked against the bytes: the OCI
// manifest, config and layer descriptors (digest and size), a docker
// config named by its digest, layer blobs named by their digest, and every
// layer's uncompressed digest against the config's rootfs.diff_ids. Every
// layer also passes [archive.Check], so a hostile member is refused at
// import, before anything is unpacked. Any failure leaves the store as it
// was: an import is staged under <root>/tmp, moved into place only when
// everything verified, and the index is written last.
//
// # On disk
//
//	<root>/index.json                     the images (name, ID, layers, config)
//	<root>/layers/sha256/<hex>.tar.zst    one file per layer
//	<root>/tmp/                           staging; emptied by Open
//
// A layer is addressed by the sha256 of its UNCOMPRESSED tar (its OCI diff
// ID), so the same layer imported gzip'd in one image and plain in another
// is stored once. It is stored zstd-compressed to save space; [Store.OpenLayer]
// decompresses it and re-verifies the digest as it is read. An image's ID is
// its config digest (OCI, docker) or its single layer's digest (rootfs).
//
// One Store per root: Open removes leftovers from a crashed import and
// layers no image references.
//
// # Transfers
//
// [Store.Send] writes an image's record and some of its layers, as
// stored, for another node (a migration's destination); [Store.Receive]
// reads that stream, checks every layer against its digest and the
// extraction policy, and records the image only when all of it is in,
// under the sender's name and ID. A wrong layer is refused naming it,
// and the store is left as it was.
package image
