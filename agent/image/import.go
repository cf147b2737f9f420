package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/godwit/godwit/agent/archive"
)

const (
	// outerFile is the decompressed tarball, spooled so that its members
	// can be read in any order (docker save writes manifest.json last).
	outerFile = "tarball.tar"
	// gnuSparsePAXPrefix marks GNU sparse files in PAX records; their data
	// section is not the file's bytes, so they cannot be read in place.
	gnuSparsePAXPrefix = "GNU.sparse."
	// maxLinkHops bounds symlink chains inside the tarball (docker save
	// links repeated layers to their first copy).
	maxLinkHops = 8
)

// plan is what a format parser found: everything Import needs besides
// the layer bytes.
type plan struct {
	format  Format
	name    string // derived from the tarball, if any
	id      digest.Digest
	config  Config
	created time.Time
	arch    string // config's architecture, "" if unknown
	layers  []layerSource
}

// layerSource is one layer as the tarball holds it, with the digests the
// tarball claims for it.
type layerSource struct {
	// label names the layer in errors ("layer sha256:…", "rootfs tarball").
	label string
	open  func() (io.Reader, error)
	// blob is the digest (and size, -1 if unknown) claimed for the bytes as
	// stored, maybe compressed; "" when the format names none.
	blob     digest.Digest
	blobSize int64
	blobWho  string // who claims blob: "manifest", "file name"
	// diffID is the claimed digest of the uncompressed tar, from the config.
	diffID    digest.Digest
	diffIDWho string
}

// Import reads an image tarball (see the package documentation for the
// formats), verifies every digest it states and checks every layer
// against the extraction policy, and stores the image as name. With name
// "", the name comes from the tarball (docker RepoTags, OCI
// io.containerd.image.name or org.opencontainers.image.ref.name); a
// tarball without one is refused and the caller should ask for --name.
// On any error the store is left exactly as it was.
func (s *Store) Import(ctx context.Context, r io.Reader, name string) (*Image, error) {
	img, err := s.importImage(ctx, r, name)
	if err != nil {
		return nil, fmt.Errorf("import image: %w", err)
	}
	return img, nil
}

func (s *Store) importImage(ctx context.Context, r io.Reader, name string) (*Image, error) {
	if name != "" {
		if err := validName(name); err != nil {
			return nil, err
		}
		// Fail before reading gigabytes; checked again at commit.
		s.mu.Lock()
		err := s.nameTaken(name)
		s.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	stage, err := os.MkdirTemp(s.tmpDir(), "import-")
	if err != nil {
		return nil, fmt.Errorf("create staging directory: %w", err)
	}
	defer os.RemoveAll(stage)

	outer, comp, err := spool(ctx, r, filepath.Join(stage, outerFile))
	if err != nil {
		return nil, err
	}
	defer outer.Close()

	p, err := s.parse(ctx, outer, name)
	if err != nil {
		return nil, err
	}
	if name == "" {
		name = p.name
	}
	if name == "" {
		return nil, invalidf("the %s tarball names no image: give one with --name NAME", p.format)
	}
	if err := validName(name); err != nil {
		return nil, err
	}
	s.mu.Lock()
	err = s.nameTaken(name)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}

	layers := make([]Layer, len(p.layers))
	staged := make(map[digest.Digest]string, len(p.layers))
	var size int64
	for i, src := range p.layers {
		l, file, err := stageLayer(ctx, stage, i, src)
		if err != nil {
			return nil, err
		}
		layers[i], staged[l.Digest] = l, file
		size += l.Size
	}
	if p.arch != "" && p.arch != runtime.GOARCH {
		s.log.Warn("image is built for another architecture; its programs may not run here",
			"name", name, "image_arch", p.arch, "node_arch", runtime.GOARCH)
	}

	if p.format == FormatRootfs {
		p.id = layers[0].Digest
	}
	now := time.Now().UTC()
	created := p.created
	if created.IsZero() {
		created = now
	}
	img := Image{
		Name: name, ID: p.id, Format: p.format, Layers: layers, Config: p.config,
		Size: size, Created: created, Imported: now,
	}
	if err := s.commit(img, staged); err != nil {
		return nil, err
	}
	s.log.Info("image imported", "name", img.Name, "id", img.ID, "format", img.Format,
		"compression", comp, "layers", len(img.Layers), "bytes", img.Size)
	out := cloneImage(img)
	return &out, nil
}

// spool decompresses r into path and returns it open for reading.
func spool(ctx context.Context, r io.Reader, path string) (*os.File, archive.Compression, error) {
	dec, comp, err := archive.Decompress(r)
	if err != nil {
		return nil, comp, invalidf("image tarball: %w", err)
	}
	defer dec.Close()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return nil, comp, fmt.Errorf("spool image tarball: %w", err)
	}
	rd := &readErrTracker{r: dec}
	_, err = io.Copy(f, contextReader{ctx: ctx, r: rd})
	if err != nil {
		f.Close()
		if rd.err != nil && !errors.Is(rd.err, context.Canceled) && !errors.Is(rd.err, context.DeadlineExceeded) {
			return nil, comp, invalidf("image tarball (%s): %w: %w", comp, archive.ErrTruncated, rd.err)
		}
		return nil, comp, fmt.Errorf("spool image tarball: %w", err)
	}
	return f, comp, nil
}

