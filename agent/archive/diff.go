package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// overlayRedirectXattr and overlayMetacopyXattr mark upper entries whose
	// content or identity lives in a lower layer (redirect_dir, metacopy
	// mount options): such an upper dir is not a self-contained diff.
	overlayRedirectXattr = "trusted.overlay.redirect"
	overlayMetacopyXattr = "trusted.overlay.metacopy"

	// xattrListSize is the first guess at an xattr list or value; the
	// kernel says when more is needed.
	xattrListSize = 1 << 10
)

// WriteOverlayDiff writes the changes recorded in an overlayfs upper dir as
// an OCI layer tar: a 0/0 character device becomes ".wh.NAME", a directory
// with trusted.overlay.opaque=y is written followed by ".wh..wh..opq", and
// everything else as it is (overlayfs's own xattrs left out). The upper dir
// should not change while it is read: freeze or stop the container first.
// Upper dirs written with redirect_dir or metacopy are refused.
func WriteOverlayDiff(ctx context.Context, upperDir string, w io.Writer) error {
	d := newDiffWriter(w)
	if err := d.overlayDir(ctx, upperDir, ""); err != nil {
		return fmt.Errorf("overlay diff of %s: %w", upperDir, err)
	}
	if err := d.tw.Close(); err != nil {
		return fmt.Errorf("overlay diff of %s: %w", upperDir, err)
	}
	return nil
}

// WriteTreeDiff compares two full trees, parent and child (for example two
// btrfs snapshots), and writes what differs in child as an OCI layer tar,
// with whiteouts for what child no longer has. An entry is unchanged when
// its type, mode, owner, mtime, size, xattrs and link target match and
// either its ctime matches too (a snapshot keeps ctimes, and no user can
// set one) or, for a regular file, its bytes do; so a tree copied with
// cp -a costs reads but yields a minimal diff.
func WriteTreeDiff(ctx context.Context, parentDir, childDir string, w io.Writer) error {
	d := newDiffWriter(w)
	if err := d.treeDir(ctx, parentDir, childDir, "", notRacy); err != nil {
		return fmt.Errorf("diff %s against %s: %w", childDir, parentDir, err)
	}
	if err := d.tw.Close(); err != nil {
		return fmt.Errorf("diff %s against %s: %w", childDir, parentDir, err)
	}
	return nil
}

// fileID identifies an inode, to write its second and later names as hard
// links.
type fileID struct{ dev, ino uint64 }

type diffWriter struct {
	tw *tar.Writer
	// links maps each multiply-linked inode already written to the member
	// name it was written under.
	links map[fileID]string
	buf   []byte
}

func newDiffWriter(w io.Writer) *diffWriter {
	return &diffWriter{tw: tar.NewWriter(w), links: map[fileID]string{}, buf: make([]byte, copyBufferSize)}
}

// entry is one directory entry with what the diff needs of it.
type entry struct {
	name   string
	full   string
	st     unix.Stat_t
	xattrs map[string]string
}

