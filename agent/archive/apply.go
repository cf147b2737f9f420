package archive

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// WhiteoutMode says how Apply carries out a layer's whiteouts.
type WhiteoutMode int

const (
	// WhiteoutDelete applies a layer onto a full copy of its parent (a btrfs
	// snapshot): ".wh.X" removes X, ".wh..wh..opq" empties its directory of
	// everything the parents had there.
	WhiteoutDelete WhiteoutMode = iota + 1
	// WhiteoutOverlay applies a layer into an empty overlayfs upper (or
	// lower) dir: ".wh.X" becomes a 0/0 character device X, and an opaque
	// directory gets the xattr trusted.overlay.opaque=y. It needs
	// CAP_MKNOD and CAP_SYS_ADMIN (root).
	WhiteoutOverlay
)

func (m WhiteoutMode) String() string {
	switch m {
	case WhiteoutDelete:
		return "delete"
	case WhiteoutOverlay:
		return "overlay"
	default:
		return "whiteoutmode(" + strconv.Itoa(int(m)) + ")"
	}
}

const (
	// implicitDirMode is given to a parent directory the archive uses but
	// never lists, as tar and containerd do.
	implicitDirMode = 0o755
	// createFileMode keeps a file private while its data is written; the
	// member's mode is set once it is complete.
	createFileMode = 0o600
	// permMask is what a tar mode carries: permissions with setuid, setgid
	// and sticky; the values match the kernel's.
	permMask = 0o7777
	// copyBufferSize is the chunk in which member data is copied.
	copyBufferSize = 128 << 10

	dirOpenFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC
	// beneathNoSymlinks keeps a lookup under the root and refuses every
	// symlink on the way, so no parent can be redirected.
	beneathNoSymlinks = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS
)

// Apply extracts an uncompressed OCI layer tar into dir, carrying out its
// whiteouts as mode says. It preserves mode (setuid, setgid and sticky
// included), owner, nanosecond mtime, xattrs, symlinks, hard links (within
// the archive) and FIFOs. Nothing is ever written outside dir or through a
// symlink. A member the policy refuses, or a broken stream, stops Apply with
// a *MemberError naming the member; what was already extracted stays in
// dir, so extract into a fresh directory and discard it on error.
func Apply(ctx context.Context, dir string, r io.Reader, mode WhiteoutMode) error {
	if mode != WhiteoutDelete && mode != WhiteoutOverlay {
		return fmt.Errorf("apply layer into %s: unknown whiteout mode %v", dir, mode)
	}
	rootFD, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("apply layer: open %s: %w", dir, err)
	}
	a := &applier{
		root:     rootFD,
		mode:     mode,
		cacheFD:  -1,
		dirIndex: map[string]int{},
		buf:      make([]byte, copyBufferSize),
		notRoot:  os.Geteuid() != 0,
	}
	defer a.close()

	s := newStream(r)
	a.written = s.v.entries
	for {
		m, err := s.next(ctx)
		if err != nil {
			return err
		}
		if m == nil {
			break
		}
		if err := a.apply(m, s.tr); err != nil {
			return err
		}
	}
	return a.finishDirs()
}

// deferredDir is a directory whose mode and times are set once every
// member is in: writing a child changes a directory's mtime, and a
// read-only mode would stop an unprivileged extraction.
type deferredDir struct {
	m            *member
	mode         uint32
	atime, mtime time.Time
}

type applier struct {
	root int
	mode WhiteoutMode
	// written is what this archive has created so far (the validator's
	// record): whiteouts never remove those.
	written map[string]kind

	// One open parent directory is kept, since members usually come
	// grouped by directory.
	cacheRel string
	cacheFD  int

	dirs     []deferredDir
	dirIndex map[string]int
	buf      []byte
	notRoot  bool
}

func (a *applier) close() {
	a.dropCache()
	_ = unix.Close(a.root)
}