// readErrTracker remembers a read error, to tell a broken input from a
// full disk.
type readErrTracker struct {
	r   io.Reader
	err error
}

func (t *readErrTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}

// contextReader stops a long copy when ctx ends.
type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// parse detects the format and reads everything but the layer data.
func (s *Store) parse(ctx context.Context, outer *os.File, name string) (*plan, error) {
	t, idxErr := indexTarball(ctx, outer)
	if idxErr != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		// Let the layer checker name the broken member precisely.
		if _, err := outer.Seek(0, io.SeekStart); err == nil {
			if _, err := archive.Check(ctx, outer); err != nil {
				return nil, invalidf("image tarball: %w", err)
			}
		}
		return nil, invalidf("image tarball: %w", idxErr)
	}
	switch {
	case t.has(ociLayoutFile):
		return parseOCI(t, name)
	case t.has(dockerManifestFile):
		return parseDocker(t, name)
	default:
		return &plan{
			format: FormatRootfs,
			layers: []layerSource{{
				label: "rootfs tarball",
				open:  func() (io.Reader, error) { return io.NewSectionReader(outer, 0, t.size), nil },
			}},
		}, nil
	}
}

// tarball is the index of the spooled outer tar: where each member's data
// lies, so blobs can be read in any order without extracting them.
type tarball struct {
	f       *os.File
	size    int64
	members map[string]tarMember
}

type tarMember struct {
	name     string
	typ      byte
	linkname string
	offset   int64
	size     int64
	sparse   bool
}

// offsetReader counts bytes consumed, which after tar.Reader.Next is the
// offset of the member's data: the tar reader reads headers and padding
// exactly, never ahead.
type offsetReader struct {
	r io.Reader
	n int64
}

func (o *offsetReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.n += int64(n)
	return n, err
}

// seekingOffsetReader lets the tar reader seek over member data instead of
// reading it, so indexing a spooled tarball reads only its headers.
type seekingOffsetReader struct {
	offsetReader
	s io.Seeker
}

func (o *seekingOffsetReader) Seek(offset int64, whence int) (int64, error) {
	pos, err := o.s.Seek(offset, whence)
	if err == nil {
		o.n = pos
	}
	return pos, err
}

func indexTarball(ctx context.Context, f *os.File) (*tarball, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	t := &tarball{f: f, size: st.Size(), members: map[string]tarMember{}}
	sr := io.NewSectionReader(f, 0, st.Size())
	or := &seekingOffsetReader{offsetReader: offsetReader{r: sr}, s: sr}
	tr := tar.NewReader(or)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not a readable tar archive: %w", err)
		}
		name, ok := memberName(hdr.Name)
		if !ok {
			continue // cannot be a blob or metadata file; Check judges rootfs
		}
		sparse := hdr.Typeflag == tar.TypeGNUSparse
		for k := range hdr.PAXRecords {
			sparse = sparse || strings.HasPrefix(k, gnuSparsePAXPrefix)
		}
		t.members[name] = tarMember{
			name: hdr.Name, typ: hdr.Typeflag, linkname: hdr.Linkname,
			offset: or.n, size: hdr.Size, sparse: sparse,
		}
	}
	if len(t.members) == 0 && t.size == 0 {
		return nil, errors.New("empty stream")
	}
	return t, nil
}

// memberName cleans a member name to the form blobs are looked up by;
// names with ".." are never blobs or metadata.
func memberName(n string) (string, bool) {
	parts := make([]string, 0, strings.Count(n, "/")+1)
	for _, c := range strings.Split(n, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			return "", false
		}
		parts = append(parts, c)
	}
	return strings.Join(parts, "/"), len(parts) > 0
}

func (t *tarball) has(name string) bool {
	_, ok := t.members[name]
	return ok
}

// member finds a regular file by name, following symlinks inside the
// tarball.
func (t *tarball) member(name string) (tarMember, error) {
	cur, ok := memberName(name)
	if !ok {
		return tarMember{}, fs.ErrNotExist
	}
	for hop := 0; hop <= maxLinkHops; hop++ {
		m, ok := t.members[cur]
		if !ok {
			return tarMember{}, fs.ErrNotExist
		}
		switch m.typ {
		case tar.TypeReg:
			if m.sparse {
				return tarMember{}, fmt.Errorf("%q is a sparse file, which image tarballs do not use", name)
			}
			return m, nil
		case tar.TypeSymlink:
			target := m.linkname
			if !path.IsAbs(target) {
				target = path.Join(path.Dir(cur), target)
			}
			next, ok := memberName(target)
			if !ok {
				return tarMember{}, fmt.Errorf("%q links outside the tarball", name)
			}
			cur = next
		case tar.TypeLink:
			next, ok := memberName(m.linkname)
			if !ok {
				return tarMember{}, fmt.Errorf("%q links outside the tarball", name)
			}
			cur = next
		default:
			return tarMember{}, fmt.Errorf("%q is not a regular file", name)
		}
	}
	return tarMember{}, fmt.Errorf("%q: too many levels of links", name)
}