// readEntries lists dir sorted by name, with each entry's lstat and xattrs
// (overlayfs's own left out, but reported through overlay).
func readEntries(dir string) ([]entry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := make([]entry, 0, len(des))
	for _, de := range des {
		e := entry{name: de.Name(), full: filepath.Join(dir, de.Name())}
		if err := unix.Lstat(e.full, &e.st); err != nil {
			return nil, fmt.Errorf("stat %s: %w", e.full, err)
		}
		if e.xattrs, err = readXattrs(e.full); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (e *entry) typ() uint32 { return e.st.Mode & unix.S_IFMT }

// isOverlayWhiteout reports overlayfs's whiteout: a 0/0 character device.
func (e *entry) isOverlayWhiteout() bool {
	return e.typ() == unix.S_IFCHR && e.st.Rdev == 0
}

// readXattrs returns every xattr of path (not following a symlink). A
// filesystem without xattrs has none.
func readXattrs(path string) (map[string]string, error) {
	names, err := xattrCall(func(b []byte) (int, error) { return unix.Llistxattr(path, b) })
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", path, err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(names), "\x00") {
		if name == "" {
			continue
		}
		val, err := xattrCall(func(b []byte) (int, error) { return unix.Lgetxattr(path, name, b) })
		if errors.Is(err, unix.ENODATA) {
			continue // removed between list and get
		}
		if err != nil {
			return nil, fmt.Errorf("read xattr %s of %s: %w", name, path, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(val)
	}
	return out, nil
}

// xattrCall runs a list or get call, growing the buffer while the kernel
// says it is too small.
func xattrCall(call func([]byte) (int, error)) ([]byte, error) {
	size := xattrListSize
	for {
		buf := make([]byte, size)
		n, err := call(buf)
		if errors.Is(err, unix.ERANGE) {
			if n, err = call(nil); err != nil {
				return nil, err
			}
			size = n + xattrListSize
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// portableXattrs drops overlayfs's private attributes, which describe the
// upper dir rather than the files, and which Apply refuses.
func portableXattrs(x map[string]string) map[string]string {
	var out map[string]string
	for k, v := range x {
		if strings.HasPrefix(k, overlayXattrPrefix) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

func (d *diffWriter) overlayDir(ctx context.Context, full, rel string) error {
	entries, err := readEntries(full)
	if err != nil {
		return err
	}
	// Whiteouts first, as the OCI spec asks of layer writers.
	for i := range entries {
		if entries[i].isOverlayWhiteout() {
			if err := d.writeWhiteout(joinRel(rel, whiteoutPrefix+entries[i].name), &entries[i].st); err != nil {
				return err
			}
		}
	}
	for i := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		e := &entries[i]
		if e.isOverlayWhiteout() {
			continue
		}
		childRel := joinRel(rel, e.name)
		if _, ok := e.xattrs[overlayRedirectXattr]; ok {
			return fmt.Errorf("%s: %w: overlay redirect_dir is in use; mount the overlay without it", childRel, ErrUnsupported)
		}
		if _, ok := e.xattrs[overlayMetacopyXattr]; ok {
			return fmt.Errorf("%s: %w: overlay metacopy is in use; mount the overlay without it", childRel, ErrUnsupported)
		}
		if err := d.writeEntry(e, childRel); err != nil {
			return err
		}
		if e.typ() != unix.S_IFDIR {
			continue
		}
		if e.xattrs[overlayOpaqueXattr] == overlayOpaqueValue {
			if err := d.writeWhiteout(joinRel(childRel, opaqueWhiteout), &e.st); err != nil {
				return err
			}
		}
		if err := d.overlayDir(ctx, e.full, childRel); err != nil {
			return err
		}
	}
	return nil
}

// notRacy is a racyFrom that no ctime reaches.
const notRacy = math.MaxInt64

// treeDir writes what differs in childFull from parentFull; parentFull ""
// means the parent has no directory here, so everything is new. A
// regular file whose metadata is unchanged but whose ctime is at or after
// racyFrom (ns) is compared by content too (WriteTreeChanges' racy-ctime
// rule); notRacy turns that off.
func (d *diffWriter) treeDir(ctx context.Context, parentFull, childFull, rel string, racyFrom int64) error {
	children, err := readEntries(childFull)
	if err != nil {
		return err
	}
	var parents []entry
	if parentFull != "" {
		if parents, err = readEntries(parentFull); err != nil {
			return err
		}
	}
	inChild := make(map[string]bool, len(children))
	for _, c := range children {
		inChild[c.name] = true
	}
	byName := make(map[string]*entry, len(parents))
	for i := range parents {
		p := &parents[i]
		byName[p.name] = p
		if !inChild[p.name] {
			if err := d.writeWhiteout(joinRel(rel, whiteoutPrefix+p.name), &p.st); err != nil {
				return err
			}
		}
	}
	for i := range children {
		if err := ctx.Err(); err != nil {
			return err
		}
		c := &children[i]
		childRel := joinRel(rel, c.name)
		p := byName[c.name]
		same, err := sameEntry(p, c)
		if err != nil {
			return err
		}
		if same && c.typ() == unix.S_IFREG && c.st.Ctim.Nano() >= racyFrom {
			if same, err = sameContent(p.full, c.full); err != nil {
				return err
			}
		}
		if !same {
			if err := d.writeEntry(c, childRel); err != nil {
				return err
			}
		}
		if c.typ() != unix.S_IFDIR {
			continue
		}
		parentSub := ""
		if p != nil && p.typ() == unix.S_IFDIR {
			parentSub = p.full
		}
		if err := d.treeDir(ctx, parentSub, c.full, childRel, racyFrom); err != nil {
			return err
		}
	}
	return nil
}

// sameEntry reports whether child is unchanged from parent (nil: absent).
func sameEntry(p, c *entry) (bool, error) {
	if p == nil || p.typ() != c.typ() ||
		p.st.Mode&permMask != c.st.Mode&permMask ||
		p.st.Uid != c.st.Uid || p.st.Gid != c.st.Gid ||
		p.st.Mtim != c.st.Mtim ||
		!maps.Equal(portableXattrs(p.xattrs), portableXattrs(c.xattrs)) {
		return false, nil
	}
	switch c.typ() {
	case unix.S_IFREG:
		if p.st.Size != c.st.Size {
			return false, nil
		}
		if p.st.Ctim == c.st.Ctim {
			return true, nil
		}
		return sameContent(p.full, c.full)
	case unix.S_IFLNK:
		pt, err := os.Readlink(p.full)
		if err != nil {
			return false, err
		}
		ct, err := os.Readlink(c.full)
		if err != nil {
			return false, err
		}
		return pt == ct, nil
	case unix.S_IFCHR, unix.S_IFBLK:
		return p.st.Rdev == c.st.Rdev, nil
	default:
		return true, nil
	}
}

// contentChunk is how much of two files sameContent compares at a time.
const contentChunk = 64 << 10

func sameContent(a, b string) (bool, error) {
	fa, err := os.Open(a)
	if err != nil {
		return false, err
	}
	defer fa.Close()
	fb, err := os.Open(b)
	if err != nil {
		return false, err
	}
	defer fb.Close()
	ba, bb := make([]byte, contentChunk), make([]byte, contentChunk)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		aDone := erra == io.EOF || erra == io.ErrUnexpectedEOF
		bDone := errb == io.EOF || errb == io.ErrUnexpectedEOF
		switch {
		case erra != nil && !aDone:
			return false, erra
		case errb != nil && !bDone:
			return false, errb
		case aDone || bDone:
			return aDone == bDone, nil
		}
	}
}

// writeWhiteout writes an empty ".wh." member.
func (d *diffWriter) writeWhiteout(name string, st *unix.Stat_t) error {
	return d.tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		ModTime:  time.Unix(st.Mtim.Unix()),
		Format:   tar.FormatPAX,
	})
}

// writeEntry writes one entry with its data. Sockets are skipped: a tar
// cannot hold them, and their owner recreates them.
func (d *diffWriter) writeEntry(e *entry, rel string) error {
	hdr := &tar.Header{
		Name:    rel,
		Mode:    int64(e.st.Mode & permMask),
		Uid:     int(e.st.Uid),
		Gid:     int(e.st.Gid),
		ModTime: time.Unix(e.st.Mtim.Unix()),
		// PAX keeps nanosecond mtimes, long names and xattrs.
		Format: tar.FormatPAX,
	}
	if x := portableXattrs(e.xattrs); len(x) > 0 {
		hdr.PAXRecords = make(map[string]string, len(x))
		for _, k := range slices.Sorted(maps.Keys(x)) {
			hdr.PAXRecords[paxXattrPrefix+k] = x[k]
		}
	}
	switch e.typ() {
	case unix.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case unix.S_IFLNK:
		target, err := os.Readlink(e.full)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	case unix.S_IFSOCK:
		return nil
	case unix.S_IFREG:
		id := fileID{dev: e.st.Dev, ino: e.st.Ino}
		if e.st.Nlink > 1 {
			if first, ok := d.links[id]; ok {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				return d.tw.WriteHeader(hdr)
			}
			d.links[id] = rel
		}
		hdr.Typeflag, hdr.Size = tar.TypeReg, e.st.Size
		return d.writeFile(hdr, e.full)
	default:
		return fmt.Errorf("%s: %w: device nodes cannot be carried in a layer", rel, ErrUnsupported)
	}
	return d.tw.WriteHeader(hdr)
}

func (d *diffWriter) writeFile(hdr *tar.Header, full string) error {
	f, err := os.OpenFile(full, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := d.tw.WriteHeader(hdr); err != nil {
		return err
	}
	n, err := io.CopyBuffer(d.tw, io.LimitReader(f, hdr.Size), d.buf)
	if err != nil {
		return fmt.Errorf("%s: %w", hdr.Name, err)
	}
	if n != hdr.Size {
		return fmt.Errorf("%s: file shrank from %d to %d bytes while it was read; stop writers before a diff", hdr.Name, hdr.Size, n)
	}
	return nil
}