func (a *applier) dropCache() {
	if a.cacheFD >= 0 {
		_ = unix.Close(a.cacheFD)
		a.cacheFD = -1
	}
}

// symlinkParentError reports a parent in the target directory that is a
// symlink: the archive is refused rather than followed.
type symlinkParentError struct{ prefix string }

func (e *symlinkParentError) Error() string {
	return fmt.Sprintf("parent %q is a symlink in the target directory; members may not be written through symlinks", e.prefix)
}

// openDir opens the directory rel under the root without following any
// symlink, creating missing components when create is set. The caller
// closes the result.
func (a *applier) openDir(rel string, create bool) (int, error) {
	if rel == "" {
		return unix.Openat(a.root, ".", dirOpenFlags, 0)
	}
	fd, err := unix.Openat2(a.root, rel, &unix.OpenHow{Flags: dirOpenFlags, Resolve: beneathNoSymlinks})
	if err == nil {
		return fd, nil
	}
	// A missing component, a symlink to name in the error, or a kernel
	// without openat2 (ENOSYS, or EPERM under some seccomp profiles): walk.
	return a.walkDir(rel, create)
}

// walkDir opens rel one component at a time with O_NOFOLLOW.
func (a *applier) walkDir(rel string, create bool) (int, error) {
	cur, err := unix.Openat(a.root, ".", dirOpenFlags, 0)
	if err != nil {
		return -1, err
	}
	parts := strings.Split(rel, "/")
	for i, c := range parts {
		fd, err := unix.Openat(cur, c, dirOpenFlags, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err := unix.Mkdirat(cur, c, implicitDirMode); err != nil && !errors.Is(err, unix.EEXIST) {
				_ = unix.Close(cur)
				return -1, fmt.Errorf("create directory %q: %w", strings.Join(parts[:i+1], "/"), err)
			}
			fd, err = unix.Openat(cur, c, dirOpenFlags, 0)
		}
		if err != nil {
			prefix := strings.Join(parts[:i+1], "/")
			var st unix.Stat_t
			if serr := unix.Fstatat(cur, c, &st, unix.AT_SYMLINK_NOFOLLOW); serr == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = &symlinkParentError{prefix: prefix}
			} else {
				err = fmt.Errorf("open directory %q: %w", prefix, err)
			}
			_ = unix.Close(cur)
			return -1, err
		}
		_ = unix.Close(cur)
		cur = fd
	}
	return cur, nil
}

// parent returns an fd (the caller's to close) for the directory holding
// rel, creating missing parents.
func (a *applier) parent(rel string) (int, error) {
	dir := parentDir(rel)
	if a.cacheFD < 0 || a.cacheRel != dir {
		a.dropCache()
		fd, err := a.openDir(dir, true)
		if err != nil {
			return -1, err
		}
		a.cacheFD, a.cacheRel = fd, dir
	}
	return unix.Dup(a.cacheFD)
}

// fail wraps a filesystem error for member m; a symlink on the way is the
// archive's fault and is reported as unsafe.
func (a *applier) fail(m *member, op string, err error) error {
	var sp *symlinkParentError
	if errors.As(err, &sp) {
		return &MemberError{Name: m.hdr.Name, Reason: sp.Error(), Err: ErrUnsafe}
	}
	return &MemberError{Name: m.hdr.Name, Reason: fmt.Sprintf("%s: %v", op, err), Err: err}
}