func (t *tarball) open(name string) (io.Reader, int64, error) {
	m, err := t.member(name)
	if err != nil {
		return nil, 0, err
	}
	return io.NewSectionReader(t.f, m.offset, m.size), m.size, nil
}

// readFile reads a small metadata member whole.
func (t *tarball) readFile(name string) ([]byte, error) {
	r, size, err := t.open(name)
	if err != nil {
		return nil, err
	}
	if size > maxJSONSize {
		return nil, fmt.Errorf("%q is %d bytes, more than the %d a metadata file may have", name, size, maxJSONSize)
	}
	return io.ReadAll(r)
}

// stageLayer reads one layer from the tarball once: it decompresses it,
// checks it against the extraction policy, hashes it both as stored and
// uncompressed, and writes it zstd-compressed into the staging directory.
// It returns the layer and the staged file.
func stageLayer(ctx context.Context, stage string, i int, src layerSource) (Layer, string, error) {
	raw, err := src.open()
	if errors.Is(err, fs.ErrNotExist) {
		return Layer{}, "", invalidf("%s is missing from the tarball", src.label)
	}
	if err != nil {
		return Layer{}, "", invalidf("%s: %w", src.label, err)
	}
	alg := digest.SHA256
	if src.blob != "" {
		alg = src.blob.Algorithm()
	}
	blobDigester := alg.Digester()
	counted := &offsetReader{r: io.TeeReader(raw, blobDigester.Hash())}
	dec, _, err := archive.Decompress(counted)
	if err != nil {
		return Layer{}, "", invalidf("%s: %w", src.label, err)
	}
	defer dec.Close()

	tmp := filepath.Join(stage, fmt.Sprintf("layer-%d%s", i, layerExt))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return Layer{}, "", fmt.Errorf("stage %s: %w", src.label, err)
	}
	defer f.Close()
	zw, err := zstd.NewWriter(f, zstd.WithEncoderConcurrency(1))
	if err != nil {
		return Layer{}, "", fmt.Errorf("stage %s: %w", src.label, err)
	}
	defer zw.Close()
	diffDigester := digest.SHA256.Digester()
	n, err := archive.Check(ctx, io.TeeReader(dec, io.MultiWriter(diffDigester.Hash(), zw)))
	if err != nil {
		if ctx.Err() != nil {
			return Layer{}, "", ctx.Err()
		}
		return Layer{}, "", invalidf("%s: %w", src.label, err)
	}
	// Whatever follows the compressed stream still counts for its digest.
	if _, err := io.Copy(io.Discard, counted); err != nil {
		return Layer{}, "", fmt.Errorf("read %s: %w", src.label, err)
	}

	if src.blob != "" {
		if got := blobDigester.Digest(); got != src.blob {
			return Layer{}, "", invalidf("%s: digest mismatch: %s says %s, content is %s", src.label, src.blobWho, src.blob, got)
		}
	}
	if src.blobSize >= 0 && src.blob != "" && counted.n != src.blobSize {
		return Layer{}, "", invalidf("%s: size mismatch: %s says %d bytes, content is %d", src.label, src.blobWho, src.blobSize, counted.n)
	}
	diffID := diffDigester.Digest()
	if src.diffID != "" && diffID != src.diffID {
		return Layer{}, "", invalidf("%s: uncompressed digest mismatch: %s says %s, content is %s", src.label, src.diffIDWho, src.diffID, diffID)
	}

	if err := zw.Close(); err != nil {
		return Layer{}, "", fmt.Errorf("stage %s: %w", src.label, err)
	}
	if err := f.Sync(); err != nil {
		return Layer{}, "", fmt.Errorf("stage %s: %w", src.label, err)
	}
	return Layer{Digest: diffID, Size: n}, tmp, nil
}

// commit moves the staged layers the store lacks into place and writes the
// index. If anything fails, the layers it moved are removed again.
func (s *Store) commit(img Image, staged map[digest.Digest]string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.nameTaken(img.Name); err != nil {
		return err
	}
	var added []string
	undo := func() {
		for _, p := range added {
			_ = os.Remove(p)
		}
	}
	for d, tmp := range staged {
		dst := s.layerPath(d)
		if _, err := os.Stat(dst); err == nil {
			continue // stored already, verified when it was imported
		}
		if err := os.Rename(tmp, dst); err != nil {
			undo()
			return fmt.Errorf("store layer %s: %w", d, err)
		}
		added = append(added, dst)
	}
	if len(added) > 0 {
		if err := syncDir(s.layerDir()); err != nil {
			undo()
			return err
		}
	}
	images := append(append(make([]Image, 0, len(s.images)+1), s.images...), img)
	sortImages(images)
	if err := s.writeIndex(images); err != nil {
		undo()
		return err
	}
	s.images = images
	return nil
}

func sortImages(images []Image) {
	slices.SortFunc(images, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
}
