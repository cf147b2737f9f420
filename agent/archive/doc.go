// Package archive owns godwit's filesystem tar streams: checking and
// extracting OCI layer tars safely, and writing the changes of a
// copy-on-write tree back out as a layer tar. Image import, the overlay and
// btrfs snapshotters, and (later) checkpoint archives all go through it, so
// that there is exactly one place that decides what a tar may do to a disk.
//
// # Extraction policy
//
// A layer tar comes from whoever built the image, which godwit does not
// trust, and it is unpacked as root. [Check] and [Apply] therefore enforce one
// policy, and every refusal is a *[MemberError] naming the member:
//
//   - Names are relative. A leading "./" is normal and dropped; a name that
//     starts with "/" is refused, as is any name with a ".." component, even
//     one that would stay inside the root ("a/../b"): no honest tool writes
//     them.
//   - No member is written through a symlink. A member whose parent path
//     goes through a symlink, whether the symlink came earlier in the same
//     archive or already exists in the target directory (a parent layer), is
//     refused. Apply resolves every parent with openat2(RESOLVE_BENEATH |
//     RESOLVE_NO_SYMLINKS), falling back to a component-by-component
//     openat(O_NOFOLLOW) walk, and creates the final component with *at
//     calls relative to that directory, so neither a crafted archive nor a
//     symlink already on disk can send a write outside dir. An existing
//     entry at a member's own name is replaced, never followed.
//   - Symlink targets: an absolute target is allowed, because at run time it
//     resolves inside the container's root (Debian's /etc/localtime points
//     at /usr/share/zoneinfo/...). A relative target that climbs out of the
//     root when resolved lexically from the link's directory is refused.
//   - Hard links must name, by a relative path without "..", a non-directory
//     member that came earlier in the same archive and that is still reached
//     without crossing a symlink. Links to absolute paths, to names outside
//     the root, or to anything only a parent layer holds are refused.
//   - Character and block devices are refused: a layer has no business
//     creating device nodes, and overlay whiteouts inside a layer tar must
//     use the OCI ".wh." form. FIFOs are allowed. Unknown member types are
//     refused with [ErrUnsupported].
//   - Extended attributes are carried (PAX "SCHILY.xattr." records), except
//     "trusted.overlay.*", which would change how overlayfs reads the layer
//     (redirects, metacopy, opacity): a member carrying one is refused.
//   - A truncated member, a corrupt or truncated header, a missing
//     end-of-archive marker and an empty stream are refused with
//     [ErrTruncated]; the member named is the one being read or, for a
//     header, the one before it.
//
// Apply stops at the first refusal and leaves whatever it had already
// extracted in dir: callers extract into a fresh directory and discard it on
// error. Check runs the same rules without touching a disk, which is how
// image import refuses a hostile layer before writing anything.
//
// # Whiteouts
//
// A layer removes what its parents had with OCI whiteouts: an empty file
// ".wh.NAME" removes NAME, and ".wh..wh..opq" in a directory hides every
// entry its parents had there. Per the OCI spec they apply only to parent
// layers: an entry the same archive wrote is kept. [WhiteoutDelete] applies
// them to a full copy of the parent tree (btrfs); [WhiteoutOverlay] turns
// them into what overlayfs reads in an upper dir (a 0/0 character device,
// and the xattr trusted.overlay.opaque=y). Other ".wh..wh." names are aufs
// bookkeeping and are skipped.
//
// # Writing diffs
//
// [WriteOverlayDiff] and [WriteTreeDiff] write PAX tars (nanosecond mtimes,
// xattrs) that Apply accepts. Sockets are skipped (a tar cannot hold them);
// device nodes other than overlay whiteouts are refused; overlay upper dirs
// written with redirect_dir or metacopy are refused, since their files are
// not self-contained. Hard links are kept when every name of the inode is in
// the diff; a new name for an unchanged file is written as a copy.
//
// Ownership is restored as recorded. When the process is not root, an owner
// it may not set is left as the extracting user, so that unprivileged tests
// and tools can still unpack a layer.
package archive