func (a *applier) apply(m *member, data io.Reader) error {
	switch m.whiteout {
	case whiteoutMeta:
		return nil
	case whiteoutFile:
		return a.applyWhiteout(m)
	case whiteoutOpaque:
		return a.applyOpaque(m)
	}
	if m.rel == "" {
		return a.applyRoot(m)
	}
	pfd, err := a.parent(m.rel)
	if err != nil {
		return a.fail(m, "open parent", err)
	}
	defer unix.Close(pfd)
	base := path.Base(m.rel)

	switch m.hdr.Typeflag {
	case tar.TypeDir:
		return a.applyDir(m, pfd, base)
	case tar.TypeSymlink:
		if err := a.removeAt(pfd, base); err != nil {
			return a.fail(m, "replace existing entry", err)
		}
		if err := unix.Symlinkat(m.hdr.Linkname, pfd, base); err != nil {
			return a.fail(m, "create symlink", err)
		}
		return a.setMetaAt(m, pfd, base, false)
	case tar.TypeLink:
		return a.applyHardlink(m, pfd, base)
	case tar.TypeFifo:
		if err := a.removeAt(pfd, base); err != nil {
			return a.fail(m, "replace existing entry", err)
		}
		if err := unix.Mknodat(pfd, base, unix.S_IFIFO|createFileMode, 0); err != nil {
			return a.fail(m, "create fifo", err)
		}
		return a.setMetaAt(m, pfd, base, true)
	default: // regular file; the validator let nothing else through
		return a.applyFile(m, pfd, base, data)
	}
}

func (a *applier) applyFile(m *member, pfd int, base string, data io.Reader) error {
	if err := a.removeAt(pfd, base); err != nil {
		return a.fail(m, "replace existing entry", err)
	}
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, createFileMode)
	if err != nil {
		return a.fail(m, "create file", err)
	}
	f := os.NewFile(uintptr(fd), m.rel)
	dr := &dataReader{r: data}
	_, err = io.CopyBuffer(f, dr, a.buf)
	if err != nil {
		_ = f.Close()
		if dr.err != nil {
			return truncated(m.hdr.Name, "data is cut short", dr.err)
		}
		return a.fail(m, "write file", err)
	}
	if err := a.chown(unix.Fchown(fd, m.hdr.Uid, m.hdr.Gid)); err != nil {
		_ = f.Close()
		return a.fail(m, "set owner", err)
	}
	// After chown, which clears setuid and setgid.
	if err := unix.Fchmod(fd, uint32(m.hdr.Mode&permMask)); err != nil {
		_ = f.Close()
		return a.fail(m, "set mode", err)
	}
	if err := setXattrs(m.xattrs, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
		_ = f.Close()
		return a.fail(m, "set xattrs", err)
	}
	if err := f.Close(); err != nil {
		return a.fail(m, "write file", err)
	}
	return a.setTimesAt(m, pfd, base)
}

func (a *applier) applyDir(m *member, pfd int, base string) error {
	var st unix.Stat_t
	err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := a.removeAt(pfd, base); err != nil {
			return a.fail(m, "replace existing entry", err)
		}
	}
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := unix.Mkdirat(pfd, base, implicitDirMode); err != nil {
			return a.fail(m, "create directory", err)
		}
	}
	fd, err := unix.Openat(pfd, base, dirOpenFlags, 0)
	if err != nil {
		return a.fail(m, "open directory", err)
	}
	defer unix.Close(fd)
	return a.setDirMeta(m, fd)
}

// applyRoot sets the metadata a "./" member gives the root directory.
func (a *applier) applyRoot(m *member) error {
	fd, err := a.openDir("", false)
	if err != nil {
		return a.fail(m, "open root", err)
	}
	defer unix.Close(fd)
	return a.setDirMeta(m, fd)
}

func (a *applier) setDirMeta(m *member, fd int) error {
	if err := a.chown(unix.Fchown(fd, m.hdr.Uid, m.hdr.Gid)); err != nil {
		return a.fail(m, "set owner", err)
	}
	if err := setXattrs(m.xattrs, func(k string, v []byte) error { return unix.Fsetxattr(fd, k, v, 0) }); err != nil {
		return a.fail(m, "set xattrs", err)
	}
	d := deferredDir{m: m, mode: uint32(m.hdr.Mode & permMask), atime: accessTime(m.hdr), mtime: m.hdr.ModTime}
	if i, ok := a.dirIndex[m.rel]; ok {
		a.dirs[i] = d
	} else {
		a.dirIndex[m.rel] = len(a.dirs)
		a.dirs = append(a.dirs, d)
	}
	return nil
}

