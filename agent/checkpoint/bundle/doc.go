// Package bundle owns godwit's checkpoint format: the layout of a checkpoint
// directory, its manifest, and the portable archive a checkpoint is exported
// to and imported from. It only handles files: the agent fills a directory
// with what runc and CRIU wrote, and calls this package to seal, verify,
// export, import and check it, so all of it is testable without either tool.
// docs/checkpoint-format.md is the operator-facing description.
//
// # Directory
//
//	manifest.json     the Manifest (written last, by WriteManifest)
//	config.json       the OCI runtime spec the container ran with
//	rootfs-diff.tar   the writable layer's changes, as an OCI layer tar
//	criu/             CRIU's image files, flat
//
// Every file other than the manifest is listed in it with its size and
// sha256; the manifest also records the image and its layer digests, the
// dumping node's CRIU, runc and kernel versions and CPU, the dump options
// and CRIU's statistics. Only regular files are allowed, at the top level
// or directly in criu/: no symlinks, devices or subdirectories, so that a
// checkpoint from elsewhere cannot point outside itself. [Verify] checks a
// directory against its manifest; restore calls it before CRIU reads any
// image, since a crafted image is code execution as root.
//
// # Archive
//
// An archive is a tar whose first member is manifest.json, followed by
// every listed file in manifest order, all regular files (Import tolerates
// a criu/ directory member and nothing else). The tar is zstd-compressed unless exported with
// [NoCompression], and the result is optionally encrypted with age
// (filippo.io/age: X25519, ChaCha20-Poly1305 in 64 KiB authenticated
// chunks) to the identity in a key file. [Import] and [Inspect] recognise
// both layers by their magic bytes.
//
// [Import] refuses, naming the member, anything the manifest does not
// describe exactly: an unlisted, repeated or missing member, a size or
// digest mismatch, a non-regular member, a path outside the layout, a
// truncated or corrupt stream, a wrong key or a tampered ciphertext. It
// writes into a staging directory beside the destination and renames it
// into place only after every digest matched, so a refused archive leaves
// nothing behind.
//
// # Migration transfer
//
// A live migration moves a checkpoint between two agents in a framing of
// its own ([Send], [Receive]; see transfer.go and
// docs/migration-transfer.md), not as an archive: the manifest, the files
// back to back in manifest order, then a trailer with every file's sha256.
// The source may seal its dump without digests ([WritePendingManifest]:
// the manifest's digests_pending) and have Send digest the files as it
// sends them, so that the container's freeze does not pay a pass over its
// memory first; [Seal] digests such a checkpoint when it is to be
// restored where it is. The receiver digests each file as it writes it,
// refuses the transfer (naming the file) when a digest differs from the
// trailer's, and returns a [Receipt]: the identity of every file it wrote,
// against which [Receipt.Verify] checks the directory before restore with
// a stat per file, digesting only the files changed since.
// [ImportWithReceipt] gives the same receipt for an archive. Verify,
// Export and Import refuse a manifest whose digests are pending
// ([ErrUnsealed], or ErrInvalidManifest in an archive).
//
// # Trust
//
// Digests catch corruption, not an attacker: whoever can rewrite a
// plaintext archive can rewrite its manifest too. Encryption is what
// authenticates an archive, since only holders of the key file can make one
// that decrypts (age's recipient is derived from the identity, and godwit
// never publishes it). An import with a key therefore refuses a plaintext
// archive rather than silently accepting an unauthenticated one.
//
// # Compatibility
//
// [CheckCompatibility] compares a manifest with the restoring host: missing
// image layers, an older CRIU, another runc major version and missing CPU
// features refuse the restore (an *[IncompatibleError] listing each);
// another kernel, runc minor version or CPU model are warnings.
package bundle
