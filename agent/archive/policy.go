package archive

import (
	"archive/tar"
	"context"
	"io"
	"path"
	"strings"
)

const (
	// blockSize is the tar record unit: headers and data padding.
	blockSize = 512

	// paxXattrPrefix introduces an extended attribute in PAX records, as
	// GNU tar, bsdtar, Docker and containerd write them.
	paxXattrPrefix = "SCHILY.xattr."
	// overlayXattrPrefix is overlayfs's private namespace; a layer that sets
	// it could redirect lookups or hide its parents' files.
	overlayXattrPrefix = "trusted.overlay."
	// overlayOpaqueXattr marks an upper directory that hides its lowers.
	overlayOpaqueXattr = "trusted.overlay.opaque"
	// overlayOpaqueValue is the only value of overlayOpaqueXattr that means
	// opaque ("x" on newer kernels means "has xattr whiteouts").
	overlayOpaqueValue = "y"

	// whiteoutPrefix marks an OCI whiteout file: ".wh.NAME" removes NAME.
	whiteoutPrefix = ".wh."
	// whiteoutMetaPrefix marks aufs bookkeeping entries, which are skipped.
	whiteoutMetaPrefix = ".wh..wh."
	// opaqueWhiteout hides every entry the parent layers had in its dir.
	opaqueWhiteout = ".wh..wh..opq"
)

// kind is what the archive has at a path so far, as far as the policy
// cares: parents must be directories, and never symlinks.
type kind uint8

const (
	kindDir kind = iota + 1
	kindSymlink
	kindOther // regular file, hard link to one, FIFO
)

// whiteout says whether a member is a whiteout, and which kind.
type whiteout uint8

const (
	notWhiteout whiteout = iota
	whiteoutFile
	whiteoutOpaque
	whiteoutMeta
)

// member is a header that passed the policy, with its name made relative.
type member struct {
	hdr *tar.Header
	// rel is the cleaned relative name; "" is the root directory itself.
	rel string
	// whiteout and hidden: for whiteoutFile, hidden is the entry removed;
	// for whiteoutOpaque, the directory emptied.
	whiteout whiteout
	hidden   string
	// link is the cleaned target of a hard link.
	link   string
	xattrs map[string]string
}

// validator applies the extraction policy to one archive's headers in
// order. It remembers what each earlier member made of its path, so that a
// member under an archive symlink, or a hard link to nothing, is refused
// before anything is written.
type validator struct {
	entries map[string]kind
}

func newValidator() *validator {
	return &validator{entries: map[string]kind{"": kindDir}}
}

// cleanName makes a member name relative: it drops "." components, empty
// components and a leading "./", and refuses absolute names and "..".
func cleanName(name string) (string, string) {
	if name == "" {
		return "", "empty name"
	}
	if strings.HasPrefix(name, "/") {
		return "", "absolute path"
	}
	parts := make([]string, 0, strings.Count(name, "/")+1)
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", `path has a ".." component`
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, "/"), ""
}

// parentDir is path.Dir for cleaned relative names, with "" for the root.
func parentDir(rel string) string {
	i := strings.LastIndexByte(rel, '/')
	if i < 0 {
		return ""
	}
	return rel[:i]
}

// joinRel joins a cleaned relative directory and a name.
func joinRel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// badParent returns the first proper ancestor of rel that this archive made
// something other than a directory, and what it is.
func (v *validator) badParent(rel string) (string, kind) {
	for i := 0; i < len(rel); i++ {
		if rel[i] != '/' {
			continue
		}
		if k := v.entries[rel[:i]]; k == kindSymlink || k == kindOther {
			return rel[:i], k
		}
	}
	return "", 0
}

// check applies the policy to one header and records what it creates.
func (v *validator) check(hdr *tar.Header) (*member, error) {
	name := hdr.Name
	rel, why := cleanName(name)
	if why != "" {
		return nil, refuse(name, ErrUnsafe, "%s", why)
	}
	m := &member{hdr: hdr, rel: rel}
	for k, val := range hdr.PAXRecords {
		attr, ok := strings.CutPrefix(k, paxXattrPrefix)
		if !ok {
			continue
		}
		if strings.HasPrefix(attr, overlayXattrPrefix) {
			return nil, refuse(name, ErrUnsafe, "carries xattr %q, which would change how overlayfs reads the layer", attr)
		}
		if m.xattrs == nil {
			m.xattrs = map[string]string{}
		}
		m.xattrs[attr] = val
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return nil, refuse(name, ErrUnsafe, "names the archive root but is not a directory")
		}
		return m, nil
	}
	if p, k := v.badParent(rel); k == kindSymlink {
		return nil, refuse(name, ErrUnsafe, "parent %q is a symlink; members may not be written through symlinks", p)
	} else if k == kindOther {
		return nil, refuse(name, ErrUnsupported, "parent %q is not a directory", p)
	}

	dir, base := parentDir(rel), path.Base(rel)
	if strings.HasPrefix(base, whiteoutPrefix) {
		return v.checkWhiteout(m, dir, base)
	}

	var k kind
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
		k = kindOther
	case tar.TypeDir:
		k = kindDir
	case tar.TypeFifo:
		k = kindOther
	case tar.TypeSymlink:
		if hdr.Linkname == "" {
			return nil, refuse(name, ErrUnsupported, "symlink has an empty target")
		}
		if !path.IsAbs(hdr.Linkname) {
			resolved := path.Join(dir, hdr.Linkname)
			if resolved == ".." || strings.HasPrefix(resolved, "../") {
				return nil, refuse(name, ErrUnsafe, "symlink target %q climbs out of the root", hdr.Linkname)
			}
		}
		k = kindSymlink
	case tar.TypeLink:
		target, err := v.checkHardlink(name, rel, hdr.Linkname)
		if err != nil {
			return nil, err
		}
		m.link = target
		k = v.entries[target]
	case tar.TypeChar, tar.TypeBlock:
		return nil, refuse(name, ErrUnsafe,
			"device node %d:%d: layers may not create devices (overlay whiteouts must use the .wh. form)",
			hdr.Devmajor, hdr.Devminor)
	default:
		return nil, refuse(name, ErrUnsupported, "unsupported member type %q", string(hdr.Typeflag))
	}
	v.entries[rel] = k
	return m, nil
}