func (a *applier) applyHardlink(m *member, pfd int, base string) error {
	tfd, err := a.openDir(parentDir(m.link), false)
	if err != nil {
		return a.fail(m, "open hard link target's directory", err)
	}
	defer unix.Close(tfd)
	if err := a.removeAt(pfd, base); err != nil {
		return a.fail(m, "replace existing entry", err)
	}
	// Flags 0: a target that is a symlink is linked itself, never followed.
	if err := unix.Linkat(tfd, path.Base(m.link), pfd, base, 0); err != nil {
		return a.fail(m, "create hard link", err)
	}
	return nil
}

func (a *applier) applyWhiteout(m *member) error {
	if _, ok := a.written[m.hidden]; ok {
		// A whiteout hides what parent layers had, never its own layer's
		// entries (OCI image spec, "Whiteouts").
		return nil
	}
	var pfd int
	var err error
	if a.mode == WhiteoutOverlay {
		// The character device must sit in the layer's own copy of the
		// directory, which may not exist yet.
		pfd, err = a.parent(m.hidden)
	} else {
		pfd, err = a.openDir(parentDir(m.hidden), false)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return nil // nothing there to remove
		}
	}
	if err != nil {
		return a.fail(m, "open parent", err)
	}
	defer unix.Close(pfd)
	base := path.Base(m.hidden)
	if err := a.removeAt(pfd, base); err != nil {
		return a.fail(m, "remove whited-out entry", err)
	}
	if a.mode == WhiteoutOverlay {
		if err := unix.Mknodat(pfd, base, unix.S_IFCHR, int(unix.Mkdev(0, 0))); err != nil {
			return a.fail(m, "create overlay whiteout", err)
		}
	}
	return nil
}

func (a *applier) applyOpaque(m *member) error {
	fd, err := a.openDir(m.hidden, true)
	if err != nil {
		return a.fail(m, "open opaque directory", err)
	}
	defer unix.Close(fd)
	if a.mode == WhiteoutOverlay {
		if err := unix.Fsetxattr(fd, overlayOpaqueXattr, []byte(overlayOpaqueValue), 0); err != nil {
			return a.fail(m, "mark directory opaque", err)
		}
		return nil
	}
	if err := a.prune(fd, m.hidden); err != nil {
		return a.fail(m, "empty opaque directory", err)
	}
	return nil
}

// prune removes from directory fd (at rel) everything this archive did not
// write, descending into the directories it did write: an opaque
// directory hides all of its parents' contents, at any depth.
func (a *applier) prune(fd int, rel string) error {
	names, err := readDirNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		child := joinRel(rel, n)
		k, ok := a.written[child]
		if !ok {
			if err := a.removeAt(fd, n); err != nil {
				return err
			}
			continue
		}
		if k != kindDir {
			continue
		}
		cfd, err := unix.Openat(fd, n, dirOpenFlags, 0)
		if err != nil {
			return fmt.Errorf("open %q: %w", child, err)
		}
		err = a.prune(cfd, child)
		_ = unix.Close(cfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// removeAt removes name from directory dirFD, whatever it is; a directory
// goes with everything under it. A missing entry is not an error.
func (a *applier) removeAt(dirFD int, name string) error {
	err := unix.Unlinkat(dirFD, name, 0)
	switch {
	case err == nil, errors.Is(err, unix.ENOENT):
		return nil
	case errors.Is(err, unix.EISDIR):
		// The cached parent may lie inside the tree about to go.
		a.dropCache()
		return removeTreeAt(dirFD, name)
	default:
		return err
	}
}

func removeTreeAt(dirFD int, name string) error {
	fd, err := unix.Openat(dirFD, name, dirOpenFlags, 0)
	if err != nil {
		return err
	}
	names, err := readDirNames(fd)
	if err == nil {
		for _, n := range names {
			err = unix.Unlinkat(fd, n, 0)
			if errors.Is(err, unix.EISDIR) {
				err = removeTreeAt(fd, n)
			}
			if err != nil && !errors.Is(err, unix.ENOENT) {
				break
			}
			err = nil
		}
	}
	_ = unix.Close(fd)
	if err != nil {
		return err
	}
	return unix.Unlinkat(dirFD, name, unix.AT_REMOVEDIR)
}

// readDirNames lists directory fd without consuming fd's own offset.
func readDirNames(fd int) ([]string, error) {
	dup, err := unix.Openat(fd, ".", dirOpenFlags, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(dup), ".")
	defer f.Close()
	return f.Readdirnames(-1)
}

// setMetaAt sets owner, mode (unless a symlink), xattrs and times of an
// entry that has no open fd: a symlink or a FIFO (opening a FIFO blocks).
func (a *applier) setMetaAt(m *member, pfd int, base string, chmod bool) error {
	if err := a.chown(unix.Fchownat(pfd, base, m.hdr.Uid, m.hdr.Gid, unix.AT_SYMLINK_NOFOLLOW)); err != nil {
		return a.fail(m, "set owner", err)
	}
	if chmod {
		if err := unix.Fchmodat(pfd, base, uint32(m.hdr.Mode&permMask), 0); err != nil {
			return a.fail(m, "set mode", err)
		}
	}
	if len(m.xattrs) > 0 {
		// The l* calls take a path; going through the parent's fd keeps the
		// lookup on the directory already opened without symlinks.
		p := fmt.Sprintf("/proc/self/fd/%d/%s", pfd, base)
		if err := setXattrs(m.xattrs, func(k string, v []byte) error { return unix.Lsetxattr(p, k, v, 0) }); err != nil {
			return a.fail(m, "set xattrs", err)
		}
	}
	return a.setTimesAt(m, pfd, base)
}

func (a *applier) setTimesAt(m *member, pfd int, base string) error {
	ts := []unix.Timespec{toTimespec(accessTime(m.hdr)), toTimespec(m.hdr.ModTime)}
	if err := unix.UtimesNanoAt(pfd, base, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return a.fail(m, "set times", err)
	}
	return nil
}

// chown passes err through, except that an unprivileged extraction keeps
// its own ownership where it may not give the recorded one.
func (a *applier) chown(err error) error {
	if err != nil && a.notRoot && errors.Is(err, unix.EPERM) {
		return nil
	}
	return err
}

// finishDirs sets the deferred modes and times. A directory that a later
// member removed or replaced is skipped: it is no longer there to set.
func (a *applier) finishDirs() error {
	a.dropCache()
	for i := len(a.dirs) - 1; i >= 0; i-- {
		d := a.dirs[i]
		fd, err := a.openDir(d.m.rel, false)
		if err != nil {
			continue
		}
		err = unix.Fchmod(fd, d.mode)
		if err == nil {
			err = unix.UtimesNanoAt(fd, ".", []unix.Timespec{toTimespec(d.atime), toTimespec(d.mtime)}, 0)
		}
		_ = unix.Close(fd)
		if err != nil {
			return a.fail(d.m, "set directory mode and times", err)
		}
	}
	return nil
}

// setXattrs sets each attribute; a filesystem without xattr support for a
// namespace (ENOTSUP) loses that attribute rather than the whole layer.
func setXattrs(xattrs map[string]string, set func(string, []byte) error) error {
	for k, v := range xattrs {
		if err := set(k, []byte(v)); err != nil && !errors.Is(err, unix.ENOTSUP) {
			return fmt.Errorf("%s: %w", k, err)
		}
	}
	return nil
}

func accessTime(hdr *tar.Header) time.Time {
	if hdr.AccessTime.IsZero() {
		return hdr.ModTime
	}
	return hdr.AccessTime
}

func toTimespec(t time.Time) unix.Timespec {
	return unix.NsecToTimespec(t.UnixNano())
}