func (v *validator) checkWhiteout(m *member, dir, base string) (*member, error) {
	name := m.hdr.Name
	if m.hdr.Typeflag != tar.TypeReg {
		return nil, refuse(name, ErrUnsafe, "whiteout is not a regular file")
	}
	switch {
	case base == opaqueWhiteout:
		m.whiteout, m.hidden = whiteoutOpaque, dir
	case strings.HasPrefix(base, whiteoutMetaPrefix):
		m.whiteout = whiteoutMeta
	default:
		target := strings.TrimPrefix(base, whiteoutPrefix)
		if target == "" || target == "." || target == ".." {
			return nil, refuse(name, ErrUnsafe, "whiteout names no entry")
		}
		m.whiteout, m.hidden = whiteoutFile, joinRel(dir, target)
	}
	return m, nil
}

// checkHardlink returns the cleaned target of a hard link, or the refusal.
func (v *validator) checkHardlink(name, rel, linkname string) (string, error) {
	if path.IsAbs(linkname) {
		return "", refuse(name, ErrUnsafe, "hard link target %q is absolute", linkname)
	}
	target, why := cleanName(linkname)
	if why != "" {
		return "", refuse(name, ErrUnsafe, "hard link target %q: %s", linkname, why)
	}
	if target == "" || target == rel {
		return "", refuse(name, ErrUnsafe, "hard link target %q names no other member", linkname)
	}
	k, ok := v.entries[target]
	if !ok {
		return "", refuse(name, ErrUnsafe, "hard link target %q names no earlier member", linkname)
	}
	if k == kindDir {
		return "", refuse(name, ErrUnsafe, "hard link target %q is a directory", linkname)
	}
	if p, k := v.badParent(target); k != 0 {
		return "", refuse(name, ErrUnsafe, "hard link target %q is reached through %q, which is no longer a directory", linkname, p)
	}
	return target, nil
}

// countingReader counts the bytes the tar reader consumed, which is how a
// missing end-of-archive marker is told from a complete stream.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// stream reads a layer tar member by member, applying the policy and
// turning every read failure into a MemberError that names a member.
type stream struct {
	cr *countingReader
	tr *tar.Reader
	v  *validator
	// last is the name of the member returned most recently.
	last string
	// dataEnd is the stream offset where the last member's data ended.
	dataEnd int64
}

func newStream(r io.Reader) *stream {
	cr := &countingReader{r: r}
	return &stream{cr: cr, tr: tar.NewReader(cr), v: newValidator()}
}

// next returns the next member, or nil once the end-of-archive marker has
// been read and the stream drained. Its data is read from s.data().
func (s *stream) next(ctx context.Context) (*member, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, s.tr); err != nil {
			return nil, truncated(s.last, "data is cut short", err)
		}
		s.dataEnd = s.cr.n
		hdr, err := s.tr.Next()
		if err == io.EOF {
			return nil, s.finish()
		}
		if err != nil {
			if s.last == "" {
				return nil, truncated("", "corrupt or truncated header at the start (is this a tar archive?)", err)
			}
			return nil, truncated(s.last, "the header after this member is corrupt or truncated", err)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			// Global PAX records (such as a comment) carry nothing to extract.
			continue
		}
		s.last = hdr.Name
		return s.v.check(hdr)
	}
}

// finish verifies the end of the archive and drains what follows it (tar
// writers pad to a record size), so that a caller hashing the stream sees
// all of it.
func (s *stream) finish() error {
	// Go's tar reader stops at the first zero block, or at a clean EOF
	// where a header should be. Padding after the last data is under one
	// block, so at least one block read past it means a zero block was
	// there, and a stream cut exactly between members is caught.
	if s.cr.n-s.dataEnd < blockSize {
		if s.cr.n == 0 {
			return truncated("", "empty stream", io.ErrUnexpectedEOF)
		}
		return truncated(s.last, "the archive ends after this member without an end-of-archive marker", io.ErrUnexpectedEOF)
	}
	if _, err := io.Copy(io.Discard, s.cr); err != nil {
		return truncated(s.last, "the stream after the end-of-archive marker is corrupt", err)
	}
	return nil
}

// dataReader remembers a read error, so that a copy that fails can tell a
// broken archive from a full disk.
type dataReader struct {
	r   io.Reader
	err error
}

func (d *dataReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	if err != nil && err != io.EOF {
		d.err = err
	}
	return n, err
}

// Check reads a whole uncompressed layer tar and refuses it if any member
// breaks the extraction policy (see the package documentation) or the
// stream is truncated or corrupt. It writes nothing. It returns the number
// of bytes read, which on success is the whole stream, trailing padding
// included; the error is a *MemberError unless ctx ended.
func Check(ctx context.Context, r io.Reader) (int64, error) {
	s := newStream(r)
	for {
		m, err := s.next(ctx)
		if err != nil {
			return s.cr.n, err
		}
		if m == nil {
			return s.cr.n, nil
		}
	}
}
